//! Removing published rows from an outbox: the outbox is a queue, not a history (the
//! auth-service's history is its partitioned `event_store`), so a row the broker confirmed is
//! deleted once it has been published for [`CleanupConfig::keep_published`].
//!
//! Never one big `DELETE`: each batch removes at most [`CleanupConfig::batch_size`] rows, the
//! oldest first, in one statement that is its own transaction, so its locks last as long as
//! that statement runs (the batch's rows only; writers insert new rows and the relay marks
//! unpublished ones, which a batch never touches, and rows locked by anyone else are skipped,
//! never waited for). The cleaner pauses between batches at least as long as the batch took,
//! and starts a round every [`CleanupConfig::every`]; a round goes on while batches come back
//! full.
//!
//! One cleaner per table at a time: each batch first takes a transaction-scoped advisory lock
//! keyed by the table, `pg_try_advisory_xact_lock`, and a cleaner that does not get it skips
//! the round. Chosen over a session lock held by one elected cleaner: a transaction-scoped lock
//! ends with the batch's transaction whatever happens (a session lock left on a pooled
//! connection after an error would block every cleaner until that connection closed), it needs
//! no connection set aside, and it works through a transaction-pooling proxy. Several relays
//! of one outbox (replicas, `portal relay` beside the auth-service) therefore never delete at
//! the same time, and one whose peer is busy simply comes back at its next round.

use crate::Table;
use platform::metrics::Metrics;
use platform::shutdown::sleep_unless_cancelled;
use prometheus::{GaugeVec, HistogramVec, IntCounterVec};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How the cleanup of one outbox runs.
#[derive(Debug, Clone)]
pub struct CleanupConfig {
    /// A published row is removed this long after it was published (OUTBOX_KEEP_PUBLISHED_SECS):
    /// long enough to look at what was just sent, short enough that the table stays small.
    pub keep_published: Duration,
    /// Rows removed per batch (one short transaction each).
    pub batch_size: i64,
    /// How often a round starts.
    pub every: Duration,
    /// The least pause between two batches of a round (at least the last batch's duration).
    pub pause: Duration,
}

impl CleanupConfig {
    /// Seconds a published row is kept unless OUTBOX_KEEP_PUBLISHED_SECS says otherwise.
    pub const DEFAULT_KEEP_PUBLISHED_SECS: u64 = 60;
}

impl Default for CleanupConfig {
    fn default() -> Self {
        Self {
            keep_published: Duration::from_secs(Self::DEFAULT_KEEP_PUBLISHED_SECS),
            batch_size: 1000,
            every: Duration::from_secs(10),
            pause: Duration::from_millis(20),
        }
    }
}

/// The high half of every cleanup lock's key ("obcl"); the low half is the table's OID, unique
/// in its database, so each outbox has a lock of its own and no other lock of the system (keys
/// starting "port…") can collide with one.
const LOCK_CLASS: i64 = 0x6f62_636c;

/// The `application_name` of a cleanup batch while it runs: it shows in `pg_stat_activity`
/// (and the cleanup test finds the cleaner's locks by it).
pub const APPLICATION_NAME: &str = "outbox cleanup";

/// The cleanup's figures, by table, for Prometheus:
/// - `portal_outbox_cleanup_batch_seconds{table}`: how long each batch held its locks (its
///   statement, measured by the server);
/// - `portal_outbox_cleanup_deleted_total{table}`: published rows removed;
/// - `portal_outbox_cleanup_longest_batch_seconds{table}`: the longest batch of the last whole
///   minute.
///
/// Registered once per service; every cleaner of the service shares it.
#[derive(Clone)]
pub struct CleanupMetrics {
    batch_seconds: HistogramVec,
    deleted: IntCounterVec,
    longest: GaugeVec,
}

/// Batch durations from 1 ms to 1 s, fine around the 100 ms a batch must stay under.
const BATCH_SECONDS_BUCKETS: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0,
];

impl CleanupMetrics {
    pub fn register(metrics: &Metrics) -> prometheus::Result<Self> {
        Ok(Self {
            batch_seconds: metrics.histogram_vec(
                "portal_outbox_cleanup_batch_seconds",
                "How long each outbox cleanup batch held its locks (its one statement, measured by the server).",
                &["table"],
                &BATCH_SECONDS_BUCKETS,
            )?,
            deleted: metrics.counter_vec(
                "portal_outbox_cleanup_deleted_total",
                "Published outbox rows removed by the cleanup.",
                &["table"],
            )?,
            longest: metrics.register(GaugeVec::new(
                prometheus::Opts::new(
                    "portal_outbox_cleanup_longest_batch_seconds",
                    "The longest outbox cleanup batch of the last whole minute.",
                ),
                &["table"],
            )?)?,
        })
    }

