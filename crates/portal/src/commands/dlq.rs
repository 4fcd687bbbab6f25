//! `portal dlq`: inspect, requeue and purge a dead-letter queue (or `user.events.unrouted`).
//!
//! The printing around [`ops::dlq`], which reads without losing or reordering anything.

use super::Failure;
use crate::cli::{DlqAction, DlqArgs};
use anyhow::{anyhow, Context};
use lapin::message::BasicGetMessage;
use lapin::options::QueuePurgeOptions;
use ops::dlq::{self, peek, routing_key, Opened};
use ops::OpsError;
use platform::amqp;

async fn open(amqp_url: &str, queue: &str) -> Result<Opened, Failure> {
    dlq::open(amqp_url, queue, "portal dlq")
        .await
        .map_err(|e| match e {
            OpsError::Unreachable(_) => Failure::unreachable(anyhow!("cannot reach {e}")),
            OpsError::Failed(e) => e.into(),
        })
}

pub async fn run(args: DlqArgs) -> Result<(), Failure> {
    let queue = args.queue.as_str();
    let opened = open(&args.operator.operator_amqp_url, queue).await?;
    let result = act(&opened, queue, args.action).await;
    opened.close().await;
    result
}

async fn act(opened: &Opened, queue: &str, action: DlqAction) -> Result<(), Failure> {
    let (ch, count) = (&opened.channel, opened.count);
    match action {
        DlqAction::List { limit } => {
            let messages = peek(opened, queue, limit).await?;
            if !messages.is_empty() {
                println!(
                    "{:>4}  {:<20} {:<18} {:<24} {:>6}  DETAIL",
                    "#", "REASON", "ROUTING KEY", "FIRST FAILURE", "BYTES"
                );
            }
            for (i, m) in messages.iter().enumerate() {
                let letter = dlq::summary(i + 1, m);
                let mut detail = letter.detail;
                if detail.chars().count() > 60 {
                    detail = detail.chars().take(57).collect::<String>() + "...";
                }
                println!(
                    "{:>4}  {:<20} {:<18} {:<24} {:>6}  {detail}",
                    letter.position,
                    letter.reason,
                    letter.routing_key,
                    letter.first_failure,
                    letter.bytes,
                );
            }
            println!("{count} messages in {queue}");
        }
        DlqAction::Show { n } => {
            let m = nth(opened, queue, n).await?;
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
            if all {
                let moved = dlq::requeue_all(opened, queue).await?;
                println!("requeued {moved} of {count} messages from {queue}");
            } else {
                let n = n.ok_or_else(|| anyhow!("give a position or --all"))?;
                let target = dlq::target_for(queue)?;
                let m = nth(opened, queue, n).await?;
                dlq::requeue(ch, &m, &target, &opened.publisher).await?;
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

/// The message at 1-based position `n` (the others return to the queue, in order, on close).
async fn nth(opened: &Opened, queue: &str, n: usize) -> Result<BasicGetMessage, Failure> {
    if n == 0 {
        return Err(anyhow!("positions start at 1").into());
    }
    let mut messages = peek(opened, queue, n).await?;
    if messages.len() < n {
        return Err(anyhow!("no message {n}: {queue} holds {}", opened.count).into());
    }
    Ok(messages.swap_remove(n - 1))
}
