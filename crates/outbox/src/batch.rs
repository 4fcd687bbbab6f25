//! One relay batch: claim unpublished rows (locked by the batch's transaction, so several
//! relays and several batches in flight never take the same row), send them to the broker,
//! then — later, while the relay claims the next batch — collect the confirms, mark the
//! confirmed rows published and commit. A crash before the commit only republishes; the
//! consumers' version rule absorbs the duplicate.

use super::{RelayError, RelayMetrics, Table};
use lapin::Channel;
use platform::amqp::{self, Answer, Outgoing, Sent};
use sqlx::{PgPool, Postgres, Transaction};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// `properties` with the `traceparent` header continuing the event's trace, when it has one.
fn traced(properties: lapin::BasicProperties, trace_id: Option<&str>) -> lapin::BasicProperties {
    // A stored id that is not a valid trace id (written by hand) is left out rather than sent.
    let Some(parent) = trace_id
        .map(platform::trace::child_of)
        .filter(|p| platform::trace::trace_id_of(p).is_some())
    else {
        return properties;
    };
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(platform::trace::TRACEPARENT.into(), amqp::text(&parent));
    properties.with_headers(headers)
}

#[derive(sqlx::FromRow)]
struct PendingEvent {
    seq: i64,
    message_id: uuid::Uuid,
    exchange: String,
    routing_key: String,
    message_type: String,
    body: String,
    trace_id: Option<String>,
}

/// A batch whose messages are sent and whose confirms are outstanding; its rows stay locked by
/// `tx` until [`InFlight::finish`] marks them.
pub struct InFlight {
    /// The table's statement that marks rows published.
    mark: String,
    tx: Transaction<'static, Postgres>,
    seqs: Vec<i64>,
    sent: Sent,
    sent_at: Instant,
}

impl InFlight {
    /// Rows the batch claimed.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

/// Claims up to `batch_size` unpublished rows in sequence order and sends them, awaiting no
/// confirm; `None` when no row waits (or every waiting one is another batch's), or when
/// `failing` says a batch of this connection was not accepted: its rows, unlocked by that
/// batch's commit, wait for the relay's backoff instead of being sent again at once.
pub async fn claim_and_send(
    table: &Table,
    pool: &PgPool,
    channel: &Channel,
    batch_size: i64,
    publisher: &str,
    failing: &AtomicBool,
) -> Result<Option<InFlight>, RelayError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<PendingEvent> = sqlx::query_as(&table.claim)
        .bind(batch_size)
        .fetch_all(&mut *tx)
        .await?;
    // Read after the rows: a failing batch sets the flag before the commit that unlocks its rows.
    if rows.is_empty() || failing.load(Ordering::SeqCst) {
        tx.rollback().await?;
        return Ok(None);
    }
    let messages: Vec<Outgoing> = rows
        .iter()
        .map(|row| Outgoing {
            exchange: &row.exchange,
            routing_key: &row.routing_key,
            body: row.body.as_bytes(),
            properties: traced(
                amqp::message_properties(
                    &row.message_id.to_string(),
                    &row.message_type,
                    table.app_id,
                    publisher,
                ),
                row.trace_id.as_deref(),
            ),
        })
        .collect();
    let sent_at = Instant::now();
    let sent = amqp::publish_all(channel, messages).await;
    Ok(Some(InFlight {
        mark: table.mark.clone(),
        tx,
        seqs: rows.iter().map(|r| r.seq).collect(),
        sent,
        sent_at,
    }))
}

impl InFlight {
    /// Awaits the broker's answers, marks the confirmed rows published and commits; returns how
    /// many rows the batch claimed. Rows confirmed are marked even when a later confirm in the
    /// batch fails, so a failure republishes at most the unconfirmed rows.
    /// `failing` is set, before the commit, when not every event was accepted.
    pub async fn finish(
        self,
        metrics: Option<&RelayMetrics>,
        failing: &AtomicBool,
    ) -> Result<usize, RelayError> {
        let InFlight {
            mark,
            mut tx,
            seqs,
            sent,
            sent_at,
        } = self;
        let published = sent.answers().await;
        let mut confirmed = Vec::with_capacity(published.answers.len());
        let (mut refused, mut returned) = (0u64, 0u64);
        for (seq, answer) in seqs.iter().zip(&published.answers) {
            match answer {
                Answer::Confirmed => confirmed.push(*seq),
                Answer::Returned(_) => returned += 1,
                Answer::Refused => refused += 1,
            }
        }
        if let Some(m) = metrics {
            m.error_by("returned", returned);
            m.error_by("refused", refused);
        }
        if let Some(m) = metrics {
            m.batch_size.observe(seqs.len() as f64);
            m.confirm_seconds.observe(sent_at.elapsed().as_secs_f64());
        }
        if published.error.is_some() || refused + returned > 0 {
            failing.store(true, Ordering::SeqCst);
        }
        if !confirmed.is_empty() {
            sqlx::query(&mark)
                .bind(&confirmed)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if let Some(m) = metrics {
            m.published.inc_by(confirmed.len() as u64);
        }
        match published.error {
            Some(e) => Err(e.into()),
            // Not retried at once on the same channel: a nack means the queue's process
            // failed, and a channel opened while a quorum queue elected its leader was seen
            // to nack every publish from then on (one node of three killed); a new connection,
            // after the backoff, clears it. A return means the alternate exchange is missing.
            None if refused + returned > 0 => Err(RelayError::NotAccepted { refused, returned }),
            None => Ok(seqs.len()),
        }
    }
}

/// Publishes one batch and waits for it: [`claim_and_send`] then [`InFlight::finish`]; returns
/// how many rows it claimed (public so tests can run the relay one step at a time).
pub async fn publish_batch(
    table: &Table,
    pool: &PgPool,
    channel: &Channel,
    batch_size: i64,
    publisher: &str,
) -> Result<usize, RelayError> {
    let failing = AtomicBool::new(false);
    match claim_and_send(table, pool, channel, batch_size, publisher, &failing).await? {
        Some(batch) => batch.finish(None, &failing).await,
        None => Ok(0),
    }
}
