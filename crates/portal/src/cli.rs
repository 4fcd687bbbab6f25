//! Command-line definitions. Every setting can come from the environment; `--help` lists the
//! variable and its default.

use clap::{Args, Parser, Subcommand};
use contract::topology::{ConsumerQueues, USER_SERVICE};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "portal",
    version = platform::build::VERSION,
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
    /// Set up least-privilege identities (as `portal setup`), prepare databases and topology,
    /// start auth-service (with relay), user-service, appointment-service and gateway in the
    /// foreground under those identities, seed an empty auth_db, backfill a new
    /// appointment_db, print the URLs and admin login.
    Up {
        #[command(flatten)]
        admin: AdminArgs,
        /// Skip the setup: run the services with AUTH_DATABASE_URL, USER_DATABASE_URL and
        /// AMQP_URL as given (development with administrative credentials).
        #[arg(long)]
        no_setup: bool,
    },
    /// Create (or bring back up to date) a PostgreSQL role per service, a migration role that
    /// owns the schemas, an operator role, a RabbitMQ user per component with only the rights it
    /// needs, migrate, declare the topology, and write the generated credentials to an
    /// owner-only file the other commands read. Idempotent; safe to run while others do.
    Setup {
        #[command(flatten)]
        admin: AdminArgs,
    },
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
    /// Run the appointment-service alone (appointment API and its own event consumer).
    AppointmentService,
    /// Run the web portal alone (it talks to the gateway at GATEWAY_URL).
    Web,
    /// Run the sync admin API alone (outbox, queues, dead letters, verify in the background),
    /// under the operator's identity; the gateway routes /api/v1/admin/sync to it.
    SyncAdmin,
    /// Run the gateway alone.
    Gateway,
    /// Run the outbox relay alone (several may run; rows are claimed with SKIP LOCKED), with
    /// /health/live, /health/ready and /metrics on RELAY_HTTP_HOST:RELAY_HTTP_PORT.
    Relay,
    /// Create the 10 demo users through the auth-service's write path (idempotent).
    Seed,
    /// Manage users through the admin API (a thin client for scripts and operators).
    #[command(subcommand)]
    Users(Box<UsersCommand>),
    /// Inspect and recover dead-lettered (or unrouted) messages.
    Dlq(DlqArgs),
    /// Find users that differ between auth_db and any consumer's copy (user_db,
    /// appointment_db) and repair them by publishing one `user.snapshot` event per user through
    /// the normal pipeline; reports one line per service.
    Reconcile(ReconcileArgs),
    /// Publish stored events to ONE consumer's queue (not to every subscriber), with confirms.
    Replay(ReplayArgs),
    /// Manage consumer services of the user events.
    #[command(subcommand)]
    Consumer(ConsumerCommand),
    /// Show one user's audit trail (its stored events), oldest first.
    Events(EventsArgs),
    /// One screen for an operator: each part's readiness, the outbox backlog, each consumer's
    /// queue, dead letters and lag, the last verify (the sync admin API's figures, as an admin:
    /// PORTAL_TOKEN or PORTAL_EMAIL / PORTAL_PASSWORD). Exit 0 healthy, 1 degraded, 2 when the
    /// gateway or the sync admin API cannot be reached.
    Status(StatusArgs),
    /// Compare every user of auth_db with every consumer's copy (user_db, appointment_db) and
    /// report per service; exit 0 all in sync, 1 on differences in any copy, 2 when a database
    /// cannot be reached.
    Verify {
        /// Print at most this many differences per copy (all are counted).
        #[arg(long, default_value_t = 50)]
        max_listed: usize,
    },
    /// Chaos run: a mixed user load while services are killed, broker connections cut and
    /// user_db backends terminated; passes when verify then finds 0 differences. Runs
    /// `portal-chaos` from beside this binary (`portal chaos --help` lists its flags).
    #[command(disable_help_flag = true)]
    Chaos {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Measure the pipeline in its own databases and RabbitMQ vhost: broker ceiling, sync
    /// throughput (batched and naive), latency, backlog drain, verify, memory and HTTP; print a
    /// table and write JSON. Exit 1 when a step fails or the copies end out of sync.
    /// Runs `portal-bench` from beside this binary (`portal bench --help` lists its flags).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// The JWT signing keys (`portal keys rotate`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell), e.g.
    /// `portal completions bash > /etc/bash_completion.d/portal`.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page portal(1) in roff, or with --dir write portal.1 and one page per
    /// command (portal-verify.1, ...) into DIR, e.g. `portal man | man -l -`.
    Man {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new signing key in JWT_KEY_DIR and retire the current one: running
    /// auth-services sign with the new key within 5 seconds; the old public key stays published
    /// for an hour, so tokens signed with it stay valid until they expire. Prints the new key id.
    Rotate,
}

/// Settings shared by all commands.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Settings (environment variable, default)")]
pub struct Settings {
    /// auth-service database (its value is never shown: it may hold a password).
    #[arg(
        long,
        global = true,
        env = "AUTH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/auth_db",
        hide_env_values = true
    )]
    pub auth_database_url: String,
    /// user-service database (its value is never shown: it may hold a password).
    #[arg(
        long,
        global = true,
        env = "USER_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/user_db",
        hide_env_values = true
    )]
    pub user_database_url: String,
    /// appointment-service database (its value is never shown: it may hold a password).
    #[arg(
        long,
        global = true,
        env = "APPOINTMENT_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/appointment_db",
        hide_env_values = true
    )]
    pub appointment_database_url: String,
    /// RabbitMQ [default: amqp://guest:***@127.0.0.1:5672/%2f] (its value is never shown: it
    /// holds a password). A cluster: one URL per node, comma-separated; connections take the
    /// first node that answers and move to another when theirs is lost (as every *_AMQP_URL).
    #[arg(
        long,
        global = true,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        hide_default_value = true
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
    /// Where the appointment-service listens.
    #[arg(
        long,
        global = true,
        env = "APPOINTMENT_ADDR",
        default_value = "127.0.0.1:3003"
    )]
    pub appointment_addr: SocketAddr,
    /// The port of a standalone relay's health and metrics (`portal relay`), on
    /// RELAY_HTTP_HOST.
    #[arg(long, global = true, env = "RELAY_HTTP_PORT", default_value_t = 3005)]
    pub relay_http_port: u16,
    /// The address a standalone relay's health and metrics listen on.
    #[arg(
        long,
        global = true,
        env = "RELAY_HTTP_HOST",
        default_value = "127.0.0.1"
    )]
    pub relay_http_host: std::net::IpAddr,
    /// Where the sync admin API listens.
    #[arg(
        long,
        global = true,
        env = "SYNC_ADMIN_ADDR",
        default_value = "127.0.0.1:3004"
    )]
    pub sync_admin_addr: SocketAddr,
    /// Where the gateway listens.
    #[arg(
        long,
        global = true,
        env = "GATEWAY_ADDR",
        default_value = "127.0.0.1:3000"
    )]
    pub gateway_addr: SocketAddr,
    /// The auth-service as the gateway reaches it; several replicas comma-separated
    /// [default: http://AUTH_ADDR].
    #[arg(long, global = true, env = "AUTH_SERVICE_URL")]
    pub auth_service_url: Option<String>,
    /// The user-service as the gateway reaches it; several replicas comma-separated
    /// [default: http://USER_ADDR].
    #[arg(long, global = true, env = "USER_SERVICE_URL")]
    pub user_service_url: Option<String>,
    /// The port the web portal listens on (on WEB_HOST).
    #[arg(long, global = true, env = "WEB_PORT", default_value_t = 3100)]
    pub web_port: u16,
    /// The address the web portal listens on.
    #[arg(long, global = true, env = "WEB_HOST", default_value = "127.0.0.1")]
    pub web_host: std::net::IpAddr,
    /// The gateway as the web portal reaches it [default: http://GATEWAY_ADDR].
    #[arg(long, global = true, env = "GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// Mark the web portal's session cookie Secure (set when it is served over https, e.g.
    /// behind a TLS-terminating proxy).
    #[arg(long, global = true, env = "WEB_SECURE_COOKIES")]
    pub web_secure_cookies: bool,
    /// The clinic's offset from UTC, e.g. +02:00: the web portal takes and shows times in it.
    #[arg(long, global = true, env = "PORTAL_UTC_OFFSET", default_value = "+00:00", value_parser = parse_offset)]
    pub utc_offset: chrono::FixedOffset,
    /// The appointment-service as the gateway reaches it [default: http://APPOINTMENT_ADDR];
    /// `none` routes nothing to it (a system without the appointment-service).
    #[arg(long, global = true, env = "APPOINTMENT_SERVICE_URL")]
    pub appointment_service_url: Option<String>,
    /// The sync admin API as the gateway reaches it [default: http://SYNC_ADMIN_ADDR]; `none`
    /// routes nothing to it.
    #[arg(long, global = true, env = "SYNC_ADMIN_URL")]
    pub sync_admin_url: Option<String>,
    /// Directory of the JWT Ed25519 key pair (created by the auth-service on first start; the
    /// user-service needs only the .pub file).
    #[arg(
        long,
        global = true,
        env = "JWT_KEY_DIR",
        default_value = ".portal/keys"
    )]
    pub jwt_key_dir: PathBuf,
    /// Lifetime of access tokens, in seconds (60 to 900); a client renews them with its refresh
    /// token.
    #[arg(long, global = true, env = "TOKEN_TTL_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(i64).range(platform::jwt::MIN_ACCESS_TTL_SECONDS..=platform::jwt::MAX_ACCESS_TTL_SECONDS))]
    pub token_ttl_seconds: i64,
    /// How long a login lasts at most, renewed or not (its refresh tokens' absolute expiry).
    #[arg(long, global = true, env = "SESSION_TTL", default_value = "12h", value_parser = platform::duration::parse_interval)]
    pub session_ttl: std::time::Duration,
    /// How long a temporary password (account creation, reset, import) logs in; it must be
    /// changed at first use.
    #[arg(long, global = true, env = "TEMPORARY_PASSWORD_TTL", default_value = "72h", value_parser = platform::duration::parse_interval)]
    pub temporary_password_ttl: std::time::Duration,
    /// Whether anyone may register (the account stays inactive until an admin activates it).
    #[arg(long, global = true, env = "REGISTRATION_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub registration_enabled: bool,
    /// Failed logins of one account within a minute before it is locked.
    #[arg(long, global = true, env = "LOGIN_MAX_FAILURES", default_value_t = 10, value_parser = clap::value_parser!(i32).range(3..=1000))]
    pub login_max_failures: i32,
    /// How long a locked account stays locked.
    #[arg(long, global = true, env = "LOGIN_LOCK", default_value = "5m", value_parser = platform::duration::parse_interval)]
    pub login_lock: std::time::Duration,
    /// Password hashes that may wait or run at once before logins are answered 503
    /// [default: 16 per core].
    #[arg(long, global = true, env = "HASH_QUEUE_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    pub hash_queue_limit: Option<u32>,
    /// Login, register, refresh and change-password requests one client address may make per
    /// minute at the gateway, together.
    #[arg(long, global = true, env = "GATEWAY_AUTH_RATE", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_auth_rate: u32,
    /// How many of those one address may make at once before the rate applies.
    #[arg(long, global = true, env = "GATEWAY_AUTH_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_auth_burst: u32,
    /// How often the gateway checks each replica's readiness (it leaves out those that fail
    /// and takes them back when they pass).
    #[arg(long, global = true, env = "GATEWAY_HEALTH_INTERVAL", default_value = "2s", value_parser = platform::duration::parse_interval)]
    pub gateway_health_interval: std::time::Duration,
    /// Proxies in front of the gateway whose X-Forwarded-For it believes (e.g. the web
    /// portal's address), comma-separated; every other client's header is replaced.
    #[arg(
        long,
        global = true,
        env = "GATEWAY_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub gateway_trusted_proxies: Vec<std::net::IpAddr>,
    /// Where the other services fetch the auth-service's public keys
    /// [default: AUTH_SERVICE_URL/api/v1/auth/.well-known/jwks.json].
    #[arg(long, global = true, env = "JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Outbox rows the relay publishes per batch (1 = naive, one confirm awaited per event).
    #[arg(long, global = true, env = "RELAY_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub relay_batch_size: i64,
    /// Relay batches whose confirms may be outstanding at once (1 = wait for each batch).
    #[arg(long, global = true, env = "RELAY_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub relay_in_flight: u16,
    /// Messages the broker may have delivered to a consumer unacked; above
    /// CONSUMER_BATCH_SIZE, the next batch arrives while one commits (1 = naive: one message per
    /// transaction).
    #[arg(long, global = true, env = "CONSUMER_PREFETCH", default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..))]
    pub consumer_prefetch: u16,
    /// The most messages a consumer applies in one transaction (at most CONSUMER_PREFETCH).
    #[arg(long, global = true, env = "CONSUMER_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..))]
    pub consumer_batch_size: u16,
    /// RabbitMQ as the outbox relay (`portal auth-service`, `portal relay`) [default: AMQP_URL].
    #[arg(long, global = true, env = "RELAY_AMQP_URL", hide_env_values = true)]
    pub relay_amqp_url: Option<String>,
    /// RabbitMQ as the user-service's consumer [default: AMQP_URL].
    #[arg(
        long,
        global = true,
        env = "USER_SERVICE_AMQP_URL",
        hide_env_values = true
    )]
    pub user_service_amqp_url: Option<String>,
    /// RabbitMQ as the appointment-service's consumer [default: AMQP_URL].
    #[arg(
        long,
        global = true,
        env = "APPOINTMENT_SERVICE_AMQP_URL",
        hide_env_values = true
    )]
    pub appointment_service_amqp_url: Option<String>,
    /// RabbitMQ as the operator's tools (replay, dlq, consumer add) [default: AMQP_URL].
    #[arg(long, global = true, env = "OPERATOR_AMQP_URL", hide_env_values = true)]
    pub operator_amqp_url: Option<String>,
    /// auth_db as the operator's tools (verify, reconcile, replay) [default: AUTH_DATABASE_URL].
    #[arg(
        long,
        global = true,
        env = "OPERATOR_AUTH_DATABASE_URL",
        hide_env_values = true
    )]
    pub operator_auth_database_url: Option<String>,
    /// user_db as the operator's tools (verify, reconcile) [default: USER_DATABASE_URL].
    #[arg(
        long,
        global = true,
        env = "OPERATOR_USER_DATABASE_URL",
        hide_env_values = true
    )]
    pub operator_user_database_url: Option<String>,
    /// appointment_db as the operator's tools (verify, reconcile) [default:
    /// APPOINTMENT_DATABASE_URL].
    #[arg(
        long,
        global = true,
        env = "OPERATOR_APPOINTMENT_DATABASE_URL",
        hide_env_values = true
    )]
    pub operator_appointment_database_url: Option<String>,
    /// Set by `portal setup` in the credentials file: the schema and the broker topology are the
    /// setup's, so the services (under identities that may change neither) only check them.
    #[arg(long, global = true, env = "MANAGED_BY_SETUP")]
    pub managed_by_setup: bool,
    /// Broker users whose events consumers apply besides the system's own publishers
    /// (portal-relay, portal-operator), comma-separated: e.g. a legacy producer during a
    /// migration, which must then set the AMQP user_id property.
    #[arg(long, global = true, env = "TRUSTED_PUBLISHERS", value_delimiter = ',')]
    pub trusted_publishers: Vec<String>,
    /// Keep published events this many days in the event store [default: keep everything].
    #[arg(long, global = true, env = "EVENT_RETENTION_DAYS")]
    pub event_retention_days: Option<u32>,
    /// Run `reconcile` inside `portal user-service` / `portal up` every so often, e.g. 15m or
    /// 1h 30m [default: off].
    #[arg(long, global = true, env = "RECONCILE_INTERVAL", value_parser = platform::duration::parse_interval)]
    pub reconcile_interval: Option<std::time::Duration>,
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
    /// Password of the 9 seeded staff [default: random and unknown; an admin resets them:
    /// `portal users reset-password <email>`].
    #[arg(
        long,
        global = true,
        env = "SEED_STAFF_PASSWORD",
        hide_env_values = true
    )]
    pub seed_staff_password: Option<String>,
}

