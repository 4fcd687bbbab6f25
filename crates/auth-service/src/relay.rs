//! The outbox relay: moves committed events from `auth_db.outbox` to the `user.events` exchange.
//!
//! One step claims up to `batch_size` unpublished rows in sequence order (`FOR UPDATE SKIP
//! LOCKED`, so several relays can share the outbox), publishes them all before awaiting any
//! confirm (pipelined, `mandatory`, persistent), then marks the confirmed rows published in one
//! statement and commits. A crash before the commit only republishes; the consumer is idempotent.
//! It wakes on `LISTEN outbox_events`, drains without waiting while batches come back full, and
//! polls as a fallback. With `batch_size = 1` the same code is the naive one-confirm-per-event
//! relay used as the benchmark baseline.

use contract::topology;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use platform::amqp::{self, Answer, Outgoing};
use platform::backoff::{Backoff, OutageLog};
use platform::metrics::{Metrics, BATCH_BUCKETS, LATENCY_BUCKETS};
use platform::shutdown::sleep_unless_cancelled;
use prometheus::{Histogram, IntCounter, IntCounterVec};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The channel PostgreSQL notifies on when outbox rows commit (see the migration's trigger).
pub const NOTIFY_CHANNEL: &str = "outbox_events";

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed and published per step; 1 gives the naive relay.
    pub batch_size: i64,
    /// Fallback poll interval for when a notification was missed (listener reconnecting).
    pub poll_interval: Duration,
    /// Keep published events this long in the event store; `None` keeps everything.
    pub retention: Option<Duration>,
    /// Declare the topology when connecting (off when the least-privilege setup declared it
    /// and the relay's broker user may not).
    pub declare_topology: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
            retention: None,
            declare_topology: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("auth_db: {0}")]
    Db(#[from] sqlx::Error),
}

pub struct Relay {
    pool: PgPool,
    amqp_url: String,
    /// The broker user the relay publishes as: every event's `user_id`.
    publisher: String,
    config: RelayConfig,
    broker_up: Arc<AtomicBool>,
    metrics: Option<RelayMetrics>,
}

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
    published: IntCounter,
    batch_size: Histogram,
    confirm_seconds: Histogram,
    errors: IntCounterVec,
}

