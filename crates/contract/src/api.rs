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
    /// Set once, by the login that confirmed a newly enrolled second factor: its recovery
    /// codes, shown only here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
}

/// The answer to a right password when a second factor must follow (202): the challenge to
/// send with the code to `POST /api/v1/auth/login/second-factor`. `status` is
/// `second_factor_required` (enter a code from the authenticator app, or a recovery code) or
/// `second_factor_enrolment_required` (an admin under ADMIN_MFA=required who has none yet:
/// `POST /api/v1/auth/login/second-factor/enrol` first).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecondFactorChallenge {
    pub status: String,
    /// Opaque; good for `expiresIn` seconds and a few wrong codes.
    pub challenge: String,
    pub expires_in: i64,
}

/// `POST /api/v1/auth/login/second-factor`: the login's second step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecondFactorRequest {
    pub challenge: String,
    /// Six digits from the authenticator app, or one of the recovery codes.
    pub code: String,
}

/// `POST /api/v1/auth/login/second-factor/enrol`: the secret for a login that must enrol.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrolmentRequest {
    pub challenge: String,
}

/// A second factor being enrolled: the secret for the authenticator app (base32, to type in)
/// and the same as an `otpauth://` URI (for a QR code). It counts once a code made with it has
/// been accepted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecondFactorEnrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

/// `POST /api/v1/auth/second-factor/confirm`: a code made with the secret being enrolled.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfirmSecondFactorRequest {
    pub code: String,
}

/// Recovery codes, shown once: each signs in once in place of a code from the app.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

/// `GET /api/v1/auth/second-factor`: the caller's second factor.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecondFactorStatus {
    pub enrolled: bool,
    /// Whether this account must have one (admins under ADMIN_MFA=required).
    pub required: bool,
    pub recovery_codes_left: i64,
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

/// `POST /api/v1/auth/register`: a request for an account. It creates no account and sets no
/// password or role: an admin approves it ([`ApproveRegistrationRequest`]) choosing the role,
/// and the account then signs in with the temporary password the admin hands over.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterRequest {
    #[schemars(with = "crate::domain::Email")]
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    /// The role the person says they have; a note for the admin, who chooses the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Role>")]
    pub requested_role: Option<String>,
}

/// A pending request for an account, as `GET /api/v1/auth/admin/registrations` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    pub id: Uuid,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_role: Option<String>,
    /// When it was received (RFC 3339); requests are kept 30 days.
    pub requested_at: String,
}

/// `POST /api/v1/auth/admin/registrations/{id}/approve`: the admin's choice of role. The
/// answer is a [`CreateUserResponse`]: the new, active account and its temporary password.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproveRegistrationRequest {
    #[schemars(with = "Role")]
    pub role: String,
}

/// `POST /api/v1/auth/admin/users`: an admin creates an active account.
pub type CreateUserRequest = NewProfile;

/// The answer to [`CreateUserRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUserResponse {
    pub user: UserSnapshot,
    /// Shown only in this answer; only its hash is stored. It expires (72 hours by default)
    /// and must be changed at first login.
    pub temporary_password: String,
}

/// The most accounts one bulk request may carry.
pub const BULK_MAX_USERS: usize = 1_000;

/// `POST /api/v1/auth/admin/users/bulk`: up to [`BULK_MAX_USERS`] accounts, each created as
/// [`CreateUserRequest`] would be. Idempotent by email: an account whose email exists is left
/// as it is.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkCreateRequest {
    #[schemars(length(min = 1, max = 1000))]
    pub users: Vec<NewProfile>,
}

/// What became of one item of a [`BulkCreateRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BulkStatus {
    /// Created now, with a temporary password.
    Created,
    /// An account with this email existed already; nothing was changed.
    Exists,
    /// Not created: `error` says why.
    Invalid,
}

/// The answer for one item, in request order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkItem {
    /// The item's position in `users`, from 0.
    pub index: usize,
    pub status: BulkStatus,
    /// The account created (`created`) or found (`exists`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// Shown only in this answer (`created`); only its hash is stored. It expires (72 hours by
    /// default) and must be changed at first login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporary_password: Option<String>,
    /// Why the item was not created (`invalid`), as an error answer would say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The answer to [`BulkCreateRequest`]: the counts and one item per account.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkCreateResponse {
    pub created: usize,
    pub existing: usize,
    pub invalid: usize,
    pub items: Vec<BulkItem>,
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
    /// When the relay published it, while the outbox keeps the published row
    /// (`OUTBOX_KEEP_PUBLISHED_SECS`, a minute by default); `null` while it waits in the
    /// outbox, and once the published row is removed (see `published`).
    pub published_at: Option<Timestamp>,
    /// True once the broker confirmed it (the event store keeps the event; the time of
    /// publishing is kept only while the outbox keeps the row). Read as false when absent (a
    /// server older than this field).
    #[serde(default)]
    pub published: bool,
    /// The W3C trace id of the request that wrote it (`null` for the seed, imports and
    /// repairs): the same id is in the relay's `traceparent` and each consumer's log line.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The event as published.
    pub event: serde_json::Value,
}

