//! The user-event consumer, shared by every service that keeps a copy of the users (the
//! user-service's `users`, the appointment-service's `clinicians`, a further consumer's own
//! table): RabbitMQ → the service's database. A service supplies only [`Apply`], how one part
//! of a batch (changes, or repairs) changes its own tables; the rest is here, once.
//!
//! It takes whatever has been delivered right now, up to a batch (never waiting for a batch to
//! fill, so a lone event is applied at once; a prefetch window larger than a batch lets the
//! broker go on delivering while a batch commits), sets aside unread any message that is not a
//! trusted publisher's (its AMQP `user_id`, and who first published it when a trusted publisher
//! sent it back: [`wire::TrustedPublishers`]), decodes the rest, sends the ones that can never
//! succeed to the dead-letter queue with the reason in headers, keeps the newest event per user
//! ([`newest_per_user`]), applies them in ONE transaction through [`Apply`], and only after the
//! commit acks everything up to the batch's last delivery with one multiple-ack. With
//! `prefetch = 1` the same code is the naive one-transaction-per-message consumer.
//!
//! When the database is unreachable the batch stays unacked and is retried with backoff, so
//! nothing is lost and the budget is not burnt in a tight loop; if RabbitMQ goes away the
//! unacked messages are redelivered and the consumer reconnects.
//!
//! [`settings`] is the consumer's part of every consumer service's command line.
//!
//! [`service`] is the rest of a consumer service's skeleton: its database, token verifier,
//! counters, consumer, metrics and listener, built and run in one place.
//!
//! [`metrics`] makes what it does visible to Prometheus (outcomes, batches, apply time, lag
//! from the change to its apply, queue depths).

pub mod metrics;
pub mod service;
pub mod settings;

use contract::control::{Receipt, ReceiptEntry, RECEIPT_TYPE};
use contract::topology::{self, ConsumerQueues};
use contract::wire::{self, header, HistoryComplete, TrustedPublishers};
use contract::{event, Envelope, Timestamp, UserId};
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use platform::amqp::{self, Outgoing, PublishError};
use platform::backoff::{Backoff, OutageLog};
use platform::shutdown::sleep_unless_cancelled;
use sqlx::PgPool;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a service applies snapshots to its own copy, inside the consumer's open transaction
/// (commit and ack are the consumer's). The consumer splits each batch ([`by_comparison`]) and
/// calls [`Apply::apply`] once per non-empty part, changes before repairs: `events` hold at most
/// one event per user, the newest of the batch, and `newer` is how each must compare with the
/// stored version to replace it. The implementation is one upsert whose `WHERE` is
/// [`version_rule`]`(alias, newer)`, returning the users whose copy changed, plus anything else
/// the event changes in that service, in statements of their own after the upsert (a CTE of the
/// upsert would read with the snapshot taken before the upsert waited for a concurrent writer).
///
/// Erasures ([`erasures`]: a `user.erased` tombstone, or any snapshot carrying `erasedAt`) go
/// to [`Apply::erase`] instead, after the other parts. There is no default: every copy must say
/// how it forgets a person.
pub trait Apply: Send + Sync + 'static {
    fn apply(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[&Envelope],
        newer: Comparison,
    ) -> impl Future<Output = Result<Vec<Changed>, sqlx::Error>> + Send;

    /// Forgets each erased person of `events` (at most one event per user), whatever the
    /// stored version: keeps (or writes) a row with the id, the greater of the stored and the
    /// event's version, `erased_at` and the payload's placeholders in place of every personal
    /// field, and removes whatever else the service derived from the person. Erasing again
    /// changes nothing; [`version_rule`] never lets another event over an erased row.
    fn erase(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[&Envelope],
    ) -> impl Future<Output = Result<Vec<Changed>, sqlx::Error>> + Send;

    /// Records, in the transaction of the batch that carried it, the end-of-history mark a
    /// backfill sends after the last stored event (`wire::HISTORY_COMPLETE_TYPE`, from
    /// `portal consumer add`), with how many users a complete copy holds. A service that must
    /// know every existing user before it serves keeps it; the default forgets it.
    fn history_complete(
        &self,
        conn: &mut sqlx::PgConnection,
        mark: HistoryComplete,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        let _ = (conn, mark);
        async { Ok(()) }
    }
}

/// The trace id of each user's change in a batch, from the `traceparent` the relay sent.
type Traces = HashMap<uuid::Uuid, String>;

/// A user whose copy a batch changed: counted, and logged with `label` (an email, a name).
#[derive(Debug, sqlx::FromRow)]
pub struct Changed {
    pub id: uuid::Uuid,
    pub label: String,
}

