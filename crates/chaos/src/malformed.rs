//! Malformed messages: bodies the consumer can never apply, one kind per dead-letter reason
//! (not UTF-8, not JSON, unknown event type, unsupported major version, invalid payloads, too
//! large). They are published straight to the user-service's queue (default exchange) with
//! publisher confirms, in small batches spread over the run, each with a message id
//! `chaos-malformed-<n>`, so the dead-letter queue can be checked message by message at the end.

use super::progress::Progress;
use anyhow::{bail, Context};
use contract::topology::{ConsumerQueues, USER_SERVICE};
use lapin::options::ConfirmSelectOptions;
use lapin::types::ShortString;
use platform::amqp::{self, Outgoing};
use platform::backoff::Backoff;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The message-id prefix of injected messages.
pub const ID_PREFIX: &str = "chaos-malformed-";
/// Messages per batch.
const BATCH: u64 = 10;
/// How long one batch may keep failing (broker connections are being cut) before the run fails.
const BATCH_DEADLINE: Duration = Duration::from_secs(60);

/// A well-formed `user.created` envelope for a user no one has, to spoil one way or another.
fn envelope() -> Value {
    let id = uuid::Uuid::new_v4();
    json!({
        "eventId": uuid::Uuid::new_v4(),
        "eventType": "user.created",
        "timestamp": "2026-02-07T10:00:00.000Z",
        "source": "chaos",
        "version": "1.0",
        "payload": {
            "userId": id, "email": format!("ghost-{id}@clinic.example"), "firstName": "Ghost",
            "lastName": "Message", "role": "doctor", "phoneNumber": null, "isActive": true,
            "mustChangePassword": false, "createdAt": "2026-02-07T10:00:00.000Z", "userVersion": 1
        }
    })
}

/// The `n`th malformed body; the kinds rotate.
pub fn body(n: u64) -> Vec<u8> {
    let mut e = envelope();
    match n % 9 {
        0 => return b"{\"eventId\": \"not json at all".to_vec(),
        1 => return vec![0xff, 0xfe, b'{', 0x80, b'}'],
        2 => e["eventType"] = json!("user.exploded"),
        3 => e["version"] = json!("2.0"),
        4 => e["payload"]["email"] = json!("not-an-email"),
        5 => e["payload"]["role"] = json!("surgeon"),
        6 => {
            if let Some(p) = e["payload"].as_object_mut() {
                p.remove("userId");
            }
        }
        7 => return b"[1, 2, 3]".to_vec(),
        // Over the consumer's 256 KiB limit; rare enough to keep the run light.
        _ if n % 27 == 8 => e["payload"]["lastName"] = json!("x".repeat(300 * 1024)),
        _ => e["payload"]["userVersion"] = json!("seven"),
    }
    serde_json::to_vec(&e).unwrap_or_default()
}

/// Publishes `total` malformed messages in batches spread evenly over `over`, counting them in
/// `published`. A batch that fails (its connection was cut) is sent again whole; a message the
/// broker then holds twice carries the same id, and the final check counts distinct ids.
pub async fn publish_spread(
    amqp_url: &str,
    total: u64,
    over: Duration,
    published: &AtomicU64,
    progress: &Progress,
    abort: &CancellationToken,
) -> anyhow::Result<()> {
    let batches = total.div_ceil(BATCH);
    let start = Instant::now();
    for b in 0..batches {
        // Spreading the batches over the run is the workload's shape, not synchronisation.
        let due = start + over.mul_f64((b + 1) as f64 / (batches + 1) as f64);
        tokio::select! {
            _ = abort.cancelled() => bail!("aborted"),
            _ = tokio::time::sleep_until(due.into()) => {}
        }
        let range = b * BATCH..((b + 1) * BATCH).min(total);
        let mut backoff = Backoff::reconnect();
        let deadline = Instant::now() + BATCH_DEADLINE;
        loop {
            match publish(amqp_url, range.clone()).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline => {
                    progress.log(format_args!(
                        "publishing malformed messages {range:?} failed ({e:#}); retrying"
                    ));
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => return Err(e.context("publishing malformed messages")),
            }
        }
        published.fetch_add(range.end - range.start, Ordering::Relaxed);
    }
    Ok(())
}

async fn publish(amqp_url: &str, range: std::ops::Range<u64>) -> anyhow::Result<()> {
    let conn = amqp::connect(amqp_url, "chaos malformed publisher").await?;
    let result: anyhow::Result<()> = async {
        let queue = ConsumerQueues::for_consumer(USER_SERVICE).main;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        // Named as the run's broker user, a trusted publisher: these must fail on their content.
        let publisher = amqp::broker_user(amqp_url);
        let bodies: Vec<(u64, Vec<u8>)> = range.map(|n| (n, body(n))).collect();
        let messages: Vec<_> = bodies
            .iter()
            .map(|(n, body)| Outgoing {
                exchange: "",
                routing_key: &queue,
                body,
                properties: amqp::persistent(&publisher)
                    .with_content_type(ShortString::from(contract::wire::CONTENT_TYPE))
                    .with_message_id(ShortString::from(format!("{ID_PREFIX}{n}"))),
            })
            .collect();
        amqp::publish_confirmed(&ch, messages)
            .await
            .require_all()
            .context("broker did not take a malformed message")?;
        // Closing the channel before the connection keeps lapin from logging a spurious
        // "Connection error" for a channel still open at close.
        ch.close(200, "done").await?;
        Ok(())
    }
    .await;
    conn.close(200, "done").await.ok();
    result.context("publish")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_refused_by_the_decoder() {
        for n in 0..27 {
            assert!(
                contract::event::decode(&body(n)).is_err(),
                "malformed body {n} decoded"
            );
        }
    }
}
