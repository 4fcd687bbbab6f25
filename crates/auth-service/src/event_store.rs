//! The event store: the outbox read as an append-only history. Every event is kept (published
//! or not) with its global sequence, so one user's audit trail can be listed and any range can
//! be replayed into a consumer's queue.
//!
//! Reading "from sequence N onward" must not skip an event whose transaction took a lower
//! sequence but committed later. [`read_page`] therefore pages by (transaction id, sequence) and
//! only returns rows of transactions older than the oldest one still running (in the whole
//! cluster: transaction ids are cluster-wide): no row can ever appear behind its cursor. An empty
//! page is therefore not the end when [`held_back`] says newer rows wait behind the horizon.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// One stored event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub seq: i64,
    pub tx_id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub user_id: Uuid,
    pub user_version: Option<i64>,
    /// The exact published bytes.
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    /// The trace of the request that wrote it, if one did.
    pub trace_id: Option<String>,
}

const COLUMNS: &str = "seq, tx_id::text::int8 AS tx_id, event_id, event_type, user_id, \
     user_version, body::text AS body, created_at, published_at, trace_id";

/// Which events to read; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub from_seq: Option<i64>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub user_id: Option<Uuid>,
    pub event_type: Option<String>,
}

const FILTER: &str = "($1::int8 IS NULL OR seq >= $1) \
     AND ($2::timestamptz IS NULL OR created_at >= $2) \
     AND ($3::timestamptz IS NULL OR created_at < $3) \
     AND ($4::uuid IS NULL OR user_id = $4) \
     AND ($5::text IS NULL OR event_type = $5)";

/// Where a reader is in the store: after (tx_id, seq). [`Cursor::START`] is before everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor {
    pub tx_id: i64,
    pub seq: i64,
}

impl Cursor {
    pub const START: Cursor = Cursor { tx_id: 0, seq: 0 };

    pub fn after(event: &StoredEvent) -> Self {
        Self {
            tx_id: event.tx_id,
            seq: event.seq,
        }
    }
}

/// Up to `limit` events matching `filter` after `cursor`, in (transaction, sequence) order,
/// stopping at the safe horizon (transactions still running, and any that might commit later
/// with a lower id, are not read yet).
pub async fn read_page(
    db: impl PgExecutor<'_>,
    filter: &EventFilter,
    cursor: Cursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    after(db, filter, cursor, limit, true).await
}

/// True when committed events matching `filter` lie after `cursor` but past the safe horizon:
/// a reader that got an empty page should wait for older transactions to end, not stop.
pub async fn held_back(
    db: impl PgExecutor<'_>,
    filter: &EventFilter,
    cursor: Cursor,
) -> Result<bool, sqlx::Error> {
    Ok(!after(db, filter, cursor, 1, false).await?.is_empty())
}

/// Up to `limit` events matching `filter` after `cursor`, in (transaction, sequence) order;
/// only below the safe horizon when `below_horizon`.
async fn after(
    db: impl PgExecutor<'_>,
    filter: &EventFilter,
    cursor: Cursor,
    limit: i64,
    below_horizon: bool,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let horizon = if below_horizon {
        "AND tx_id < pg_snapshot_xmin(pg_current_snapshot())"
    } else {
        ""
    };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE {FILTER} \
           AND (tx_id::text::int8, seq) > ($6, $7) {horizon} \
         ORDER BY tx_id, seq LIMIT $8"
    ))
    .bind(filter.from_seq)
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.user_id)
    .bind(filter.event_type.as_deref())
    .bind(cursor.tx_id)
    .bind(cursor.seq)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// How many events match `filter` (for progress bars; may grow while a reader runs).
pub async fn count(db: impl PgExecutor<'_>, filter: &EventFilter) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM outbox WHERE {FILTER}"))
        .bind(filter.from_seq)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.user_id)
        .bind(filter.event_type.as_deref())
        .fetch_one(db)
        .await
}

/// One user's audit trail, oldest first. A user's changes serialise on its row lock, so their
/// sequence order is their version order.
pub async fn user_history(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    since: Option<DateTime<Utc>>,
    event_type: Option<&str>,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE user_id = $1 \
           AND ($2::timestamptz IS NULL OR created_at >= $2) \
           AND ($3::text IS NULL OR event_type = $3) \
         ORDER BY seq"
    ))
    .bind(user_id)
    .bind(since)
    .bind(event_type)
    .fetch_all(db)
    .await
}

/// Deletes published events created before `cutoff` (the retention policy); unpublished ones are
/// always kept. Returns how many were removed.
pub async fn prune(db: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM outbox WHERE published_at IS NOT NULL AND created_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}
