//! When the relay claims again: the pure pacing rule behind its loop, kept apart so it can be
//! tested without a database.
//!
//! While events flow the relay claims again as soon as a batch is done, and after an empty
//! claim it polls with short, growing pauses; writers are told not to notify (the
//! `relay_wakeup` flag is false), which keeps `NOTIFY` — a lock every notifying commit takes in
//! turn — off their commit path. After [`IDLE_AFTER`] of empty claims the relay declares itself
//! waiting, claims once more (to find what committed before the flag did), and then sleeps until
//! a notification or its fallback poll.

use std::time::Duration;

/// Empty claims for this long (summed pauses) and the relay goes back to sleeping on
/// notifications.
pub const IDLE_AFTER: Duration = Duration::from_millis(50);
/// The first pause after an empty claim while flowing; each following one doubles, up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(1);
/// The longest pause while flowing: what an event arriving in a lull may wait at most.
pub const MAX_PAUSE: Duration = Duration::from_millis(4);

/// What the relay does after a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Claim again at once.
    Claim,
    /// Events flow again after a sleep: set `relay_wakeup.waiting` to false, then claim.
    DeclareFlowing,
    /// Claim again after this pause (polling while events flow).
    Pause(Duration),
    /// Idle long enough: set `relay_wakeup.waiting` to true, then claim once more.
    DeclareWaiting,
    /// Sleep until a notification or the fallback poll.
    Sleep,
}

/// The relay's pacing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pace {
    /// Polling by itself; the flag says writers need not notify (or is about to).
    Flowing { idle: Duration, pause: Duration },
    /// The flag says writers notify; the relay sleeps between empty claims.
    Waiting,
}

impl Default for Pace {
    /// A relay that has just connected does not know the flag: it starts flowing, so it claims,
    /// and declares itself waiting once idle, whatever the flag said.
    fn default() -> Self {
        Self::flowing()
    }
}

impl Pace {
    fn flowing() -> Self {
        Pace::Flowing {
            idle: Duration::ZERO,
            pause: FIRST_PAUSE,
        }
    }

    /// The next step after a claim of `claimed` rows.
    pub fn after_claim(&mut self, claimed: usize) -> Next {
        match (&mut *self, claimed) {
            (Pace::Waiting, 0) => Next::Sleep,
            (Pace::Waiting, _) => {
                *self = Self::flowing();
                Next::DeclareFlowing
            }
            (Pace::Flowing { .. }, n) if n > 0 => {
                *self = Self::flowing();
                Next::Claim
            }
            (Pace::Flowing { idle, pause }, _) => {
                if *idle >= IDLE_AFTER {
                    *self = Pace::Waiting;
                    return Next::DeclareWaiting;
                }
                let this = *pause;
                *idle += this;
                *pause = (this * 2).min(MAX_PAUSE);
                Next::Pause(this)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flowing_relay_claims_at_once_after_rows_and_polls_with_growing_pauses_after_none() {
        let mut pace = Pace::default();
        assert_eq!(pace.after_claim(3), Next::Claim);
        assert_eq!(pace.after_claim(0), Next::Pause(Duration::from_millis(1)));
        assert_eq!(pace.after_claim(0), Next::Pause(Duration::from_millis(2)));
        assert_eq!(pace.after_claim(0), Next::Pause(Duration::from_millis(4)));
        assert_eq!(pace.after_claim(0), Next::Pause(MAX_PAUSE));
        // Rows again: the pauses start over.
        assert_eq!(pace.after_claim(1), Next::Claim);
        assert_eq!(pace.after_claim(0), Next::Pause(Duration::from_millis(1)));
    }

    #[test]
    fn after_idling_the_relay_declares_itself_waiting_claims_once_more_then_sleeps() {
        let mut pace = Pace::default();
        let mut idle = Duration::ZERO;
        let mut steps = 0;
        loop {
            match pace.after_claim(0) {
                Next::Pause(p) => {
                    assert!(p <= MAX_PAUSE);
                    idle += p;
                }
                Next::DeclareWaiting => break,
                other => panic!("unexpected {other:?}"),
            }
            steps += 1;
            assert!(steps < 100, "never went idle");
        }
        assert!(
            idle >= IDLE_AFTER && idle < IDLE_AFTER + MAX_PAUSE,
            "{idle:?}"
        );
        // The claim after declaring: empty, so sleep; and sleep again after every empty wake.
        assert_eq!(pace.after_claim(0), Next::Sleep);
        assert_eq!(pace.after_claim(0), Next::Sleep);
        // Woken with rows: say events flow (writers stop notifying), keep claiming.
        assert_eq!(pace.after_claim(2), Next::DeclareFlowing);
        assert_eq!(pace.after_claim(500), Next::Claim);
    }

    #[test]
    fn rows_found_by_the_claim_after_declaring_waiting_flow_again() {
        let mut pace = Pace::Waiting;
        assert_eq!(pace.after_claim(1), Next::DeclareFlowing);
        assert!(matches!(pace, Pace::Flowing { .. }));
    }
}