/// Orders two snapshots of one user under the contract's rule: a versioned snapshot beats an
/// unversioned one, higher versions beat lower, a repair beats a change at the same version
/// (it must apply even where that change would be ignored), and unversioned ones are ordered by
/// timestamp.
fn newness(e: &Envelope) -> (bool, i64, bool, Timestamp) {
    (
        e.payload.user_version.is_some(),
        e.payload.user_version.unwrap_or(0),
        e.event_type.is_repair(),
        e.timestamp,
    )
}

/// Keeps only the newest event per user, so one statement never touches a row twice.
/// Returns the survivors and how many were dropped as older duplicates.
pub fn newest_per_user(events: Vec<Envelope>) -> (Vec<Envelope>, usize) {
    let total = events.len();
    let mut newest: HashMap<UserId, Envelope> = HashMap::with_capacity(total);
    for e in events {
        match newest.get(&e.payload.user_id) {
            Some(kept) if newness(kept) >= newness(&e) => {}
            _ => {
                newest.insert(e.payload.user_id, e);
            }
        }
    }
    let kept: Vec<Envelope> = newest.into_values().collect();
    let dropped = total - kept.len();
    (kept, dropped)
}

/// How a snapshot's version must compare with the stored one to replace it: a change must be
/// strictly newer, a repair (`user.snapshot`) newer or equal, so it puts right a row altered
/// behind the system's back at the same version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>`: changes.
    Newer,
    /// `>=`: repairs.
    NewerOrEqual,
}

impl Comparison {
    /// The SQL operator.
    pub fn operator(self) -> &'static str {
        match self {
            Self::Newer => ">",
            Self::NewerOrEqual => ">=",
        }
    }
}

/// The batch split by how the version rule compares each snapshot with the stored one:
/// changes, then repairs (either part may be empty). The consumer applies each non-empty part
/// with one [`Apply::apply`].
/// Erasures are in neither part ([`erasures`]).
pub fn by_comparison(events: &[Envelope]) -> [(Comparison, Vec<&Envelope>); 2] {
    let (repairs, changes): (Vec<&Envelope>, Vec<&Envelope>) = events
        .iter()
        .filter(|e| !is_erasure(e))
        .partition(|e| e.event_type.is_repair());
    [
        (Comparison::Newer, changes),
        (Comparison::NewerOrEqual, repairs),
    ]
}

/// True for an event that says its person was erased: the `user.erased` tombstone, or any
/// event with `erasedAt` (a stored event rewritten by the erasure, replayed or backfilled).
pub fn is_erasure(e: &Envelope) -> bool {
    e.event_type.is_erasure() || e.payload.is_erased()
}

/// The events of the batch that erase their person ([`Apply::erase`]).
pub fn erasures(events: &[Envelope]) -> Vec<&Envelope> {
    events.iter().filter(|e| is_erasure(e)).collect()
}

/// The version rule as the `WHERE` of an `INSERT INTO <table> AS <stored> ... ON CONFLICT (id)
/// DO UPDATE SET ...`, the one place every copy takes it from: a versioned snapshot replaces a
/// row whose version it beats by `newer` ([`Comparison`]) or an unversioned row; an
/// unversioned one (the portal's original producer) replaces only an unversioned row with an
/// older event timestamp. Nothing replaces an erased row. Every table needs `user_version
/// bigint`, `event_timestamp timestamptz` and `erased_at timestamptz` columns.
pub fn version_rule(stored: &str, newer: Comparison) -> String {
    let newer = newer.operator();
    format!(
        "{stored}.erased_at IS NULL AND (\
           (EXCLUDED.user_version IS NOT NULL \
             AND ({stored}.user_version IS NULL OR EXCLUDED.user_version {newer} {stored}.user_version)) \
           OR (EXCLUDED.user_version IS NULL AND {stored}.user_version IS NULL \
             AND EXCLUDED.event_timestamp > {stored}.event_timestamp))"
    )
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer's name; its queues are `<name>.user-events` and `<name>.user-events.dlq`.
    pub name: String,
    /// Messages the broker may have delivered and not yet had acked (the window). Larger than
    /// the batch, the next batch is delivered while one is applied and committed (measured no
    /// faster on two cores, see BENCHMARKS.md, so the default is the batch).
    pub prefetch: u16,
    /// The largest batch applied in one transaction (at most `prefetch`).
    pub batch_size: u16,
    /// Waits before each new attempt of a message that failed for a reason of its own (not
    /// because the copy's database is down); after the last, it is dead-lettered.
    pub retry_delays: Vec<Duration>,
    /// Broker users trusted beside the system's own publishers and this consumer's own user
    /// (`TRUSTED_PUBLISHERS`, e.g. a legacy producer during a migration, which must then set
    /// `user_id`).
    pub trusted_publishers: Vec<String>,
    /// Declare the consumer's queues when connecting (off when the least-privilege setup
    /// declared them and the consumer's broker user may not; its queue is then only checked).
    pub declare_topology: bool,
    /// Publish a receipt after each committed batch (`contract::control::Receipt`).
    pub send_receipts: bool,
}

