//! The consumer's metrics, registered with the service that runs it:
//! - `portal_consumer_messages_total{consumer, outcome}`: applied, stale_ignored, duplicate,
//!   retried, dead_lettered, and untrusted (of the dead-lettered, those of an untrusted
//!   publisher), from the [`SyncStats`] counters its readiness also shows;
//! - `portal_consumer_batch_size`, `portal_consumer_apply_duration_seconds`: per applied batch;
//! - `portal_consumer_lag_seconds`: from a change (the event's `timestamp`, written in the
//!   transaction of the change with its outbox row) to its apply, per event that changed the
//!   copy (a replay or backfill applies old changes: their lag is how far behind it was);
//! - `portal_consumer_queue_messages{queue}` and `portal_consumer_queue_consumers{queue}` for
//!   its main, retry and dead-letter queues, read at each scrape by passive declares.

use crate::SyncStats;
use contract::topology::ConsumerQueues;
use contract::Envelope;
use platform::metrics::{catch_up, Metrics, BATCH_BUCKETS, LATENCY_BUCKETS};
use prometheus::Histogram;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Lag buckets: 1 ms to 5 minutes (a consumer catching up after an outage).
const LAG_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0,
];

/// The histograms a consumer observes as it applies.
pub struct Observed {
    batch_size: Histogram,
    apply_seconds: Histogram,
    lag_seconds: Histogram,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observed")
    }
}

impl Observed {
    /// One committed batch of `size` messages, of which `applied` changed the copy.
    pub(crate) fn batch(&self, size: usize, applied: &[&Envelope], took: Duration) {
        if size == 0 {
            return;
        }
        self.batch_size.observe(size as f64);
        self.apply_seconds.observe(took.as_secs_f64());
        let now = chrono::Utc::now();
        for event in applied {
            let lag = (now - event.timestamp.as_datetime()).num_microseconds();
            self.lag_seconds
                .observe(lag.unwrap_or(0).max(0) as f64 / 1_000_000.0);
        }
    }
}

/// Registers the metrics of the consumer `consumer` (its counters in `stats`, its queues
/// `queues` read through `amqp_url`, and the service's other queues `also_watch`, each with
/// whether consumers attached to it are counted) with `metrics`.
pub fn register(
    metrics: &Metrics,
    stats: &Arc<SyncStats>,
    consumer: &str,
    amqp_url: &str,
    queues: &ConsumerQueues,
    also_watch: &[(String, bool)],
) -> prometheus::Result<()> {
    let messages = metrics.counter_vec(
        "portal_consumer_messages_total",
        "Messages the consumer has handled, by outcome (untrusted ones are also counted as \
         dead_lettered).",
        &["consumer", "outcome"],
    )?;
    let counted = stats.clone();
    let name = consumer.to_owned();
    metrics.on_scrape(move || {
        let (messages, s, name) = (messages.clone(), counted.clone(), name.clone());
        async move {
            let read = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            // `ignored_stale` first: the consumer adds to `duplicates` before it, so this order
            // never counts a duplicate as stale.
            let ignored = read(&s.ignored_stale);
            let duplicates = read(&s.duplicates);
            for (outcome, total) in [
                ("applied", read(&s.applied)),
                ("stale_ignored", ignored.saturating_sub(duplicates)),
                ("duplicate", duplicates),
                ("retried", read(&s.retried)),
                ("dead_lettered", read(&s.dead_lettered)),
                ("untrusted", read(&s.untrusted)),
            ] {
                catch_up(&messages.with_label_values(&[&name, outcome]), total);
            }
        }
    });
    let observed = Observed {
        batch_size: metrics.histogram(
            "portal_consumer_batch_size",
            "Messages per batch the consumer applied in one transaction.",
            &BATCH_BUCKETS,
        )?,
        apply_seconds: metrics.histogram(
            "portal_consumer_apply_duration_seconds",
            "Time to apply one batch in one transaction (commit included).",
            &LATENCY_BUCKETS,
        )?,
        lag_seconds: metrics.histogram(
            "portal_consumer_lag_seconds",
            "Time from a change (its event's timestamp, written with its outbox row) to its \
             apply by this consumer.",
            &LAG_BUCKETS,
        )?,
    };
    // A second registration (a restarted consumer on the same stats) keeps the first set.
    let _ = stats.observed.set(observed);
    let names: Vec<String> = std::iter::once(queues.main.clone())
        .chain(queues.retries.iter().map(|r| r.name.clone()))
        .chain([queues.dead_letter.clone()])
        .chain(also_watch.iter().map(|(q, _)| q.clone()))
        .collect();
    let mains: Vec<String> = std::iter::once(queues.main.clone())
        .chain(
            also_watch
                .iter()
                .filter(|(_, main)| *main)
                .map(|(q, _)| q.clone()),
        )
        .collect();
    metrics.watch_queues(amqp_url, names, mains)?;
    Ok(())
}
