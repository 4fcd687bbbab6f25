//! Command-line definitions. Every setting can come from the environment; `--help` lists the
//! variable and its default.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "portal",
    version,
    about = "Clinical portal user synchronisation: auth-service → RabbitMQ → user-service",
    long_about = "Runs and operates the clinical portal's user synchronisation.\n\n\
        Users are written in the auth-service (auth_db) together with an outbox event; the relay \
        publishes the events to the RabbitMQ exchange user.events; the user-service applies them \
        to its copy (user_db) and serves the directory. The gateway is the single HTTP entry.\n\n\
        Exit codes: 0 success, 1 failure (verify: differences found), 2 a database or the broker \
        could not be reached."
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Prepare databases and topology, start auth-service (with relay), user-service and
    /// gateway in the foreground, seed an empty auth_db, print the URLs and admin login.
    Up,
    /// Run the auth-service alone (with its outbox relay unless --no-relay).
    AuthService {
        /// Do not run the outbox relay in this process (run `portal relay` separately).
        #[arg(long)]
        no_relay: bool,
    },
    /// Run the user-service alone (directory API and event consumer).
    UserService {
        /// Serve the directory only; do not consume events.
        #[arg(long)]
        no_consumer: bool,
    },
    /// Run the gateway alone.
    Gateway,
    /// Run the outbox relay alone (several may run; rows are claimed with SKIP LOCKED).
    Relay,
    /// Create the 10 demo users through the auth-service's write path (idempotent).
    Seed,
    /// Compare every user of auth_db and user_db; exit 0 in sync, 1 on differences, 2 when a
    /// database cannot be reached.
    Verify {
        /// Print at most this many differences (all are counted).
        #[arg(long, default_value_t = 50)]
        max_listed: usize,
    },
    /// Measure the pipeline in its own databases and RabbitMQ vhost: broker ceiling, sync
    /// throughput (batched and naive), latency, backlog drain, verify, memory and HTTP; print a
    /// table and write JSON. Exit 1 when a step fails or the copies end out of sync.
    Bench(Box<crate::bench::BenchArgs>),
}

/// Settings shared by all commands.
#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// auth-service database.
    #[arg(
        long,
        global = true,
        env = "AUTH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/auth_db"
    )]
    pub auth_database_url: String,
    /// user-service database.
    #[arg(
        long,
        global = true,
        env = "USER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/user_db"
    )]
    pub user_database_url: String,
    /// RabbitMQ.
    #[arg(
        long,
        global = true,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Where the auth-service listens.
    #[arg(
        long,
        global = true,
        env = "AUTH_ADDR",
        default_value = "127.0.0.1:3001"
    )]
    pub auth_addr: SocketAddr,
    /// Where the user-service listens.
    #[arg(
        long,
        global = true,
        env = "USER_ADDR",
        default_value = "127.0.0.1:3002"
    )]
    pub user_addr: SocketAddr,
    /// Where the gateway listens.
    #[arg(
        long,
        global = true,
        env = "GATEWAY_ADDR",
        default_value = "127.0.0.1:3000"
    )]
    pub gateway_addr: SocketAddr,
    /// The auth-service as the gateway reaches it [default: http://AUTH_ADDR].
    #[arg(long, global = true, env = "AUTH_SERVICE_URL")]
    pub auth_service_url: Option<String>,
    /// The user-service as the gateway reaches it [default: http://USER_ADDR].
    #[arg(long, global = true, env = "USER_SERVICE_URL")]
    pub user_service_url: Option<String>,
    /// Directory of the JWT Ed25519 key pair (created by the auth-service on first start; the
    /// user-service needs only the .pub file).
    #[arg(
        long,
        global = true,
        env = "JWT_KEY_DIR",
        default_value = ".portal/keys"
    )]
    pub jwt_key_dir: PathBuf,
    /// Lifetime of access tokens, in seconds.
    #[arg(long, global = true, env = "TOKEN_TTL_SECONDS", default_value_t = 3600)]
    pub token_ttl_seconds: i64,
    /// Outbox rows the relay publishes per batch (1 = naive, one confirm awaited per event).
    #[arg(long, global = true, env = "RELAY_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub relay_batch_size: i64,
    /// Messages the consumer holds unacked and applies per transaction (1 = naive).
    #[arg(long, global = true, env = "CONSUMER_PREFETCH", default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..))]
    pub consumer_prefetch: u16,
    /// Seeded admin's email.
    #[arg(
        long,
        global = true,
        env = "SEED_ADMIN_EMAIL",
        default_value = "admin@clinic.co.zw"
    )]
    pub seed_admin_email: String,
    /// Seeded admin's password [default: random, printed once].
    #[arg(
        long,
        global = true,
        env = "SEED_ADMIN_PASSWORD",
        hide_env_values = true
    )]
    pub seed_admin_password: Option<String>,
    /// Password of the 9 seeded staff [default: random and unknown; they must be reset].
    #[arg(
        long,
        global = true,
        env = "SEED_STAFF_PASSWORD",
        hide_env_values = true
    )]
    pub seed_staff_password: Option<String>,
}