impl ConsumerConfig {
    /// The broker's window unless CONSUMER_PREFETCH says otherwise.
    pub const DEFAULT_PREFETCH: u16 = 500;
    /// Messages per transaction unless CONSUMER_BATCH_SIZE says otherwise.
    pub const DEFAULT_BATCH_SIZE: u16 = 500;

    /// Messages per transaction: the batch size, never more than the window.
    pub fn batch_limit(&self) -> usize {
        usize::from(self.batch_size.min(self.prefetch).max(1))
    }
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            name: topology::USER_SERVICE.to_owned(),
            prefetch: Self::DEFAULT_PREFETCH,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            retry_delays: topology::RETRY_DELAYS.to_vec(),
            trusted_publishers: Vec::new(),
            declare_topology: true,
            send_receipts: true,
        }
    }
}

/// Counters of what the consumer did, for readiness and metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Snapshots that changed the copy.
    pub applied: AtomicU64,
    /// Events acked without effect because the copy already held that version or a newer one.
    pub ignored_stale: AtomicU64,
    /// Messages sent to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Messages sent to a retry queue to be tried again later.
    pub retried: AtomicU64,
    /// Of `ignored_stale`, the events that had a newer one of the same user in their batch.
    pub duplicates: AtomicU64,
    /// Of `dead_lettered`, the messages of an untrusted publisher (never read).
    pub untrusted: AtomicU64,
    /// The histograms, once [`metrics::register`] has registered them with a service.
    pub(crate) observed: std::sync::OnceLock<metrics::Observed>,
    /// True while the consumer holds a broker connection.
    pub broker_up: AtomicBool,
    /// The largest change-to-apply lag in the last applied batch, in milliseconds.
    pub last_batch_lag_ms: AtomicU64,
    /// When the last batch was applied, in Unix milliseconds (0 before the first).
    pub last_applied_at_ms: AtomicU64,
}

impl SyncStats {
    /// The counters as readiness reports them (`"sync"` in `/health/ready`), which
    /// `portal status` reads.
    pub fn summary(&self) -> serde_json::Value {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let applied_at = i64::try_from(read(&self.last_applied_at_ms))
            .ok()
            .filter(|ms| *ms > 0)
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| Timestamp::from(t).to_string());
        serde_json::json!({
            "applied": read(&self.applied),
            "ignoredStale": read(&self.ignored_stale),
            "deadLettered": read(&self.dead_lettered),
            "retried": read(&self.retried),
            "lastBatchLagMs": read(&self.last_batch_lag_ms),
            "lastAppliedAt": applied_at,
        })
    }

    /// Records a batch applied now whose oldest change was made at `oldest`.
    fn batch_applied(&self, oldest: Option<chrono::DateTime<chrono::Utc>>) {
        let now = chrono::Utc::now();
        if let Some(oldest) = oldest {
            let lag = (now - oldest).num_milliseconds().max(0);
            self.last_batch_lag_ms
                .store(u64::try_from(lag).unwrap_or(0), Ordering::Relaxed);
        }
        self.last_applied_at_ms.store(
            u64::try_from(now.timestamp_millis()).unwrap_or(0),
            Ordering::Relaxed,
        );
    }
}

#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("delivery stream ended")]
    StreamEnded,
    #[error("the connection to RabbitMQ was lost")]
    ConnectionLost,
    #[error("the broker refused to take a copy for the retry or dead-letter queue")]
    RepublishRefused,
    #[error("cannot record that the history is complete: {0}")]
    HistoryNotRecorded(String),
}

pub struct Consumer<A: Apply> {
    pool: PgPool,
    copy: A,
    amqp_url: String,
    config: ConsumerConfig,
    queues: ConsumerQueues,
    stats: Arc<SyncStats>,
    /// This consumer's broker user: the `user_id` of the copies it sends to its retry and
    /// dead-letter queues (the broker allows no other).
    own_user: String,
    /// Whose messages are applied: `wire::SYSTEM_PUBLISHERS`, `own_user` (its copies come back
    /// from its retry queues) and the configured ones; any other is dead-lettered unread.
    trusted: TrustedPublishers,
}