impl Settings {
    /// The auth-service as the gateway and the other services reach it.
    pub fn auth_service_url(&self) -> String {
        self.auth_service_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.auth_addr))
    }

    /// Where the auth-service publishes its public keys.
    pub fn jwks_url(&self) -> String {
        self.jwks_url.clone().unwrap_or_else(|| {
            // Each auth-service replica's, tried in turn.
            let auth = self.auth_service_url();
            platform::addresses::split(&auth)
                .into_iter()
                .map(|base| format!("{}{}", base.trim_end_matches('/'), platform::jwt::JWKS_PATH))
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// The outbox relay's broker URL.
    pub fn relay_amqp(&self) -> &str {
        self.relay_amqp_url.as_deref().unwrap_or(&self.amqp_url)
    }

    /// The user-service consumer's broker URL.
    pub fn user_service_amqp(&self) -> &str {
        self.user_service_amqp_url
            .as_deref()
            .unwrap_or(&self.amqp_url)
    }

    /// The appointment-service consumer's broker URL.
    pub fn appointment_service_amqp(&self) -> &str {
        self.appointment_service_amqp_url
            .as_deref()
            .unwrap_or(&self.amqp_url)
    }

    /// The operator tools' `appointment_db`.
    pub fn operator_appointment_db(&self) -> &str {
        self.operator_appointment_database_url
            .as_deref()
            .unwrap_or(&self.appointment_database_url)
    }

    /// The operator tools' broker URL.
    pub fn operator_amqp(&self) -> &str {
        self.operator_amqp_url.as_deref().unwrap_or(&self.amqp_url)
    }

    /// The operator tools' `auth_db`.
    pub fn operator_auth_db(&self) -> &str {
        self.operator_auth_database_url
            .as_deref()
            .unwrap_or(&self.auth_database_url)
    }

    /// The operator tools' `user_db`.
    pub fn operator_user_db(&self) -> &str {
        self.operator_user_database_url
            .as_deref()
            .unwrap_or(&self.user_database_url)
    }
}

/// `+02:00`, `-05:30`, `Z` or `+00:00`.
fn parse_offset(s: &str) -> Result<chrono::FixedOffset, String> {
    if s == "Z" {
        return Ok(chrono::FixedOffset::east_opt(0).ok_or("no UTC")?);
    }
    s.parse::<chrono::FixedOffset>()
        .map_err(|_| format!("{s:?} is not an offset from UTC such as +02:00"))
}

/// The administrative credentials `portal setup` (and `portal up`, which runs it) creates the
/// identities with; nothing else uses them.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Setup (environment variable, default)")]
pub struct AdminArgs {
    /// PostgreSQL as a role that may create roles and databases (its value is never shown).
    #[arg(
        long,
        env = "ADMIN_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    pub admin_database_url: String,
    /// RabbitMQ as an administrator, on the vhost to set up
    /// [default: amqp://guest:***@127.0.0.1:5672/%2f] (its value is never shown).
    #[arg(
        long,
        env = "ADMIN_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub admin_amqp_url: String,
    /// RabbitMQ's management API (users and permissions), called with ADMIN_AMQP_URL's user.
    #[arg(
        long,
        env = "RABBITMQ_MANAGEMENT_URL",
        default_value = "http://127.0.0.1:15672"
    )]
    pub management_url: String,
    /// Where the generated credentials are written (owner-only) and read from by every command.
    #[arg(
        long,
        env = "PORTAL_CREDENTIALS",
        default_value = ".portal/credentials.env"
    )]
    pub credentials: PathBuf,
}

