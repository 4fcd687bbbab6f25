//! The event store: `event_store`, the append-only history of every user event, written in the
//! same statement as the event's outbox row (`store`) with the same global sequence, bytes and
//! transaction id. One user's audit trail can be listed and any range replayed into a
//! consumer's queue. The relay never reads it; the outbox's published rows are removed a
//! minute after publishing (`outbox::cleanup`), the store's only as whole monthly partitions
//! past `EVENT_RETENTION_DAYS` ([`crate::retention`]).
//!
//! Reading "from sequence N onward" must not skip an event whose transaction took a lower
//! sequence but committed later. [`read_page`] therefore pages by (transaction id, sequence) and
//! only returns rows of transactions older than the oldest one still running (in the whole
//! cluster: transaction ids are cluster-wide): no row can ever appear behind its cursor. An empty
//! page is therefore not the end when [`held_back`] says newer rows wait behind the horizon.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
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
    /// The trace of the request that wrote it, if one did.
    pub trace_id: Option<String>,
}

/// One event of a user's audit trail, and whether it has left the outbox.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryEntry {
    #[sqlx(flatten)]
    pub event: StoredEvent,
    /// When the relay published it, while its outbox row is kept (a minute by default).
    pub published_at: Option<DateTime<Utc>>,
    /// True once the broker confirmed it: its outbox row is marked, or already removed (only
    /// published rows are removed).
    pub published: bool,
}

const COLUMNS: &str = "seq, tx_id::text::int8 AS tx_id, event_id, event_type, user_id, \
     user_version, body::text AS body, created_at, trace_id";

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
        "SELECT {COLUMNS} FROM event_store WHERE {FILTER} \
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
    sqlx::query_scalar(&format!("SELECT count(*) FROM event_store WHERE {FILTER}"))
        .bind(filter.from_seq)
        .bind(filter.since)
        .bind(filter.until)
        .bind(filter.user_id)
        .bind(filter.event_type.as_deref())
        .fetch_one(db)
        .await
}

/// One user's audit trail, oldest first. A user's changes serialise on its row lock, so their
/// sequence order is their version order. Whether each event was published is read from the
/// outbox, by its primary key: the store does not keep it (marking both tables would write
/// every event twice more and leave a dead tuple per event in the store).
pub async fn user_history(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
    since: Option<DateTime<Utc>>,
    event_type: Option<&str>,
) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.seq, e.tx_id::text::int8 AS tx_id, e.event_id, e.event_type, e.user_id, \
                e.user_version, e.body::text AS body, e.created_at, e.trace_id, \
                o.published_at, (o.seq IS NULL OR o.published_at IS NOT NULL) AS published \
         FROM event_store e LEFT JOIN outbox o ON o.seq = e.seq \
         WHERE e.user_id = $1 \
           AND ($2::timestamptz IS NULL OR e.created_at >= $2) \
           AND ($3::text IS NULL OR e.event_type = $3) \
         ORDER BY e.seq",
    )
    .bind(user_id)
    .bind(since)
    .bind(event_type)
    .fetch_all(db)
    .await
}
