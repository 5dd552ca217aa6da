//! Command-line parsing and wiring: each subcommand lives in its own module.

/// `println!` that does not panic when stdout is gone (a closed pipe must not bring the farm down).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod api;
mod config;
mod hook;
mod lint;
mod run;
mod secret;
mod serve;
mod token;
mod up;
mod worker;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Gantry: a self-hosted CI integration-test farm.
#[derive(Parser)]
#[command(name = "gantry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server and a local worker pool on an embedded SQLite file: the whole farm on one machine.
    Up(up::UpArgs),
    /// Run the server only.
    Server(config::ServerArgs),
    /// Run a worker that leases jobs from a server.
    Worker(worker::WorkerArgs),
    /// Run a working tree's pipeline here, with no server: logs to the terminal, exit 0 only if every job
    /// succeeded.
    Run(run::RunArgs),
    /// Check a pipeline file before pushing it: its jobs, or the error with its line and a hint; exit 1 on error.
    Lint(lint::LintArgs),
    /// Manage repositories.
    #[command(subcommand)]
    Repo(api::RepoCommand),
    /// Manage a repository's secrets (given to its jobs as env, masked in logs).
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Manage API tokens: read, write or admin scope.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Look at pipelines.
    #[command(subcommand)]
    Pipeline(api::PipelineCommand),
    /// Look at jobs and their logs.
    #[command(subcommand)]
    Job(api::JobCommand),
    /// Connect plain git repositories.
    #[command(subcommand)]
    Hook(hook::HookCommand),
    /// Send ref updates (post-receive input on stdin) to the server, signed; used by the installed git hook.
    Notify(hook::NotifyArgs),
    /// Print an annotated example configuration file.
    DefaultConfig,
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `gantry run` talks to a terminal through its own output; only warnings should interleave with it.
    init_tracing(match cli.command {
        Command::Run(_) => "warn",
        _ => "info,sqlx=warn,tower_http=warn",
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gantry: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Server(args) => serve::run(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Lint(args) => lint::run(args),
            Command::Repo(cmd) => api::repo(cmd).await,
            Command::Secret(cmd) => secret::run(cmd).await,
            Command::Token(cmd) => token::run(cmd).await,
            Command::Pipeline(cmd) => api::pipeline(cmd).await,
            Command::Job(cmd) => api::job(cmd).await,
            Command::Hook(cmd) => hook::run(cmd).await,
            Command::Notify(args) => hook::notify(args).await,
            Command::DefaultConfig => {
                print!("{}", config::EXAMPLE);
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gantry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Counts the SIGINTs and SIGTERMs the process gets, from now on.
pub fn signal_count() -> tokio::sync::watch::Receiver<u32> {
    let (tx, rx) = tokio::sync::watch::channel(0);
    use tokio::signal::unix::{SignalKind, signal};
    // Registered once, here, so that no signal falls between two waits.
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    rx
}
