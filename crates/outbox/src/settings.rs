//! The outbox's one setting as a `clap` group, flattened by every command that runs a relay
//! (`portal auth-service`, `portal relay`, `portal appointment-service`, `portal up` once for
//! all of them).

use crate::CleanupConfig;
use clap::Args;
use std::time::Duration;

/// How long published outbox rows are kept.
#[derive(Args, Debug, Clone)]
pub struct OutboxArgs {
    /// Seconds a published row stays in its outbox before the cleanup removes it (every
    /// outbox: auth_db's user events and saga messages, appointment_db's events). The history
    /// is the event store's, not the outbox's.
    #[arg(
        long,
        env = "OUTBOX_KEEP_PUBLISHED_SECS",
        default_value_t = CleanupConfig::DEFAULT_KEEP_PUBLISHED_SECS,
        value_parser = clap::value_parser!(u64).range(0..=2_592_000)
    )]
    pub outbox_keep_published_secs: u64,
}

impl OutboxArgs {
    /// The cleanup these settings ask for.
    pub fn cleanup(&self) -> CleanupConfig {
        CleanupConfig {
            keep_published: Duration::from_secs(self.outbox_keep_published_secs),
            ..CleanupConfig::default()
        }
    }
}
