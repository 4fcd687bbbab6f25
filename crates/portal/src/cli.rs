//! Command-line definitions. Every setting can come from the environment (or the credentials
//! file `portal setup` writes, see [`crate::settings`]); `--help` lists the variable and its
//! default. Each command takes only the settings of the parts it runs: the groups are defined
//! next to each part (`auth_service::settings`, `user_service::settings`, …) and flattened here.

use appointment_service::settings::{AppointmentDbArgs, AppointmentServiceArgs};
use auth_service::settings::{
    AuthDbArgs, AuthServiceArgs, KeyDirArgs, RelayArgs, RelayHttpArgs, SeedArgs,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use consumer::settings::{ConsumerArgs, TrustArgs};
use contract::topology::{ConsumerQueues, USER_SERVICE};
use gateway::settings::GatewayArgs;
use ops::settings::OperatorArgs;
use platform::settings::{
    AuthLocationArgs, BrokerArgs, KeyRefreshArgs, Link, MetricsArgs, NetworkArgs, SetupStateArgs,
    TokenChecks, TokenLifetimeArgs,
};
use std::path::PathBuf;
use sync_admin::settings::SyncAdminArgs;
use user_service::settings::{UserDbArgs, UserServiceArgs};
use web::settings::WebArgs;

#[derive(Parser, Debug)]
#[command(
    name = "portal",
    version = platform::build::VERSION,
    about = "Clinical portal user synchronisation: auth-service → RabbitMQ → user-service",
    long_about = "Runs and operates the clinical portal's user synchronisation.\n\n\
        Users are written in the auth-service (auth_db) together with an outbox event; the relay \
        publishes the events to the RabbitMQ exchange user.events; the user-service applies them \
        to its copy (user_db) and serves the directory. The gateway is the single HTTP entry.\n\n\
        Settings come from flags, else the environment, else the credentials file \
        (PORTAL_CREDENTIALS, default .portal/credentials.env; `none` reads none), else their \
        defaults; each command's --help lists the settings it reads. \
        `portal config check` shows the effective settings of each part.\n\n\
        Exit codes: 0 success, 1 failure (verify: differences found), 2 a database or the broker \
        could not be reached, 64 a bad command line, setting or credentials file."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Set up least-privilege identities (as `portal setup`), prepare databases and topology,
    /// start auth-service (with relay), user-service, appointment-service, sync admin API,
    /// gateway and web portal in the foreground under those identities, seed an empty auth_db,
    /// backfill a new appointment_db, print the URLs and admin login.
    Up(Box<UpArgs>),
    /// Create (or bring back up to date) a PostgreSQL role per service, a migration role that
    /// owns the schemas, an operator role, a RabbitMQ user per component with only the rights it
    /// needs, migrate, declare the topology, and write the generated credentials to an
    /// owner-only file the other commands read. Idempotent; safe to run while others do.
    Setup(SetupArgs),
    /// Run the auth-service alone (with its outbox relay unless --no-relay).
    AuthService(AuthServiceCommand),
    /// Run the user-service alone (directory API and event consumer).
    UserService(UserServiceCommand),
    /// Run the appointment-service alone (appointment API and its own event consumer).
    AppointmentService(AppointmentServiceCommand),
    /// Run the web portal alone (it talks to the gateway at GATEWAY_URL).
    Web(WebCommand),
    /// Run the sync admin API alone (outbox, queues, dead letters, verify in the background,
    /// the scheduled reconcile), under the operator's identity; the gateway routes
    /// /api/v1/admin/sync to it.
    SyncAdmin(SyncAdminCommand),
    /// Run the gateway alone.
    Gateway(GatewayCommand),
    /// Run the outbox relay alone (several may run; rows are claimed with SKIP LOCKED), with
    /// /health/live, /health/ready and /metrics on RELAY_HTTP_HOST:RELAY_HTTP_PORT.
    Relay(RelayCommand),
    /// Create the 10 demo users through the auth-service's write path (idempotent).
    Seed(SeedCommand),
    /// Manage users through the admin API (a thin client for scripts and operators).
    #[command(subcommand)]
    Users(Box<UsersCommand>),
    /// Offboard a leaving clinician: deactivate them, wait until every required consumer
    /// confirms, then move (or cancel) their future appointments. Prints each step with its
    /// time; with --wait follows the saga to its end. Exit 0 completed (or started, without
    /// --wait), 1 needs attention, stalled or refused, 2 when the API cannot be reached.
    Offboard(Box<OffboardArgs>),
    /// SCIM provisioning: the bearer tokens a directory (Microsoft Entra ID, Okta) presents at
    /// the gateway's /scim/v2 to create, update and deactivate users (`portal scim token
    /// create|list|revoke`), through the admin API as an admin: PORTAL_TOKEN, or PORTAL_EMAIL
    /// and PORTAL_PASSWORD. Exit 0 done, 1 refused, 2 when the API cannot be reached.
    #[command(subcommand)]
    Scim(Box<ScimCommand>),
    /// Inspect and recover dead-lettered (or unrouted) messages.
    Dlq(DlqArgs),
    /// After an erasure (`portal users erase`): search every database and queue for the
    /// person's data (`verify`), remove their messages from the retry and dead-letter queues
    /// (`purge`).
    #[command(subcommand)]
    Erasure(ErasureCommand),
    /// Find users that differ between auth_db and any consumer's copy (user_db,
    /// appointment_db) and repair them by publishing one `user.snapshot` event per user through
    /// the normal pipeline; reports one line per service.
    Reconcile(ReconcileCommand),
    /// Publish stored events to ONE consumer's queue (not to every subscriber), with confirms.
    Replay(ReplayCommand),
    /// Manage consumer services of the user events.
    #[command(subcommand)]
    Consumer(ConsumerCommand),
    /// Show one user's audit trail (its stored events), oldest first.
    Events(EventsArgs),
    /// One screen for an operator: each part's readiness, the outbox backlog, each consumer's
    /// queue, dead letters and lag, the last verify (the sync admin API's figures, as an admin:
    /// PORTAL_TOKEN or PORTAL_EMAIL / PORTAL_PASSWORD). Exit 0 healthy, 1 degraded, 2 when the
    /// gateway or the sync admin API cannot be reached.
    Status(Box<StatusArgs>),
    /// Compare every user of auth_db with every registered consumer and report per consumer:
    /// the copies the operator reads (user_db, appointment_db) row by row, every other consumer
    /// (another team's database) by the versions its receipts confirmed (behind, unconfirmed);
    /// exit 0 all in sync, 1 on differences in any, 2 when a database cannot be reached.
    Verify(VerifyCommand),
    /// Where each database's schema stands against this binary's migrations
    /// (`portal migrate status`), for an operator before and after an upgrade.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Check the settings: each part's (or one part's) settings as it would read them now, from
    /// flags, environment and credentials file, with secrets redacted.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Ask one part whether it is ready, for containers and scripts: GET /health/ready where
    /// the part's own settings say it listens (AUTH_ADDR, USER_ADDR, APPOINTMENT_ADDR,
    /// SYNC_ADMIN_ADDR, GATEWAY_ADDR, WEB_HOST and WEB_PORT, RELAY_HTTP_HOST and
    /// RELAY_HTTP_PORT; 0.0.0.0 and :: are asked on loopback), and print one line: the URL and
    /// its answer. Exit 0 on a 2xx answer, 1 on any other answer or none, 64 on bad settings.
    Healthcheck(HealthcheckCommand),
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
    /// The first admin of an install (`portal admin bootstrap EMAIL`).
    #[command(subcommand)]
    Admin(AdminCommand),
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

impl Command {
    /// What a part run alone checks against the plaintext rule before it connects anywhere
    /// (`portal config check` says it beforehand): ALLOW_PLAINTEXT_NETWORK, and the URLs between
    /// the parts it connects with, the key set's too for the parts that check tokens. `None`
    /// for the commands that are not a part.
    pub fn links(&self) -> Option<(&NetworkArgs, Vec<Link>)> {
        let fallback = platform::settings::DEFAULT_AUTH_SERVICE_URL;
        let with_keys = |mut links: Vec<Link>, location: &AuthLocationArgs| {
            links.push(location.jwks_link(fallback));
            links
        };
        Some(match self {
            Command::AuthService(c) => (&c.network, c.links()),
            Command::Relay(c) => (&c.network, c.links()),
            Command::UserService(c) => (&c.network, with_keys(c.links(), &c.auth_location)),
            Command::AppointmentService(c) => (&c.network, with_keys(c.links(), &c.auth_location)),
            Command::SyncAdmin(c) => (&c.network, with_keys(c.links(), &c.auth_location)),
            Command::Gateway(c) => (&c.network, c.gateway.links(&c.auth_location)),
            Command::Web(c) => (&c.network, c.web.links()),
            _ => return None,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new signing key in JWT_KEY_DIR and retire the current one: running
    /// auth-services sign with the new key within 5 seconds; the old public key stays published
    /// for an hour, so tokens signed with it stay valid until they expire. Prints the new key id.
    Rotate(KeysRotateCommand),
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create the install's first admin, unless an admin has this email: prints a temporary
    /// password once, which signs in once, expires (TEMPORARY_PASSWORD_TTL) and must be changed
    /// at the first sign-in. Reads AUTH_DATABASE_URL and the auth-service's key directory
    /// (JWT_KEY_DIR; the auth-service creates it at its first start). On a server, as root:
    /// PORTAL_CREDENTIALS=/etc/portal/credentials JWT_KEY_DIR=/var/lib/portal/auth-service/keys.
    /// Demo staff come from `portal seed` instead.
    Bootstrap(AdminBootstrapCommand),
}

#[derive(Args, Debug)]
pub struct AdminBootstrapCommand {
    /// The admin's email (they sign in with it).
    pub email: String,
    /// How long the temporary password signs in.
    #[arg(long, env = "TEMPORARY_PASSWORD_TTL", default_value_t = platform::duration::Interval(auth_service::password::temporary::DEFAULT_TTL))]
    pub temporary_password_ttl: platform::duration::Interval,
    #[command(flatten)]
    pub keys: KeyDirArgs,
    #[command(flatten)]
    pub db: AuthDbArgs,
    #[command(flatten)]
    pub setup: SetupStateArgs,
}

#[derive(Args, Debug)]
pub struct KeysRotateCommand {
    #[command(flatten)]
    pub keys: KeyDirArgs,
}

/// The parts a system runs, by the name of the command that runs each alone.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    AuthService,
    UserService,
    AppointmentService,
    SyncAdmin,
    Gateway,
    Web,
    Relay,
}

impl Part {
    /// Every part, in the order `portal up` starts them (the relay last: it runs inside the
    /// auth-service there).
    pub const ALL: [Part; 7] = [
        Part::AuthService,
        Part::UserService,
        Part::AppointmentService,
        Part::SyncAdmin,
        Part::Gateway,
        Part::Web,
        Part::Relay,
    ];

    /// The `portal` subcommand that runs it, e.g. `auth-service`.
    pub fn command(self) -> &'static str {
        match self {
            Part::AuthService => "auth-service",
            Part::UserService => "user-service",
            Part::AppointmentService => "appointment-service",
            Part::SyncAdmin => "sync-admin",
            Part::Gateway => "gateway",
            Part::Web => "web",
            Part::Relay => "relay",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Read the settings of PART (or of every part) as `portal PART` would now, check each one
    /// and the credentials file, and print the effective configuration with each value's source
    /// and secrets redacted. Under the setup (MANAGED_BY_SETUP), a database or broker URL the
    /// environment sets in place of the identity the credentials file holds for the part is a
    /// problem too. Exit 0 when every setting is valid, 1 naming each bad one.
    Check {
        /// Only this part [default: every part].
        #[arg(value_enum)]
        part: Option<Part>,
        /// Also connect with each part's database and broker URLs and say who they log in as;
        /// under the setup, a PostgreSQL superuser or a RabbitMQ administrator is a problem.
        #[arg(long)]
        connect: bool,
    },
}

/// `portal healthcheck PART`: the part's readiness, where its own settings say it listens.
#[derive(Args, Debug)]
pub struct HealthcheckCommand {
    /// The part to ask.
    #[arg(value_enum)]
    pub part: Part,
    /// How long the part may take to answer (e.g. 3s, 500ms).
    #[arg(long, default_value = "3s", value_parser = platform::duration::parse_duration)]
    pub timeout: std::time::Duration,
}

/// `portal up`: every part's settings, each once.
#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Skip the setup: run the services with AUTH_DATABASE_URL, USER_DATABASE_URL and
    /// AMQP_URL as given (development with administrative credentials).
    #[arg(long)]
    pub no_setup: bool,
    #[command(flatten)]
    pub auth: AuthServiceSettings,
    #[command(flatten)]
    pub seed: SeedArgs,
    #[command(flatten)]
    pub user_db: UserDbArgs,
    #[command(flatten)]
    pub user: UserServiceArgs,
    #[command(flatten)]
    pub appointment_db: AppointmentDbArgs,
    #[command(flatten)]
    pub appointment: AppointmentServiceArgs,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    #[command(flatten)]
    pub sync_admin: SyncAdminArgs,
    #[command(flatten)]
    pub operator: OperatorArgs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub auth_location: AuthLocationArgs,
    #[command(flatten)]
    pub key_refresh: KeyRefreshArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl UpArgs {
    /// Every URL between the parts `portal up` runs that its settings give (the relay's and the
    /// consumers' brokers, the operator's, the gateway's upstreams and the web portal's
    /// gateway), for the plaintext rule. What it does not set is the part in the same process.
    pub fn links(&self) -> Vec<Link> {
        let broker = &self.auth.broker;
        let mut links = vec![
            self.auth.relay.broker_link(&broker.amqp_url),
            self.user.broker_link(broker),
            self.appointment.broker_link(broker),
            self.operator.broker_link(),
        ];
        links.extend(self.gateway.links(&self.auth_location));
        links.extend(self.web.links());
        links
    }

    /// How the parts `portal up` runs check tokens: TOKEN_TTL_SECONDS is the auth-service's own.
    pub fn token_checks(&self) -> TokenChecks<'_> {
        TokenChecks {
            location: &self.auth_location,
            lifetime: &self.auth.service.tokens,
            refresh: &self.key_refresh,
            network: &self.network,
        }
    }
}

/// The auth-service's settings with the relay's, the broker's and the setup state: what
/// `portal auth-service` reads, and `portal up` with the rest.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Settings (environment variable, default)")]
pub struct AuthServiceSettings {
    #[command(flatten)]
    pub db: AuthDbArgs,
    #[command(flatten)]
    pub service: AuthServiceArgs,
    #[command(flatten)]
    pub keys: KeyDirArgs,
    #[command(flatten)]
    pub relay: RelayArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub setup: SetupStateArgs,
}

impl AuthServiceSettings {
    pub fn into_config(&self, run_relay: bool) -> auth_service::Config {
        self.service.into_config(
            &self.db,
            &self.keys,
            &self.relay,
            &self.broker.amqp_url,
            self.setup.managed_by_setup,
            run_relay,
        )
    }
}

#[derive(Args, Debug)]
pub struct SetupArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Delete RabbitMQ's default user `guest` once every part has its own identity (an
    /// installed system); refused while ADMIN_AMQP_URL logs in as guest, which would lock the
    /// setup out. Off: a development machine keeps guest for its ADMIN_AMQP_URL.
    #[arg(long, env = "SETUP_DISABLE_GUEST")]
    pub setup_disable_guest: bool,
    /// Also write one credentials file per part, `<DIR>/<part>.env`, holding that part's
    /// identities only, owned by its OS user (PART_USER_PREFIX) and readable by it alone (an
    /// installed system: /etc/portal/credentials.d). Unset: the one file only.
    #[arg(long, env = "PART_CREDENTIALS_DIR")]
    pub part_credentials_dir: Option<PathBuf>,
    /// The OS users of the parts are this followed by the part's name (`portal-web`, ...), as
    /// the package creates them; used when the setup runs as root.
    #[arg(long, env = "PART_USER_PREFIX", default_value = "portal-")]
    pub part_user_prefix: String,
    #[command(flatten)]
    pub auth_db: AuthDbArgs,
    #[command(flatten)]
    pub user_db: UserDbArgs,
    #[command(flatten)]
    pub appointment_db: AppointmentDbArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

#[derive(Args, Debug)]
pub struct AuthServiceCommand {
    /// Do not run the outbox relay in this process (run `portal relay` separately).
    #[arg(long)]
    pub no_relay: bool,
    #[command(flatten)]
    pub settings: AuthServiceSettings,
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl AuthServiceCommand {
    /// The relay's broker, when it runs in this process.
    pub fn links(&self) -> Vec<Link> {
        let s = &self.settings;
        match self.no_relay {
            true => Vec::new(),
            false => vec![s.relay.broker_link(&s.broker.amqp_url)],
        }
    }
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Settings (environment variable, default)")]
pub struct UserServiceCommand {
    /// Serve the directory only; do not consume events.
    #[arg(long)]
    pub no_consumer: bool,
    #[command(flatten)]
    pub db: UserDbArgs,
    #[command(flatten)]
    pub service: UserServiceArgs,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub setup: SetupStateArgs,
    #[command(flatten)]
    pub auth_location: AuthLocationArgs,
    #[command(flatten)]
    pub tokens: TokenLifetimeArgs,
    #[command(flatten)]
    pub key_refresh: KeyRefreshArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Settings (environment variable, default)")]
pub struct AppointmentServiceCommand {
    #[command(flatten)]
    pub db: AppointmentDbArgs,
    #[command(flatten)]
    pub service: AppointmentServiceArgs,
    /// OUTBOX_KEEP_PUBLISHED_SECS, for its outbox (under `portal up`, the relay's group has it).
    #[command(flatten)]
    pub outbox: outbox::settings::OutboxArgs,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub setup: SetupStateArgs,
    #[command(flatten)]
    pub auth_location: AuthLocationArgs,
    #[command(flatten)]
    pub tokens: TokenLifetimeArgs,
    #[command(flatten)]
    pub key_refresh: KeyRefreshArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Settings (environment variable, default)")]
pub struct WebCommand {
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Settings (environment variable, default)")]
pub struct SyncAdminCommand {
    #[command(flatten)]
    pub sync_admin: SyncAdminArgs,
    #[command(flatten)]
    pub operator: OperatorArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Under the setup, the operator's identity is checked at start (no superuser in its place).
    #[command(flatten)]
    pub setup: SetupStateArgs,
    #[command(flatten)]
    pub auth_location: AuthLocationArgs,
    #[command(flatten)]
    pub tokens: TokenLifetimeArgs,
    #[command(flatten)]
    pub key_refresh: KeyRefreshArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl UserServiceCommand {
    /// The consumer's broker, unless --no-consumer (the key set's URL is checked with the
    /// token checks).
    pub fn links(&self) -> Vec<Link> {
        match self.no_consumer {
            true => Vec::new(),
            false => vec![self.service.broker_link(&self.broker)],
        }
    }

    /// How the part checks tokens: its own settings (each part run alone reads them).
    pub fn token_checks(&self) -> TokenChecks<'_> {
        TokenChecks {
            location: &self.auth_location,
            lifetime: &self.tokens,
            refresh: &self.key_refresh,
            network: &self.network,
        }
    }
}

impl AppointmentServiceCommand {
    /// The consumer's broker (the key set's URL is checked with the token checks).
    pub fn links(&self) -> Vec<Link> {
        vec![self.service.broker_link(&self.broker)]
    }

    /// How the part checks tokens: its own settings.
    pub fn token_checks(&self) -> TokenChecks<'_> {
        TokenChecks {
            location: &self.auth_location,
            lifetime: &self.tokens,
            refresh: &self.key_refresh,
            network: &self.network,
        }
    }
}

impl SyncAdminCommand {
    /// The operator's broker (queue depths, dead letters; the key set's URL is checked with
    /// the token checks).
    pub fn links(&self) -> Vec<Link> {
        vec![self.operator.broker_link()]
    }

    /// How the part checks tokens: its own settings.
    pub fn token_checks(&self) -> TokenChecks<'_> {
        TokenChecks {
            location: &self.auth_location,
            lifetime: &self.tokens,
            refresh: &self.key_refresh,
            network: &self.network,
        }
    }
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Settings (environment variable, default)")]
pub struct GatewayCommand {
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub auth_location: AuthLocationArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Settings (environment variable, default)")]
pub struct RelayCommand {
    #[command(flatten)]
    pub db: AuthDbArgs,
    #[command(flatten)]
    pub relay: RelayArgs,
    #[command(flatten)]
    pub http: RelayHttpArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub setup: SetupStateArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

impl RelayCommand {
    /// The relay's broker.
    pub fn links(&self) -> Vec<Link> {
        vec![self.relay.broker_link(&self.broker.amqp_url)]
    }
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Settings (environment variable, default)")]
pub struct SeedCommand {
    #[command(flatten)]
    pub db: AuthDbArgs,
    #[command(flatten)]
    pub seed: SeedArgs,
    #[command(flatten)]
    pub setup: SetupStateArgs,
}

#[derive(Args, Debug)]
pub struct VerifyCommand {
    /// Print at most this many differences per copy (all are counted).
    #[arg(long, default_value_t = 50)]
    pub max_listed: usize,
    #[command(flatten)]
    pub operator: OperatorArgs,
}

#[derive(Subcommand, Debug)]
pub enum MigrateCommand {
    /// For auth_db, user_db and appointment_db, read as the operator
    /// (OPERATOR_*_DATABASE_URL): the latest migration applied, this binary's migrations still
    /// pending (`portal setup` applies them, as the migration role), applied ones this binary
    /// does not know (the database is newer: a downgrade) and checksum mismatches. Exit 0 when
    /// all three are exactly at this binary's level, 1 when one is behind, newer or mismatched,
    /// 2 when a database cannot be reached, 64 on bad settings.
    Status(MigrateStatusCommand),
}

#[derive(Args, Debug)]
pub struct MigrateStatusCommand {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub operator: OperatorArgs,
}

#[derive(Args, Debug)]
pub struct ReconcileCommand {
    #[command(flatten)]
    pub args: ReconcileArgs,
    #[command(flatten)]
    pub operator: OperatorArgs,
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub setup: SetupStateArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

#[derive(Args, Debug)]
pub struct ReplayCommand {
    #[command(flatten)]
    pub args: ReplayArgs,
    #[command(flatten)]
    pub operator: OperatorArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

/// PostgreSQL as a development machine's administrator.
pub const DEFAULT_ADMIN_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The administrative credentials `portal setup` (and `portal up`, which runs it) creates the
/// identities with; nothing else uses them.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Setup (environment variable, default)")]
pub struct AdminArgs {
    /// PostgreSQL as a role that may create roles and databases (its value is never shown).
    #[arg(
        long,
        env = "ADMIN_DATABASE_URL",
        default_value = DEFAULT_ADMIN_DATABASE_URL,
        hide_env_values = true
    )]
    pub admin_database_url: String,
    /// RabbitMQ as an administrator, on the vhost to set up
    /// [default: amqp://guest:***@127.0.0.1:5672/%2f] (its value is never shown).
    #[arg(
        long,
        env = "ADMIN_AMQP_URL",
        default_value = platform::settings::DEFAULT_AMQP_URL,
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
    /// The auth-service's database (its event store, the users of record), created on the
    /// server of ADMIN_DATABASE_URL [default: AUTH_DATABASE_URL's database, else auth_db]. The
    /// parts then connect there under their own identities, whatever AUTH_DATABASE_URL says.
    #[arg(long, env = "AUTH_DATABASE_NAME")]
    pub auth_database_name: Option<String>,
    /// The user-service's database [default: USER_DATABASE_URL's database, else user_db].
    #[arg(long, env = "USER_DATABASE_NAME")]
    pub user_database_name: Option<String>,
    /// The appointment-service's database [default: APPOINTMENT_DATABASE_URL's database, else
    /// appointment_db].
    #[arg(long, env = "APPOINTMENT_DATABASE_NAME")]
    pub appointment_database_name: Option<String>,
    /// Where `portal setup` and `portal up` write the generated credentials (owner-only); `portal
    /// up` then runs the parts with them. Every other command reads PORTAL_CREDENTIALS.
    #[arg(
        long,
        env = "PORTAL_CREDENTIALS",
        default_value = ".portal/credentials.env"
    )]
    pub credentials: PathBuf,
}

impl AdminArgs {
    /// The administrative broker URL and the management API, for the plaintext rule: both
    /// carry the administrator's password.
    pub fn links(&self) -> Vec<Link> {
        vec![
            Link::amqp("ADMIN_AMQP_URL", self.admin_amqp_url.as_str()),
            Link::http("RABBITMQ_MANAGEMENT_URL", self.management_url.as_str()),
        ]
    }
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
    /// PORTAL_URL carries an admin's password or token: `https://`, or this machine.
    #[command(flatten)]
    pub network: NetworkArgs,
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
    /// Erase a deactivated person's personal data (UK GDPR art. 17), then purge their messages
    /// from the queues.
    ///
    /// Through the admin API: the person's record keeps only their id, role and dates, with
    /// placeholders for their email, names and phone; their stored events are redacted and a
    /// `user.erased` event tells every copy to forget them (appointments stay, under "former
    /// clinician"). Refused for an active person or a running offboarding; erasing twice shows
    /// the first erasure. Then, as the operator (`portal erasure purge`), their messages leave
    /// every retry and dead-letter queue. Asks for confirmation on a terminal; without a
    /// terminal (a script) it needs --yes (exit 64 otherwise). Cannot be undone. Check the
    /// result with `portal erasure verify USER_ID`.
    Erase {
        #[command(flatten)]
        api: ApiClientArgs,
        /// The person (id or email).
        user: UserRef,
        /// Why (1 to 500 characters, kept with the erasure record: no personal data, e.g.
        /// "erasure request of 2026-12-01, ticket 4711").
        #[arg(long)]
        reason: String,
        /// Erase without asking.
        #[arg(long)]
        yes: bool,
        /// The operator's auth_db and broker, for the purge of the queues.
        #[command(flatten, next_help_heading = "Operator (the purge of the queues)")]
        operator: OperatorArgs,
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

#[derive(Subcommand, Debug)]
pub enum ScimCommand {
    /// The bearer tokens SCIM clients present: create one per directory, list them, revoke one.
    #[command(subcommand)]
    Token(ScimTokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum ScimTokenCommand {
    /// Create a token for one directory and print its secret, once.
    ///
    /// The secret goes alone on stdout, so `TOKEN=$(portal scim token create NAME --quiet)`
    /// captures it; stderr says where to paste it: the directory's SCIM "Secret Token" field
    /// (Microsoft Entra ID) or "API token" (Okta), with the tenant URL PORTAL_URL/scim/v2 (or
    /// the gateway's address as the directory reaches it, followed by /scim/v2). The portal keeps
    /// only a hash: the secret cannot be shown again; if it is lost, revoke the token and create
    /// another. Exit 1 when a token not revoked has that name already.
    #[command(
        after_help = "Examples:\n  portal scim token create entra-production\n  \
                      TOKEN=$(portal scim token create okta --quiet)"
    )]
    Create {
        /// Who holds the token, e.g. entra-production: 1 to 100 characters, unique among the
        /// tokens not revoked; every request it authenticates is logged under it.
        name: String,
        /// Print only the secret (no explanation on stderr), for scripts.
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        api: ApiClientArgs,
    },
    /// List every token: name, id, created, last used, revoked.
    ///
    /// Newest first, revoked ones included; last used is kept to the minute. Never a secret:
    /// none is kept.
    List {
        #[command(flatten)]
        api: ApiClientArgs,
    },
    /// Revoke a token by name or id: the directory holding it is refused from then on.
    ///
    /// A name means the token not revoked of that name. Revoking a token already revoked
    /// changes nothing (exit 0); exit 1 when no token has that name or id.
    Revoke {
        /// The token not revoked of this name, or a token's id (`portal scim token list` shows
        /// both).
        #[arg(value_name = "NAME_OR_ID")]
        name_or_id: String,
        #[command(flatten)]
        api: ApiClientArgs,
    },
}

#[derive(Args, Debug)]
pub struct DlqArgs {
    /// The queue to work on: a consumer's dead-letter queue, or `user.events.unrouted`.
    #[arg(long, default_value_t = ConsumerQueues::for_consumer(USER_SERVICE).dead_letter)]
    pub queue: String,
    #[command(flatten)]
    pub operator: OperatorArgs,
    /// Whom the consumers trust: a message first published by anyone else is never requeued.
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
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
    /// is now valid, with a fresh retry budget), an unrouted event to the exchange. An untrusted
    /// publisher's message (set aside as untrusted-publisher, or first published by a broker
    /// user the consumers do not trust now) is never sent back: it stays, and can only be
    /// discarded. Exit 1 when a message was kept back (`--all` requeues the others first and
    /// lists what it kept back and why).
    Requeue {
        /// Position in `list`; omit with --all.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        n: Option<usize>,
        /// Every message in the queue.
        #[arg(long)]
        all: bool,
    },
    /// Drop messages for good: the one way an untrusted publisher's message, which `requeue`
    /// never sends back, leaves the queue. Logged (target "security": who, which queue, how
    /// many, their positions, message ids and publishers); the other messages stay, in order.
    Discard {
        /// Position in `list`; omit with --untrusted.
        #[arg(required_unless_present = "untrusted", conflicts_with = "untrusted")]
        n: Option<usize>,
        /// Every untrusted publisher's message (those `list` says can only be discarded).
        #[arg(long)]
        untrusted: bool,
    },
    /// Drop every message in the queue.
    Purge {
        /// Really drop them (without it, only the count is shown).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ErasureCommand {
    /// Search every database and queue for an erased person's email, names and phone.
    ///
    /// Reads the erasure's fingerprints from auth_db (keyed hashes: the data itself is not
    /// kept) and searches, as the operator: every row of every table (all schemas but the
    /// catalogs, each row as text, json and arrays included) of auth_db, user_db and
    /// appointment_db, of each --database, or with --all-databases of every database on
    /// auth_db's server the operator may connect to; then every message (body and headers) of
    /// every registered consumer's queue, retry queues and dead-letter queue and of
    /// user.events.unrouted, each left in place and in order. Prints each hit
    /// (`db.schema.table (ctid …): email, name`, `queue Q message N (message-id …): phone`),
    /// what the operator's role could not read (not searched), and a final line. It cannot see
    /// backups, the servers' logs, WAL, or the messages a running consumer holds in flight.
    /// Exit 0 no hit, 1 hits, 2 a database or the broker out of reach (and no hit elsewhere),
    /// 64 the user is not erased.
    Verify(ErasureVerifyArgs),
    /// Remove an erased person's messages from every registered consumer's retry and
    /// dead-letter queues and from user.events.unrouted.
    ///
    /// A message is theirs when its body's payload.userId is their id; every other message
    /// stays, in its order, and so do a body that cannot be decoded and a tombstone
    /// (user.erased) that holds none of their data. One security log line per queue (who, how
    /// many). Records the time in auth_db (erasures.queues_purged_at) when every queue was
    /// purged. `portal users erase` runs it after the erasure. Exit 0 done, 1 a queue could not
    /// be purged, 2 auth_db or the broker out of reach, 64 the user is not erased.
    Purge(ErasurePurgeArgs),
}

#[derive(Args, Debug)]
pub struct ErasureVerifyArgs {
    /// The erased person's id.
    pub user_id: uuid::Uuid,
    /// Also search this database (a PostgreSQL URL, e.g. a reporting copy's); repeatable.
    #[arg(long = "database", value_name = "URL")]
    pub databases: Vec<String>,
    /// Search every database on auth_db's server that the operator's role may connect to,
    /// instead of auth_db, user_db and appointment_db (--database adds others).
    #[arg(long)]
    pub all_databases: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub operator: OperatorArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
}

#[derive(Args, Debug)]
pub struct ErasurePurgeArgs {
    /// The erased person's id.
    pub user_id: uuid::Uuid,
    #[command(flatten)]
    pub operator: OperatorArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
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
    /// Add a consumer: its own broker user with only its rights, its queues, its registration
    /// and the whole stored history.
    ///
    /// Its broker user may read its queue, write through its set-aside exchange to its retry
    /// and dead-letter queues and to portal.control with the key receipt.<name> only, and
    /// configure nothing. Its queue `<name>.user-events` is bound to user.#, with its retry and
    /// dead-letter queues. Registered, its receipts are believed from that broker user only,
    /// and every operator view and the offboarding saga know it. Then the backfill: every
    /// stored event and the end-of-history mark; live events follow.
    ///
    /// Under the least-privilege setup (MANAGED_BY_SETUP, as `portal setup` and `portal up` leave
    /// it), the broker user is `<prefix><name>` (portal-<name>), made with a generated password
    /// that is shown ONCE: printed on stdout as the consumer's settings (CONSUMER_NAME, AMQP_URL with
    /// the password, TRUSTED_PUBLISHERS), or with --credentials-file written to that file
    /// (owner-only, 0600) and not printed. Nothing else keeps it and it is never logged. Run
    /// again, it keeps the user's password (shows none, leaves the file as it is) and sets its
    /// rights, queues and registration again; --new-password replaces the password (the
    /// consumer must then be given the new settings). With --broker-user, a broker user that
    /// exists already is registered instead, and left as it is (no user, password or rights are
    /// made: the command prints the rights it needs). Needs ADMIN_AMQP_URL and
    /// RABBITMQ_MANAGEMENT_URL (an administrator) to make the user. Without the setup (every part
    /// under one broker user) no broker user is made, and `<prefix><name>` is registered.
    Add {
        /// Lower-case letters, digits and dashes.
        name: String,
        /// Shown with its receipts, but an offboarding does not wait for it (default: required,
        /// an offboarding waits until it confirms).
        #[arg(long)]
        optional: bool,
        /// An existing broker user it consumes and sends its receipts as, made and managed
        /// elsewhere: registered, never created, changed or removed here.
        #[arg(long, conflicts_with_all = ["new_password", "credentials_file"])]
        broker_user: Option<String>,
        /// Give its broker user a new password (shown once, or written to --credentials-file).
        #[arg(long)]
        new_password: bool,
        /// Write the consumer's settings (CONSUMER_NAME, AMQP_URL with the new password,
        /// TRUSTED_PUBLISHERS) to this file, owner-only (0600), instead of printing them.
        #[arg(long, value_name = "PATH")]
        credentials_file: Option<PathBuf>,
        #[command(flatten)]
        prefix: BrokerUserPrefixArgs,
        /// Whom the consumer must trust besides the system's own publishers and the operator's
        /// broker user (its backfill): written into its settings.
        #[command(flatten)]
        trust: TrustArgs,
        /// The administrator: makes the broker user and its rights, and under the
        /// least-privilege setup declares the queues.
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        operator: OperatorArgs,
        #[command(flatten)]
        setup: SetupStateArgs,
        #[command(flatten)]
        network: NetworkArgs,
    },
    /// List the registered consumers: name, required or optional, broker user.
    List {
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Remove a consumer: unregister it (its receipts go) and, under the least-privilege setup,
    /// delete the broker user `portal consumer add` made for it (`<prefix><name>`; a broker user
    /// it was registered with by --broker-user is left as it is, and so are the setup's own
    /// consumers' identities). Its queues stay on the broker, with what they hold.
    Remove {
        name: String,
        #[command(flatten)]
        prefix: BrokerUserPrefixArgs,
        /// The administrator, who deletes the broker user.
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        operator: OperatorArgs,
        #[command(flatten)]
        setup: SetupStateArgs,
        #[command(flatten)]
        network: NetworkArgs,
    },
}

/// How the broker users `portal consumer add` makes are named.
#[derive(Args, Debug, Clone)]
pub struct BrokerUserPrefixArgs {
    /// The broker user `portal consumer add` makes for a consumer is this prefix and its name
    /// (brokers shared by several installs, tests).
    #[arg(long, env = "CONSUMER_BROKER_USER_PREFIX", default_value = ops::consumer::DEFAULT_PREFIX)]
    pub broker_user_prefix: String,
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
    /// Where the parts are: as the gateway reaches them.
    #[command(flatten)]
    pub gateway: GatewayArgs,
    #[command(flatten)]
    pub auth_location: AuthLocationArgs,
    #[command(flatten)]
    pub web: WebArgs,
}

#[derive(Args, Debug)]
pub struct OffboardArgs {
    #[command(flatten)]
    pub api: ApiClientArgs,
    /// The person (id or email).
    pub user: UserRef,
    /// What becomes of their future appointments: reassign (to another active doctor free at
    /// that time, else cancelled) or cancel.
    #[arg(long)]
    pub policy: contract::control::AppointmentPolicy,
    /// Why they leave (kept with the offboarding and named in cancellation events).
    #[arg(long)]
    pub reason: String,
    /// Follow the offboarding until it completes, needs attention or stalls.
    #[arg(long)]
    pub wait: bool,
    /// With --wait, give up following after this long (the offboarding goes on) (e.g. 2m).
    #[arg(long, default_value = "5m")]
    pub wait_limit: platform::duration::Interval,
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
