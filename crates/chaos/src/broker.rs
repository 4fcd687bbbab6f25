//! RabbitMQ as the chaos run sees it beyond the management API ([`crate::rabbit_admin`]): the
//! dead-letter queue's contents, read over AMQP.

use anyhow::Context;
use contract::wire::header;
use lapin::options::BasicGetOptions;
use platform::amqp;
use std::collections::{BTreeMap, BTreeSet};

/// What the dead-letter queue holds.
#[derive(Debug, Default)]
pub struct DeadLetters {
    /// Messages in the queue, copies included.
    pub copies: u64,
    /// Distinct message ids carrying `id_prefix` (the malformed messages this run injected).
    pub ours: BTreeSet<String>,
    /// Messages without our prefix: events that should have been applied, not dead-lettered.
    pub foreign: u64,
    /// Count per `x-error-reason` header.
    pub reasons: BTreeMap<String, u64>,
}

/// Reads every message of `queue` without consuming it (got unacked, requeued when the
/// connection closes).
pub async fn read_dead_letters(
    amqp_url: &str,
    queue: &str,
    id_prefix: &str,
) -> anyhow::Result<DeadLetters> {
    let conn = amqp::connect(amqp_url, "chaos dead-letter count").await?;
    let result = async {
        let ch = conn.create_channel().await?;
        let mut seen = DeadLetters::default();
        while let Some(message) = ch
            .basic_get(queue, BasicGetOptions { no_ack: false })
            .await?
        {
            let props = &message.delivery.properties;
            seen.copies += 1;
            match props.message_id().as_ref().map(|id| id.as_str()) {
                Some(id) if id.starts_with(id_prefix) => {
                    seen.ours.insert(id.to_owned());
                }
                _ => seen.foreign += 1,
            }
            let reason = amqp::header_text(&amqp::headers_of(props), header::ERROR_REASON)
                .unwrap_or_else(|| "none".to_owned());
            *seen.reasons.entry(reason).or_default() += 1;
        }
        ch.close(200, "done").await?;
        Ok::<_, lapin::Error>(seen)
    }
    .await;
    conn.close(200, "done").await.ok();
    result.with_context(|| format!("reading {queue}"))
}