/// How `portal users` reaches and authenticates to the admin API.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "API client")]
pub struct ApiClientArgs {
    /// Base URL of the API (the gateway).
    #[arg(
        long,
        global = true,
        env = "PORTAL_URL",
        default_value = "http://127.0.0.1:3000"
    )]
    pub url: String,
    /// Bearer token to use; when unset, logs in with PORTAL_EMAIL / PORTAL_PASSWORD.
    #[arg(long, env = "PORTAL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Admin email to log in with.
    #[arg(long, env = "PORTAL_EMAIL")]
    pub login_email: Option<String>,
    /// Admin password to log in with.
    #[arg(long, env = "PORTAL_PASSWORD", hide_env_values = true)]
    pub login_password: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// A user named by id or by email.
pub type UserRef = String;

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// List users, sorted by last name (filters combine).
    List {
        #[command(flatten)]
        api: ApiClientArgs,
        /// Only this role (admin, doctor, nurse, pharmacist, consultant).
        #[arg(long)]
        role: Option<String>,
        /// Only active (true) or inactive (false) users.
        #[arg(long)]
        active: Option<bool>,
        /// Name or email contains this (case-insensitive).
        #[arg(long)]
        q: Option<String>,
        /// Page size (1-500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Users to skip.
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    /// Show one user (by id or email).
    Show {
        #[command(flatten)]
        api: ApiClientArgs,
        user: UserRef,
    },
    /// Create an active user with a temporary password (printed once).
    Create {
        #[command(flatten)]
        api: ApiClientArgs,
        #[arg(long)]
        email: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        phone: Option<String>,
    },
    /// Change profile fields of a user.
    Update {
        #[command(flatten)]
        api: ApiClientArgs,
        user: UserRef,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        first_name: Option<String>,
        #[arg(long)]
        last_name: Option<String>,
        #[arg(long, conflicts_with = "clear_phone")]
        phone: Option<String>,
        /// Remove the phone number.
        #[arg(long)]
        clear_phone: bool,
    },
    /// Activate a user.
    Activate {
        #[command(flatten)]
        api: ApiClientArgs,
        user: UserRef,
    },
    /// Deactivate a user (refused for the last active admin).
    Deactivate {
        #[command(flatten)]
        api: ApiClientArgs,
        user: UserRef,
    },
    /// Give a user another role.
    SetRole {
        #[command(flatten)]
        api: ApiClientArgs,
        user: UserRef,
        role: String,
    },
    /// Give a user a new temporary password (printed once), to be changed at their next
    /// login; ends their sessions.
    ResetPassword {
        #[command(flatten)]
        api: ApiClientArgs,
        user: UserRef,
    },
    /// Create many users from a CSV file (header row: email, firstName, lastName, role and
    /// optionally phoneNumber). Invalid rows are listed with their line number and the others
    /// imported; rows whose email exists are left alone, so importing again creates nothing.
    /// The temporary passwords go to a new owner-only CSV file. Exit 0: every row created or
    /// already there; 1: some rows invalid or the API refused; 2: the API unreachable.
    Import {
        #[command(flatten)]
        api: ApiClientArgs,
        /// The CSV file.
        file: PathBuf,
        /// Where to write the temporary passwords (must not exist)
        /// [default: FILE's name with .passwords-<time>.csv, beside it].
        #[arg(long)]
        passwords_out: Option<PathBuf>,
        /// Users per request (1-1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
        batch_size: u16,
        /// Requests in flight at once (an auth-service creates one batch at a time: with two,
        /// the next batch is already there when one is done).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=32))]
        concurrency: u8,
    },
}

