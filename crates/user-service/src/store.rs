//! `user_db` access: [`UserCopy`], the service's [`consumer::Apply`] (the conditional
//! multi-row upsert that applies snapshots), and the directory queries.

use consumer::{Apply, Changed, Comparison};
use contract::{Envelope, Timestamp};
use directory::record::{UserRecord, RECORD_COLUMNS};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// `user_db`'s `users`, kept by the version rule: one conditional multi-row upsert per part of
/// a batch (the shared [`consumer`] crate does the rest — batches, trust, retries, dead
/// letters, reconnection).
#[derive(Debug, Clone, Copy, Default)]
pub struct UserCopy;

/// The user-service's consumer.
pub type UserConsumer = consumer::Consumer<UserCopy>;

impl Apply for UserCopy {
    /// Applies each snapshot whose version beats the stored one by `newer` (`>` for changes,
    /// `>=` for repairs); returns the users that changed. `events` hold at most one event per
    /// user ([`consumer::newest_per_user`]) and are never empty.
    async fn apply(
        &self,
        conn: &mut PgConnection,
        events: &[&Envelope],
        newer: Comparison,
    ) -> Result<Vec<Changed>, sqlx::Error> {
        upsert(conn, events, newer).await
    }

    /// Keeps each erased person as a tombstone: the id, the greater version, `erased_at` and
    /// the event's placeholders; written even when the row is absent, so no older event can
    /// bring the person back.
    async fn erase(
        &self,
        conn: &mut PgConnection,
        events: &[&Envelope],
    ) -> Result<Vec<Changed>, sqlx::Error> {
        let columns = Columns::of(events);
        let erased_at: Vec<_> = events
            .iter()
            .map(|e| e.payload.erased_at.unwrap_or(e.timestamp).as_datetime())
            .collect();
        columns
            .bind(sqlx::query_as(&format!(
                "INSERT INTO users AS u (id, email, first_name, last_name, role, phone_number, \
                     is_active, must_change_password, created_at, updated_at, user_version, \
                     event_timestamp, erased_at) \
                 SELECT id, email, first_name, last_name, role, NULL, false, false, created_at, \
                     updated_at, user_version, event_timestamp, erased_at \
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
                     $6::text[], $7::bool[], $8::bool[], $9::timestamptz[], $10::timestamptz[], \
                     $11::int8[], $12::timestamptz[], $13::timestamptz[]) AS e(id, email, first_name, last_name, role, phone, active, must_change, \
                          created_at, updated_at, user_version, event_timestamp, erased_at) \
                 ON CONFLICT (id) DO UPDATE SET \
                     email = EXCLUDED.email, first_name = EXCLUDED.first_name, \
                     last_name = EXCLUDED.last_name, phone_number = NULL, is_active = false, \
                     must_change_password = false, \
                     role = CASE WHEN {newer} THEN EXCLUDED.role ELSE u.role END, \
                     created_at = CASE WHEN {newer} THEN EXCLUDED.created_at ELSE u.created_at END, \
                     updated_at = greatest(u.updated_at, EXCLUDED.updated_at), \
                     user_version = greatest(u.user_version, EXCLUDED.user_version), \
                     event_timestamp = greatest(u.event_timestamp, EXCLUDED.event_timestamp), \
                     erased_at = coalesce(u.erased_at, EXCLUDED.erased_at), synced_at = now() \
                 WHERE u.erased_at IS NULL OR {newer} \
                 RETURNING id, email AS label",
                newer = ERASURE_NEWER
            )))
            .bind(&erased_at)
            .fetch_all(conn)
            .await
    }
}

/// When an erasure's snapshot also replaces what is not personal (role, creation time): it is
/// at least as new as the stored row (a repair at the same version included; a stored row
/// without a version is older than any versioned one).
const ERASURE_NEWER: &str = "coalesce(EXCLUDED.user_version, 0) >= coalesce(u.user_version, 0)";

