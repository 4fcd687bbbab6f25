//! The flags of `portal-chaos` (`portal chaos`), and how the short (CI) and long forms resolve
//! from them.

use clap::Parser;
use platform::duration::parse_duration;
use std::time::Duration;

/// Operations and spread of the default, short form: what CI runs in about two minutes.
pub const SHORT_OPERATIONS: u64 = 20_000;
pub const SHORT_DURATION: Duration = Duration::from_secs(90);
/// The long form selected by `--long`.
pub const LONG_OPERATIONS: u64 = 100_000;
pub const LONG_DURATION: Duration = Duration::from_secs(600);

#[derive(Parser, Debug, Clone)]
#[command(
    name = "portal-chaos",
    version = platform::build::VERSION,
    about = "The chaos run: faults under load, then verify (also run as `portal chaos`)",
    after_long_help = "Drives a mixed load of user operations (creates and lifecycle changes) through \
        the auth-service's admin API while, at random intervals, it kill -9s and restarts the \
        user-service and the outbox relay, closes every broker connection of its vhost and \
        terminates the user_db backends; it also publishes malformed messages to the \
        user-service's queue. Then it waits for quiescence (no unpublished outbox row, queue \
        empty), compares the databases with `verify` and prints one summary line. It passes only \
        when verify finds 0 differences and every malformed message was dead-lettered.\n\n\
        Everything runs isolated: its own databases chaos_<id>_auth and chaos_<id>_user on the \
        server of AUTH_DATABASE_URL, its own vhost chaos-<id> on the broker of AMQP_URL (created \
        through the management API with AMQP_URL's credentials), its own key pair, and the \
        services as child processes of the `portal` binary beside this one (or PORTAL_BIN) on free \
        ports. All of it is removed at the \
        end, also on failure or Ctrl-C (unless --keep).\n\n\
        Default: the short form CI runs (20,000 operations spread over 90 s, about 2 minutes in \
        all). --long: 100,000 operations over 10 minutes. Exit codes: 0 PASS, 1 FAIL, 2 \
        PostgreSQL or RabbitMQ could not be reached."
)]
pub struct ChaosArgs {
    /// User operations the auth-service must accept (2xx) [default: 20000, 100000 with --long].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub operations: Option<u64>,
    /// Spread the operations evenly over this long, e.g. 90s, 10m [default: 90s, 10m with
    /// --long]. When the system cannot keep that pace the load runs flat out and takes longer.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The long form: 100,000 operations over 10 minutes (--operations / --duration still win).
    #[arg(long)]
    pub long: bool,
    /// Concurrent HTTP clients driving the load.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Share of operations that create a user, in percent; the rest edit a profile, activate,
    /// deactivate or change a role (creates hash a password, so they cost far more CPU).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub create_percent: u8,
    /// Malformed messages to publish straight to the user-service's queue during the run.
    #[arg(long, default_value_t = 300)]
    pub malformed: u64,
    /// Shortest wait between two fault injections.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub min_fault_interval: Duration,
    /// Longest wait between two fault injections (each wait is uniform in [min, max]).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub max_fault_interval: Duration,
    /// Longest time a killed user-service or relay stays down before it is restarted (uniform
    /// in [0, this]).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub max_downtime: Duration,
    /// How long to wait at the end for the outbox and the queue to drain.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub quiescence_timeout: Duration,
    /// Delete one random user_db row behind the system's back right before the final check:
    /// verify must then report the drift and the run FAILs (exit 1). Shows the run can fail.
    #[arg(long)]
    pub inject_drift: bool,
    /// Seed of the random choices (fault schedule, operation mix) [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the databases, the vhost and the logs afterwards, for inspection.
    #[arg(long)]
    pub keep: bool,
    /// The relays it starts batch as `portal relay` does with these.
    #[command(
        flatten,
        next_help_heading = "Relay and consumer (environment variable, default)"
    )]
    pub relay: auth_service::settings::RelayTuningArgs,
    /// The user-services it starts take their events as `portal user-service` does with these.
    #[command(flatten)]
    pub consumer: consumer::settings::ConsumerTuningArgs,
    #[command(flatten)]
    pub servers: sandbox::ServerArgs,
}

impl ChaosArgs {
    pub fn operations(&self) -> u64 {
        self.operations.unwrap_or(if self.long {
            LONG_OPERATIONS
        } else {
            SHORT_OPERATIONS
        })
    }

    pub fn duration(&self) -> Duration {
        self.duration.unwrap_or(if self.long {
            LONG_DURATION
        } else {
            SHORT_DURATION
        })
    }

    /// How long the load may take before the run gives up: a system that falls far behind the
    /// planned pace is a finding, not something to wait for indefinitely.
    pub fn load_deadline(&self) -> Duration {
        self.duration() * 3 + Duration::from_secs(60)
    }
}
