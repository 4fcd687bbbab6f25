//! The operator's recovery toolbox, as a library the `portal` command line, the benchmark, the
//! chaos run and the tests share. These are the only functions that read both services'
//! databases, and they say so.
//!
//! Layout:
//! - [`verify`]: the streaming comparison of `auth_db` with each consumer's copy (`user_db`'s
//!   `users`, `appointment_db`'s `clinicians`) (`portal verify`).
//! - [`receipts`]: `portal verify` for every other registered consumer, whose database the
//!   operator does not read: `auth_db` against the versions it confirmed in its receipts.
//! - [`reconcile`]: finds drift the same way and repairs it with `user.snapshot` events written
//!   to the outbox, once or on a schedule (`portal reconcile`, `RECONCILE_INTERVAL`).
//! - [`settings`]: the operator's identity (databases, broker) as a `clap` group.
//! - [`setup`]: the least-privilege setup: an identity per part, only the rights it needs, the
//!   generated credentials in one owner-only file (`portal setup`, `portal up`).
//! - [`dlq`]: dead-letter queues looked at without loss and requeued with confirms (`portal
//!   dlq`, the sync admin API).
//! - [`status`]: the figures of the synchronisation an operator watches: the outbox backlog,
//!   each consumer's queue, dead letters and last receipt (the sync admin API, `/admin/sync`).
//! - [`replay`]: stored events to one consumer's queue; a new consumer's queues and backfill
//!   with its end-of-history mark (`portal replay`, `portal consumer add`, `portal up`).
//! - [`consumer`]: a further consumer's own broker user, its rights and its settings
//!   (`portal consumer add`, `portal consumer remove`).
//! - [`erasure`]: after an erasure, the search of every database and queue for the person's
//!   data, and the purge of their messages from retry and dead-letter queues (`portal erasure
//!   verify|purge`, the sync admin API).

pub mod consumer;
pub mod dlq;
pub mod erasure;
pub mod receipts;
pub mod reconcile;
pub mod replay;
pub mod settings;
pub mod setup;
pub mod status;
pub mod verify;

/// Why an operation failed, told apart the way scripts need it (the CLI's exit codes 2 and 1).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A database or the broker could not be reached.
    #[error("cannot reach {0}")]
    Unreachable(String),
    /// It ran and failed.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}