impl RelayMetrics {
    /// Registers the relay's families with `metrics`; the backlog is read from `pool`.
    pub fn register(metrics: &Metrics, pool: PgPool) -> prometheus::Result<Self> {
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
            async move {
                if let Ok(backlog) = outbox_backlog(&pool).await {
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

    fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
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

/// The outbox's backlog, on the relay's own partial index of unpublished rows.
pub async fn outbox_backlog(pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    let (unpublished, oldest) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL), \
                (SELECT created_at FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT 1)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Backlog {
        unpublished,
        oldest,
    })
}

impl Relay {
    pub fn new(pool: PgPool, amqp_url: String, config: RelayConfig) -> Self {
        Self {
            pool,
            publisher: amqp::broker_user(&amqp_url),
            amqp_url,
            config,
            broker_up: Arc::new(AtomicBool::new(false)),
            metrics: None,
        }
    }

    /// The relay, counting what it does in `metrics`.
    pub fn with_metrics(mut self, metrics: RelayMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn error(&self, kind: &str) {
        if let Some(m) = &self.metrics {
            m.error(kind);
        }
    }

    /// True while the relay holds a broker connection (for readiness).
    pub fn broker_up(&self) -> Arc<AtomicBool> {
        self.broker_up.clone()
    }

    /// Runs until `shutdown`, reconnecting to RabbitMQ and PostgreSQL with backoff. A batch in
    /// flight when shutdown comes is finished (confirmed and marked) before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut broker = OutageLog::new("relay: RabbitMQ");
        let mut database = OutageLog::new("relay: auth_db");
        let mut backoff = Backoff::reconnect();
        let mut last_prune: Option<std::time::Instant> = None;
        'connect: while !shutdown.is_cancelled() {
            let (conn, channel, node) =
                match open_channel_on(&self.amqp_url, self.config.declare_topology).await {
                    Ok(opened) => opened,
                    Err(e) => {
                        self.error("broker");
                        broker.failed(&e);
                        sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
                        continue;
                    }
                };
            broker.recovered();
            self.broker_up.store(true, Ordering::Relaxed);
            tracing::info!(
                batch_size = self.config.batch_size,
                node = %node,
                "relay connected, publishing outbox"
            );
            let mut listener: Option<PgListener> = None;
            loop {
                if shutdown.is_cancelled() {
                    conn.close(200, "relay shutting down").await.ok();
                    break 'connect;
                }
                if listener.is_none() {
                    listener = listen(&self.pool).await.ok();
                }
                match publish_measured(
                    &self.pool,
                    &channel,
                    self.config.batch_size,
                    &self.publisher,
                    self.metrics.as_ref(),
                )
                .await
                {
                    Ok(n) => {
                        database.recovered();
                        backoff.reset();
                        if n as i64 >= self.config.batch_size {
                            continue; // more waiting: drain without sleeping
                        }
                    }
                    Err(RelayError::Broker(e)) => {
                        self.error("broker");
                        broker.failed(&e);
                        self.broker_up.store(false, Ordering::Relaxed);
                        conn.close(200, "reconnecting").await.ok();
                        sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
                        continue 'connect;
                    }
                    Err(RelayError::Db(e)) => {
                        self.error("database");
                        database.failed(&e);
                        listener = None;
                        sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
                        continue;
                    }
                }
                if let Some(retention) = self.config.retention {
                    if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                        last_prune = Some(std::time::Instant::now());
                        self.prune(retention).await;
                    }
                }
                if !conn.status().connected() {
                    self.error("broker");
                    broker.failed(&"connection closed");
                    self.broker_up.store(false, Ordering::Relaxed);
                    continue 'connect;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    ok = wait_for_notification(&mut listener) => if !ok { listener = None },
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
        self.broker_up.store(false, Ordering::Relaxed);
        tracing::info!("relay stopped");
    }
}

/// How often the retention policy runs (it is cheap; once an hour keeps the store bounded).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Relay {
    async fn prune(&self, retention: Duration) {
        let Ok(age) = chrono::Duration::from_std(retention) else {
            return;
        };
        match crate::event_store::prune(&self.pool, chrono::Utc::now() - age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                "event store: pruned published events past retention"
            ),
            Err(e) => tracing::warn!(error = %e, "event store: pruning failed; will try again"),
        }
    }
}

/// A connection and a channel in confirm mode, with the topology declared: what
/// [`publish_batch`] needs (public so tests can run the relay one step at a time).
pub async fn open_channel(
    url: &str,
    declare_topology: bool,
) -> Result<(Connection, Channel), lapin::Error> {
    open_channel_on(url, declare_topology)
        .await
        .map(|(conn, channel, _)| (conn, channel))
}

/// [`open_channel`] on the first node of `url` that answers, also naming that node.
async fn open_channel_on(
    url: &str,
    declare_topology: bool,
) -> Result<(Connection, Channel, String), lapin::Error> {
    let (conn, node) = amqp::connect_node(url, "auth-service relay").await?;
    let mut channel = conn.create_channel().await?;
    // The relay declares the topology too, so the consumer's queue exists before the first
    // publish even if the user-service has never run (unless the setup did, under an identity
    // the relay's does not have).
    if declare_topology {
        let queues = topology::ConsumerQueues::for_consumer(topology::USER_SERVICE);
        channel =
            amqp::declare_topology_on(&conn, channel, std::slice::from_ref(&queues), &queues.main)
                .await?;
    }
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((conn, channel, node))
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

/// Waits for one notification; false when the listener broke (the caller drops it and polls).
async fn wait_for_notification(listener: &mut Option<PgListener>) -> bool {
    match listener {
        Some(l) => l.recv().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// `properties` with the `traceparent` header continuing the event's trace, when it has one.
fn traced(properties: lapin::BasicProperties, trace_id: Option<&str>) -> lapin::BasicProperties {
    // A stored id that is not a valid trace id (written by hand) is left out rather than sent.
    let Some(parent) = trace_id
        .map(platform::trace::child_of)
        .filter(|p| platform::trace::trace_id_of(p).is_some())
    else {
        return properties;
    };
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(platform::trace::TRACEPARENT.into(), amqp::text(&parent));
    properties.with_headers(headers)
}

#[derive(sqlx::FromRow)]
struct PendingEvent {
    seq: i64,
    event_id: uuid::Uuid,
    event_type: String,
    body: String,
    trace_id: Option<String>,
}

/// Publishes one batch and returns how many rows it claimed. Rows confirmed by the broker are
/// marked published even when a later confirm in the batch fails, so a failure republishes at
/// most the unconfirmed rows.
pub async fn publish_batch(
    pool: &PgPool,
    channel: &Channel,
    batch_size: i64,
    publisher: &str,
) -> Result<usize, RelayError> {
    publish_measured(pool, channel, batch_size, publisher, None).await
}

/// [`publish_batch`], counted in `metrics` when given.
async fn publish_measured(
    pool: &PgPool,
    channel: &Channel,
    batch_size: i64,
    publisher: &str,
    metrics: Option<&RelayMetrics>,
) -> Result<usize, RelayError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<PendingEvent> = sqlx::query_as(
        "SELECT seq, event_id, event_type, body::text AS body, trace_id FROM outbox \
         WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(batch_size)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(0);
    }

    let messages: Vec<Outgoing> = rows
        .iter()
        .map(|row| Outgoing {
            exchange: topology::EXCHANGE,
            routing_key: &row.event_type,
            body: row.body.as_bytes(),
            properties: traced(
                amqp::event_properties(&row.event_id.to_string(), &row.event_type, publisher),
                row.trace_id.as_deref(),
            ),
        })
        .collect();
    let started = std::time::Instant::now();
    let published = amqp::publish_confirmed(channel, messages).await;
    let mut confirmed = Vec::with_capacity(published.answers.len());
    for (row, answer) in rows.iter().zip(&published.answers) {
        match answer {
            Answer::Confirmed => confirmed.push(row.seq),
            Answer::Returned(reply) => {
                if let Some(m) = metrics {
                    m.error("returned");
                }
                tracing::warn!(
                    seq = row.seq,
                    %reply,
                    "event returned unroutable (is the alternate exchange missing?); will retry"
                )
            }
            Answer::Refused => {
                if let Some(m) = metrics {
                    m.error("refused");
                }
                tracing::warn!(seq = row.seq, "broker refused event; will retry")
            }
        }
    }
    if let Some(m) = metrics {
        m.batch_size.observe(rows.len() as f64);
        m.confirm_seconds.observe(started.elapsed().as_secs_f64());
    }

    if !confirmed.is_empty() {
        sqlx::query("UPDATE outbox SET published_at = now() WHERE seq = ANY($1)")
            .bind(&confirmed)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    if let Some(m) = metrics {
        m.published.inc_by(confirmed.len() as u64);
    }
    match published.error {
        Some(e) => Err(e.into()),
        None => Ok(rows.len()),
    }
}