#[derive(Args, Debug)]
pub struct DlqArgs {
    /// The queue to work on: a consumer's dead-letter queue, or `user.events.unrouted`.
    #[arg(long, default_value_t = ConsumerQueues::for_consumer(USER_SERVICE).dead_letter)]
    pub queue: String,
    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Subcommand, Debug)]
pub enum DlqAction {
    /// List the messages (position, reason, routing key, first failure) and the count.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one message whole: headers, reason and body.
    Show {
        /// Its position in `list` (1 = oldest).
        n: usize,
    },
    /// Send messages back: a dead letter to its consumer's main queue (where it is applied if it
    /// is now valid, with a fresh retry budget), an unrouted event to the exchange.
    Requeue {
        /// Position in `list`; omit with --all.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        n: Option<usize>,
        /// Every message in the queue.
        #[arg(long)]
        all: bool,
    },
    /// Drop every message in the queue.
    Purge {
        /// Really drop them (without it, only the count is shown).
        #[arg(long)]
        yes: bool,
    },
}

/// What `portal reconcile` may do.
#[derive(Args, Debug, Clone)]
pub struct ReconcileArgs {
    /// Only report what differs.
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
    /// Repair without asking.
    #[arg(long)]
    pub yes: bool,
    /// Also delete users that exist only in a copy (from that copy).
    #[arg(long)]
    pub delete_extra: bool,
    /// How long to wait for the consumers to apply the repairs (e.g. 30s, 2m); a repair counts
    /// as done only once `verify` no longer reports it in that copy. Exit 1 if some are still
    /// pending.
    #[arg(long, default_value = "30s", value_parser = platform::duration::parse_duration)]
    pub wait: std::time::Duration,
}

