//! Erasure of a person's data (UK GDPR art. 17): one recorded act that leaves `auth_db` holding
//! the person only under their pseudonymous id, and tells every copy to forget them.
//!
//! In one transaction, under the user's row lock: the record takes `contract::erasure`'s
//! placeholders at its next version with its `user.erased` event (the tombstone, published by
//! the relay like any change); every stored event of the user is rewritten with the placeholders
//! (redaction: see ARCHITECTURE.md §5f for why not crypto-shredding); texts elsewhere that name
//! the person (saga steps and outcomes, security details, queued messages) have the name, email
//! and phone replaced; what exists only because of the person (sessions, second factor, login
//! throttle rows, a registration request, SCIM's copy of the directory's record) is deleted.
//! The audit trail keeps who did what and when: `security_events`, the sagas and the event
//! store's rows stay, under the id. An `erasures` row records who erased, why, when, and keyed
//! fingerprints of what was erased, for `portal erasure verify`.
//!
//! Only a deactivated person with no offboarding running can be erased: erasure comes after
//! the leaving, never instead of it. Nothing changes the record afterwards
//! (`StoreError::Erased`).

use crate::store::{self, StoreError, UserRow, USER_COLUMNS};
use chrono::{DateTime, Utc};
use contract::api::Erasure;
use contract::{Envelope, EventType, Timestamp, UserId};
use platform::erasure::Fingerprints;
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("no such user")]
    NotFound,
    #[error("this person is still active: deactivate them (or offboard them) first")]
    StillActive,
    #[error("this person's offboarding is still running: erase them when it has ended")]
    OffboardingRunning,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// What an erasure did.
#[derive(Debug)]
pub enum Erased {
    /// Erased now.
    New(Erasure),
    /// Erased before; nothing was done.
    Already(Erasure),
}

/// Erases `id`'s personal data, asked by `admin` for `reason`. `password_hash` is what the
/// record keeps instead of the person's (a hash of a password no one knows).
pub async fn erase(
    db: &PgPool,
    admin: Uuid,
    id: Uuid,
    reason: &str,
    password_hash: &str,
) -> Result<Erased, ErasureError> {
    let mut tx = db.begin().await?;
    let before: UserRow = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(ErasureError::NotFound)?;
    if before.erased_at.is_some() {
        let done = find(&mut *tx, id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("user {id} is erased but has no erasure record"))
        })?;
        return Ok(Erased::Already(done));
    }
    if before.is_active {
        return Err(ErasureError::StillActive);
    }
    let running: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM offboardings WHERE user_id = $1 \
           AND state IN ('awaiting_receipts', 'resolving_appointments'))",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if running {
        return Err(ErasureError::OffboardingRunning);
    }

    let fingerprints = Fingerprints::new(
        &before.email,
        &before.first_name,
        &before.last_name,
        before.phone_number.as_deref(),
    )
    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let now = Timestamp::now();
    let after = erased_row(&before, password_hash, now)?;
    let event = Envelope::new(EventType::Erased, after.snapshot()?);
    store::write_erased(&mut tx, &after, &event).await?;

    // Every value the person ever had (an email changed at v3 is still in texts written
    // before), from their stored events, then the history rewritten.
    let (redacted, mut personal) = redact_events(&mut tx, id, now).await?;
    personal.add(&before.snapshot()?);
    redact_queued_snapshots(&mut tx, id, now).await?;
    let scrubbed = personal.scrub(&mut tx).await?;
    forget(&mut tx, id, &personal.emails).await?;

    let reason: String = personal.scrub_text(reason).chars().take(500).collect();
    sqlx::query(
        "INSERT INTO erasures (user_id, requested_by, reason, user_version, erased_at, \
             fingerprints) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(admin)
    .bind(&reason)
    .bind(after.version())
    .bind(now.as_datetime())
    .bind(sqlx::types::Json(&fingerprints))
    .execute(&mut *tx)
    .await?;
    crate::mfa::record_with(
        &mut *tx,
        "user_erased",
        id,
        Some(admin),
        Some(serde_json::json!({
            "version": after.version(),
            "eventsRedacted": redacted,
            "textsScrubbed": scrubbed,
        })),
    )
    .await?;
    let done = find(&mut *tx, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("the erasure of {id} was not written")))?;
    tx.commit().await?;
    tracing::warn!(
        target: "security",
        event = "user_erased",
        user_id = %id,
        by = %admin,
        version = after.version(),
        events_redacted = redacted,
        texts_scrubbed = scrubbed,
        "personal data erased"
    );
    Ok(Erased::New(done))
}

