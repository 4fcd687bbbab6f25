//! The event consumer: RabbitMQ → `user_db`.
//!
//! It takes whatever the prefetch window holds right now (never waiting for a batch to fill, so
//! a lone event is applied at once), decodes each message, sends the ones that can never succeed
//! to the dead-letter queue with the reason in headers, applies the rest in ONE transaction with
//! one conditional multi-row upsert, and only after the commit acks everything up to the last
//! delivery. With `prefetch = 1` the same code is the naive one-transaction-per-message consumer.
//!
//! When `user_db` is unreachable the batch stays unacked and is retried with backoff, so nothing
//! is lost and the budget is not burnt in a tight loop; if RabbitMQ goes away the unacked
//! messages are redelivered and the consumer reconnects.

use crate::store;
use contract::topology::{self, ConsumerQueues};
use contract::{event, Envelope, Timestamp};
use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection};
use platform::backoff::{Backoff, OutageLog};
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer's name; its queues are `<name>.user-events` and `<name>.user-events.dlq`.
    pub name: String,
    /// Messages in flight per consumer, and the largest batch applied in one transaction.
    pub prefetch: u16,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            name: topology::USER_SERVICE.to_owned(),
            prefetch: 500,
        }
    }
}

/// Counters of what the consumer did, for readiness and metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Snapshots that changed `user_db`.
    pub applied: AtomicU64,
    /// Events acked without effect because `user_db` already held that version or a newer one.
    pub ignored_stale: AtomicU64,
    /// Messages sent to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// True while the consumer holds a broker connection.
    pub broker_up: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("delivery stream ended")]
    StreamEnded,
    #[error("the broker refused a dead-letter copy")]
    DeadLetterRefused,
}

pub struct Consumer {
    pool: PgPool,
    amqp_url: String,
    config: ConsumerConfig,
    queues: ConsumerQueues,
    stats: Arc<SyncStats>,
}

impl Consumer {
    pub fn new(
        pool: PgPool,
        amqp_url: String,
        config: ConsumerConfig,
        stats: Arc<SyncStats>,
    ) -> Self {
        let queues = ConsumerQueues::for_consumer(&config.name);
        Self {
            pool,
            amqp_url,
            config,
            queues,
            stats,
        }
    }

    /// Consumes until `shutdown`, reconnecting with backoff. On shutdown it stops taking
    /// messages, finishes and acks the batch in hand, and closes the connection.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut broker = OutageLog::new("consumer: RabbitMQ");
        let mut backoff = Backoff::reconnect();
        while !shutdown.is_cancelled() {
            let (conn, channel, dead_letters) = match self.open().await {
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
            tracing::info!(queue = %self.queues.main, prefetch = self.config.prefetch, "consumer connected");
            let result = self.consume(&channel, &dead_letters, &shutdown).await;
            self.stats.broker_up.store(false, Ordering::Relaxed);
            conn.close(200, "consumer stopping").await.ok();
            if let Err(e) = result {
                broker.failed(&e);
                sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
            }
        }
        tracing::info!("consumer stopped");
    }

    async fn open(&self) -> Result<(Connection, Channel, Channel), lapin::Error> {
        let conn =
            platform::amqp::connect(&self.amqp_url, &format!("{} consumer", self.config.name))
                .await?;
        let channel = conn.create_channel().await?;
        platform::amqp::declare_topology(&channel, &[&self.config.name]).await?;
        channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        // Dead letters go out on their own channel with confirms, so the message is acked only
        // once the broker holds its dead-letter copy.
        let dead_letters = conn.create_channel().await?;
        dead_letters
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((conn, channel, dead_letters))
    }