impl<A: Apply> Consumer<A> {
    /// A consumer applying to `pool` through `copy`. `amqp_url` must name its broker user: that
    /// user is trusted (its retry copies come back under it), so it is never guessed (`guest`
    /// is what a URL without one would log in as).
    pub fn new(
        pool: PgPool,
        copy: A,
        amqp_url: String,
        config: ConsumerConfig,
        stats: Arc<SyncStats>,
    ) -> Result<Self, amqp::NoBrokerUser> {
        let queues = ConsumerQueues::with_retry_delays(&config.name, &config.retry_delays);
        let own_user = amqp::broker_user_of(&amqp_url)?;
        let trusted = TrustedPublishers::new(&own_user, &config.trusted_publishers);
        Ok(Self {
            pool,
            copy,
            amqp_url,
            config,
            queues,
            stats,
            own_user,
            trusted,
        })
    }

    /// Consumes until `shutdown`, reconnecting with backoff. On shutdown it stops taking
    /// messages, finishes and acks the batch in hand, and closes the connection.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut broker = OutageLog::new("consumer: RabbitMQ");
        let mut backoff = Backoff::reconnect();
        while !shutdown.is_cancelled() {
            let (conn, channel, side, node) = match self.open().await {
                Ok(opened) => opened,
                Err(e) => {
                    broker.failed(&e);
                    sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
                    continue;
                }
            };
            broker.recovered();
            backoff.reset();
            self.stats.broker_up.store(true, Ordering::Relaxed);
            tracing::info!(queue = %self.queues.main, prefetch = self.config.prefetch, node = %node, "consumer connected");
            // The connection's own error, not only the end of the delivery stream: once (a
            // chaos run's connection cut), the stream never ended after the broker closed the
            // connection, and the consumer waited on it for ever with messages in its queue.
            let lost = CancellationToken::new();
            conn.on_error({
                let lost = lost.clone();
                move |_| lost.cancel()
            });
            let result = self.consume(&channel, &side, &shutdown, &lost).await;
            self.stats.broker_up.store(false, Ordering::Relaxed);
            conn.close(200, "consumer stopping").await.ok();
            if let Err(e) = result {
                broker.failed(&e);
                sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
            }
        }
        tracing::info!("consumer stopped");
    }

    /// One step of [`Consumer::run`], for tests that drive the consumer instead of running it:
    /// takes what the queue holds right now (at most a batch) as one batch and
    /// handles it exactly as the running consumer does (dead letters, retries, one transaction,
    /// acks after the commit). Returns how many messages it took.
    pub async fn process_ready(&self) -> anyhow::Result<usize> {
        let (conn, channel, side, _) = self.open().await?;
        let mut batch = Vec::new();
        while batch.len() < self.config.batch_limit() {
            match channel
                .basic_get(&self.queues.main, BasicGetOptions::default())
                .await?
            {
                Some(message) => batch.push(message.delivery),
                None => break,
            }
        }
        let taken = batch.len();
        if taken > 0 {
            self.handle_batch(batch, &side, &CancellationToken::new())
                .await?;
        }
        conn.close(200, "step done").await.ok();
        Ok(taken)
    }

    /// A connection to the first node that answers, its consuming channel, its side channels
    /// (set-aside copies with confirms, receipts) and the node's URL without the password.
    async fn open(&self) -> Result<(Connection, Channel, Side, String), lapin::Error> {
        let (conn, node) =
            amqp::connect_node(&self.amqp_url, &format!("{} consumer", self.config.name)).await?;
        let mut channel = conn.create_channel().await?;
        if self.config.declare_topology {
            channel = amqp::declare_topology_on(
                &conn,
                channel,
                std::slice::from_ref(&self.queues),
                &self.queues.main,
            )
            .await?;
        } else {
            // Fails clearly when the setup has not made the queue (a passive declare needs no
            // permission).
            amqp::queue_depth(&channel, &self.queues.main).await?;
        }
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        // Retry and dead-letter copies go out on their own channel with confirms, so a message
        // is acked only once the broker holds its copy.

        let copies = conn.create_channel().await?;
        copies
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        // Receipts on a channel of their own: one the broker closes (a permission missing on an
        // install not set up again) stops the receipts, not the copies.
        let receipts = match self.config.send_receipts {
            true => Some(conn.create_channel().await?),
            false => None,
        };
        Ok((
            conn,
            channel,
            Side {
                copies,
                receipts: std::sync::Mutex::new(receipts),
            },
            node,
        ))
    }

    /// Publishes what a committed batch applied (see `contract::control::Receipt`), without
    /// waiting for the broker: a receipt lost is made good by the next change, or by the
    /// snapshot the offboarding saga sends again when one is late.
    async fn send_receipt(&self, side: &Side, users: Vec<ReceiptEntry>) {
        if users.is_empty() {
            return;
        }
        let Some(channel) = side.receipts.lock().ok().and_then(|c| c.clone()) else {
            return;
        };
        let receipt = Receipt {
            consumer: self.config.name.clone(),
            applied_at: Timestamp::now(),
            users,
        };
        let Ok(body) = serde_json::to_vec(&receipt) else {
            return;
        };
        let properties = amqp::message_properties(
            &uuid::Uuid::now_v7().to_string(),
            RECEIPT_TYPE,
            &self.config.name,
            &self.own_user,
        );
        let sent = channel
            .basic_publish(
                topology::CONTROL_EXCHANGE,
                &topology::receipt_key(&self.config.name),
                lapin::options::BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot send receipts; none are sent until the consumer reconnects");
            if let Ok(mut held) = side.receipts.lock() {
                *held = None;
            }
        }
    }

    async fn consume(
        &self,
        channel: &Channel,
        side: &Side,
        shutdown: &CancellationToken,
        lost: &CancellationToken,
    ) -> Result<(), ConsumeError> {
        let mut deliveries = channel
            .basic_consume(
                &self.queues.main,
                &format!("{}-{}", self.config.name, uuid::Uuid::new_v4()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = lost.cancelled() => return Err(ConsumeError::ConnectionLost),
                next = deliveries.next() => next.ok_or(ConsumeError::StreamEnded)??,
            };
            let mut batch = vec![first];
            // Whatever else has already arrived joins the batch; nothing waits for more.
            while batch.len() < self.config.batch_limit() {
                match deliveries.next().now_or_never() {
                    Some(Some(Ok(d))) => batch.push(d),
                    Some(Some(Err(e))) => return Err(e.into()),
                    Some(None) => return Err(ConsumeError::StreamEnded),
                    None => break,
                }
            }
            if !self.handle_batch(batch, side, shutdown).await? {
                return Ok(()); // shut down while its database was unreachable; broker redelivers
            }
        }
    }

    /// Dead-letters the undecodable, applies the rest, acks the batch. Returns false when it
    /// gave up waiting for its database because of shutdown (nothing acked, nothing lost).
    async fn handle_batch(
        &self,
        batch: Vec<Delivery>,
        side: &Side,
        shutdown: &CancellationToken,
    ) -> Result<bool, ConsumeError> {
        // What the batch applied, for its receipt.
        let mut receipts = Vec::new();
        // A message copied to the retry or dead-letter queue is acked at once, on its own: were
        // it left for the batch's ack, a redelivery (connection lost while its database is down)
        // would copy it a second time.
        let mut acked = vec![false; batch.len()];
        let mut decoded = Vec::with_capacity(batch.len());
        let mut history_complete: Option<HistoryComplete> = None;
        // The trace of each user's change in this batch (the relay's `traceparent`), for the
        // line that says it was applied.
        let mut traces = Traces::new();
        for (i, delivery) in batch.iter().enumerate() {
            // Trust first: what an untrusted publisher sent is not even parsed. A requeue or a
            // retry copy is judged by who first published it too, so a forged event stays
            // forged whoever sends it back.
            let publisher = amqp::publisher_of(&delivery.properties);
            let recorded = amqp::header_text(
                &amqp::headers_of(&delivery.properties),
                header::ORIGINAL_USER_ID,
            );
            if let Err(why) = self
                .trusted
                .check(publisher.as_deref(), recorded.as_deref())
            {
                self.dead_letter(side, delivery, event::UNTRUSTED_PUBLISHER, &why.to_string())
                    .await?;
                self.stats.untrusted.fetch_add(1, Ordering::Relaxed);
                delivery.acker.ack(BasicAckOptions::default()).await?;
                acked[i] = true;
                continue;
            }
            if delivery.properties.kind().as_ref().map(|k| k.as_str())
                == Some(wire::HISTORY_COMPLETE_TYPE)
            {
                match serde_json::from_slice::<HistoryComplete>(&delivery.data) {
                    // Two marks in one batch (two backfills): the later one counted later.
                    Ok(mark) => history_complete = Some(mark),
                    Err(e) => {
                        let why = event::DecodeError::InvalidPayload(format!(
                            "end-of-history mark with a bad body: {e}"
                        ));
                        self.dead_letter(side, delivery, why.reason(), &why.to_string())
                            .await?;
                        delivery.acker.ack(BasicAckOptions::default()).await?;
                        acked[i] = true;
                    }
                }
                continue;
            }
            match event::decode(&delivery.data) {
                Ok(envelope) => {
                    let trace = amqp::header_text(
                        &amqp::headers_of(&delivery.properties),
                        platform::trace::TRACEPARENT,
                    );
                    if let Some(id) = trace.as_deref().and_then(platform::trace::trace_id_of) {
                        traces.insert(envelope.payload.user_id.0, id.to_owned());
                    }
                    decoded.push((i, envelope))
                }
                Err(why) => {
                    self.dead_letter(side, delivery, why.reason(), &why.to_string())
                        .await?;
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    acked[i] = true;
                }
            }
        }
        if !decoded.is_empty() || history_complete.is_some() {
            let events = decoded.iter().map(|(_, e)| e.clone()).collect();
            match self
                .apply_with_retry(events, history_complete, &traces, &mut receipts, shutdown)
                .await
            {
                Applied::Done => {}
                Applied::Cancelled => return Ok(false),
                // The batch as a whole failed for a reason of its own data: apply one by one
                // to find the message(s) at fault, and send only those to a retry queue.
                Applied::Rejected(_) => {
                    for (i, envelope) in decoded {
                        match self
                            .apply_with_retry(
                                vec![envelope],
                                None,
                                &traces,
                                &mut receipts,
                                shutdown,
                            )
                            .await
                        {
                            Applied::Done => {}
                            Applied::Cancelled => return Ok(false),
                            Applied::Rejected(e) => {
                                self.retry_later(side, &batch[i], &e).await?;
                                batch[i].acker.ack(BasicAckOptions::default()).await?;
                                acked[i] = true;
                            }
                        }
                    }
                    if history_complete.is_some() {
                        match self
                            .apply_with_retry(
                                Vec::new(),
                                history_complete,
                                &traces,
                                &mut receipts,
                                shutdown,
                            )
                            .await
                        {
                            Applied::Done => {}
                            Applied::Cancelled => return Ok(false),
                            // Nothing of its own can fail: the service's table is broken. Left
                            // unacked, the marker comes back after a reconnection.
                            Applied::Rejected(e) => {
                                tracing::error!(error = %e, "cannot record that the history is complete");
                                return Err(ConsumeError::HistoryNotRecorded(e.to_string()));
                            }
                        }
                    }
                }
            }
        }
        // One ack for the rest: everything up to the last delivery not acked on its own.
        let last_open = batch.iter().zip(&acked).rev().find(|(_, done)| !**done);
        if let Some((last, _)) = last_open {
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        self.send_receipt(side, receipts).await;
        Ok(true)
    }

    /// Applies in one transaction. While its database is unreachable it waits and tries again
    /// with backoff, without limit and without spending any message's retry budget: the outage
    /// is the database's, not the message's. Any other error is the data's, and is returned.
    async fn apply_with_retry(
        &self,
        events: Vec<Envelope>,
        history_complete: Option<HistoryComplete>,
        traces: &Traces,
        receipts: &mut Vec<ReceiptEntry>,
        shutdown: &CancellationToken,
    ) -> Applied {
        let (events, duplicates) = newest_per_user(events);
        let mut outage = OutageLog::new("consumer: database");
        let mut backoff = Backoff::reconnect();
        loop {
            let started = std::time::Instant::now();
            match self.apply_once(&events, history_complete).await {
                Ok(applied) => {
                    outage.recovered();
                    // Lag is measured on what changed the copy: a stale event (older than the
                    // copy) says nothing about how far behind the copy is.
                    let changed: std::collections::HashSet<uuid::Uuid> =
                        applied.iter().map(|c| c.id).collect();
                    let fresh: Vec<&Envelope> = events
                        .iter()
                        .filter(|e| changed.contains(&e.payload.user_id.0))
                        .collect();
                    if let Some(observed) = self.stats.observed.get() {
                        observed.batch(events.len() + duplicates, &fresh, started.elapsed());
                    }
                    if !events.is_empty() {
                        self.stats
                            .batch_applied(fresh.iter().map(|e| e.timestamp.as_datetime()).min());
                    }
                    self.stats
                        .duplicates
                        .fetch_add(duplicates as u64, Ordering::Relaxed);
                    if let Some(mark) = history_complete {
                        tracing::info!(users = mark.users, "end-of-history mark applied");
                    }
                    let stale = events.len() - applied.len() + duplicates;
                    self.stats
                        .applied
                        .fetch_add(applied.len() as u64, Ordering::Relaxed);
                    self.stats
                        .ignored_stale
                        .fetch_add(stale as u64, Ordering::Relaxed);
                    for user in &applied {
                        // The id at INFO; who it is (an email) only at DEBUG.
                        let trace_id = traces.get(&user.id).map_or("-", String::as_str);
                        tracing::info!(user_id = %user.id, trace_id, "user synced");
                        tracing::debug!(user_id = %user.id, label = %user.label, "user synced");
                    }
                    if stale > 0 {
                        tracing::debug!(stale, "ignored events older than the copy");
                    }
                    // Applied or older than the copy: either way the copy holds at least this
                    // version now.
                    receipts.extend(events.iter().filter_map(|e| {
                        Some(ReceiptEntry {
                            user_id: e.payload.user_id,
                            user_version: e.payload.user_version?,
                            changed_at: e.timestamp,
                        })
                    }));
                    return Applied::Done;
                }
                Err(e) if platform::db::is_unavailable(&e) => {
                    outage.failed(&e);
                    if shutdown.is_cancelled() {
                        return Applied::Cancelled;
                    }
                    sleep_unless_cancelled(backoff.next_delay(), shutdown).await;
                }
                Err(e) => {
                    outage.recovered();
                    return Applied::Rejected(e);
                }
            }
        }
    }

    async fn apply_once(
        &self,
        events: &[Envelope],
        history_complete: Option<HistoryComplete>,
    ) -> Result<Vec<Changed>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut applied = Vec::new();
        for (newer, part) in by_comparison(events) {
            if !part.is_empty() {
                applied.extend(self.copy.apply(&mut tx, &part, newer).await?);
            }
        }
        let erased = erasures(events);
        if !erased.is_empty() {
            applied.extend(self.copy.erase(&mut tx, &erased).await?);
        }
        if let Some(mark) = history_complete {
            self.copy.history_complete(&mut tx, mark).await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Sends a message that failed for a reason of its own to the next retry queue, or to the
    /// dead-letter queue once every retry delay has been spent.
    async fn retry_later(
        &self,
        side: &Side,
        delivery: &Delivery,
        error: &sqlx::Error,
    ) -> Result<(), ConsumeError> {
        let attempts =
            amqp::header_int(&amqp::headers_of(&delivery.properties), header::RETRY_COUNT)
                .unwrap_or(0);
        let next = usize::try_from(attempts)
            .ok()
            .and_then(|a| self.queues.retries.get(a));
        let Some(retry) = next else {
            let detail = format!("failed {} times, last: {error}", attempts + 1);
            return self
                .dead_letter(side, delivery, "retries-exhausted", &detail)
                .await;
        };
        tracing::warn!(
            attempt = attempts + 1, delay = ?retry.delay, error = %error,
            "event could not be applied; retrying later"
        );
        let mut headers = failure_headers(delivery, &error.to_string(), &self.trusted);
        headers.insert(
            header::RETRY_COUNT.into(),
            AMQPValue::LongLongInt(attempts + 1),
        );
        self.republish(side, delivery, &retry.name, headers).await?;
        self.stats.retried.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes a copy of `delivery` to the dead-letter queue with why it failed.
    async fn dead_letter(
        &self,
        side: &Side,
        delivery: &Delivery,
        reason: &str,
        detail: &str,
    ) -> Result<(), ConsumeError> {
        tracing::warn!(reason, detail, "dead-lettering message");
        let mut headers = failure_headers(delivery, detail, &self.trusted);
        headers.insert(header::ERROR_REASON.into(), amqp::text(reason));
        headers.insert(header::ERROR_DETAIL.into(), amqp::text(detail));
        headers.insert(header::CONSUMER.into(), amqp::text(&self.config.name));
        self.republish(side, delivery, &self.queues.dead_letter, headers)
            .await?;
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes a persistent copy of `delivery` with `headers` to `queue` (one of this
    /// consumer's retry queues or its dead-letter queue, through its set-aside exchange) and
    /// waits for the broker's confirm; the caller acks the original afterwards, so the copy
    /// exists first.
    async fn republish(
        &self,
        side: &Side,
        delivery: &Delivery,
        queue: &str,
        headers: FieldTable,
    ) -> Result<(), ConsumeError> {
        // The copy is published by this consumer, so it carries this consumer's user_id; who
        // first published it is in `x-original-user-id` (see `failure_headers`).
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(contract::wire::PERSISTENT)
            .with_user_id(self.own_user.as_str().into());
        let copy = Outgoing {
            exchange: &self.queues.set_aside,
            routing_key: queue,
            body: &delivery.data,
            properties,
        };
        match amqp::publish_confirmed(&side.copies, vec![copy])
            .await
            .require_all()
        {
            Ok(_) => Ok(()),
            Err(PublishError::Broker(e)) => Err(e.into()),
            Err(_) => Err(ConsumeError::RepublishRefused),
        }
    }
}

/// The channels beside the consuming one.
struct Side {
    /// Retry and dead-letter copies, with confirms.
    copies: Channel,
    /// Receipts, without confirms; `None` once the broker closed it (until the next connection).
    receipts: std::sync::Mutex<Option<Channel>>,
}

/// The outcome of [`Consumer::apply_with_retry`].
enum Applied {
    Done,
    /// Shutdown came while the copy's database was unreachable.
    Cancelled,
    /// The copy's database refused the data (not an outage).
    Rejected(sqlx::Error),
}

/// The message's headers plus where it first came from and when it first failed; values set by
/// an earlier failure are kept, so a message retried five times still names its first failure.
/// Who first published it is recorded as [`TrustedPublishers::first_publisher`] says: a header
/// an untrusted publisher wrote is replaced by its own name (or removed when it named no one),
/// so a dead letter never names a trusted first publisher it did not have.
fn failure_headers(
    delivery: &Delivery,
    last_error: &str,
    trusted: &TrustedPublishers,
) -> FieldTable {
    let mut headers = amqp::headers_of(&delivery.properties).inner().clone();
    let mut keep_or = |key: &str, value: AMQPValue| {
        headers.entry(key.into()).or_insert(value);
    };
    keep_or(
        header::ORIGINAL_EXCHANGE,
        amqp::text(delivery.exchange.as_str()),
    );
    keep_or(
        header::ORIGINAL_ROUTING_KEY,
        amqp::text(delivery.routing_key.as_str()),
    );
    keep_or(
        header::FIRST_FAILURE_TIME,
        amqp::text(&Timestamp::now().to_string()),
    );
    let publisher = amqp::publisher_of(&delivery.properties);
    let recorded = headers.get(header::ORIGINAL_USER_ID).map(amqp::show_value);
    match trusted.first_publisher(publisher.as_deref(), recorded.as_deref()) {
        Some(first) => headers.insert(header::ORIGINAL_USER_ID.into(), amqp::text(first)),
        None => headers.remove(header::ORIGINAL_USER_ID),
    };
    headers.insert(header::LAST_ERROR.into(), amqp::text(last_error));
    headers.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::{Email, EventType, Role, UserSnapshot};

    fn event(user: UserId, version: Option<i64>, email: &str) -> Envelope {
        Envelope::new(
            EventType::Updated,
            UserSnapshot {
                user_id: user,
                email: Email::parse(email).unwrap(),
                first_name: "A".into(),
                last_name: "B".into(),
                role: Role::Doctor,
                phone_number: None,
                is_active: true,
                must_change_password: false,
                created_at: Timestamp::now(),
                updated_at: None,
                user_version: version,
                previous_role: None,
                changed_fields: None,
                erased_at: None,
            },
        )
    }

    #[test]
    fn a_batch_splits_into_changes_then_repairs_each_with_its_comparison() {
        let (a, b, c) = (UserId::new(), UserId::new(), UserId::new());
        let mut repair = event(b, Some(2), "b@x.co");
        repair.event_type = EventType::Snapshot;
        let events = vec![
            event(a, Some(1), "a@x.co"),
            repair,
            event(c, None, "c@x.co"),
        ];
        let [(first, changes), (second, repairs)] = by_comparison(&events);
        assert_eq!(
            (first, second),
            (Comparison::Newer, Comparison::NewerOrEqual)
        );
        let ids = |part: &[&Envelope]| part.iter().map(|e| e.payload.user_id).collect::<Vec<_>>();
        assert_eq!(ids(&changes), [a, c]);
        assert_eq!(ids(&repairs), [b]);
        assert!(version_rule("u", first).contains("EXCLUDED.user_version > u.user_version"));
        assert!(version_rule("u", second).contains("EXCLUDED.user_version >= u.user_version"));
    }

    #[test]
    fn only_the_newest_event_per_user_survives_a_batch() {
        let (a, b) = (UserId::new(), UserId::new());
        let events = vec![
            event(a, Some(3), "a3@x.co"),
            event(a, Some(5), "a5@x.co"),
            event(a, Some(4), "a4@x.co"),
            event(b, None, "b-legacy@x.co"),
            event(b, Some(1), "b1@x.co"),
            event(a, Some(5), "a5@x.co"),
        ];
        let (kept, dropped) = newest_per_user(events);
        assert_eq!(dropped, 4);
        let mut emails: Vec<_> = kept.iter().map(|e| e.payload.email.to_string()).collect();
        emails.sort();
        assert_eq!(emails, ["a5@x.co", "b1@x.co"]);
    }
}
