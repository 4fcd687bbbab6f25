//! `portal reconcile`: finds drift between `auth_db` and `user_db` with the same streaming
//! comparison as `verify`, and repairs it through the normal pipeline. For each user missing,
//! stale or different in `user_db` it writes a `user.snapshot` event of the user's current state
//! to the auth-service's outbox (so the repair is also in the event store); the relay publishes
//! it and every consumer applies it when its version is greater than or equal to the stored one.
//! Users found only in `user_db` are reported, and deleted only when asked.
//!
//! A repair counts as done only when `verify` no longer reports it: [`confirm`] re-compares the
//! repaired users until each copy has applied its repair, or the wait runs out (the relay or the
//! consumer is down, the repair is still in the outbox or the queue). "repaired N" never counts a
//! repair that was merely written.
//!
//! Memory grows with the drift (the ids to repair), never with the number of users.

use crate::verify::{compare_each, still_different, Difference, VerifyError};
use auth_service::store;
use sqlx::PgPool;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Users repaired per transaction.
const REPAIR_CHUNK: usize = 500;

/// How long a scheduled run waits for its repairs to apply before it reports them unconfirmed.
const SCHEDULED_CONFIRM_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Only report.
    pub dry_run: bool,
    /// Delete users found only in `user_db`.
    pub delete_extra: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub checked: u64,
    pub missing: u64,
    pub stale: u64,
    pub mismatched: u64,
    pub extra: u64,
    /// Repair events written to the outbox.
    pub written: u64,
    /// Repairs `verify` no longer reports (set by [`confirm`]).
    pub repaired: u64,
    /// Repairs written but not yet applied when [`confirm`] stopped waiting.
    pub unconfirmed: u64,
    /// Extra users deleted from `user_db`.
    pub removed: u64,
    pub dry_run: bool,
    /// The users whose repairs [`confirm`] waits for.
    repairing: Vec<Uuid>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}checked {}, missing {}, stale {}, mismatched {}, extra {}, repaired {}",
            if self.dry_run { "dry run: " } else { "" },
            self.checked,
            self.missing,
            self.stale,
            self.mismatched,
            self.extra,
            self.repaired
        )?;
        if self.unconfirmed > 0 {
            write!(f, ", not yet applied {}", self.unconfirmed)?;
        }
        if self.removed > 0 {
            write!(f, ", removed {}", self.removed)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Compare(#[from] VerifyError),
    #[error("writing repair events to auth_db: {0}")]
    Repair(#[from] store::StoreError),
    #[error("deleting extra users from user_db: {0}")]
    Delete(#[from] sqlx::Error),
}

/// Finds the drift and, unless a dry run, writes one repair event per user (and deletes extra
/// users when asked). The repairs are confirmed by [`confirm`].
pub async fn reconcile(
    auth: &PgPool,
    users: &PgPool,
    options: Options,
) -> Result<Summary, ReconcileError> {
    let mut summary = Summary {
        dry_run: options.dry_run,
        ..Summary::default()
    };
    // Each user to repair, with the version its copy holds when that is ahead of auth_db.
    let mut to_repair: Vec<(Uuid, Option<i64>)> = Vec::new();
    let mut extra: Vec<Uuid> = Vec::new();
    summary.checked = compare_each(auth, users, |d| {
        match &d {
            Difference::Missing { .. } => summary.missing += 1,
            Difference::Stale { .. } => summary.stale += 1,
            Difference::Ahead { .. } | Difference::Mismatch { .. } => summary.mismatched += 1,
            Difference::Extra { .. } => summary.extra += 1,
        }
        match d {
            Difference::Extra { id, .. } => extra.push(id),
            other => to_repair.push((other.id(), other.version_to_pass())),
        }
    })
    .await?;
    if options.dry_run {
        return Ok(summary);
    }
    for chunk in to_repair.chunks(REPAIR_CHUNK) {
        let mut tx = auth.begin().await.map_err(store::StoreError::from)?;
        let written = store::write_repairs(&mut tx, chunk).await?;
        tx.commit().await.map_err(store::StoreError::from)?;
        summary.written += written as u64;
    }
    summary.repairing = to_repair.into_iter().map(|(id, _)| id).collect();
    if options.delete_extra && !extra.is_empty() {
        let done = sqlx::query("DELETE FROM users WHERE id = ANY($1)")
            .bind(&extra)
            .execute(users)
            .await?;
        summary.removed = done.rows_affected();
    }
    Ok(summary)
}

/// How often [`confirm`] looks again.
const CONFIRM_POLL: Duration = Duration::from_millis(200);

/// Waits up to `within` for `verify` to stop reporting each repaired user, then sets `repaired`
/// (no longer reported) and `unconfirmed` (still reported). `progress` hears (repaired, total)
/// after each look.
pub async fn confirm(
    auth: &PgPool,
    users: &PgPool,
    summary: &mut Summary,
    within: Duration,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), VerifyError> {
    let deadline = Instant::now() + within;
    let total = summary.repairing.len() as u64;
    let mut pending = std::mem::take(&mut summary.repairing);
    while !pending.is_empty() {
        let different = still_different(auth, users, &pending).await?;
        pending.retain(|id| different.contains(id));
        progress(total - pending.len() as u64, total);
        if pending.is_empty() || Instant::now() + CONFIRM_POLL > deadline {
            break;
        }
        tokio::time::sleep(CONFIRM_POLL).await;
    }
    summary.repaired = total - pending.len() as u64;
    summary.unconfirmed = pending.len() as u64;
    summary.repairing = pending;
    Ok(())
}

/// Runs [`reconcile`] every `interval` until `shutdown` (`RECONCILE_INTERVAL`), logging what it
/// found and repaired.
pub fn spawn_schedule(
    auth_url: String,
    user_url: String,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (Ok(auth), Ok(users)) = (
            platform::db::lazy_pool(&auth_url, 2),
            platform::db::lazy_pool(&user_url, 2),
        ) else {
            tracing::error!("scheduled reconcile: bad database URL; not running");
            return;
        };
        tracing::info!(every = ?interval, "scheduled reconcile on");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let run = async {
                let mut summary = reconcile(&auth, &users, Options::default()).await?;
                // Confirm within the interval at most, so one run never overlaps the next.
                let within = interval.min(SCHEDULED_CONFIRM_WAIT);
                confirm(&auth, &users, &mut summary, within, |_, _| {}).await?;
                Ok::<_, ReconcileError>(summary)
            };
            match run.await {
                Ok(summary) if summary.unconfirmed > 0 => {
                    tracing::warn!(
                        "scheduled reconcile found drift, some repairs not applied yet: {summary}"
                    )
                }
                Ok(summary) if summary.written > 0 => {
                    tracing::warn!("scheduled reconcile repaired drift: {summary}")
                }
                Ok(summary) => tracing::info!("scheduled reconcile: {summary}"),
                Err(e) => tracing::warn!("scheduled reconcile failed: {e}"),
            }
        }
    })
}