    async fn consume(
        &self,
        channel: &Channel,
        dead_letters: &Channel,
        shutdown: &CancellationToken,
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
                next = deliveries.next() => next.ok_or(ConsumeError::StreamEnded)??,
            };
            let mut batch = vec![first];
            // Whatever else has already arrived joins the batch; nothing waits for more.
            while batch.len() < usize::from(self.config.prefetch.max(1)) {
                match deliveries.next().now_or_never() {
                    Some(Some(Ok(d))) => batch.push(d),
                    Some(Some(Err(e))) => return Err(e.into()),
                    Some(None) => return Err(ConsumeError::StreamEnded),
                    None => break,
                }
            }
            if !self.handle_batch(batch, dead_letters, shutdown).await? {
                return Ok(()); // shut down while user_db was unreachable; broker redelivers
            }
        }
    }

    /// Dead-letters the undecodable, applies the rest, acks the batch. Returns false when it
    /// gave up waiting for `user_db` because of shutdown (nothing acked, nothing lost).
    async fn handle_batch(
        &self,
        batch: Vec<Delivery>,
        dead_letters: &Channel,
        shutdown: &CancellationToken,
    ) -> Result<bool, ConsumeError> {
        let mut events = Vec::with_capacity(batch.len());
        for delivery in &batch {
            match event::decode(&delivery.data) {
                Ok(envelope) => events.push(envelope),
                Err(reason) => {
                    self.dead_letter(dead_letters, delivery, reason.reason(), &reason.to_string())
                        .await?;
                }
            }
        }
        if !events.is_empty() && !self.apply_with_retry(events, shutdown).await {
            return Ok(false);
        }
        if let Some(last) = batch.last() {
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(true)
    }

    /// Applies in one transaction, retrying with backoff while `user_db` is unreachable.
    async fn apply_with_retry(&self, events: Vec<Envelope>, shutdown: &CancellationToken) -> bool {
        let (events, duplicates) = store::newest_per_user(events);
        let mut outage = OutageLog::new("consumer: user_db");
        let mut backoff = Backoff::reconnect();
        loop {
            match self.apply_once(&events).await {
                Ok(applied) => {
                    outage.recovered();
                    let stale = events.len() - applied.len() + duplicates;
                    self.stats
                        .applied
                        .fetch_add(applied.len() as u64, Ordering::Relaxed);
                    self.stats
                        .ignored_stale
                        .fetch_add(stale as u64, Ordering::Relaxed);
                    for user in &applied {
                        tracing::info!(user_id = %user.id, "User synced: {}", user.email);
                    }
                    if stale > 0 {
                        tracing::debug!(stale, "ignored events older than user_db's copy");
                    }
                    return true;
                }
                Err(e) => {
                    outage.failed(&e);
                    if shutdown.is_cancelled() {
                        return false;
                    }
                    sleep_unless_cancelled(backoff.next_delay(), shutdown).await;
                }
            }
        }
    }

    async fn apply_once(&self, events: &[Envelope]) -> Result<Vec<store::Applied>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let applied = store::apply(&mut tx, events).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Publishes a copy of `delivery` to the dead-letter queue with why it failed, and waits for
    /// the broker's confirm (the caller acks the original afterwards).
    async fn dead_letter(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        reason: &str,
        detail: &str,
    ) -> Result<(), ConsumeError> {
        tracing::warn!(reason, detail, routing_key = %delivery.routing_key, "dead-lettering message");
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.to_owned()));
        let first_failure = headers
            .inner()
            .get("x-first-failure-time")
            .cloned()
            .unwrap_or_else(|| text(&Timestamp::now().to_string()));
        headers.insert("x-error-reason".into(), text(reason));
        headers.insert("x-error-detail".into(), text(detail));
        headers.insert(
            "x-original-exchange".into(),
            text(delivery.exchange.as_str()),
        );
        headers.insert(
            "x-original-routing-key".into(),
            text(delivery.routing_key.as_str()),
        );
        headers.insert("x-first-failure-time".into(), first_failure);
        headers.insert("x-consumer".into(), text(&self.config.name));
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                "",
                &self.queues.dead_letter,
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(_) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(ConsumeError::DeadLetterRefused),
        }
    }
}

async fn sleep_unless_cancelled(delay: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(delay) => {}
    }
}
