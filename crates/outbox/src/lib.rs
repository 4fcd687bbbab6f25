//! The outbox relay every service with an outbox shares ([`Table`] says which outbox): moves
//! committed rows to the broker (the auth-service's user events to `user.events`, its saga
//! messages, the appointment-service's appointment events and replies).
//!
//! Each batch claims up to `batch_size` unpublished rows in sequence order (`FOR UPDATE SKIP
//! LOCKED`, so several relays, and several batches of one relay, never take the same row) and
//! sends them all before awaiting any confirm ([`batch`]). While up to `in_flight` batches
//! await their confirms, the relay claims and sends the next; each batch then marks its
//! confirmed rows published and commits on its own. A crash before that commit only
//! republishes; the consumers' version rule absorbs the duplicate. The rows of one user leave
//! in sequence order on the relay's one channel, so the broker keeps their order too.
//!
//! While events flow the relay claims again at once and polls with short pauses, and tells
//! writers not to notify; idle, it sleeps on `LISTEN outbox_events` with a fallback poll
//! ([`pace`]). With `batch_size = 1` and `in_flight = 1` the same code is the naive
//! one-confirm-per-event relay used as the benchmark baseline.
//!
//! Beside its loop each relay runs the [`cleanup`] of its table: published rows are removed a
//! minute after publishing, in small batches, by one cleaner per table at a time.

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use platform::amqp;
use platform::backoff::{Backoff, OutageLog};
use platform::shutdown::sleep_unless_cancelled;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

pub mod batch;
pub mod cleanup;
mod metrics;
pub mod pace;
pub mod settings;
mod table;

pub use batch::{claim_and_send, publish_batch, InFlight};
pub use cleanup::{Cleaner, CleanupConfig, CleanupMetrics};
pub use metrics::{backlog, Backlog, RelayMetrics};
use pace::{Next, Pace};
pub use table::{Message, Table};

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows claimed and published per batch; 1 (with `in_flight` 1) gives the naive relay.
    pub batch_size: i64,
    /// Batches sent whose confirms may be outstanding at once (each holds a database
    /// connection until it is marked).
    pub in_flight: usize,
    /// Fallback poll interval for when a notification was missed (listener reconnecting).
    pub poll_interval: Duration,
    /// How the relay's table is cleaned of published rows (`OUTBOX_KEEP_PUBLISHED_SECS`).
    pub cleanup: CleanupConfig,
    /// Declare the topology when connecting (off when the least-privilege setup declared it
    /// and the relay's broker user may not).
    pub declare_topology: bool,
}

impl RelayConfig {
    /// Rows per batch unless RELAY_BATCH_SIZE says otherwise.
    pub const DEFAULT_BATCH_SIZE: i64 = 500;
    /// Batches awaiting confirms at once unless RELAY_IN_FLIGHT says otherwise.
    pub const DEFAULT_IN_FLIGHT: u16 = 4;
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: Self::DEFAULT_BATCH_SIZE,
            in_flight: usize::from(Self::DEFAULT_IN_FLIGHT),
            poll_interval: Duration::from_secs(1),
            cleanup: CleanupConfig::default(),
            declare_topology: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The broker answered, but did not take every event of a batch.
    #[error(
        "RabbitMQ did not accept {} events ({refused} refused, {returned} returned unroutable{})",
        refused + returned,
        if *returned > 0 { ": is the alternate exchange missing?" } else { "" }
    )]
    NotAccepted { refused: u64, returned: u64 },
}

impl RelayError {
    /// A failure of the broker or of this connection to it: reconnect after the backoff.
    fn is_broker(&self) -> bool {
        matches!(self, RelayError::Broker(_) | RelayError::NotAccepted { .. })
    }
}

pub struct Relay {
    table: Arc<Table>,
    pool: PgPool,
    amqp_url: String,
    /// The broker user the relay publishes as: every event's `user_id`.
    publisher: String,
    config: RelayConfig,
    broker_up: Arc<AtomicBool>,
    metrics: Option<RelayMetrics>,
    cleanup_metrics: Option<CleanupMetrics>,
}

impl Relay {
    /// A relay of `table` in `pool`, publishing as the broker user of `amqp_url`.
    pub fn new(table: Table, pool: PgPool, amqp_url: String, config: RelayConfig) -> Self {
        Self {
            table: Arc::new(table),
            pool,
            publisher: amqp::broker_user(&amqp_url),
            amqp_url,
            config,
            broker_up: Arc::new(AtomicBool::new(false)),
            metrics: None,
            cleanup_metrics: None,
        }
    }

