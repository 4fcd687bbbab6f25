//! `portal`: see `portal --help`.

use portal::cli::{AdminCommand, Cli, Command, KeysCommand, MigrateCommand};
use portal::commands::{self, setup, Failure};
use portal::settings::Sources;
use std::process::ExitCode;

fn main() -> ExitCode {
    // First, while this is the only thread: how malloc hands back large buffers.
    platform::memory::return_large_buffers();
    let sources = match Sources::load() {
        Ok(sources) => sources,
        Err(e) => return platform::exit::exit_code(Err(Failure::usage(e))),
    };
    let cli = match sources.parse_from(std::env::args_os()) {
        Ok((cli, _)) => cli,
        Err(e) => platform::exit::exit_on_clap_error(e),
    };
    // Setup and up write the file PORTAL_CREDENTIALS names; every other command needs it there.
    if !matches!(cli.command, Command::Setup(_) | Command::Up(_)) {
        if let Err(e) = sources.require_named_file() {
            return platform::exit::exit_code(Err(Failure::usage(e)));
        }
    }
    if let Err(e) = platform::telemetry::init(service_name(&cli.command)) {
        return platform::exit::exit_code(Err(Failure::usage(anyhow::anyhow!(e))));
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async { platform::exit::exit_code(run(cli, &sources).await) })
}

/// The `service` of this process's JSON log lines: the part it runs, or `portal` (the whole
/// system under `portal up`, or a tool).
fn service_name(command: &Command) -> &'static str {
    match command {
        Command::AuthService(_) => "auth-service",
        Command::UserService(_) => "user-service",
        Command::AppointmentService(_) => "appointment-service",
        Command::Gateway(_) => "gateway",
        Command::Web(_) => "web",
        Command::SyncAdmin(_) => "sync-admin",
        Command::Relay(_) => "relay",
        _ => "portal",
    }
}

async fn run(cli: Cli, sources: &Sources) -> Result<(), Failure> {
    match cli.command {
        Command::Up(args) => commands::up::run(*args, sources).await,
        Command::Setup(args) => setup::run(&args).await,
        Command::AuthService(c) => commands::serve::auth_service(&c).await,
        Command::UserService(c) => commands::serve::user_service(&c).await,
        Command::AppointmentService(c) => commands::serve::appointment_service(&c).await,
        Command::Gateway(c) => commands::serve::gateway(&c).await,
        Command::Web(c) => commands::serve::web(&c).await,
        Command::SyncAdmin(c) => commands::serve::sync_admin(&c).await,
        Command::Relay(c) => commands::serve::relay(&c).await,
        Command::Seed(c) => commands::seed::run(&c).await,
        Command::Users(command) => commands::users::run(*command).await,
        Command::Offboard(args) => commands::offboard::run(*args).await,
        Command::Scim(command) => commands::scim::run(*command).await,
        Command::Dlq(args) => commands::dlq::run(args).await,
        Command::Erasure(command) => commands::erasure::run(command).await,
        Command::Reconcile(c) => commands::reconcile::run(&c).await,
        Command::Replay(c) => commands::replay::run(&c.operator, &c.args, &c.network).await,
        Command::Consumer(command) => commands::replay::consumer(command).await,
        Command::Events(args) => commands::users::events(args).await,
        Command::Status(args) => commands::status::run(*args).await,
        Command::Verify(c) => commands::verify::run(&c.operator, c.max_listed).await,
        Command::Migrate(MigrateCommand::Status(c)) => commands::migrate::run(&c).await,
        Command::Config(command) => commands::config::run(command, sources).await,
        Command::Healthcheck(c) => commands::healthcheck::run(&c, sources).await,
        Command::Chaos { args } => commands::tools::exec(sources, "chaos", &args),
        Command::Bench { args } => commands::tools::exec(sources, "bench", &args),
        Command::Keys(KeysCommand::Rotate(c)) => commands::serve::rotate_keys(&c.keys),
        Command::Admin(AdminCommand::Bootstrap(c)) => commands::seed::bootstrap(&c).await,
        Command::Completions { shell } => commands::docs::run_completions(shell),
        Command::Man { dir } => commands::docs::run_man(dir.as_deref()),
    }
}
