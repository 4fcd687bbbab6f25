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
}

async fn upsert(
    conn: &mut PgConnection,
    events: &[&Envelope],
    newer: Comparison,
) -> Result<Vec<Changed>, sqlx::Error> {
    let n = events.len();
    let mut id = Vec::with_capacity(n);
    let mut email = Vec::with_capacity(n);
    let mut first_name = Vec::with_capacity(n);
    let mut last_name = Vec::with_capacity(n);
    let mut role = Vec::with_capacity(n);
    let mut phone = Vec::with_capacity(n);
    let mut active = Vec::with_capacity(n);
    let mut must_change = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    let mut version = Vec::with_capacity(n);
    let mut stamp = Vec::with_capacity(n);
    for e in events {
        let p = &e.payload;
        id.push(p.user_id.0);
        email.push(p.email.as_str());
        first_name.push(p.first_name.as_str());
        last_name.push(p.last_name.as_str());
        role.push(p.role.as_str());
        phone.push(p.phone_number.as_deref());
        active.push(p.is_active);
        must_change.push(p.must_change_password);
        created.push(p.created_at.as_datetime());
        updated.push(p.updated_at.map(Timestamp::as_datetime));
        version.push(p.user_version);
        stamp.push(e.timestamp.as_datetime());
    }
    sqlx::query_as(&format!(
        "INSERT INTO users AS u (id, email, first_name, last_name, role, phone_number, is_active, \
             must_change_password, created_at, updated_at, user_version, event_timestamp) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::bool[], $8::bool[], $9::timestamptz[], $10::timestamptz[], \
             $11::int8[], $12::timestamptz[]) \
         ON CONFLICT (id) DO UPDATE SET \
             email = EXCLUDED.email, first_name = EXCLUDED.first_name, \
             last_name = EXCLUDED.last_name, role = EXCLUDED.role, \
             phone_number = EXCLUDED.phone_number, is_active = EXCLUDED.is_active, \
             must_change_password = EXCLUDED.must_change_password, \
             created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
             user_version = EXCLUDED.user_version, event_timestamp = EXCLUDED.event_timestamp, \
             synced_at = now() \
         WHERE {rule} \
         RETURNING id, email AS label",
        rule = consumer::version_rule("u", newer)
    ))
    .bind(&id)
    .bind(&email)
    .bind(&first_name)
    .bind(&last_name)
    .bind(&role)
    .bind(&phone)
    .bind(&active)
    .bind(&must_change)
    .bind(&created)
    .bind(&updated)
    .bind(&version)
    .bind(&stamp)
    .fetch_all(conn)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UserRecord>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {RECORD_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}
