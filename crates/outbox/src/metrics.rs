//! What the relay does, for Prometheus, and the outbox backlog it reports.

use crate::Table;
use platform::metrics::{Metrics, BATCH_BUCKETS, LATENCY_BUCKETS};
use prometheus::{Histogram, IntCounter, IntCounterVec};
use sqlx::PgPool;

/// What the relay does, for Prometheus:
/// - `portal_outbox_unpublished`, `portal_outbox_oldest_unpublished_age_seconds`: the backlog,
///   read at each scrape;
/// - `portal_relay_published_total`: events the broker confirmed;
/// - `portal_relay_batch_size`: rows claimed per step;
/// - `portal_relay_confirm_duration_seconds`: from publishing a batch to its last confirm;
/// - `portal_relay_errors_total{kind}`: `broker` (connection or channel lost), `database`,
///   `returned` (unroutable), `refused` (nacked).
#[derive(Clone)]
pub struct RelayMetrics {
    pub(super) published: IntCounter,
    pub(super) batch_size: Histogram,
    pub(super) confirm_seconds: Histogram,
    errors: IntCounterVec,
}

impl RelayMetrics {
    /// Registers the relay's families with `metrics`; the backlog is `table`'s in `pool`.
    pub fn register(metrics: &Metrics, table: &Table, pool: PgPool) -> prometheus::Result<Self> {
        let query = table.backlog.clone();
        let unpublished = metrics.int_gauge(
            "portal_outbox_unpublished",
            "Events written to the outbox and not yet confirmed by the broker.",
        )?;
        let oldest = metrics.gauge(
            "portal_outbox_oldest_unpublished_age_seconds",
            "How long the oldest unpublished event has waited (0 when none waits).",
        )?;
        metrics.on_scrape(move || {
            let (unpublished, oldest, pool) = (unpublished.clone(), oldest.clone(), pool.clone());
            let query = query.clone();
            async move {
                if let Ok(backlog) = read_backlog(&query, &pool).await {
                    unpublished.set(backlog.unpublished);
                    oldest.set(backlog.oldest_age_seconds().unwrap_or(0.0));
                }
            }
        });
        let errors = metrics.counter_vec(
            "portal_relay_errors_total",
            "Relay failures by kind: broker, database, returned (unroutable), refused.",
            &["kind"],
        )?;
        // Every kind present from the start at 0, so `increase()` sees the first one.
        for kind in ["broker", "database", "returned", "refused"] {
            errors.with_label_values(&[kind]);
        }
        Ok(Self {
            errors,
            published: metrics.counter(
                "portal_relay_published_total",
                "Events published to the broker and confirmed by it.",
            )?,
            batch_size: metrics.histogram(
                "portal_relay_batch_size",
                "Outbox rows claimed per relay step.",
                &BATCH_BUCKETS,
            )?,
            confirm_seconds: metrics.histogram(
                "portal_relay_confirm_duration_seconds",
                "Time from publishing a batch to the broker's last confirm of it.",
                &LATENCY_BUCKETS,
            )?,
        })
    }

    pub(super) fn error(&self, kind: &str) {
        self.error_by(kind, 1);
    }

    pub(super) fn error_by(&self, kind: &str, n: u64) {
        if n > 0 {
            self.errors.with_label_values(&[kind]).inc_by(n);
        }
    }
}

/// What waits in the outbox.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub unpublished: i64,
    /// When the oldest unpublished event was written.
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
}

impl Backlog {
    pub fn oldest_age_seconds(&self) -> Option<f64> {
        self.oldest
            .map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
    }
}

/// `table`'s backlog, on the relay's own partial index of unpublished rows.
pub async fn backlog(table: &Table, pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    read_backlog(&table.backlog, pool).await
}

async fn read_backlog(query: &str, pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    let (unpublished, oldest) = sqlx::query_as(query).fetch_one(pool).await?;
    Ok(Backlog {
        unpublished,
        oldest,
    })
}
