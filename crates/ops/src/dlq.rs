//! Dead-letter queues (and `user.events.unrouted`): look at what waits there and send it back,
//! for `portal dlq` and the sync admin API alike.
//!
//! Messages are read with `basic.get` without acking; closing the channel puts back every
//! message not explicitly acked, so looking at a queue never loses what stays in it. A quorum
//! queue (every queue here) appends what comes back at its end, so to keep the order a look
//! takes every message the queue held, however few it shows: all come back, in order.
//! A requeue publishes a copy with confirms and only then acks the original: a message is never
//! in neither place.

use crate::OpsError;
use anyhow::anyhow;
use contract::sync_status::DeadLetter;
use contract::topology;
use contract::wire::header;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use platform::amqp::{self, Outgoing, PublishError};
use platform::secret::redact_url;

/// Where a requeued message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A consumer's main queue, through the default exchange.
    Queue(String),
    /// The `user.events` exchange with the message's own routing key.
    Exchange,
}

/// Where the messages of `queue` go back to: a `*.dlq` to its consumer's main queue, the
/// unrouted queue to the exchange; anything else is not a queue this module empties.
pub fn target_for(queue: &str) -> anyhow::Result<Target> {
    if queue == topology::UNROUTED_QUEUE {
        return Ok(Target::Exchange);
    }
    queue
        .strip_suffix(".dlq")
        .map(|main| Target::Queue(main.to_owned()))
        .ok_or_else(|| {
            anyhow!(
                "{queue} is neither a dead-letter queue (*.dlq) nor {}",
                topology::UNROUTED_QUEUE
            )
        })
}

/// A dead-letter queue opened for work: the connection, a confirming channel, and the number
/// of messages ready in it when it was opened.
pub struct Opened {
    pub connection: Connection,
    pub channel: Channel,
    pub count: u32,
    /// The broker user of the connection: the `user_id` a requeued copy carries.
    pub publisher: String,
}

impl Opened {
    /// Closes the channel, then the connection (unacked messages go back to the queue).
    pub async fn close(self) {
        self.channel.close(200, "done").await.ok();
        self.connection.close(200, "done").await.ok();
    }
}

/// Connects as `amqp_url`'s user and opens `queue` (an error naming it when it does not exist).
pub async fn open(amqp_url: &str, queue: &str, connection_name: &str) -> Result<Opened, OpsError> {
    let connection = amqp::connect(amqp_url, connection_name)
        .await
        .map_err(|e| OpsError::Unreachable(format!("RabbitMQ at {}: {e}", redact_url(amqp_url))))?;
    let opened = async {
        let ch = connection.create_channel().await?;
        let count = amqp::queue_depth(&ch, queue)
            .await
            .map_err(|e| anyhow!("no queue {queue}: {e}"))?;
        // The passive declare failing closes the channel; a fresh one for the work.
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        anyhow::Ok((channel, count))
    }
    .await;
    match opened {
        Ok((channel, count)) => Ok(Opened {
            connection,
            channel,
            count,
            publisher: amqp::broker_user(amqp_url),
        }),
        Err(e) => {
            connection.close(200, "done").await.ok();
            Err(OpsError::Failed(e))
        }
    }
}

/// The first `n` messages of the queue, unacked (they return when the channel closes). Every
/// other message the queue held when it was opened is taken too, unacked and not kept: had
/// only the first `n` been taken, they would come back behind the rest and a look would
/// reorder the queue (found by the sync admin API's tests: listing 1 of 3 turned [1, 2, 3]
/// into [2, 3, 1]).
pub async fn peek(opened: &Opened, queue: &str, n: usize) -> anyhow::Result<Vec<BasicGetMessage>> {
    let mut out = Vec::new();
    let held = usize::try_from(opened.count).unwrap_or(usize::MAX).max(n);
    for _ in 0..held {
        match opened
            .channel
            .basic_get(queue, BasicGetOptions { no_ack: false })
            .await?
        {
            Some(m) if out.len() < n => out.push(m),
            // Dropped here, still unacked: it goes back, in its place, when the channel closes.
            Some(_) => {}
            None => break,
        }
    }
    Ok(out)
}

