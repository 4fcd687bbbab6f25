//! Bulk user creation: many users and their `user.created` events in one transaction with one
//! statement each, for imports (`POST /admin/users/bulk`, `portal users import`) and the
//! benchmark. It keeps the store's rule — every user row is
//! written with its outbox event in the caller's transaction — and reuses its pieces
//! ([`store::append_events`], [`UserRow::snapshot`]), so the events are exactly those
//! [`store::create_user`] would have written one by one.

use crate::store::{self, NewUser, StoreError, UserRow, USER_COLUMNS};
use contract::{Envelope, EventType, PhoneNumber, Timestamp, UserId};
use directory::record::UserRecord;
use sqlx::{Postgres, Transaction};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Inserts `users` as version 1 and appends one `user.created` event per user (in input order),
/// in the caller's transaction; returns the rows in input order. A duplicate email fails the
/// whole call with [`StoreError::DuplicateEmail`] (the caller then rolls back).
pub async fn create_users(
    tx: &mut Transaction<'_, Postgres>,
    users: Vec<NewUser>,
) -> Result<Vec<UserRow>, StoreError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let rows = rows_of(users);
    insert(tx, &rows, OnConflict::Fail).await?;
    append_created(tx, &rows).await?;
    Ok(rows)
}

/// What [`create_missing`] did with one user.
#[derive(Debug)]
pub enum Created {
    /// Inserted now, with its `user.created` event.
    New(UserRow),
    /// A user with this email (compared without case) existed: left as it is.
    Existing(Uuid),
}

/// Like [`create_users`], but a user whose email exists already is left alone instead of
/// failing the call, so importing the same list again creates nothing. Emails must be distinct
/// within `users`. Concurrent imports of the same email wait for each other and one creates it.
pub async fn create_missing(
    tx: &mut Transaction<'_, Postgres>,
    users: Vec<NewUser>,
) -> Result<Vec<Created>, StoreError> {
    if users.is_empty() {
        return Ok(Vec::new());
    }
    let rows = rows_of(users);
    let inserted: HashSet<Uuid> = insert(tx, &rows, OnConflict::Skip)
        .await?
        .into_iter()
        .collect();
    let (new, existing): (Vec<&UserRow>, Vec<&UserRow>) =
        rows.iter().partition(|r| inserted.contains(&r.id));
    let mut found: HashMap<String, Uuid> = HashMap::new();
    if !existing.is_empty() {
        let emails: Vec<&str> = existing.iter().map(|r| r.email.as_str()).collect();
        let pairs: Vec<(String, Uuid)> =
            sqlx::query_as("SELECT lower(email), id FROM users WHERE lower(email) = ANY($1)")
                .bind(&emails)
                .fetch_all(&mut **tx)
                .await?;
        found.extend(pairs);
    }
    append_created(tx, new).await?;
    rows.into_iter()
        .map(|row| {
            if inserted.contains(&row.id) {
                Ok(Created::New(row))
            } else {
                found
                    .get(&row.email)
                    .map(|id| Created::Existing(*id))
                    // Skipped for a conflict, yet not found: only a concurrent delete could
                    // do that, and users are never deleted.
                    .ok_or(StoreError::DuplicateEmail)
            }
        })
        .collect()
}

/// The rows of `users` as version 1, every value chosen here (so nothing is read back).
fn rows_of(users: Vec<NewUser>) -> Vec<UserRow> {
    let now = Timestamp::now().as_datetime();
    users
        .into_iter()
        .map(|u| UserRow {
            user: UserRecord {
                id: UserId::new().0,
                email: u.email.as_str().to_owned(),
                first_name: u.first_name.as_str().to_owned(),
                last_name: u.last_name.as_str().to_owned(),
                role: u.role.as_str().to_owned(),
                phone_number: u
                    .phone_number
                    .as_ref()
                    .map(|p| PhoneNumber::as_str(p).to_owned()),
                is_active: u.is_active,
                must_change_password: u.must_change_password,
                user_version: Some(1),
                erased_at: None,
                created_at: now,
                updated_at: Some(now),
            },
            password_hash: u.password_hash,
        })
        .collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OnConflict {
    /// A duplicate email fails the statement.
    Fail,
    /// A row whose email exists is not inserted.
    Skip,
}

/// Inserts `rows` with one statement; returns the ids inserted.
async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[UserRow],
    on_conflict: OnConflict,
) -> Result<Vec<Uuid>, StoreError> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let column = |f: fn(&UserRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let conflict = match on_conflict {
        OnConflict::Fail => "",
        OnConflict::Skip => "ON CONFLICT ((lower(email))) DO NOTHING",
    };
    sqlx::query_scalar(&format!(
        "INSERT INTO users ({USER_COLUMNS}) \
         SELECT id, email, password_hash, first_name, last_name, role, phone_number, is_active, \
                must_change_password, 1, $10, $10, NULL \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::bool[], $9::bool[]) \
             AS t(id, email, password_hash, first_name, last_name, role, phone_number, \
                  is_active, must_change_password) \
         {conflict} RETURNING id"
    ))
    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(column(|r| &r.email))
    .bind(column(|r| &r.password_hash))
    .bind(column(|r| &r.first_name))
    .bind(column(|r| &r.last_name))
    .bind(column(|r| &r.role))
    .bind(
        rows.iter()
            .map(|r| r.phone_number.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.is_active).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.must_change_password)
            .collect::<Vec<_>>(),
    )
    .bind(first.created_at)
    .fetch_all(&mut **tx)
    .await
    .map_err(store::map_unique)
}

/// One `user.created` event per row, in order.
async fn append_created<'a>(
    tx: &mut Transaction<'_, Postgres>,
    rows: impl IntoIterator<Item = &'a UserRow>,
) -> Result<(), StoreError> {
    let events = rows
        .into_iter()
        .map(|row| Ok(Envelope::new(EventType::Created, row.snapshot()?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    store::append_events(tx, &events).await?;
    Ok(())
}
