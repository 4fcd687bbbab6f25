//! Bulk user creation: many users and their `user.created` events in one transaction with one
//! statement each, for imports and the benchmark. It keeps the store's rule — every user row is
//! written with its outbox event in the caller's transaction — and reuses its pieces
//! ([`store::append_events`], [`UserRow::snapshot`]), so the events are exactly those
//! [`store::create_user`] would have written one by one.

use crate::store::{self, NewUser, StoreError, UserRow, USER_COLUMNS};
use contract::{Envelope, EventType, PhoneNumber, Timestamp, UserId};
use platform::users::UserRecord;
use sqlx::{Postgres, Transaction};

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
    let now = Timestamp::now().as_datetime();
    // Every column value is chosen here, so the rows are built in memory rather than read back
    // with RETURNING: the same values, without sending every row twice.
    let rows: Vec<UserRow> = users
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
                created_at: now,
                updated_at: Some(now),
            },
            password_hash: u.password_hash,
        })
        .collect();
    let column = |f: fn(&UserRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    sqlx::query(&format!(
        "INSERT INTO users ({USER_COLUMNS}) \
         SELECT id, email, password_hash, first_name, last_name, role, phone_number, is_active, \
                must_change_password, 1, $10, $10 \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::bool[], $9::bool[]) \
             AS t(id, email, password_hash, first_name, last_name, role, phone_number, \
                  is_active, must_change_password)"
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
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(store::map_unique)?;
    let events = rows
        .iter()
        .map(|row| Ok(Envelope::new(EventType::Created, row.snapshot()?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    store::append_events(tx, &events).await?;
    Ok(rows)
}