/// An `erasures` row as the API shows it.
#[derive(sqlx::FromRow)]
struct ErasureRow {
    user_id: Uuid,
    user_version: i64,
    erased_at: DateTime<Utc>,
    requested_by: Uuid,
    reason: String,
    queues_purged_at: Option<DateTime<Utc>>,
}

/// The erasure of `id`, if they were erased.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Erasure>, sqlx::Error> {
    let row: Option<ErasureRow> = sqlx::query_as(
        "SELECT user_id, user_version, erased_at, requested_by, reason, queues_purged_at \
         FROM erasures WHERE user_id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| Erasure {
        user_id: UserId(r.user_id),
        user_version: r.user_version,
        erased_at: r.erased_at.into(),
        requested_by: r.requested_by,
        reason: r.reason,
        queues_purged_at: r.queues_purged_at.map(Into::into),
    }))
}

/// `before` at its next version with the placeholders in place of every personal field.
fn erased_row(
    before: &UserRow,
    password_hash: &str,
    now: Timestamp,
) -> Result<UserRow, StoreError> {
    let mut snapshot = contract::erasure::erase(&before.snapshot()?, now);
    snapshot.user_version = Some(before.version() + 1);
    snapshot.updated_at = Some(now);
    snapshot.is_active = false;
    snapshot.must_change_password = false;
    let mut row = before.clone();
    row.user.email = snapshot.email.as_str().to_owned();
    row.user.first_name = snapshot.first_name;
    row.user.last_name = snapshot.last_name;
    row.user.phone_number = None;
    row.user.is_active = false;
    row.user.must_change_password = false;
    row.user.user_version = snapshot.user_version;
    row.user.updated_at = Some(now.as_datetime());
    row.user.erased_at = Some(now.as_datetime());
    row.password_hash = password_hash.to_owned();
    Ok(row)
}

/// Rewrites every stored event of `id` with the placeholders and `erasedAt`: a replay or a
/// backfill then carries only tombstones (a copy applies any of them as the erasure). The
/// event's type, time, version and the names of the fields it changed stay: the audit trail
/// still says what happened when. Returns how many events were rewritten.
async fn redact_events(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    erased_at: Timestamp,
) -> Result<(u64, Personal), ErasureError> {
    // The history is the event store's (the outbox keeps a row only until a minute after it
    // is published); each rewritten event is rewritten in the outbox too while it is there.
    let stored: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, body::text FROM event_store WHERE user_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
    let mut seqs = Vec::with_capacity(stored.len());
    let mut bodies = Vec::with_capacity(stored.len());
    let mut personal = Personal::default();
    for (seq, body) in stored {
        seqs.push(seq);
        let (was, redacted) = redacted_body(&body, erased_at)?;
        personal.add(&was);
        bodies.push(redacted);
    }
    let done = sqlx::query(
        "WITH r AS (SELECT * FROM UNNEST($1::int8[], $2::text[]) AS r(seq, body)), \
              queued AS (UPDATE outbox o SET body = r.body::json FROM r WHERE o.seq = r.seq) \
         UPDATE event_store e SET body = r.body::json \
         FROM r WHERE e.seq = r.seq AND e.user_id = $3",
    )
    .bind(&seqs)
    .bind(&bodies)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok((done.rows_affected(), personal))
}

