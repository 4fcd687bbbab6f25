//! Replay: publishes stored events to ONE consumer's queue (through the default exchange, so
//! other subscribers of `user.events` see nothing), page by page from the event store, pipelined
//! with publisher confirms. Replaying twice is harmless: consumers apply by `userVersion`.
//! `portal replay` and `portal consumer add` (a new queue backfilled with the whole history, then
//! marked complete: [`backfill`]) are built on it.
//!
//! Under `EVENT_RETENTION_DAYS` the event store keeps only the recent months, so the history
//! alone would leave a new consumer without the users who have not changed since. A backfill
//! therefore also sends, for each user with no event left in the store, a `user.snapshot` of
//! the user's current record (the state every copy converges to anyway); a user with any event
//! left has its latest one in the store (partitions expire oldest first, and the latest event
//! is the full current state), so the replay gives it already.

use crate::OpsError;
use anyhow::{anyhow, Context};
use auth_service::event_store::{self, Cursor, EventFilter};
use contract::topology::ConsumerQueues;
use lapin::options::ConfirmSelectOptions;
use platform::amqp::{self, Outgoing};
use platform::secret::redact_url;
use sqlx::PgPool;

/// Events read and published per round trip.
const PAGE: i64 = 1000;
/// How long a replay waits for a long-running transaction before giving up.
const HORIZON_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// What a replay sent.
#[derive(Debug, Default)]
pub struct Sent {
    pub events: u64,
    /// Snapshots of current records sent by a backfill for users whose history expired.
    pub snapshots: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
}

/// Publishes every stored event matching `filter` to `queue`; returns what it sent.
pub async fn replay_to(
    pool: &PgPool,
    amqp_url: &str,
    queue: &str,
    filter: &EventFilter,
    mut progress: impl FnMut(u64),
) -> Result<Sent, OpsError> {
    let conn = amqp::connect(amqp_url, "portal replay")
        .await
        .map_err(|e| OpsError::Unreachable(format!("RabbitMQ at {}: {e}", redact_url(amqp_url))))?;
    let ch = conn.create_channel().await.map_err(|e| anyhow!(e))?;
    amqp::queue_depth(&ch, queue)
        .await
        .map_err(|_| anyhow!("no queue {queue}: replay sends to an existing consumer queue (see `portal consumer add`)"))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| anyhow!(e))?;
    // The operator vouches for what it replays: the events carry its broker user, which the
    // URL must name (never guessed).
    let publisher = amqp::broker_user_of(amqp_url).map_err(anyhow::Error::from)?;
    let mut sent = Sent::default();
    let mut cursor = Cursor::START;
    let mut held_since: Option<std::time::Instant> = None;
    let mut backoff = platform::backoff::Backoff::new(
        std::time::Duration::from_millis(5),
        std::time::Duration::from_millis(500),
    );
    loop {
        let page = event_store::read_page(pool, filter, cursor, PAGE)
            .await
            .context("reading the event store")?;
        let Some(last) = page.last() else {
            if !event_store::held_back(pool, filter, cursor)
                .await
                .context("reading the event store")?
            {
                break;
            }
            // Committed events wait behind a transaction that is still running somewhere in the
            // cluster; they become readable when it ends.
            if held_since
                .get_or_insert_with(std::time::Instant::now)
                .elapsed()
                > HORIZON_PATIENCE
            {
                return Err(anyhow!(
                    "events are held back by a transaction running for over {}s (see \
                     pg_stat_activity); replay stopped, safe to run again",
                    HORIZON_PATIENCE.as_secs()
                )
                .into());
            }
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        };
        held_since = None;
        backoff.reset();
        cursor = Cursor::after(last);
        let messages: Vec<_> = page
            .iter()
            .map(|event| Outgoing {
                exchange: "",
                routing_key: queue,
                body: event.body.as_bytes(),
                properties: amqp::event_properties(
                    &event.event_id.to_string(),
                    &event.event_type,
                    &publisher,
                ),
            })
            .collect();
        amqp::publish_confirmed(&ch, messages)
            .await
            .require_all()
            .map_err(|e| anyhow!("{e}; replay stopped (safe to run again)"))?;
        for event in &page {
            sent.first_seq = Some(sent.first_seq.map_or(event.seq, |s| s.min(event.seq)));
            sent.last_seq = Some(sent.last_seq.map_or(event.seq, |s| s.max(event.seq)));
        }
        sent.events += page.len() as u64;
        progress(page.len() as u64);
    }
    conn.close(200, "replay done").await.ok();
    Ok(sent)
}