/// `POST /api/v1/appointments`: book a patient with a doctor.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewAppointment {
    /// Free text (there is no patient service); 1–200 characters.
    #[schemars(length(min = 1, max = 200))]
    pub patient_name: String,
    /// An active doctor in the appointment-service's own copy of the directory.
    #[schemars(with = "Uuid")]
    pub doctor_id: String,
    /// RFC 3339 (any offset), in the future and at most 5 years ahead.
    #[schemars(schema_with = "date_time")]
    pub starts_at: String,
    /// Whole minutes (`30` or `30.0`).
    #[serde(deserialize_with = "whole_number")]
    #[schemars(range(min = 5, max = 480))]
    pub duration_minutes: i64,
    /// At most 500 characters.
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub reason: Option<String>,
}

/// Any RFC 3339 date-time, as a string (the answers use the stricter [`Timestamp`]).
fn date_time(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
    schemars::schema::SchemaObject {
        instance_type: Some(schemars::schema::InstanceType::String.into()),
        format: Some("date-time".to_owned()),
        ..Default::default()
    }
    .into()
}

/// A JSON number that is a whole number, whether written `30` or `30.0` (JSON Schema's
/// `integer` allows both).
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                .map(|f| f as i64)
        })
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number")))
}

/// Where an appointment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    Booked,
    Cancelled,
    /// Its doctor was deactivated or is no longer a doctor: a nurse or an admin moves it to
    /// another doctor (`POST .../reassign`) or cancels it.
    NeedsReassignment,
}

impl AppointmentStatus {
    pub const ALL: [AppointmentStatus; 3] = [
        AppointmentStatus::Booked,
        AppointmentStatus::Cancelled,
        AppointmentStatus::NeedsReassignment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AppointmentStatus::Booked => "booked",
            AppointmentStatus::Cancelled => "cancelled",
            AppointmentStatus::NeedsReassignment => "needs_reassignment",
        }
    }
}

impl std::str::FromStr for AppointmentStatus {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        Self::ALL.into_iter().find(|a| a.as_str() == s).ok_or(())
    }
}

/// An appointment as the appointment API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Appointment {
    pub id: Uuid,
    pub patient_name: String,
    pub doctor_id: UserId,
    /// "First Last" of the doctor, from the appointment-service's copy.
    pub doctor_name: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub duration_minutes: i64,
    pub reason: Option<String>,
    pub status: AppointmentStatus,
    /// Who booked it.
    pub created_by: UserId,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `POST /api/v1/appointments/{id}/reassign`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReassignRequest {
    #[schemars(with = "Uuid")]
    pub doctor_id: String,
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

/// `GET /api/v1/auth/admin/users/{id}/propagation`: how far the user's current version has
/// reached, per registered consumer (from the consumers' receipts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Propagation {
    pub user_id: UserId,
    /// The user's version in `auth_db` now.
    pub user_version: i64,
    pub is_active: bool,
    /// When that version was written.
    pub changed_at: Timestamp,
    pub consumers: Vec<ConsumerPropagation>,
}

/// One registered consumer's last receipt for a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerPropagation {
    pub consumer: String,
    /// A required consumer must confirm a change before an offboarding goes on.
    pub required: bool,
    /// The highest version it reported applied; `None` before its first receipt for the user.
    pub user_version: Option<i64>,
    /// When it committed that version.
    pub applied_at: Option<Timestamp>,
    /// From that version's change to its commit there, in seconds.
    pub delay_seconds: Option<f64>,
    /// True when it holds the user's current version (or a newer one).
    pub current: bool,
}

/// `POST /api/v1/auth/admin/users/{id}/erasure`: erase a deactivated person's personal data.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErasureRequest {
    /// Why (1 to 500 characters; kept with the erasure record, so write no personal data here:
    /// "erasure request of 2026-12-01, ticket 4711").
    #[schemars(length(min = 1, max = 500))]
    pub reason: String,
}

