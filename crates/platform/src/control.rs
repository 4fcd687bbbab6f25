//! The loop every control queue shares (`contract::control`: the auth-service's receipts and
//! replies, the appointment-service's commands): one message at a time, handled by the
//! service's [`Handler`], acked after its transaction, or rejected into the queue's dead-letter
//! queue (the queue's own arguments) with the reason logged. While the handler's database is
//! unreachable the message waits, retried in place with backoff; a lost broker connection is
//! reconnected with backoff.

use crate::amqp;
use crate::backoff::{Backoff, OutageLog};
use crate::shutdown::sleep_unless_cancelled;
use contract::topology::Declaration;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use std::future::Future;
use tokio_util::sync::CancellationToken;

/// What happens to a message once handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// Into the dead-letter queue: a reason label (for a counter) and the detail (logged).
    Reject(&'static str, String),
}

/// A service's handling of one control message.
pub trait Handler: Send + Sync {
    /// Handles `delivery` in the service's database; an error is an outage (the message is
    /// tried again), anything the message itself gets wrong is a [`Disposition::Reject`].
    fn handle(
        &self,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<Disposition, sqlx::Error>> + Send;

    /// Called for each rejected message (to count it).
    fn rejected(&self, _reason: &'static str) {}
}

/// Where and how a control queue is read.
#[derive(Debug, Clone)]
pub struct Queue {
    pub amqp_url: String,
    /// The connection's name in the management UI.
    pub connection_name: &'static str,
    pub queue: String,
    /// Declared on connecting (empty under the setup, which declared them).
    pub declarations: Vec<Declaration>,
    pub prefetch: u16,
    /// Messages handled at once (each in its own transaction).
    pub concurrency: usize,
}

/// Consumes `queue` with `handler` until `shutdown`.
pub async fn run<H: Handler>(queue: Queue, handler: H, shutdown: CancellationToken) {
    let mut broker = OutageLog::new(format!("{}: RabbitMQ", queue.queue));
    let mut backoff = Backoff::reconnect();
    while !shutdown.is_cancelled() {
        let consumed = async {
            let (conn, _) = amqp::connect_node(&queue.amqp_url, queue.connection_name).await?;
            let mut channel = conn.create_channel().await?;
            if !queue.declarations.is_empty() {
                channel = amqp::declare_on(&conn, channel, &queue.declarations, &queue.queue).await?;
            }
            channel
                .basic_qos(queue.prefetch, BasicQosOptions::default())
                .await?;
            let mut deliveries = channel
                .basic_consume(
                    &queue.queue,
                    &format!("{}-{}", queue.connection_name, uuid::Uuid::new_v4()),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            broker.recovered();
            backoff.reset();
            // Up to `concurrency` messages in hand at once, each acked on its own when its
            // transaction is done (what the handlers do commutes: versions only rise, and
            // commands and replies are idempotent by message id).
            let mut in_hand = FuturesUnordered::new();
            let mut stopping = false;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled(), if !stopping => stopping = true,
                    done = in_hand.next(), if !in_hand.is_empty() => {
                        if let Some(done) = done {
                            let handled: Result<bool, lapin::Error> = done;
                            if !handled? {
                                stopping = true;
                            }
                        }
                    }
                    next = deliveries.next(), if !stopping && in_hand.len() < queue.concurrency.max(1) => {
                        match next {
                            Some(d) => in_hand.push(settle(&queue.queue, &handler, d?, &shutdown)),
                            None => stopping = true,
                        }
                    }
                }
                if stopping && in_hand.is_empty() {
                    break;
                }
            }
            conn.close(200, "stopping").await.ok();
            Ok::<_, lapin::Error>(())
        }
        .await;
        if let Err(e) = consumed {
            broker.failed(&e);
            sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
        }
    }
}

/// Handles `delivery` and acks or rejects it; false when shutdown came while its database was
/// down (nothing acked: the broker delivers it again later).
async fn settle<H: Handler>(
    queue: &str,
    handler: &H,
    delivery: Delivery,
    shutdown: &CancellationToken,
) -> Result<bool, lapin::Error> {
    let Some(disposition) = handle_until_done(queue, handler, &delivery, shutdown).await else {
        return Ok(false);
    };
    match disposition {
        Disposition::Ack => delivery.acker.ack(BasicAckOptions::default()).await?,
        Disposition::Reject(reason, detail) => {
            tracing::warn!(queue = %queue, reason, detail, "control message set aside");
            handler.rejected(reason);
            delivery
                .acker
                .reject(BasicRejectOptions { requeue: false })
                .await?;
        }
    }
    Ok(true)
}

/// Handles `delivery`, waiting out an outage of the database; `None` on shutdown meanwhile.
async fn handle_until_done<H: Handler>(
    queue: &str,
    handler: &H,
    delivery: &Delivery,
    shutdown: &CancellationToken,
) -> Option<Disposition> {
    let mut outage = OutageLog::new(format!("{queue}: database"));
    let mut backoff = Backoff::reconnect();
    loop {
        match handler.handle(delivery).await {
            Ok(d) => {
                outage.recovered();
                return Some(d);
            }
            Err(e) => {
                outage.failed(&e);
                if shutdown.is_cancelled() {
                    return None;
                }
                sleep_unless_cancelled(backoff.next_delay(), shutdown).await;
            }
        }
    }
}

/// The AMQP `type` of a delivery ("" when it has none).
pub fn kind_of(delivery: &Delivery) -> String {
    delivery
        .properties
        .kind()
        .as_ref()
        .map(|k| k.to_string())
        .unwrap_or_default()
}

/// The delivery's `message-id` as a UUID, if it is one.
pub fn message_id_of(delivery: &Delivery) -> Option<uuid::Uuid> {
    delivery
        .properties
        .message_id()
        .as_ref()
        .and_then(|id| id.as_str().parse().ok())
}
