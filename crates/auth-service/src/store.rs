//! The auth-service's data access. Every function that writes a user takes the open transaction
//! and writes the user's event to the outbox in it, so a change and its event commit together or
//! not at all: there is no way to write one without the other.

use chrono::{DateTime, Utc};
use contract::{
    Email, Envelope, EventType, PersonName, PhoneNumber, Role, Timestamp, UserId, UserSnapshot,
};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A user as stored in `auth_db`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    pub role: String,
    pub phone_number: Option<String>,
    pub is_active: bool,
    pub must_change_password: bool,
    pub user_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const USER_COLUMNS: &str =
    "id, email, password_hash, first_name, last_name, role, phone_number, \
     is_active, must_change_password, user_version, created_at, updated_at";

impl UserRow {
    pub fn role(&self) -> Result<Role, StoreError> {
        self.role.parse().map_err(|_| {
            StoreError::Corrupt(format!("user {} has unknown role {:?}", self.id, self.role))
        })
    }

    /// The user's current state as the contract's snapshot, which is also the API's user JSON.
    pub fn snapshot(&self) -> Result<UserSnapshot, StoreError> {
        Ok(UserSnapshot {
            user_id: UserId(self.id),
            email: Email::parse(&self.email)
                .map_err(|e| StoreError::Corrupt(format!("user {}: {e}", self.id)))?,
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            role: self.role()?,
            phone_number: self.phone_number.clone(),
            is_active: self.is_active,
            must_change_password: self.must_change_password,
            created_at: Timestamp::from(self.created_at),
            updated_at: Some(Timestamp::from(self.updated_at)),
            user_version: Some(self.user_version),
            previous_role: None,
            changed_fields: None,
        })
    }
}

/// A user to create; built only from validated parts.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub password_hash: String,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub role: Role,
    pub phone_number: Option<PhoneNumber>,
    pub is_active: bool,
    pub must_change_password: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a user with this email already exists")]
    DuplicateEmail,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub(crate) fn map_unique(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("users_email_unique") => {
            StoreError::DuplicateEmail
        }
        _ => StoreError::Db(e),
    }
}

/// Inserts `new` as version 1 and its `user.created` event, in the caller's transaction.
pub async fn create_user(tx: &mut PgConnection, new: NewUser) -> Result<UserRow, StoreError> {
    let now = Timestamp::now().as_datetime();
    let row: UserRow = sqlx::query_as(&format!(
        "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10) \
         RETURNING {USER_COLUMNS}"
    ))
    .bind(UserId::new().0)
    .bind(new.email.as_str())
    .bind(&new.password_hash)
    .bind(new.first_name.as_str())
    .bind(new.last_name.as_str())
    .bind(new.role.as_str())
    .bind(new.phone_number.as_ref().map(PhoneNumber::as_str))
    .bind(new.is_active)
    .bind(new.must_change_password)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_unique)?;
    let event = Envelope::new(EventType::Created, row.snapshot()?);
    append_events(&mut *tx, &[event]).await?;
    Ok(row)
}

/// Appends events to the outbox in one statement (the caller's transaction decides when they
/// become visible to the relay).
pub async fn append_events(tx: &mut PgConnection, events: &[Envelope]) -> Result<(), StoreError> {
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut users = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    for e in events {
        ids.push(e.event_id);
        types.push(e.event_type.as_str());
        users.push(e.payload.user_id.0);
        versions.push(e.payload.user_version);
        bodies.push(serde_json::to_string(e).map_err(|err| StoreError::Corrupt(err.to_string()))?);
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, user_id, user_version, body) \
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::int8[], $5::text[]::json[])",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&users)
    .bind(&versions)
    .bind(&bodies)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn find_by_email(
    db: impl PgExecutor<'_>,
    email: &Email,
) -> Result<Option<UserRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE lower(email) = $1"
    ))
    .bind(email.as_str())
    .fetch_optional(db)
    .await?)
}

pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UserRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

pub async fn count_users(db: impl PgExecutor<'_>) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(db)
        .await?)
}
