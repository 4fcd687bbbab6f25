//! The JSON bodies of the HTTP API (`/api/v1/...`, through the gateway): the services answer
//! with these types and the clients (`portal users`, the tests, the benchmark, the chaos load)
//! read them, so both sides cannot drift apart. A user is always the event payload's
//! [`UserSnapshot`], with the same field names.

use crate::domain::{Role, UserId};
use crate::event::UserSnapshot;
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

/// Every error answer: `{"error": code, "message": words, "field"?: the invalid input}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// A stable code (`validation_failed`, `conflict`, `unauthorized`, ...).
    pub error: String,
    pub message: String,
    /// The input field at fault, on 422.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One page of a list and how many match in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

/// A colleague as the directory shows them to staff who are not admins: who they are and how
/// to reach them; no email address, account state or version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryEntry {
    pub user_id: UserId,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    pub phone_number: Option<String>,
}

/// `POST /api/v1/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// The answer to a successful login.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires (at most 900).
    pub expires_in: i64,
    /// Opaque; exchanged once at `POST /api/v1/auth/refresh` for a new pair of tokens.
    pub refresh_token: String,
    /// When the session ends, renewed or not (RFC 3339).
    pub session_expires_at: String,
    pub user: UserSnapshot,
}

/// `POST /api/v1/auth/refresh` and `POST /api/v1/auth/logout`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// The answer to a self-registration: the same whether or not the email already has an
/// account, so the endpoint does not tell who works here.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RegistrationReceived {
    /// Always `received`.
    pub status: String,
    pub message: String,
}

/// The profile of a new account: what an admin sends to create one, and a self-registration
/// sends with its password.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewProfile {
    #[schemars(with = "crate::domain::Email")]
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    #[schemars(with = "Role")]
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
}

/// `POST /api/v1/auth/register`: a self-registration (inactive until an admin activates it).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RegisterRequest {
    #[serde(flatten)]
    pub profile: NewProfile,
    #[schemars(length(min = 8, max = 128))]
    pub password: String,
}

/// `POST /api/v1/auth/admin/users`: an admin creates an active account.
pub type CreateUserRequest = NewProfile;

/// The answer to [`CreateUserRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserResponse {
    pub user: UserSnapshot,
    /// Shown only in this answer; only its hash is stored. Must be changed at first login.
    pub temporary_password: String,
}

/// `PATCH /api/v1/auth/admin/users/{id}`: profile fields an admin may edit. Role and status have
/// their own endpoints, so any other field is refused (422) rather than silently ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Absent: unchanged; `null` or `""`: cleared.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub phone_number: Option<Option<String>>,
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `PUT /api/v1/auth/admin/users/{id}/role`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RoleRequest {
    #[schemars(with = "Role")]
    pub role: String,
}

/// `POST /api/v1/auth/change-password`: the caller's own password.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePasswordRequest {
    pub current_password: String,
    #[schemars(length(min = 8, max = 128))]
    pub new_password: String,
}

/// One stored event as `GET /api/v1/auth/admin/users/{id}/events` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// The event's global sequence in the event store.
    pub seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub user_version: Option<i64>,
    pub created_at: Timestamp,
    /// When the relay published it; `null` while it waits in the outbox.
    pub published_at: Option<Timestamp>,
    /// The event as published.
    pub event: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_tells_absent_from_null_both_ways() {
        let absent: UpdateUserRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.phone_number, None);
        let cleared: UpdateUserRequest = serde_json::from_str(r#"{"phoneNumber": null}"#).unwrap();
        assert_eq!(cleared.phone_number, Some(None));
        assert_eq!(
            serde_json::to_value(&cleared).unwrap(),
            serde_json::json!({"phoneNumber": null})
        );
        assert_eq!(
            serde_json::to_value(&absent).unwrap(),
            serde_json::json!({})
        );
        assert!(serde_json::from_str::<UpdateUserRequest>(r#"{"role": "admin"}"#).is_err());
    }
}
