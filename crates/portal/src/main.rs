//! `portal`: see `portal --help`.

use clap::Parser;
use portal::cli::{Cli, Command, KeysCommand};
use portal::commands::{self, setup, Failure};
use std::process::ExitCode;

fn main() -> ExitCode {
    // First, while this is the only thread: how malloc hands back large buffers.
    platform::memory::return_large_buffers();
    // Before any thread exists: the credentials `portal setup` wrote become settings (what the
    // environment sets explicitly wins).
    if let Some(path) = setup::credentials_path() {
        if let Err(e) = setup::load_into_env(&path) {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let cli = Cli::parse();
        platform::telemetry::init(service_name(&cli.command));
        platform::exit::exit_code(run(cli).await)
    })
}

/// The `service` of this process's JSON log lines: the part it runs, or `portal` (the whole
/// system under `portal up`, or a tool).
fn service_name(command: &Command) -> &'static str {
    match command {
        Command::AuthService { .. } => "auth-service",
        Command::UserService { .. } => "user-service",
        Command::AppointmentService => "appointment-service",
        Command::Gateway => "gateway",
        Command::Web => "web",
        Command::SyncAdmin => "sync-admin",
        Command::Relay => "relay",
        _ => "portal",
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let s = &cli.settings;
    match cli.command {
        Command::Up { admin, no_setup } => commands::up::run(s, &admin, no_setup).await,
        Command::Setup { admin } => setup::run(s, &admin).await,
        Command::AuthService { no_relay } => commands::serve::auth_service(s, !no_relay).await,
        Command::UserService { no_consumer } => {
            commands::serve::user_service(s, !no_consumer).await
        }
        Command::AppointmentService => commands::serve::appointment_service(s).await,
        Command::Gateway => commands::serve::gateway(s).await,
        Command::Web => commands::serve::web(s).await,
        Command::SyncAdmin => commands::serve::sync_admin(s).await,
        Command::Relay => commands::serve::relay(s).await,
        Command::Seed => commands::seed::run(s).await,
        Command::Users(command) => commands::users::run(*command).await,
        Command::Dlq(args) => commands::dlq::run(s, args).await,
        Command::Reconcile(args) => commands::reconcile::run(s, &args).await,
        Command::Replay(args) => commands::replay::run(s, &args).await,
        Command::Consumer(command) => commands::replay::consumer(s, command).await,
        Command::Events(args) => commands::users::events(args).await,
        Command::Status(args) => commands::status::run(s, args).await,
        Command::Verify { max_listed } => commands::verify::run(s, max_listed).await,
        Command::Chaos { args } => commands::tools::exec(s, "chaos", &args),
        Command::Bench { args } => commands::tools::exec(s, "bench", &args),
        Command::Keys(KeysCommand::Rotate) => commands::serve::rotate_keys(s),
        Command::Completions { shell } => commands::docs::run_completions(shell),
        Command::Man { dir } => commands::docs::run_man(dir.as_deref()),
    }
}
