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
        Command::Users(command) => commands::users::run(*command).await,
        Command::Dlq(args) => commands::dlq::run(s, args).await,
        Command::Reconcile {
            dry_run,
            yes,
            delete_extra,
        } => commands::reconcile::run(s, dry_run, yes, delete_extra).await,
        Command::Replay(args) => commands::replay::run(s, &args).await,
        Command::Consumer(command) => commands::replay::consumer(s, command).await,
        Command::Events(args) => commands::users::events(args).await,
        Command::Verify { max_listed } => commands::verify::run(s, max_listed).await,
        Command::Chaos { args } => commands::tools::exec(s, "chaos", &args),
        Command::Bench { args } => commands::tools::exec(s, "bench", &args),
        Command::Completions { shell } => commands::docs::run_completions(shell),
        Command::Man { dir } => commands::docs::run_man(dir.as_deref()),
    };
    platform::exit::exit_code(result)
}
