//! `portal dlq`: inspect, requeue, discard and purge a dead-letter queue (or
//! `user.events.unrouted`).
//!
//! The printing around [`ops::dlq`], which reads without losing or reordering anything and
//! never sends an untrusted publisher's message back.

use super::{check_links, require_broker_user, Failure};
use crate::cli::{DlqAction, DlqArgs};
use anyhow::{anyhow, Context};
use lapin::message::BasicGetMessage;
use lapin::options::QueuePurgeOptions;
use ops::dlq::{self, peek, routing_key, Discard, Opened, RequeueError};
use ops::OpsError;
use platform::amqp;

async fn open(amqp_url: &str, queue: &str, trusted: &[String]) -> Result<Opened, Failure> {
    dlq::open(amqp_url, queue, "portal dlq", trusted)
        .await
        .map_err(|e| match e {
            OpsError::Unreachable(_) => Failure::unreachable(anyhow!("cannot reach {e}")),
            OpsError::Failed(e) => e.into(),
        })
}

pub async fn run(args: DlqArgs) -> Result<(), Failure> {
    let queue = args.queue.as_str();
    let url = &args.operator.operator_amqp_url;
    check_links(&args.network, &[args.operator.broker_link()])?;
    // What goes back carries this user as its user_id: named, never guessed (exit 64).
    require_broker_user(url)?;
    let opened = open(url, queue, &args.trust.trusted_publishers).await?;
    let result = act(&opened, args.action).await;
    opened.close().await;
    result
}

/// Who is at the keyboard, for the security log ([`super::who`]).
fn who(opened: &Opened) -> String {
    super::who("portal dlq", &opened.publisher)
}

async fn act(opened: &Opened, action: DlqAction) -> Result<(), Failure> {
    let (ch, count, queue) = (&opened.channel, opened.count, opened.queue.as_str());
    match action {
        DlqAction::List { limit } => {
            let messages = peek(opened, limit).await?;
            if !messages.is_empty() {
                println!(
                    "{:>4}  {:<20} {:<18} {:<24} {:>6}  DETAIL",
                    "#", "REASON", "ROUTING KEY", "FIRST FAILURE", "BYTES"
                );
            }
            let mut untrusted = 0;
            for (i, m) in messages.iter().enumerate() {
                let letter = opened.summary(i + 1, m);
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
                if let Some(why) = letter.cannot_requeue {
                    untrusted += 1;
                    println!("      cannot be requeued: {why}");
                }
            }
            println!("{count} messages in {queue}");
            if untrusted > 0 {
                println!(
                    "{untrusted} of those listed are an untrusted publisher's: `requeue` keeps \
                     them back; look with `portal dlq show <n>`, drop with `portal dlq discard \
                     --untrusted`"
                );
            }
        }
        DlqAction::Show { n } => {
            let m = nth(opened, n).await?;
            println!("position      {n} of {count} in {queue}");
            println!("routing key   {}", routing_key(&m));
            if let Some(why) = opened.untrusted(&m) {
                println!("requeue       no: {why}");
            }
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
                let done = dlq::requeue_all(opened, &who(opened)).await?;
                println!(
                    "requeued {} of {count} messages from {queue}",
                    done.requeued
                );
                if !done.kept_back.is_empty() {
                    for kept in &done.kept_back {
                        println!("kept back (was #{}): {}", kept.position, kept.why);
                    }
                    // Exit 1: the queue is not empty and will not empty by requeueing.
                    return Err(anyhow!(
                        "{} of {count} messages kept back in {queue}: an untrusted publisher's \
                         are never requeued; look with `portal dlq show <n>`, drop with \
                         `portal dlq discard --untrusted`",
                        done.kept_back.len()
                    )
                    .into());
                }
            } else {
                let n = n.ok_or_else(|| anyhow!("give a position or --all"))?;
                let m = nth(opened, n).await?;
                match dlq::requeue(opened, &m).await {
                    Ok(()) => println!(
                        "requeued message {n} from {queue}; {} left",
                        count.saturating_sub(1)
                    ),
                    Err(RequeueError::Untrusted(why)) => {
                        return Err(anyhow!(
                            "message {n} of {queue} is not requeued: {why} (`portal dlq \
                             discard {n}`)"
                        )
                        .into())
                    }
                    Err(RequeueError::Failed(e)) => return Err(e.into()),
                }
            }
        }
        DlqAction::Discard { n, untrusted } => {
            let which = match (n, untrusted) {
                (_, true) => Discard::Untrusted,
                (Some(n), false) => Discard::Position(n),
                (None, false) => return Err(anyhow!("give a position or --untrusted").into()),
            };
            let gone = dlq::discard(opened, which, &who(opened)).await?;
            for d in &gone {
                let why = d
                    .untrusted
                    .as_ref()
                    .map_or_else(|| d.reason.clone(), ToString::to_string);
                println!(
                    "discarded message {} (message id {}): {why}",
                    d.position, d.message_id
                );
            }
            println!("discarded {} of {count} messages from {queue}", gone.len());
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
            // Untrusted publishers' messages go with the rest: a discard, logged as one.
            tracing::warn!(
                target: "security",
                event = "dead_letters_purged",
                by = %who(opened),
                queue,
                purged,
                "dead-letter queue purged"
            );
            println!("purged {purged} messages from {queue}");
        }
    }
    Ok(())
}

/// The message at 1-based position `n` (the others return to the queue, in order, on close).
async fn nth(opened: &Opened, n: usize) -> Result<BasicGetMessage, Failure> {
    if n == 0 {
        return Err(anyhow!("positions start at 1").into());
    }
    let mut messages = peek(opened, n).await?;
    if messages.len() < n {
        return Err(anyhow!("no message {n}: {} holds {}", opened.queue, opened.count).into());
    }
    Ok(messages.swap_remove(n - 1))
}