/// A text header of `m`, or `-`.
pub fn header(m: &BasicGetMessage, key: &str) -> String {
    amqp::header_text(&amqp::headers_of(&m.delivery.properties), key)
        .unwrap_or_else(|| "-".to_owned())
}

/// The routing key the message was first published with.
pub fn routing_key(m: &BasicGetMessage) -> String {
    match header(m, header::ORIGINAL_ROUTING_KEY).as_str() {
        "-" => m.delivery.routing_key.to_string(),
        key => key.to_owned(),
    }
}

/// The summary of the message at `position`.
pub fn summary(position: usize, m: &BasicGetMessage) -> DeadLetter {
    DeadLetter {
        position,
        reason: header(m, header::ERROR_REASON),
        detail: header(m, header::ERROR_DETAIL),
        routing_key: routing_key(m),
        first_failure: header(m, header::FIRST_FAILURE_TIME),
        bytes: m.delivery.data.len(),
    }
}

/// The first `limit` messages of `queue` and how many it holds, leaving every one in place.
pub async fn list(
    amqp_url: &str,
    queue: &str,
    limit: usize,
) -> Result<(u32, Vec<DeadLetter>), OpsError> {
    let opened = open(amqp_url, queue, "portal dead letters").await?;
    let listed = peek(&opened, queue, limit).await.map(|messages| {
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| summary(i + 1, m))
            .collect()
    });
    let count = opened.count;
    opened.close().await;
    Ok((count, listed?))
}

async fn republish(
    ch: &Channel,
    m: &BasicGetMessage,
    target: &Target,
    publisher: &str,
) -> anyhow::Result<()> {
    let mut headers = FieldTable::default();
    for (k, v) in amqp::headers_of(&m.delivery.properties).inner() {
        if !header::CLEARED_ON_REQUEUE.contains(&k.as_str()) {
            headers.insert(k.clone(), v.clone());
        }
    }
    // The operator vouches for what it sends back: the copy carries the operator's own
    // user_id (the broker allows no other); who first published it stays in a header.
    if let Some(first) = amqp::publisher_of(&m.delivery.properties) {
        if !headers.inner().contains_key(header::ORIGINAL_USER_ID) {
            headers.insert(header::ORIGINAL_USER_ID.into(), amqp::text(&first));
        }
    }
    let properties = m
        .delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_delivery_mode(contract::wire::PERSISTENT)
        .with_user_id(publisher.into());
    let key = match target {
        Target::Queue(q) => q.clone(),
        Target::Exchange => routing_key(m),
    };
    let message = Outgoing {
        exchange: match target {
            Target::Queue(_) => "",
            Target::Exchange => topology::EXCHANGE,
        },
        routing_key: &key,
        body: &m.delivery.data,
        properties,
    };
    match amqp::publish_confirmed(ch, vec![message])
        .await
        .require_all()
    {
        Ok(_) => Ok(()),
        Err(PublishError::Unroutable(_)) => {
            Err(anyhow!("no queue took the message (routing key {key})"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Publishes a copy of `m` to `target` and, once the broker confirmed it, acks the original.
pub async fn requeue(
    ch: &Channel,
    m: &BasicGetMessage,
    target: &Target,
    publisher: &str,
) -> anyhow::Result<()> {
    republish(ch, m, target, publisher).await?;
    m.delivery.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// Requeues every message the queue held when it was opened; returns how many moved. Bounded
/// by that count, so a message that comes straight back (still invalid) is not requeued again
/// and again.
pub async fn requeue_all(opened: &Opened, queue: &str) -> anyhow::Result<u32> {
    let target = target_for(queue)?;
    let mut moved = 0;
    for _ in 0..opened.count {
        let Some(m) = opened
            .channel
            .basic_get(queue, BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        requeue(&opened.channel, &m, &target, &opened.publisher).await?;
        moved += 1;
    }
    Ok(moved)
}
