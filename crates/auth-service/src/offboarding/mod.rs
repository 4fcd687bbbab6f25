//! The offboarding saga: takes a leaving person out of every system and every future
//! appointment, and proves it.
//!
//! ```text
//!  POST …/offboarding ─▶ [deactivate + saga row, one transaction]
//!                              │
//!                              ▼
//!                     awaiting-receipts ──(timeout: snapshot sent again to each late
//!                        │     ▲  │        consumer, up to `resends` times; then *stalled*,
//!                        │     └──┘        still waiting, re-sending now and then)
//!     cancel ◀───────────┤ every required consumer confirmed the deactivating version
//!  (reactivate,          ▼
//!   flags cleared) resolving-appointments ──(timeout: the same command again; then *stalled*)
//!                        │ the appointment-service's reply
//!                        ▼
//!              completed │ needs-attention (some patients' appointments no doctor could take)
//! ```
//!
//! - [`store`]: the saga's rows: start (one running saga per person: a second request answers
//!   the running one), every transition under optimistic concurrency (the row's `version`),
//!   the history of steps, views, cancellation, pruning past retention.
//! - [`runner`]: the timer: due sagas claimed `FOR UPDATE SKIP LOCKED` (several auth-service
//!   replicas share the work), each advanced in a transaction of its own; receipts and replies
//!   bring a saga's turn forward.
//!
//! Commands and re-sent snapshots leave through `auth_db.message_outbox`, written in the
//! transaction of the step that sends them, and published by the shared relay. The reply is
//! handled once per message id (`processed_messages`). Compensation (cancelling) is possible
//! only before the command is sent: from then on appointments may change, and the saga only
//! moves forward.

pub mod runner;
pub mod store;

use contract::api::OffboardingState;
use std::time::Duration;

/// How the saga waits.
#[derive(Debug, Clone)]
pub struct OffboardingConfig {
    /// How long to wait for the receipts (or the reply) before sending again.
    pub timeout: Duration,
    /// How many times to send again before the saga shows as stalled.
    pub resends: u32,
    /// While stalled, how often to look again and send once more.
    pub stalled_every: Duration,
    /// How often the runner looks for due sagas when nothing woke it.
    pub poll: Duration,
    /// Finished sagas and their steps are deleted this long after they ended.
    pub retention: Duration,
}

impl OffboardingConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_RESENDS: u32 = 3;
    pub const DEFAULT_STALLED_EVERY: Duration = Duration::from_secs(60);
    pub const DEFAULT_RETENTION_DAYS: u64 = 365;
}

impl Default for OffboardingConfig {
    fn default() -> Self {
        Self {
            timeout: Self::DEFAULT_TIMEOUT,
            resends: Self::DEFAULT_RESENDS,
            stalled_every: Self::DEFAULT_STALLED_EVERY,
            poll: Duration::from_millis(250),
            retention: Duration::from_secs(Self::DEFAULT_RETENTION_DAYS * 86_400),
        }
    }
}

/// The stored name of a state.
pub fn stored(state: OffboardingState) -> &'static str {
    match state {
        OffboardingState::AwaitingReceipts => "awaiting_receipts",
        OffboardingState::ResolvingAppointments => "resolving_appointments",
        OffboardingState::Completed => "completed",
        OffboardingState::NeedsAttention => "needs_attention",
        OffboardingState::Cancelled => "cancelled",
    }
}

/// A state from its stored name.
pub fn parse_stored(s: &str) -> Option<OffboardingState> {
    [
        OffboardingState::AwaitingReceipts,
        OffboardingState::ResolvingAppointments,
        OffboardingState::Completed,
        OffboardingState::NeedsAttention,
        OffboardingState::Cancelled,
    ]
    .into_iter()
    .find(|state| stored(*state) == s)
}

/// What the runner does with a due saga that still waits (the pure rule; [`runner`] does it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// What it waits for has arrived: take the next step.
    Proceed,
    /// Not yet, and not timed out: look again at the deadline.
    KeepWaiting,
    /// Timed out: send again (try `attempt` of the allowed re-sends).
    SendAgain { attempt: u32 },
    /// Timed out after every re-send: show as stalled (once), keep waiting and sending now and
    /// then.
    Stall { first_time: bool },
}

/// The rule: `arrived` when nothing is missing; otherwise before the deadline wait, after it
/// send again until `resends` are spent, then stall.
pub fn decide(arrived: bool, timed_out: bool, attempts: u32, resends: u32, stalled: bool) -> Wait {
    match (arrived, timed_out) {
        (true, _) => Wait::Proceed,
        (false, false) => Wait::KeepWaiting,
        (false, true) if attempts < resends => Wait::SendAgain {
            attempt: attempts + 1,
        },
        (false, true) => Wait::Stall {
            first_time: !stalled,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saga_sends_again_then_stalls_and_proceeds_whenever_the_answer_comes() {
        assert_eq!(decide(true, true, 9, 3, true), Wait::Proceed);
        assert_eq!(decide(false, false, 0, 3, false), Wait::KeepWaiting);
        assert_eq!(
            decide(false, true, 0, 3, false),
            Wait::SendAgain { attempt: 1 }
        );
        assert_eq!(
            decide(false, true, 2, 3, false),
            Wait::SendAgain { attempt: 3 }
        );
        assert_eq!(
            decide(false, true, 3, 3, false),
            Wait::Stall { first_time: true }
        );
        assert_eq!(
            decide(false, true, 3, 3, true),
            Wait::Stall { first_time: false }
        );
    }

    #[test]
    fn stored_names_round_trip() {
        for state in [
            OffboardingState::AwaitingReceipts,
            OffboardingState::ResolvingAppointments,
            OffboardingState::Completed,
            OffboardingState::NeedsAttention,
            OffboardingState::Cancelled,
        ] {
            assert_eq!(parse_stored(stored(state)), Some(state));
        }
        assert_eq!(parse_stored("running"), None);
    }
}
