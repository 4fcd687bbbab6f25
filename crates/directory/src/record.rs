//! The `users` table as every copy shapes it (the auth-service's adds the password hash): one
//! record type with its conversion to the contract's snapshot and to what a colleague sees.

use chrono::{DateTime, Utc};
use contract::api::DirectoryEntry;
use contract::{Email, Role, UserId, UserSnapshot};
use uuid::Uuid;
/// The synced columns of one `users` row, as both databases hold them.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub role: String,
    pub phone_number: Option<String>,
    pub is_active: bool,
    pub must_change_password: bool,
    pub created_at: DateTime<Utc>,
    /// Always set in `auth_db`; absent in a copy written from an older producer's event.
    pub updated_at: Option<DateTime<Utc>>,
    /// Always set in `auth_db`; absent in a copy written from an older producer's event.
    pub user_version: Option<i64>,
    /// When the person was erased: the personal fields then hold `contract::erasure`'s
    /// placeholders, and the record is no one's to look up.
    pub erased_at: Option<DateTime<Utc>>,
}

/// The columns of [`UserRecord`], in its order, for `SELECT`s.
pub const RECORD_COLUMNS: &str = "id, email, first_name, last_name, role, phone_number, \
     is_active, must_change_password, created_at, updated_at, user_version, erased_at";

/// A stored row that no longer satisfies the contract (written behind the system's back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored user {id} is invalid: {problem}")]
pub struct CorruptRow {
    pub id: Uuid,
    pub problem: String,
}

impl UserRecord {
    /// True for the staff a colleague may look up: active, and not an admin.
    pub fn is_colleague(&self) -> bool {
        self.is_active && self.role != Role::Admin.as_str() && self.erased_at.is_none()
    }

    /// The row as a colleague sees it: who they are and how to reach them.
    pub fn colleague(&self) -> Result<DirectoryEntry, CorruptRow> {
        let snapshot = self.snapshot()?;
        Ok(DirectoryEntry {
            user_id: snapshot.user_id,
            first_name: snapshot.first_name,
            last_name: snapshot.last_name,
            role: snapshot.role,
            phone_number: snapshot.phone_number,
        })
    }

    /// The row as the contract's snapshot, which is also the API's user JSON.
    pub fn snapshot(&self) -> Result<UserSnapshot, CorruptRow> {
        let corrupt = |problem: String| CorruptRow {
            id: self.id,
            problem,
        };
        Ok(UserSnapshot {
            user_id: UserId(self.id),
            email: Email::parse(&self.email).map_err(|e| corrupt(e.to_string()))?,
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            role: self
                .role
                .parse()
                .map_err(|_| corrupt(format!("unknown role {:?}", self.role)))?,
            phone_number: self.phone_number.clone(),
            is_active: self.is_active,
            must_change_password: self.must_change_password,
            created_at: self.created_at.into(),
            updated_at: self.updated_at.map(Into::into),
            user_version: self.user_version,
            previous_role: None,
            changed_fields: None,
            erased_at: self.erased_at.map(Into::into),
        })
    }
}
