//! The flags of `portal-chaos` (`portal chaos`) and of its `offboarding` mode, and how the
//! short (CI) and long forms of each resolve from them.

use clap::{Args, Parser, Subcommand};
use platform::duration::{parse_duration, parse_interval};
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
        PostgreSQL or RabbitMQ could not be reached.\n\n\
        `portal-chaos offboarding` is the offboarding saga's fault run (see its --help).",
    args_conflicts_with_subcommands = true
)]
pub struct ChaosArgs {
    /// Another run than the user-synchronisation one.
    #[command(subcommand)]
    pub mode: Option<Mode>,
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

/// The runs besides the default one.
#[derive(Subcommand, Debug, Clone)]
pub enum Mode {
    /// The offboarding saga under kill -9 of every part: every saga must end completed or
    /// needs-attention, no appointment resolved or announced twice, every copy in sync.
    Offboarding(OffboardingArgs),
}

/// Offboardings of the short (CI) form of `portal-chaos offboarding`, and their spread.
pub const SHORT_OFFBOARDINGS: u32 = 200;
pub const SHORT_OFFBOARDING_DURATION: Duration = Duration::from_secs(45);
/// Staying doctors (those appointments can move to) of the short form.
pub const SHORT_STAYING_DOCTORS: u32 = 20;
/// The long form selected by `offboarding --long`: more offboardings, more and denser faults.
pub const LONG_OFFBOARDINGS: u32 = 1_000;
pub const LONG_OFFBOARDING_DURATION: Duration = Duration::from_secs(300);
pub const LONG_STAYING_DOCTORS: u32 = 60;

#[derive(Args, Debug, Clone)]
#[command(
    after_long_help = "Creates the leaving doctors and a few staying ones in the auth-service's \
        store, registers the user-service and the appointment-service as required consumers, \
        backfills the appointment-service and books two future appointments for every leaving \
        doctor (09:00 and 09:30 of one day, so no leaving doctor still active is ever free at a \
        time another one's appointment needs a doctor); the staying doctors are free at 09:00, \
        half of them booked at 09:30. Then it starts the offboardings over the admin API, spread \
        over the duration, mixing the policies reassign and cancel, while at random intervals it \
        kill -9s a random part (auth-service with its saga, the user-event relay, the \
        user-service, the appointment-service) and restarts it after a random downtime; the \
        first fault keeps the appointment-service down past the time a saga waits before it \
        shows as stalled, so sagas visibly stall. The auth-service runs with short saga timers (--offboarding-timeout, \
        --offboarding-resends). Requests refused while the auth-service is down are retried.\n\n\
        Afterwards, with every part running again, it waits for every saga to finish and the \
        system to come to rest, then checks: every saga completed or needs-attention (those \
        stalled on the way are counted); at most one result per appointment in \
        appointment_db's command_results and every leaving doctor's appointment resolved; one \
        appointment event per resolved appointment (a queue of the run's own bound to \
        appointment.events records them; copies of one event, same eventId, are counted, not \
        failed), never two events for one (appointmentId, appointmentVersion) nor a reassigned \
        and a cancelled event for one appointment; each saga's outcome as appointment_db holds \
        it; appointment_db's outbox published; no dead letters; verify of both copies: 0 \
        differences.\n\n\
        Default: the short form CI runs (200 offboardings over 45 s, faults every 2-5 s). \
        --long: 1,000 offboardings over 5 minutes, faults every 1-4 s. --inject-duplicate writes \
        a second event for one resolved appointment into appointment_db's outbox before the \
        check: the run must then FAIL. Exit codes: 0 PASS, 1 FAIL, 2 PostgreSQL or RabbitMQ \
        could not be reached."
)]
pub struct OffboardingArgs {
    /// Doctors to offboard [default: 200, 1000 with --long].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub offboardings: Option<u32>,
    /// Doctors who stay: the ones appointments can be reassigned to [default: 20, 60 with
    /// --long].
    #[arg(long, value_parser = clap::value_parser!(u32).range(2..=10_000))]
    pub staying_doctors: Option<u32>,
    /// Spread the offboardings evenly over this long [default: 45s, 5m with --long].
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The long form: 1,000 offboardings over 5 minutes, faults every 1 to 4 s.
    #[arg(long)]
    pub long: bool,
    /// Share of the offboardings whose policy is `reassign`, in percent; the rest `cancel`.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub reassign_percent: u8,
    /// Shortest wait between two kills [default: 2s, 1s with --long].
    #[arg(long, value_parser = parse_duration)]
    pub min_fault_interval: Option<Duration>,
    /// Longest wait between two kills [default: 5s, 4s with --long].
    #[arg(long, value_parser = parse_duration)]
    pub max_fault_interval: Option<Duration>,
    /// Longest time a killed part stays down before it is restarted (uniform in [0, this]).
    /// The first fault keeps the appointment-service down this long, or 2 s longer than a saga
    /// waits before it stalls (timeout × (re-sends + 1)) if that is longer.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    pub max_downtime: Duration,
    /// The auth-service's OFFBOARDING_TIMEOUT: how long a saga waits for receipts or the reply
    /// before sending again.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    pub offboarding_timeout: Duration,
    /// The auth-service's OFFBOARDING_RESENDS: re-sends before a saga shows as stalled.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub offboarding_resends: u32,
    /// How long to wait, once the faults stopped, for every saga to finish (a stalled saga
    /// sends again only every 60 s).
    #[arg(long, default_value = "150s", value_parser = parse_duration)]
    pub settle_timeout: Duration,
    /// How long to wait then for the outboxes and the queues to drain.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub quiescence_timeout: Duration,
    /// Write a second event for one resolved appointment into appointment_db's outbox before
    /// the check, as a saga that resolved it twice would: the run must then FAIL (exit 1).
    #[arg(long)]
    pub inject_duplicate: bool,
    /// Seed of the random choices (policies, fault schedule) [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the databases, the vhost and the logs afterwards, for inspection.
    #[arg(long)]
    pub keep: bool,
    #[command(flatten)]
    pub servers: sandbox::ServerArgs,
}

