//! The JSON bodies of the sync admin API (`/api/v1/admin/sync`, admins only): the state of the
//! synchronisation as the web portal's `/admin/sync` page and the operator's tools read it —
//! the outbox backlog, each consumer's queues and dead letters, and the last `verify`.

use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `GET /api/v1/admin/sync`. A part that cannot be read is `null` and named in `unavailable`;
/// the rest is still answered (the page an operator opens in an outage must still show what it
/// can).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    /// When these figures were read.
    pub at: Timestamp,
    pub outbox: Option<OutboxFigures>,
    pub consumers: Option<Vec<ConsumerFigures>>,
    /// The last verify run since the sync admin service started (`null`: none yet).
    pub verify: Option<VerifyRun>,
    /// What could not be read, in words (e.g. "auth_db: connection refused").
    pub unavailable: Vec<String>,
}

/// The outbox of `auth_db`: events written with their change but not yet confirmed by the
/// broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxFigures {
    pub unpublished: i64,
    /// When the oldest of them was written (`null` when nothing waits).
    pub oldest_unpublished_at: Option<Timestamp>,
    /// How long the oldest has waited, in seconds.
    pub oldest_unpublished_age_seconds: Option<f64>,
}

/// One queue's counts, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueCounts {
    pub name: String,
    /// Messages ready for delivery (those in a consumer's hands are not counted).
    pub messages: Option<u32>,
    /// Consumers attached.
    pub consumers: Option<u32>,
    /// Why the queue could not be read (not declared, no permission).
    pub problem: Option<String>,
}

/// One consumer service's queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerFigures {
    /// The consumer, e.g. `user-service`.
    pub consumer: String,
    pub queue: QueueCounts,
    /// Messages waiting out a retry delay, over all its retry queues.
    pub retrying: u32,
    pub dead_letter: QueueCounts,
    /// Registered as required (an offboarding waits for its receipts) or optional; absent from
    /// an older sync admin API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// When the batch of its last receipt was applied: absent before its first receipt (and
    /// from an older sync admin API). A consumer outside the repository has no readiness to ask
    /// for its lag; its receipts tell it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_receipt_at: Option<Timestamp>,
    /// The largest delay in that batch from a change in `auth_db` to its apply, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_receipt_lag_ms: Option<u64>,
}

/// What an operator needs to decide about one dead-lettered message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// 1-based place in the queue.
    pub position: usize,
    /// Why the consumer set it aside (`x-error-reason`), `-` when not said.
    pub reason: String,
    /// The consumer's words (`x-error-detail`).
    pub detail: String,
    pub routing_key: String,
    /// When it first failed (`x-first-failure-time`), `-` when not said.
    pub first_failure: String,
    pub bytes: usize,
    /// Why it can never go back to its consumer (`null`: a requeue sends it back): an untrusted
    /// publisher's message, e.g. `untrusted publisher "mallory": can only be discarded`.
    pub cannot_requeue: Option<String>,
}

/// `GET /api/v1/admin/sync/dead-letters/{queue}`: how many messages the queue holds and the
/// first of them (left in place, in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetters {
    pub queue: String,
    pub messages: u32,
    /// Of `messages`, those an untrusted publisher sent: a requeue keeps them back, and they
    /// can only be discarded.
    pub untrusted: u32,
    pub first: Vec<DeadLetter>,
}

/// `POST /api/v1/admin/sync/dead-letters/{queue}/requeue`: each message the queue held went
/// back to its consumer (published with confirms, then removed), except an untrusted
/// publisher's, which stay where they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requeued {
    pub queue: String,
    pub requeued: u32,
    /// How many the queue held when the requeue started.
    pub of: u32,
    /// Left in the queue: an untrusted publisher's messages, never sent back (they can only be
    /// discarded).
    pub kept_back: u32,
}

/// `POST /api/v1/admin/sync/dead-letters/{queue}/discard`: the untrusted publishers' messages
/// removed from the queue for good (the others stay, in their order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Discarded {
    pub queue: String,
    pub discarded: u32,
    /// How many the queue held when the discard started.
    pub of: u32,
}

/// `POST /api/v1/admin/sync/erasures/{id}/purge`: an erased person's messages removed from
/// every registered consumer's retry and dead-letter queues and from the unrouted queue (the
/// other messages stay, in their order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasurePurge {
    pub user_id: crate::UserId,
    /// Each queue that exists, in the order purged.
    pub queues: Vec<PurgedQueue>,
    /// The person's messages removed, in all.
    pub removed: u32,
    /// Queues that could not be purged, and why: `queuesPurgedAt` then stays as it was (try
    /// again).
    pub failed: Vec<String>,
    /// When every queue was last purged (now, unless some failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues_purged_at: Option<Timestamp>,
}

/// One queue of an [`ErasurePurge`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurgedQueue {
    pub queue: String,
    /// The person's messages removed.
    pub removed: u32,
    /// How many the queue held when the purge began.
    pub of: u32,
}

/// Where a verify run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyState {
    Running,
    /// Every copy was compared (in sync or not: see each copy).
    Finished,
    /// A database could not be read; see each copy's `error`.
    Failed,
}

/// A `verify` run in the background: `auth_db` compared with every consumer's copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyRun {
    pub state: VerifyState,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Users in `auth_db` when it started: each copy compares that many (about).
    pub users: Option<i64>,
    pub copies: Vec<CopyVerify>,
}

impl VerifyRun {
    /// How far it is, 0 to 100 (each copy weighs the same).
    pub fn percent(&self) -> f64 {
        let (Some(users), false) = (self.users, self.copies.is_empty()) else {
            return 0.0;
        };
        if users <= 0 {
            return if self.state == VerifyState::Running {
                0.0
            } else {
                100.0
            };
        }
        let each = self
            .copies
            .iter()
            .map(|c| (c.checked as f64 / users as f64).min(1.0))
            .sum::<f64>();
        100.0 * each / self.copies.len() as f64
    }
}

/// One copy's part of a verify run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CopyVerify {
    /// The consumer keeping it, e.g. `user-service`.
    pub service: String,
    /// Its database, e.g. `user_db`.
    pub database: String,
    /// Users of `auth_db` compared so far.
    pub checked: u64,
    /// `null` until this copy is done.
    pub in_sync: Option<bool>,
    /// `verify`'s summary line once done.
    pub summary: Option<String>,
    /// The first differences, as `verify` prints them.
    pub differences: Vec<String>,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(checked: u64) -> CopyVerify {
        CopyVerify {
            service: "user-service".into(),
            database: "user_db".into(),
            checked,
            in_sync: None,
            summary: None,
            differences: vec![],
            error: None,
        }
    }

    #[test]
    fn progress_weighs_each_copy_the_same() {
        let run = VerifyRun {
            state: VerifyState::Running,
            started_at: Timestamp::now(),
            finished_at: None,
            users: Some(1000),
            copies: vec![copy(1000), copy(250)],
        };
        assert_eq!(run.percent(), 62.5);
        let empty = VerifyRun {
            users: Some(0),
            state: VerifyState::Finished,
            ..run.clone()
        };
        assert_eq!(empty.percent(), 100.0);
        let unknown = VerifyRun { users: None, ..run };
        assert_eq!(unknown.percent(), 0.0);
    }
}