    /// Every series of `table` present from the start, at 0.
    fn init(&self, table: &str) {
        self.batch_seconds.with_label_values(&[table]);
        self.deleted.with_label_values(&[table]);
        self.longest.with_label_values(&[table]);
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    /// Another cleaner of the table holds its lock: nothing was done.
    Skipped,
    /// `rows` removed while the batch held its locks for `held` (the server's measure of its
    /// statement); `took` is the whole round trip as this process saw it (on a busy machine
    /// mostly waiting to be scheduled, with no lock held).
    Done {
        rows: u64,
        held: Duration,
        took: Duration,
    },
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// How long each batch held its locks ([`Batch::Done`]'s `held`), in order.
    pub batches: Vec<Duration>,
    /// Each batch's round trip as this process saw it ([`Batch::Done`]'s `took`).
    pub round_trips: Vec<Duration>,
    pub removed: u64,
    /// The round stopped because another cleaner held the table's lock.
    pub skipped: bool,
}

/// Above every sequence number: the bound when no row is unpublished.
const MAX_SEQ: i64 = i64::MAX;

/// The cleanup lock's key: `$1` = [`LOCK_CLASS`], `$2` = the table.
const LOCK_KEY: &str = "($1::int8 << 32) | $2::regclass::oid::int8";

/// One batch as one statement, so its transaction (and every lock it takes) lasts exactly as
/// long as the statement runs, with no round trip inside it. `$3` = the application name,
/// `$4` = seconds a published row is kept, `$5` = batch size; answers whether the table's lock
/// was taken, how many rows went, and how long the statement had run when they had gone (in
/// seconds, on the server's clock: from before it took any lock; the commit that releases them
/// follows at once and does not wait for the disk). Without the lock the DELETE does not run: its condition
/// without columns is a one-time filter checked before any row is read. The rows are found on
/// the primary key, oldest first, and only below the oldest unpublished row (read on the
/// relay's partial index): a backlog of unpublished rows (the broker away) is never scanned
/// (published rows above a row still in flight wait for the next round). They are deleted by
/// their keys (`= ANY`), an index scan whatever the planner's statistics say. The commit need
/// not wait for the WAL flush: a removal lost in a crash is done again by the next batch.
fn batch_sql(table: &str) -> String {
    format!(
        "WITH settings AS MATERIALIZED ( \
             SELECT pg_try_advisory_xact_lock({LOCK_KEY}) AS locked, \
                    set_config('synchronous_commit', 'off', true), \
                    set_config('application_name', $3, true)), \
         gone AS ( \
             DELETE FROM {table} \
             WHERE (SELECT locked FROM settings) AND seq = ANY (ARRAY( \
                 SELECT seq FROM {table} \
                 WHERE seq < coalesce((SELECT min(seq) FROM {table} \
                                       WHERE published_at IS NULL), {MAX_SEQ}) \
                   AND published_at < now() - make_interval(secs => $4) \
                 ORDER BY seq LIMIT $5 FOR UPDATE SKIP LOCKED)) \
             RETURNING 1) \
         SELECT (SELECT locked FROM settings), (SELECT count(*) FROM gone), \
                extract(epoch FROM clock_timestamp() - statement_timestamp())::float8"
    )
}

/// The cleanup of one outbox.
pub struct Cleaner {
    table: Arc<Table>,
    pool: PgPool,
    config: CleanupConfig,
    metrics: Option<CleanupMetrics>,
    /// [`batch_sql`] of the table.
    sql: String,
}

impl Cleaner {
    pub fn new(table: Arc<Table>, pool: PgPool, config: CleanupConfig) -> Self {
        Self {
            sql: batch_sql(&table.relation),
            table,
            pool,
            config,
            metrics: None,
        }
    }

    /// The cleaner, counting what it does in `metrics`.
    pub fn with_metrics(mut self, metrics: CleanupMetrics) -> Self {
        metrics.init(self.table.name);
        self.metrics = Some(metrics);
        self
    }