impl OffboardingArgs {
    pub fn offboardings(&self) -> u32 {
        self.offboardings.unwrap_or(if self.long {
            LONG_OFFBOARDINGS
        } else {
            SHORT_OFFBOARDINGS
        })
    }

    pub fn staying_doctors(&self) -> u32 {
        self.staying_doctors.unwrap_or(if self.long {
            LONG_STAYING_DOCTORS
        } else {
            SHORT_STAYING_DOCTORS
        })
    }

    pub fn duration(&self) -> Duration {
        self.duration.unwrap_or(if self.long {
            LONG_OFFBOARDING_DURATION
        } else {
            SHORT_OFFBOARDING_DURATION
        })
    }

    pub fn min_fault_interval(&self) -> Duration {
        self.min_fault_interval
            .unwrap_or(Duration::from_secs(if self.long { 1 } else { 2 }))
    }

    pub fn max_fault_interval(&self) -> Duration {
        self.max_fault_interval
            .unwrap_or(Duration::from_secs(if self.long { 4 } else { 5 }))
    }

    /// How long a saga waits for an answer before it shows as stalled: the first timeout and
    /// each re-send's.
    pub fn stall_after(&self) -> Duration {
        self.offboarding_timeout
            .saturating_mul(self.offboarding_resends.saturating_add(1))
    }

    /// How long the first fault keeps the appointment-service down: past [`Self::stall_after`],
    /// so the sagas waiting for it stall visibly before it returns.
    pub fn first_outage(&self) -> Duration {
        self.max_downtime
            .max(self.stall_after() + Duration::from_secs(2))
    }

    /// How long the offboardings may take to be started (all of them accepted) before the run
    /// gives up: refusals are retried, but not forever.
    pub fn start_deadline(&self) -> Duration {
        self.duration() * 2 + Duration::from_secs(60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> ChaosArgs {
        ChaosArgs::try_parse_from(std::iter::once("portal-chaos").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn the_offboarding_mode_has_a_short_and_a_long_form() {
        assert!(parse(&[]).mode.is_none());
        let Some(Mode::Offboarding(short)) = parse(&["offboarding"]).mode else {
            panic!("offboarding mode")
        };
        assert_eq!(short.offboardings(), SHORT_OFFBOARDINGS);
        assert_eq!(short.duration(), SHORT_OFFBOARDING_DURATION);
        assert_eq!(short.min_fault_interval(), Duration::from_secs(2));
        assert_eq!(short.stall_after(), Duration::from_secs(3));
        assert_eq!(short.first_outage(), Duration::from_secs(5));
        let Some(Mode::Offboarding(long)) = parse(&["offboarding", "--long"]).mode else {
            panic!("offboarding mode")
        };
        assert_eq!(long.offboardings(), LONG_OFFBOARDINGS);
        assert_eq!(long.staying_doctors(), LONG_STAYING_DOCTORS);
        assert!(long.max_fault_interval() < short.max_fault_interval());
        let Some(Mode::Offboarding(custom)) =
            parse(&["offboarding", "--long", "--offboardings", "7"]).mode
        else {
            panic!("offboarding mode")
        };
        assert_eq!(custom.offboardings(), 7);
        // The user-synchronisation run's flags are not the offboarding run's.
        assert!(
            ChaosArgs::try_parse_from(["portal-chaos", "--operations", "5", "offboarding"])
                .is_err()
        );
    }
}
