//! `portal`: see `portal --help`.

use clap::Parser;
use portal::cli::{Cli, Command};
use portal::commands::{self, Failure};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::telemetry::init();
    let cli = Cli::parse();
    let s = &cli.settings;
    let result: Result<(), Failure> = match cli.command {
        Command::Up => commands::up::run(s).await,
        Command::AuthService { no_relay } => commands::serve::auth_service(s, !no_relay).await,
        Command::UserService { no_consumer } => {
            commands::serve::user_service(s, !no_consumer).await
        }
        Command::Gateway => commands::serve::gateway(s).await,
        Command::Relay => commands::serve::relay(s).await,
        Command::Seed => commands::seed::run(s).await,
        Command::Verify { max_listed } => commands::verify::run(s, max_listed).await,
        Command::Bench(args) => portal::bench::run(s, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}
