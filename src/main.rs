//! The one `gantry` binary: parses the command line and hands over to `cli`.

mod cli;

fn main() -> std::process::ExitCode {
    // The container zygote is exec'd by the worker and forks containers' inits: it must stay single-threaded,
    // so it starts no runtime and parses no flags first.
    if std::env::args().nth(1).as_deref() == Some("container-zygote") {
        return std::process::ExitCode::from(gantry_worker::zygote_main() as u8);
    }
    cli::main()
}