/// A batch's snapshots as one array per column, bound as `$1`…`$12` of an `UNNEST`.
struct Columns<'a> {
    id: Vec<Uuid>,
    email: Vec<&'a str>,
    first_name: Vec<&'a str>,
    last_name: Vec<&'a str>,
    role: Vec<&'a str>,
    phone: Vec<Option<&'a str>>,
    active: Vec<bool>,
    must_change: Vec<bool>,
    created: Vec<chrono::DateTime<chrono::Utc>>,
    updated: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    version: Vec<Option<i64>>,
    stamp: Vec<chrono::DateTime<chrono::Utc>>,
}

async fn upsert(
    conn: &mut PgConnection,
    events: &[&Envelope],
    newer: Comparison,
) -> Result<Vec<Changed>, sqlx::Error> {
    Columns::of(events)
        .bind(sqlx::query_as(&format!(
            "INSERT INTO users AS u (id, email, first_name, last_name, role, phone_number, \
                 is_active, must_change_password, created_at, updated_at, user_version, \
                 event_timestamp) \
             SELECT * FROM UNNEST({UNNEST_COLUMNS}) \
             ON CONFLICT (id) DO UPDATE SET \
                 email = EXCLUDED.email, first_name = EXCLUDED.first_name, \
                 last_name = EXCLUDED.last_name, role = EXCLUDED.role, \
                 phone_number = EXCLUDED.phone_number, is_active = EXCLUDED.is_active, \
                 must_change_password = EXCLUDED.must_change_password, \
                 created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
                 user_version = EXCLUDED.user_version, \
                 event_timestamp = EXCLUDED.event_timestamp, synced_at = now() \
             WHERE {rule} \
             RETURNING id, email AS label",
            rule = consumer::version_rule("u", newer)
        )))
        .fetch_all(conn)
        .await
}

/// The `UNNEST` arguments [`Columns::bind`] binds.
const UNNEST_COLUMNS: &str = "$1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
     $6::text[], $7::bool[], $8::bool[], $9::timestamptz[], $10::timestamptz[], $11::int8[], \
     $12::timestamptz[]";

type UpsertQuery<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, Changed, sqlx::postgres::PgArguments>;

impl<'a> Columns<'a> {
    fn of(events: &[&'a Envelope]) -> Self {
        let n = events.len();
        let mut c = Columns {
            id: Vec::with_capacity(n),
            email: Vec::with_capacity(n),
            first_name: Vec::with_capacity(n),
            last_name: Vec::with_capacity(n),
            role: Vec::with_capacity(n),
            phone: Vec::with_capacity(n),
            active: Vec::with_capacity(n),
            must_change: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
            updated: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            stamp: Vec::with_capacity(n),
        };
        for e in events {
            let p = &e.payload;
            c.id.push(p.user_id.0);
            c.email.push(p.email.as_str());
            c.first_name.push(p.first_name.as_str());
            c.last_name.push(p.last_name.as_str());
            c.role.push(p.role.as_str());
            c.phone.push(p.phone_number.as_deref());
            c.active.push(p.is_active);
            c.must_change.push(p.must_change_password);
            c.created.push(p.created_at.as_datetime());
            c.updated.push(p.updated_at.map(Timestamp::as_datetime));
            c.version.push(p.user_version);
            c.stamp.push(e.timestamp.as_datetime());
        }
        c
    }

    /// Binds the columns as `$1`…`$12`.
    fn bind<'q>(self, query: UpsertQuery<'q>) -> UpsertQuery<'q>
    where
        'a: 'q,
    {
        query
            .bind(self.id)
            .bind(self.email)
            .bind(self.first_name)
            .bind(self.last_name)
            .bind(self.role)
            .bind(self.phone)
            .bind(self.active)
            .bind(self.must_change)
            .bind(self.created)
            .bind(self.updated)
            .bind(self.version)
            .bind(self.stamp)
    }
}

/// The user `id` as a colleague may look them up: an erased person is no one's to find.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UserRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM users WHERE id = $1 AND erased_at IS NULL"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}