/// An erasure: the record that a person's data was erased, under their pseudonymous id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    pub user_id: UserId,
    /// The version of the `user.erased` event: every copy holds it once the erasure reached it.
    pub user_version: i64,
    pub erased_at: Timestamp,
    /// The admin who erased.
    pub requested_by: uuid::Uuid,
    pub reason: String,
    /// When the person's messages were last removed from every dead-letter and retry queue
    /// (`portal erasure purge`, or the portal's erase button); absent until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues_purged_at: Option<Timestamp>,
}

/// `POST /api/v1/auth/admin/users/{id}/offboarding`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffboardingRequest {
    /// Why the person leaves (1 to 500 characters; in the audit trail and the cancellation
    /// events).
    #[schemars(length(min = 1, max = 500))]
    pub reason: String,
    /// What becomes of their future appointments: `reassign` (to another active doctor whose
    /// slot is free, else cancelled) or `cancel`.
    pub policy: crate::control::AppointmentPolicy,
}

/// Where an offboarding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OffboardingState {
    /// Deactivated; waiting for every required consumer's receipt of that version.
    AwaitingReceipts,
    /// The appointment-service was told to resolve the future appointments; waiting for its
    /// reply.
    ResolvingAppointments,
    /// Every consumer confirmed and every future appointment was reassigned or cancelled as
    /// the policy said.
    Completed,
    /// Finished, but some appointments no doctor could take were cancelled: their patients
    /// need a new booking.
    NeedsAttention,
    /// Cancelled before any appointment changed: the person was reactivated.
    Cancelled,
}

impl OffboardingState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingReceipts => "awaiting-receipts",
            Self::ResolvingAppointments => "resolving-appointments",
            Self::Completed => "completed",
            Self::NeedsAttention => "needs-attention",
            Self::Cancelled => "cancelled",
        }
    }

    /// Finished: nothing more happens to it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::NeedsAttention | Self::Cancelled
        )
    }
}

/// One transition of an offboarding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffboardingStep {
    pub at: Timestamp,
    /// `started`, `receipt`, `resent`, `stalled`, `command-sent`, `resolved`, `completed`,
    /// `needs-attention`, `cancelled`.
    pub step: String,
    pub detail: String,
}

/// An offboarding: a saga that takes a leaving person out of every system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Offboarding {
    pub id: Uuid,
    pub user_id: UserId,
    pub email: String,
    pub name: String,
    pub state: OffboardingState,
    /// Set while the saga waits longer than it should (a consumer that does not confirm, an
    /// appointment-service that does not answer): why. It goes on by itself once the answer
    /// comes.
    pub stalled_reason: Option<String>,
    pub policy: crate::control::AppointmentPolicy,
    pub reason: String,
    pub requested_by: UserId,
    /// The version that deactivated the person: what every required consumer must confirm.
    pub target_version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub steps: Vec<OffboardingStep>,
    /// Each registered consumer's receipt for the person now.
    pub receipts: Vec<ConsumerPropagation>,
    /// What became of each future appointment (once the appointment-service replied): the
    /// patients to inform.
    pub appointments: Vec<crate::control::ResolvedAppointment>,
}

/// `POST /api/v1/auth/admin/scim-tokens`: a bearer token for one SCIM client (a directory such
/// as Microsoft Entra ID or Okta that provisions staff through `/scim/v2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScimTokenRequest {
    /// Who holds the token, 1 to 100 characters (e.g. `entra-production`); unique among the
    /// tokens not revoked. Every use is logged under this name.
    pub name: String,
}

/// A SCIM client's bearer token as the admin API shows it: never the token itself, which only
/// [`CreatedScimToken`] carries, once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScimToken {
    pub id: Uuid,
    pub name: String,
    pub created_at: Timestamp,
    /// The admin who created it.
    pub created_by: UserId,
    /// The last request it authenticated (kept to the minute).
    pub last_used_at: Option<Timestamp>,
    /// Set once revoked: the token is refused from then on.
    pub revoked_at: Option<Timestamp>,
}

/// A new SCIM token: its record and the secret, shown in this answer only (it is stored as a
/// hash and cannot be shown again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedScimToken {
    #[serde(flatten)]
    pub token: ScimToken,
    /// The bearer token to give the SCIM client (`Authorization: Bearer …`).
    pub secret: String,
}
