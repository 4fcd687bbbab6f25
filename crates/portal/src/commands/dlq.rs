//! `portal dlq`: inspect, requeue and purge a dead-letter queue (or `user.events.unrouted`).
//!
//! Messages are read with `basic.get` without acking; closing the channel puts back every
//! message not explicitly acked, so looking at a queue never loses or reorders what stays in it.

use super::Failure;
use crate::cli::{DlqAction, DlqArgs, Settings};
use anyhow::{anyhow, Context};
use contract::topology;
use contract::wire::header;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use platform::amqp::{self, Outgoing, PublishError};
use platform::secret::redact_url;

/// Where a requeued message goes.
enum Target {
    /// A consumer's main queue, through the default exchange.
    Queue(String),
    /// The `user.events` exchange with the message's own routing key.
    Exchange,
}

fn target_for(queue: &str) -> Result<Target, Failure> {
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
            .into()
        })
}

async fn open(s: &Settings, queue: &str) -> Result<(Connection, Channel, u32), Failure> {
    let conn = platform::amqp::connect(s.operator_amqp(), "portal dlq")
        .await
        .map_err(|e| {
            Failure::unreachable(anyhow!(
                "cannot reach RabbitMQ at {}: {e}",
                redact_url(s.operator_amqp())
            ))
        })?;
    let ch = conn.create_channel().await.map_err(|e| anyhow!(e))?;
    let count = amqp::queue_depth(&ch, queue)
        .await
        .map_err(|e| anyhow!("no queue {queue}: {e}"))?;
    // The passive declare failing closes the channel; a fresh one for the work.
    let ch = conn.create_channel().await.map_err(|e| anyhow!(e))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| anyhow!(e))?;
    Ok((conn, ch, count))
}

/// Takes up to `n` messages off the queue, unacked (they return when the channel closes).
async fn peek(ch: &Channel, queue: &str, n: usize) -> anyhow::Result<Vec<BasicGetMessage>> {
    let mut out = Vec::new();
    while out.len() < n {
        match ch
            .basic_get(queue, BasicGetOptions { no_ack: false })
            .await?
        {
            Some(m) => out.push(m),
            None => break,
        }
    }
    Ok(out)
}

fn header(m: &BasicGetMessage, key: &str) -> String {
    amqp::header_text(&amqp::headers_of(&m.delivery.properties), key)
        .unwrap_or_else(|| "-".to_owned())
}

fn routing_key(m: &BasicGetMessage) -> String {
    match header(m, header::ORIGINAL_ROUTING_KEY).as_str() {
        "-" => m.delivery.routing_key.to_string(),
        key => key.to_owned(),
    }
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

/// Publishes a copy of `m` to `target` and, once the broker confirmed it, acks the original:
/// the message is never in neither place.
async fn requeue(
    ch: &Channel,
    m: &BasicGetMessage,
    target: &Target,
    publisher: &str,
) -> anyhow::Result<()> {
    republish(ch, m, target, publisher).await?;
    m.delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .map_err(|e| anyhow!(e))?;
    Ok(())
}

pub async fn run(s: &Settings, args: DlqArgs) -> Result<(), Failure> {
    let queue = args.queue.as_str();
    let (conn, ch, count) = open(s, queue).await?;
    let publisher = amqp::broker_user(s.operator_amqp());
    let result = act(&ch, queue, count, args.action, &publisher).await;
    conn.close(200, "portal dlq done").await.ok();
    result
}

async fn act(
    ch: &Channel,
    queue: &str,
    count: u32,
    action: DlqAction,
    publisher: &str,
) -> Result<(), Failure> {
    match action {
        DlqAction::List { limit } => {
            let messages = peek(ch, queue, limit).await?;
            if !messages.is_empty() {
                println!(
                    "{:>4}  {:<20} {:<18} {:<24} {:>6}  DETAIL",
                    "#", "REASON", "ROUTING KEY", "FIRST FAILURE", "BYTES"
                );
            }
            for (i, m) in messages.iter().enumerate() {
                let mut detail = header(m, header::ERROR_DETAIL);
                if detail.chars().count() > 60 {
                    detail = detail.chars().take(57).collect::<String>() + "...";
                }
                println!(
                    "{:>4}  {:<20} {:<18} {:<24} {:>6}  {detail}",
                    i + 1,
                    header(m, header::ERROR_REASON),
                    routing_key(m),
                    header(m, header::FIRST_FAILURE_TIME),
                    m.delivery.data.len(),
                );
            }
            println!("{count} messages in {queue}");
        }
        DlqAction::Show { n } => {
            let m = nth(ch, queue, n, count).await?;
            println!("position      {n} of {count} in {queue}");
            println!("routing key   {}", routing_key(&m));
            for (k, v) in amqp::headers_of(&m.delivery.properties).inner() {
                println!("{:<13} {}", k.as_str(), amqp::show_value(v));
            }
            let body = match serde_json::from_slice::<serde_json::Value>(&m.delivery.data) {
                Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_default(),
                Err(_) => String::from_utf8_lossy(&m.delivery.data).into_owned(),
            };
            println!("body:\n{body}");
        }
        DlqAction::Requeue { n, all } => {
            let target = target_for(queue)?;
            if all {
                // Bounded by the count seen at the start, so a message that comes straight back
                // (still invalid) is not requeued again and again.
                let mut moved = 0;
                for _ in 0..count {
                    let Some(m) = ch
                        .basic_get(queue, BasicGetOptions { no_ack: false })
                        .await
                        .map_err(|e| anyhow!(e))?
                    else {
                        break;
                    };
                    requeue(ch, &m, &target, publisher).await?;
                    moved += 1;
                }
                println!("requeued {moved} of {count} messages from {queue}");
            } else {
                let n = n.ok_or_else(|| anyhow!("give a position or --all"))?;
                let m = nth(ch, queue, n, count).await?;
                requeue(ch, &m, &target, publisher).await?;
                println!(
                    "requeued message {n} from {queue}; {} left",
                    count.saturating_sub(1)
                );
            }
        }
        DlqAction::Purge { yes } => {
            if !yes {
                println!("{count} messages in {queue}; add --yes to drop them");
                return Err(anyhow!("not purged without --yes").into());
            }
            let purged = ch
                .queue_purge(queue, QueuePurgeOptions::default())
                .await
                .context("purge")?;
            println!("purged {purged} messages from {queue}");
        }
    }
    Ok(())
}

/// The message at 1-based position `n` (the ones before it return to the queue on close).
async fn nth(ch: &Channel, queue: &str, n: usize, count: u32) -> Result<BasicGetMessage, Failure> {
    if n == 0 {
        return Err(anyhow!("positions start at 1").into());
    }
    let mut messages = peek(ch, queue, n).await?;
    if messages.len() < n {
        return Err(anyhow!("no message {n}: {queue} holds {count}").into());
    }
    Ok(messages.swap_remove(n - 1))
}