    /// The relay, counting what it does in `metrics`.
    pub fn with_metrics(mut self, metrics: RelayMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The relay's cleanup, counting what it does in `metrics` (shared by every cleaner of
    /// the service: its families are labelled by table).
    pub fn with_cleanup_metrics(mut self, metrics: CleanupMetrics) -> Self {
        self.cleanup_metrics = Some(metrics);
        self
    }

    /// The cleaner of the relay's table.
    fn cleaner(&self) -> Cleaner {
        let cleaner = Cleaner::new(
            self.table.clone(),
            self.pool.clone(),
            self.config.cleanup.clone(),
        );
        match &self.cleanup_metrics {
            Some(m) => cleaner.with_metrics(m.clone()),
            None => cleaner,
        }
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

    /// Runs until `shutdown`, reconnecting to RabbitMQ and PostgreSQL with backoff, with the
    /// table's cleanup beside it. A batch in flight when shutdown comes is finished (confirmed
    /// and marked) before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let cleanup = tokio::spawn(self.cleaner().run(shutdown.clone()));
        self.publish(&shutdown).await;
        if let Err(e) = cleanup.await {
            tracing::error!(outbox = self.table.name, error = %e, "the outbox cleanup failed");
        }
    }

    async fn publish(&self, shutdown: &CancellationToken) {
        let shutdown = shutdown.clone();
        let mut broker = OutageLog::new(format!("relay {}: RabbitMQ", self.table.name));
        let mut database = OutageLog::new(format!("relay {}: database", self.table.name));
        let mut backoff = Backoff::reconnect();
        // Batches accepted before the broker refused events, while it refuses them.
        let mut refused_since: Option<u64> = None;
        // Every batch in flight is finished before the relay reconnects.
        let mut flight = Flight::new(self.config.in_flight, self.metrics.clone());
        'connect: while !shutdown.is_cancelled() {
            let (conn, channel, node) =
                match open_channel_on(&self.table, &self.amqp_url, self.config.declare_topology)
                    .await
                {
                    Ok(opened) => opened,
                    Err(e) => {
                        self.error("broker");
                        broker.failed(&e);
                        sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
                        continue;
                    }
                };
            // Every batch of the previous connection has finished (drained before reconnecting).
            flight.failing.store(false, Ordering::SeqCst);
            // After refusals the outage lasts until the broker accepts a batch again, so that
            // reconnecting does not count as recovering (nor reset the backoff).
            if refused_since.is_none() {
                broker.recovered();
            }
            self.broker_up.store(true, Ordering::Relaxed);
            tracing::info!(
                outbox = self.table.name,
                batch_size = self.config.batch_size,
                node = %node,
                "relay connected, publishing outbox"
            );
            let mut listener: Option<PgListener> = None;
            let mut pace = Pace::default();
            // A failure of the batches drained before sleeping.
            let mut drained: Option<RelayError> = None;
            loop {
                if shutdown.is_cancelled() {
                    flight.drain().await.ok();
                    conn.close(200, "relay shutting down").await.ok();
                    break 'connect;
                }
                if listener.is_none() {
                    listener = listen(&self.pool, self.table.notify_channel).await.ok();
                }
                let claimed = async {
                    if let Some(e) = drained.take() {
                        return Err(e);
                    }
                    flight.finished()?;
                    flight.room().await?;
                    let batch = claim_and_send(
                        &self.table,
                        &self.pool,
                        &channel,
                        self.config.batch_size,
                        &self.publisher,
                        &flight.failing,
                    )
                    .await?;
                    Ok::<_, RelayError>(batch.map_or(0, |b| flight.launch(b)))
                }
                .await;
                if refused_since.is_some_and(|before| flight.accepted > before) {
                    refused_since = None;
                    broker.recovered();
                }
                let claimed = match claimed {
                    Ok(n) => {
                        database.recovered();
                        if refused_since.is_none() {
                            backoff.reset();
                        }
                        n
                    }
                    Err(e) if e.is_broker() => {
                        match e {
                            RelayError::Broker(_) => self.error("broker"),
                            _ => {
                                refused_since.get_or_insert(flight.accepted);
                            }
                        }
                        broker.failed(&e);
                        self.broker_up.store(false, Ordering::Relaxed);
                        // Their confirms fail with the channel: they mark what was confirmed.
                        flight.drain().await.ok();
                        conn.close(200, "reconnecting").await.ok();
                        sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
                        continue 'connect;
                    }
                    Err(e) => {
                        self.error("database");
                        database.failed(&e);
                        listener = None;
                        // Whatever the flag says now, claim and find out again once back.
                        pace = Pace::default();
                        sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
                        continue;
                    }
                };
                match pace.after_claim(claimed) {
                    Next::Claim => continue,
                    Next::DeclareFlowing | Next::DeclareWaiting => {
                        let waiting = matches!(pace, Pace::Waiting);
                        if let Err(e) = declare_waiting(&self.table, &self.pool, waiting).await {
                            self.error("database");
                            database.failed(&e);
                            pace = Pace::default();
                            sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
                        }
                        continue;
                    }
                    Next::Pause(pause) => {
                        sleep_unless_cancelled(pause, &shutdown).await;
                        continue;
                    }
                    // Idle for a while: what is still in flight finishes before the sleep, so
                    // its failure is seen now rather than at the next wake-up.
                    // (Handled as the next claim's failure.)
                    Next::Sleep => {
                        if let Err(e) = flight.drain().await {
                            drained = Some(e);
                            continue;
                        }
                    }
                }
                if !conn.status().connected() {
                    self.error("broker");
                    broker.failed(&"connection closed");
                    self.broker_up.store(false, Ordering::Relaxed);
                    flight.drain().await.ok();
                    continue 'connect;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    ok = wait_for_notification(&mut listener) => if !ok { listener = None },
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
        // Writers notify again: another relay sleeping on notifications must not depend on
        // one that has gone. Best effort: the fallback poll covers a failure.
        declare_waiting(&self.table, &self.pool, true).await.ok();
        self.broker_up.store(false, Ordering::Relaxed);
        tracing::info!(outbox = self.table.name, "relay stopped");
    }
}

/// The batches of one connection that were sent and are not finished yet, at most `limit`:
/// each finishes (confirms, marks, commits) in a task of its own while the relay claims on.
struct Flight {
    tasks: JoinSet<Result<usize, RelayError>>,
    limit: usize,
    metrics: Option<RelayMetrics>,
    /// Batches finished with every event confirmed, since the relay started.
    accepted: u64,
    /// Set by a batch not accepted, until the relay has reconnected: no batch is sent meanwhile.
    failing: Arc<AtomicBool>,
}

impl Flight {
    fn new(limit: usize, metrics: Option<RelayMetrics>) -> Self {
        Self {
            tasks: JoinSet::new(),
            limit: limit.max(1),
            metrics,
            accepted: 0,
            failing: Arc::default(),
        }
    }

    /// Lets `batch` finish on its own; returns the rows it claimed.
    fn launch(&mut self, batch: InFlight) -> usize {
        let claimed = batch.len();
        let metrics = self.metrics.clone();
        let failing = self.failing.clone();
        self.tasks
            .spawn(async move { batch.finish(metrics.as_ref(), &failing).await });
        claimed
    }

    /// The first failure among the batches already finished.
    fn finished(&mut self) -> Result<(), RelayError> {
        let mut first = Ok(());
        while let Some(done) = self.tasks.try_join_next() {
            keep_first(&mut first, &mut self.accepted, done);
        }
        first
    }

    /// Waits until another batch may be sent; the first failure among those it waited for.
    async fn room(&mut self) -> Result<(), RelayError> {
        let mut first = Ok(());
        while self.tasks.len() >= self.limit {
            match self.tasks.join_next().await {
                Some(done) => keep_first(&mut first, &mut self.accepted, done),
                None => break,
            }
        }
        first
    }

    /// Waits for every batch in flight; the first failure.
    async fn drain(&mut self) -> Result<(), RelayError> {
        let mut first = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            keep_first(&mut first, &mut self.accepted, done);
        }
        first
    }
}

fn keep_first(
    first: &mut Result<(), RelayError>,
    accepted: &mut u64,
    done: Result<Result<usize, RelayError>, JoinError>,
) {
    match done {
        Ok(Ok(_)) => *accepted += 1,
        Ok(Err(e)) => {
            if first.is_ok() {
                *first = Err(e);
            }
        }
        // A panic in a batch rolls its transaction back: its rows are published again.
        Err(e) => {
            tracing::error!(error = %e, "relay: a batch failed; its events will be sent again")
        }
    }
}

/// A connection and a channel in confirm mode, with `table`'s topology declared: what
/// [`publish_batch`] needs (public so tests can run the relay one step at a time).
pub async fn open_channel(
    table: &Table,
    url: &str,
    declare_topology: bool,
) -> Result<(Connection, Channel), lapin::Error> {
    open_channel_on(table, url, declare_topology)
        .await
        .map(|(conn, channel, _)| (conn, channel))
}

/// [`open_channel`] on the first node of `url` that answers, also naming that node.
async fn open_channel_on(
    table: &Table,
    url: &str,
    declare_topology: bool,
) -> Result<(Connection, Channel, String), lapin::Error> {
    let (conn, node) = amqp::connect_node(url, table.connection_name).await?;
    let mut channel = conn.create_channel().await?;
    // The relay declares the topology too, so the consumer's queue exists before the first
    // publish even if the user-service has never run (unless the setup did, under an identity
    // the relay's does not have).
    if declare_topology {
        channel = amqp::declare_on(&conn, channel, &table.topology, &table.check_queue).await?;
    }
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((conn, channel, node))
}

/// Sets the table's wake-up flag (`relay_wakeup.waiting` in `auth_db`): whether writers notify
/// (see `auth_db`'s migration `0005`). The flag is a hint, not a guarantee (the fallback poll is
/// one), so its commit need not wait for the WAL flush.
pub async fn declare_waiting(
    table: &Table,
    pool: &PgPool,
    waiting: bool,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&table.declare_waiting)
        .bind(waiting)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

async fn listen(pool: &PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Waits for one notification; false when the listener broke (the caller drops it and polls).
async fn wait_for_notification(listener: &mut Option<PgListener>) -> bool {
    match listener {
        Some(l) => l.recv().await.is_ok(),
        None => std::future::pending().await,
    }
}
