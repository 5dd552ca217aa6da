//! The one `gantry` binary: parses the command line and hands over to `cli`.

mod cli;

fn main() -> std::process::ExitCode {
    // A container's init is exec'd from the worker and must not start a runtime or parse flags first.
    if std::env::args().nth(1).as_deref() == Some("container-init") {
        return std::process::ExitCode::from(gantry_worker::init_main() as u8);
    }
    cli::main()
}