/// One stored event body with the placeholders in its payload, and the payload it held; a body
/// this producer could not have written is refused rather than kept as it was.
fn redacted_body(
    body: &str,
    erased_at: Timestamp,
) -> Result<(contract::UserSnapshot, String), ErasureError> {
    let mut event: Envelope = serde_json::from_str(body).map_err(|e| {
        ErasureError::Invalid(format!(
            "a stored event cannot be read ({e}): the erasure was not done"
        ))
    })?;
    let was = event.payload.clone();
    let changed = event.payload.changed_fields.take();
    event.payload = contract::erasure::erase(&event.payload, erased_at);
    event.payload.changed_fields = changed;
    let body = serde_json::to_string(&event).map_err(|e| ErasureError::Invalid(e.to_string()))?;
    Ok((was, body))
}

/// The saga's messages still queued that carry the person's snapshot (a snapshot sent again to
/// a late consumer) get the placeholders and `erasedAt`, like the stored events: sent after the
/// erasure, such a message is one more tombstone.
async fn redact_queued_snapshots(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    erased_at: Timestamp,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE message_outbox SET body = jsonb_set(jsonb_set(jsonb_set(jsonb_set(jsonb_set( \
             body, '{payload,email}', to_jsonb($2::text)), \
             '{payload,firstName}', to_jsonb($3::text)), '{payload,lastName}', to_jsonb($4::text)), \
             '{payload,phoneNumber}', 'null'::jsonb), '{payload,erasedAt}', to_jsonb($5::text)) \
         WHERE body -> 'payload' ->> 'userId' = $1::text",
    )
    .bind(id)
    .bind(contract::erasure::email(UserId(id)).as_str())
    .bind(contract::erasure::FIRST_NAME)
    .bind(contract::erasure::LAST_NAME)
    .bind(erased_at.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Every email, full name and phone the person had, as texts elsewhere may hold them.
#[derive(Default)]
struct Personal {
    emails: Vec<String>,
    names: Vec<String>,
    phones: Vec<String>,
}

/// Free-text and JSON columns of `auth_db` that may name a person: saga outcomes (the doctors
/// appointments went to) and steps, reasons, security details, queued messages; with the
/// longest text each may hold.
const TEXTS: [(&str, &str, Kind); 5] = [
    ("offboardings", "outcome", Kind::Json),
    ("offboardings", "reason", Kind::Text(500)),
    ("offboarding_steps", "detail", Kind::Text(10_000)),
    ("security_events", "detail", Kind::Json),
    ("message_outbox", "body", Kind::Json),
];

#[derive(Clone, Copy)]
enum Kind {
    /// jsonb: only whole JSON string values equal to a value are replaced (`"a@b.co"`, never
    /// the `a@b.co` inside `"ana@b.com"`).
    Json,
    /// Free text, replaced wherever the value occurs, then cut to its column's limit.
    Text(usize),
}

impl Personal {
    fn add(&mut self, p: &contract::UserSnapshot) {
        if contract::erasure::is_placeholder_email(p.email.as_str()) {
            return;
        }
        let push = |list: &mut Vec<String>, value: String| {
            if !value.is_empty() && !list.contains(&value) {
                list.push(value);
            }
        };
        push(&mut self.emails, p.email.as_str().to_owned());
        push(&mut self.names, format!("{} {}", p.first_name, p.last_name));
        if let Some(phone) = &p.phone_number {
            push(&mut self.phones, phone.clone());
        }
    }

    /// (value, what replaces it), longest first so a full name goes before a part of it.
    fn replacements(&self, placeholder_email: &str) -> Vec<(String, String)> {
        let mut r: Vec<(String, String)> = self
            .names
            .iter()
            .map(|n| (n.clone(), contract::erasure::FORMER_CLINICIAN.to_owned()))
            .chain(
                self.emails
                    .iter()
                    .map(|e| (e.clone(), placeholder_email.to_owned())),
            )
            .chain(
                self.phones
                    .iter()
                    .map(|p| (p.clone(), "(erased)".to_owned())),
            )
            .collect();
        r.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        r
    }

    fn scrub_text(&self, text: &str) -> String {
        self.replacements("(erased)")
            .iter()
            .fold(text.to_owned(), |t, (from, to)| {
                t.replace(from.as_str(), to)
            })
    }

    /// Replaces the person's texts in every column of [`TEXTS`]; returns the rows changed.
    async fn scrub(&self, tx: &mut Transaction<'_, Postgres>) -> Result<u64, sqlx::Error> {
        let replacements = self.replacements("(erased)");
        if replacements.is_empty() {
            return Ok(0);
        }
        let mut changed = 0;
        for (table, column, kind) in TEXTS {
            let mut value = format!("{column}::text");
            let mut found = Vec::new();
            for i in 0..replacements.len() {
                let (from, to) = (2 * i + 1, 2 * i + 2);
                value = format!("replace({value}, ${from}, ${to})");
                found.push(format!("strpos({column}::text, ${from}) > 0"));
            }
            let set = match kind {
                Kind::Json => format!("({value})::jsonb"),
                Kind::Text(limit) => format!("left({value}, {limit})"),
            };
            let sql = format!(
                "UPDATE {table} SET {column} = {set} WHERE {}",
                found.join(" OR ")
            );
            let mut query = sqlx::query(&sql);
            for (from, to) in &replacements {
                query = match kind {
                    // A JSON string value, quoted; the names, emails and phone numbers the
                    // contract accepts contain nothing JSON escapes.
                    Kind::Json => query.bind(format!("\"{from}\"")).bind(format!("\"{to}\"")),
                    Kind::Text(_) => query.bind(from.clone()).bind(to.clone()),
                };
            }
            changed += query.execute(&mut **tx).await?.rows_affected();
        }
        Ok(changed)
    }
}

/// Deletes what exists only because of the person: sign-in state and second factor, login
/// throttle rows keyed by their email, a registration request with their email, SCIM's record
/// of the directory's view of them.
async fn forget(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    emails: &[String],
) -> Result<(), sqlx::Error> {
    for table in [
        "refresh_tokens",
        "login_challenges",
        "recovery_codes",
        "second_factors",
        "scim_users",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    for email in emails {
        // The throttle's keys of this account exactly (`acct:<account>`,
        // `pair:<account>|<address>`): another account's never.
        let account = crate::throttle::account_key(email);
        sqlx::query(
            "DELETE FROM login_throttle \
             WHERE key = 'acct:' || $1 OR starts_with(key, 'pair:' || $1 || '|')",
        )
        .bind(&account)
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM login_known_sources WHERE account = $1")
            .bind(&account)
            .execute(&mut **tx)
            .await?;
        sqlx::query("DELETE FROM registration_requests WHERE lower(email) = lower($1)")
            .bind(email)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::{Email, Role, UserSnapshot};

    #[test]
    fn a_redacted_event_keeps_what_happened_and_nothing_personal() {
        let snapshot = UserSnapshot {
            user_id: UserId::new(),
            email: Email::parse("zebulon.quix@example.org").expect("email"),
            first_name: "Zebulon".into(),
            last_name: "Quixwort".into(),
            role: Role::Doctor,
            phone_number: Some("+44 7700 900123".into()),
            is_active: true,
            must_change_password: false,
            created_at: Timestamp::now(),
            updated_at: Some(Timestamp::now()),
            user_version: Some(3),
            previous_role: None,
            changed_fields: Some(vec!["phoneNumber".into()]),
            erased_at: None,
        };
        let event = Envelope::new(EventType::Updated, snapshot);
        let body = serde_json::to_string(&event).expect("json");
        let (was, redacted) = redacted_body(&body, Timestamp::now()).expect("redacts");
        assert_eq!(was.first_name, "Zebulon");
        for personal in ["Zebulon", "Quixwort", "7700", "example.org"] {
            assert!(!redacted.contains(personal), "{personal} in {redacted}");
        }
        let back = contract::event::decode(redacted.as_bytes()).expect("still an event");
        assert_eq!(back.event_id, event.event_id);
        assert_eq!(back.event_type, EventType::Updated);
        assert_eq!(back.payload.user_version, Some(3));
        assert_eq!(
            back.payload.changed_fields,
            Some(vec!["phoneNumber".to_owned()])
        );
        assert!(back.payload.is_erased());
        assert!(redacted_body("{not json", Timestamp::now()).is_err());
    }
}
