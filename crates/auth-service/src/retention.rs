//! The event store's partitions and its retention: `event_store` is partitioned by month
//! (migration 0012); this keeps this month's partition and the next [`MONTHS_AHEAD`] created
//! (so rows never pile up in the DEFAULT partition), moves rows that did land there into a
//! partition of their month, and with `EVENT_RETENTION_DAYS` detaches and drops every monthly
//! partition that ends before the cutoff — whole partitions, never a `DELETE` of rows, so
//! retention leaves no dead tuples and holds no lock for longer than a catalog change.
//!
//! The DDL runs in SQL functions owned by the schema's owner (`SECURITY DEFINER`): under the
//! least-privilege setup the auth-service may not create or drop tables itself, only call
//! them. They take an advisory lock, so several replicas maintain one at a time. The
//! auth-service runs [`run`]: at start, then every hour.

use chrono::{DateTime, Utc};
use platform::shutdown::sleep_unless_cancelled;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Months created ahead of the current one: a clock that is a little ahead, or a maintenance
/// that fails for a few weeks, still finds its partition.
pub const MONTHS_AHEAD: i32 = 2;
/// How often [`run`] maintains after its first round.
pub const EVERY: Duration = Duration::from_secs(3600);

/// What one round of maintenance did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintained {
    /// Partitions created (`event_store_YYYY_MM`).
    pub created: Vec<String>,
    /// Partitions detached and dropped past the retention.
    pub dropped: Vec<String>,
}

/// Creates the partitions due and, when `retention` is set, drops every monthly partition that
/// ends at or before `now - retention`, oldest first, one per transaction.
pub async fn maintain(
    db: &PgPool,
    retention: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<Maintained, sqlx::Error> {
    let created: Vec<String> = sqlx::query_scalar("SELECT event_store_maintain($1)")
        .bind(MONTHS_AHEAD)
        .fetch_all(db)
        .await?;
    let mut dropped = Vec::new();
    if let Some(cutoff) = retention.and_then(|r| cutoff(now, r)) {
        // One partition per call: DETACH holds event_store's ACCESS EXCLUSIVE lock until its
        // transaction commits, so each drop commits on its own.
        while let Some(name) =
            sqlx::query_scalar::<_, Option<String>>("SELECT event_store_expire($1)")
                .bind(cutoff)
                .fetch_one(db)
                .await?
        {
            dropped.push(name);
        }
    }
    Ok(Maintained { created, dropped })
}

/// Events written before this are past a retention of `retention` at `now`; `None` when the
/// retention is too long to subtract (keep everything).
pub fn cutoff(now: DateTime<Utc>, retention: Duration) -> Option<DateTime<Utc>> {
    now.checked_sub_signed(chrono::Duration::from_std(retention).ok()?)
}

/// Maintains at start and every [`EVERY`] until `shutdown`. A failure (a lock not granted in
/// time, the database away) is logged and tried again at the next round: meanwhile rows go to
/// the DEFAULT partition, and nothing expires late by more than a round.
pub async fn run(db: PgPool, retention: Option<Duration>, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        match maintain(&db, retention, Utc::now()).await {
            Ok(done) if done == Maintained::default() => {}
            Ok(done) => tracing::info!(
                created = ?done.created,
                dropped = ?done.dropped,
                "event store partitions maintained"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot maintain the event store's partitions now; will try again in an hour"
            ),
        }
        sleep_unless_cancelled(EVERY, &shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_the_retention_before_now_and_an_endless_retention_has_none() {
        let now = DateTime::parse_from_rfc3339("2026-12-10T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(
            cutoff(now, Duration::from_secs(30 * 86_400)).map(|t| t.to_rfc3339()),
            Some("2026-11-10T12:00:00+00:00".to_owned())
        );
        assert_eq!(cutoff(now, Duration::from_secs(u64::MAX)), None);
    }
}