    /// Takes the table's cleanup lock in `conn`'s transaction, without waiting: false when
    /// another cleaner holds it. Held until that transaction ends (what a batch does inside its
    /// statement; tests hold it this way to play a cleaner in the middle of a batch).
    pub async fn try_lock(&self, conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(&format!("SELECT pg_try_advisory_xact_lock({LOCK_KEY})"))
            .bind(LOCK_CLASS)
            .bind(&self.table.relation)
            .fetch_one(conn)
            .await
    }

    /// One batch: the table's lock (or [`Batch::Skipped`]), then up to `batch_size` of the
    /// oldest rows published before the grace period, skipping rows another transaction holds.
    pub async fn batch(&self) -> Result<Batch, sqlx::Error> {
        let started = Instant::now();
        let (locked, rows, held): (bool, i64, f64) = sqlx::query_as(&self.sql)
            .bind(LOCK_CLASS)
            .bind(&self.table.relation)
            .bind(APPLICATION_NAME)
            .bind(self.config.keep_published.as_secs_f64())
            .bind(self.config.batch_size)
            .fetch_one(&self.pool)
            .await?;
        let took = started.elapsed();
        if !locked {
            return Ok(Batch::Skipped);
        }
        let rows = u64::try_from(rows).unwrap_or_default();
        let held = Duration::try_from_secs_f64(held).unwrap_or_default();
        if let Some(m) = &self.metrics {
            m.batch_seconds
                .with_label_values(&[self.table.name])
                .observe(held.as_secs_f64());
            m.deleted.with_label_values(&[self.table.name]).inc_by(rows);
        }
        Ok(Batch::Done { rows, held, took })
    }

    /// Batches until one is not full (nothing more is due) or another cleaner holds the lock,
    /// pausing between them at least as long as the last one took, so the table is never held
    /// more than half the time; stops early at `shutdown`.
    pub async fn round(&self, shutdown: &CancellationToken) -> Result<Round, sqlx::Error> {
        let mut round = Round::default();
        loop {
            match self.batch().await? {
                Batch::Skipped => {
                    round.skipped = true;
                    return Ok(round);
                }
                Batch::Done { rows, held, took } => {
                    round.batches.push(held);
                    round.round_trips.push(took);
                    round.removed += rows;
                    let full = i64::try_from(rows).is_ok_and(|r| r >= self.config.batch_size);
                    if !full || shutdown.is_cancelled() {
                        return Ok(round);
                    }
                    sleep_unless_cancelled(self.config.pause.max(took), shutdown).await;
                }
            }
        }
    }

    /// A round every [`CleanupConfig::every`] until `shutdown`. One log line when rounds
    /// removed rows, at most once a minute (summing what the rounds in between removed); a
    /// failure is logged at debug and tried again at the next round (the relay reports the
    /// database's outages).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut log = Summary::new(Instant::now());
        let mut window = Summary::new(Instant::now());
        while !shutdown.is_cancelled() {
            match self.round(&shutdown).await {
                Ok(round) => {
                    log.add(&round);
                    window.add(&round);
                    if log.removed > 0 && log.since.elapsed() >= LOG_EVERY {
                        tracing::info!(
                            outbox = self.table.name,
                            removed = log.removed,
                            batches = log.batches,
                            longest_batch_ms = log.longest.as_secs_f64() * 1000.0,
                            "removed published outbox rows"
                        );
                        log = Summary::new(Instant::now());
                    }
                    if window.since.elapsed() >= LOG_EVERY {
                        if let Some(m) = &self.metrics {
                            m.longest
                                .with_label_values(&[self.table.name])
                                .set(window.longest.as_secs_f64());
                        }
                        window = Summary::new(Instant::now());
                    }
                }
                Err(e) => tracing::debug!(
                    outbox = self.table.name,
                    error = %e,
                    "outbox cleanup failed; will try again"
                ),
            }
            sleep_unless_cancelled(self.config.every, &shutdown).await;
        }
    }
}

/// At most one cleanup log line (and one longest-batch figure) per this long.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What rounds did since `since`.
struct Summary {
    since: Instant,
    removed: u64,
    batches: usize,
    longest: Duration,
}

impl Summary {
    fn new(since: Instant) -> Self {
        Self {
            since,
            removed: 0,
            batches: 0,
            longest: Duration::ZERO,
        }
    }

    fn add(&mut self, round: &Round) {
        self.removed += round.removed;
        self.batches += round.batches.len();
        if let Some(longest) = round.batches.iter().max() {
            self.longest = self.longest.max(*longest);
        }
    }
}