/// Which stored events a replay sends.
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The consumer queue to fill, e.g. user-service.user-events.
    #[arg(long)]
    pub to: String,
    /// Only events with this global sequence number or later.
    #[arg(long)]
    pub from_seq: Option<i64>,
    /// Only events stored at or after this time (ISO-8601).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events stored before this time (ISO-8601).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this user's events (id or email).
    #[arg(long)]
    pub user: Option<String>,
    /// Only events of this type, e.g. user.role.changed.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Count what would be sent, send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Subcommand, Debug)]
pub enum ConsumerCommand {
    /// Create and bind `<name>.user-events` (with its retry and dead-letter queues) and backfill
    /// it with the whole stored history; live events follow.
    Add {
        /// Lower-case letters, digits and dashes.
        name: String,
        /// Under the least-privilege setup, the queues are declared as the administrator.
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiClientArgs,
    /// Redraw every SECONDS (2 when given without a value) until Ctrl-C.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
    /// Degraded when the oldest unpublished event has waited longer than this (seconds).
    #[arg(long, env = "STATUS_MAX_OUTBOX_AGE", default_value_t = 60)]
    pub max_outbox_age: u64,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    #[command(flatten)]
    pub api: ApiClientArgs,
    /// The user (id or email).
    #[arg(long)]
    pub user: String,
    /// Only events at or after this time (ISO-8601).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events of this type.
    #[arg(long = "type")]
    pub event_type: Option<String>,
}