/// A backfill: every stored event to `queue`, then the end-of-history mark
/// (`wire::HISTORY_COMPLETE_TYPE`) with the number of users `auth_db` held when it began, so a
/// service that must know every user before it serves (the appointment-service) can tell when
/// it does. The queue must already be bound: live events then reach it too, and an event both
/// live and replayed is applied once.
pub async fn backfill(
    pool: &PgPool,
    amqp_url: &str,
    queue: &str,
    progress: impl FnMut(u64),
) -> Result<Sent, OpsError> {
    // Counted first: each of these users is sent, by its stored events or, when every one of
    // them expired (EVENT_RETENTION_DAYS), by a snapshot, so a complete copy holds at least
    // this many.
    let users = auth_service::store::count_users(pool)
        .await
        .map_err(|e| OpsError::Unreachable(format!("auth_db: {e}")))?;
    let mut sent = replay_to(pool, amqp_url, queue, &EventFilter::default(), progress).await?;
    let conn = amqp::connect(amqp_url, "portal backfill")
        .await
        .map_err(|e| OpsError::Unreachable(format!("RabbitMQ at {}: {e}", redact_url(amqp_url))))?;
    let ch = conn.create_channel().await.map_err(|e| anyhow!(e))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| anyhow!(e))?;
    let publisher = amqp::broker_user_of(amqp_url).map_err(anyhow::Error::from)?;
    sent.snapshots = send_expired_users(pool, &ch, queue, &publisher).await?;
    let body = serde_json::to_vec(&contract::wire::HistoryComplete { users })
        .map_err(|e| anyhow!("encoding the end-of-history mark: {e}"))?;
    let marker = Outgoing {
        exchange: "",
        routing_key: queue,
        body: &body,
        properties: amqp::event_properties(
            &uuid::Uuid::new_v4().to_string(),
            contract::wire::HISTORY_COMPLETE_TYPE,
            &publisher,
        ),
    };
    amqp::publish_confirmed(&ch, vec![marker])
        .await
        .require_all()
        .map_err(|e| {
            anyhow!("{e}; the history was sent but not marked complete (safe to run again)")
        })?;
    conn.close(200, "backfill done").await.ok();
    Ok(sent)
}

/// Sends to `queue` a `user.snapshot` of the current record of every user with no event left
/// in the event store (all expired); returns how many. Cheap when nothing expired: only when
/// some user is older than the store's oldest event are the users looked up one page at a
/// time, each page against the store's user index.
async fn send_expired_users(
    pool: &PgPool,
    ch: &lapin::Channel,
    queue: &str,
    publisher: &str,
) -> Result<u64, OpsError> {
    let some_expired: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM users WHERE created_at < \
             coalesce((SELECT min(created_at) FROM event_store), 'infinity'))",
    )
    .fetch_one(pool)
    .await
    .context("reading auth_db")?;
    if !some_expired {
        return Ok(0);
    }
    let mut sent = 0;
    let mut after = uuid::Uuid::nil();
    loop {
        let records: Vec<directory::record::UserRecord> = sqlx::query_as(&format!(
            "SELECT {} FROM users u WHERE u.id > $1 \
               AND NOT EXISTS (SELECT 1 FROM event_store e WHERE e.user_id = u.id) \
             ORDER BY u.id LIMIT $2",
            directory::record::RECORD_COLUMNS
        ))
        .bind(after)
        .bind(PAGE)
        .fetch_all(pool)
        .await
        .context("reading auth_db")?;
        let Some(last) = records.last() else {
            return Ok(sent);
        };
        after = last.id;
        let bodies = records
            .iter()
            .map(|record| {
                let snapshot = record
                    .snapshot()
                    .map_err(|e| anyhow!("user {}: {e}", record.id))?;
                let event = contract::Envelope::new(contract::EventType::Snapshot, snapshot);
                let body = serde_json::to_vec(&event).map_err(|e| anyhow!(e))?;
                Ok((event.event_id.to_string(), body))
            })
            .collect::<Result<Vec<_>, anyhow::Error>>()?;
        let messages = bodies
            .iter()
            .map(|(id, body)| Outgoing {
                exchange: "",
                routing_key: queue,
                body,
                properties: amqp::event_properties(
                    id,
                    contract::EventType::Snapshot.as_str(),
                    publisher,
                ),
            })
            .collect();
        amqp::publish_confirmed(ch, messages)
            .await
            .require_all()
            .map_err(|e| anyhow!("{e}; backfill stopped (safe to run again)"))?;
        sent += bodies.len() as u64;
    }
}

/// True for a consumer name `portal consumer add` accepts: lower-case letters, digits, dashes.
pub fn valid_consumer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Creates and binds `<name>.user-events` with its retry and dead-letter queues. Bound before
/// the backfill: from then on live events reach the queue, and the backfill sends what was
/// stored before; an event in both is applied once (`userVersion`), so the overlap is harmless.
pub async fn create_consumer_queues(
    amqp_url: &str,
    name: &str,
) -> Result<ConsumerQueues, OpsError> {
    if !valid_consumer_name(name) {
        return Err(anyhow!("consumer names are lower-case letters, digits and dashes").into());
    }
    let queues = ConsumerQueues::for_consumer(name);
    amqp::ensure_topology(amqp_url, std::slice::from_ref(&queues))
        .await
        .map_err(|e| OpsError::Unreachable(format!("RabbitMQ at {}: {e}", redact_url(amqp_url))))?;
    Ok(queues)
}
