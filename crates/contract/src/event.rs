//! The event envelope and payload, and the decoding of untrusted message bodies.
//!
//! Every event carries the user's full current snapshot plus `userVersion`, so a consumer needs
//! one rule for all types: apply the snapshot if its version is newer than what it holds.

use crate::domain::{Email, PersonName, PhoneNumber, Role, UserId, ValidationError};
use crate::time::Timestamp;
use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, Schema, SchemaObject};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only `source` this producer writes.
pub const SOURCE: &str = "auth-service";
/// The contract version this producer writes.
pub const VERSION: &str = "1.1";
/// The major version readers of this crate understand.
pub const SUPPORTED_MAJOR: &str = "1";
/// Bodies above this size are dead-lettered unread (a user snapshot is well under 2 KiB).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// Every value a consumer may put in the `x-error-reason` header of a dead letter: the
/// [`DecodeError::reason`]s, `retries-exhausted` (a valid event that kept failing to apply) and
/// [`UNTRUSTED_PUBLISHER`]. Published in the AsyncAPI document, so operators' tools can rely on
/// the list.
pub const DEAD_LETTER_REASONS: [&str; 8] = [
    "not-utf8",
    "not-json",
    "unknown-event-type",
    "unsupported-version",
    "invalid-payload",
    "too-large",
    "retries-exhausted",
    UNTRUSTED_PUBLISHER,
];

/// The dead-letter reason of a message whose AMQP `user_id` is not a trusted publisher's
/// (see [`crate::wire::SYSTEM_PUBLISHERS`]); it is not read at all.
pub const UNTRUSTED_PUBLISHER: &str = "untrusted-publisher";

/// The kinds of user event; the wire name is also the routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "user.created")]
    Created,
    #[serde(rename = "user.updated")]
    Updated,
    #[serde(rename = "user.activated")]
    Activated,
    #[serde(rename = "user.deactivated")]
    Deactivated,
    #[serde(rename = "user.role.changed")]
    RoleChanged,
    /// A repair: the user's current state, published by `portal reconcile` for a copy found
    /// missing or different. Applied when its version is greater than OR EQUAL to the stored one,
    /// so a row altered behind the system's back at the same version is put right.
    #[serde(rename = "user.snapshot")]
    Snapshot,
    /// The person was erased (contract 1.1): a tombstone whose payload holds the user's id,
    /// version, role and the placeholders of [`crate::erasure`] instead of any personal data,
    /// with `erasedAt`. A copy keeps the id and version (so no older event brings the person
    /// back) and forgets everything else; nothing is applied over an erased copy again.
    #[serde(rename = "user.erased")]
    Erased,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        EventType::Created,
        EventType::Updated,
        EventType::Activated,
        EventType::Deactivated,
        EventType::RoleChanged,
        EventType::Snapshot,
        EventType::Erased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Created => "user.created",
            EventType::Updated => "user.updated",
            EventType::Activated => "user.activated",
            EventType::Deactivated => "user.deactivated",
            EventType::RoleChanged => "user.role.changed",
            EventType::Snapshot => "user.snapshot",
            EventType::Erased => "user.erased",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// True for repair snapshots, which also apply at an equal version.
    pub fn is_repair(self) -> bool {
        self == EventType::Snapshot
    }

    /// True for the tombstone of an erased person.
    pub fn is_erasure(self) -> bool {
        self == EventType::Erased
    }
}

// By hand, from `ALL` and `as_str`: one plain enum of wire names, which are also routing keys.
impl JsonSchema for EventType {
    fn schema_name() -> String {
        "EventType".to_owned()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        SchemaObject {
            metadata: Some(Box::new(Metadata {
                description: Some(
                    "What happened; also the routing key. A 1.x minor version may add types: a \
                     consumer dead-letters a type it does not know (unknown-event-type)."
                        .to_owned(),
                ),
                ..Metadata::default()
            })),
            instance_type: Some(InstanceType::String.into()),
            enum_values: Some(EventType::ALL.map(|t| t.as_str().into()).to_vec()),
            ..SchemaObject::default()
        }
        .into()
    }
}

/// The envelope of every user event, field names as on the wire. Readers ignore fields they do
/// not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Unique per event; also the AMQP `message-id`.
    pub event_id: Uuid,
    pub event_type: EventType,
    /// When the change happened. Orders the events that carry no `userVersion`.
    pub timestamp: Timestamp,
    /// The producing service (`auth-service`).
    pub source: String,
    /// The contract version, `major.minor`. `1.x` only adds optional fields; a reader
    /// dead-letters a major version it does not know (unsupported-version).
    #[schemars(regex(pattern = r"^1\.[0-9]+$"))]
    pub version: String,
    /// The user's full state after the change.
    pub payload: UserSnapshot,
}

impl Envelope {
    /// A new event of this producer about `payload`, stamped now.
    pub fn new(event_type: EventType, payload: UserSnapshot) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type,
            timestamp: Timestamp::now(),
            source: SOURCE.to_owned(),
            version: VERSION.to_owned(),
            payload,
        }
    }
}

/// The user's full state after the change. Optional fields were added after 1.0 or belong to one
/// event type; readers must not require them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSnapshot {
    pub user_id: UserId,
    pub email: Email,
    pub first_name: String,
    pub last_name: String,
    pub role: Role,
    /// Null or absent when the user gave none.
    #[serde(default)]
    pub phone_number: Option<String>,
    pub is_active: bool,
    #[serde(default)]
    pub must_change_password: bool,
    pub created_at: Timestamp,
    /// When the user last changed. Every event of this producer carries it; optional for readers
    /// because older producers omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    /// Per-user counter incremented with every change: a reader applies a snapshot only if this
    /// is greater than the version it holds (greater or equal for `user.snapshot`). Every event of
    /// this producer carries it; optional for readers because older producers omit it (their
    /// events are ordered by `timestamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_version: Option<i64>,
    /// `user.role.changed` only (required there): the role before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_role: Option<Role>,
    /// `user.updated` only (required there): the payload fields this change altered, by wire
    /// name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_fields: Option<Vec<String>>,
    /// Contract 1.1: set when the person was erased (every `user.erased`, and any later
    /// snapshot of an erased user). The personal fields then hold [`crate::erasure`]'s
    /// placeholders; a copy forgets the person and applies nothing over them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<Timestamp>,
}

impl UserSnapshot {
    /// True when this snapshot says the person was erased.
    pub fn is_erased(&self) -> bool {
        self.erased_at.is_some()
    }
}

/// Why a message body can never become a valid event. `reason()` is the stable code put in the
/// dead-letter headers; `Display` is the human detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not UTF-8: {0}")]
    NotUtf8(String),
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("unknown eventType {0:?}")]
    UnknownEventType(String),
    #[error("unsupported version {0:?} (this reader understands 1.x)")]
    UnsupportedVersion(String),
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too-large",
            DecodeError::NotUtf8(_) => "not-utf8",
            DecodeError::NotJson(_) => "not-json",
            DecodeError::UnknownEventType(_) => "unknown-event-type",
            DecodeError::UnsupportedVersion(_) => "unsupported-version",
            DecodeError::InvalidPayload(_) => "invalid-payload",
        }
    }
}

/// Decodes and validates an untrusted body. The common case is one typed parse; only a failure
/// pays for a second, untyped parse that finds the precise reason.
pub fn decode(body: &[u8]) -> Result<Envelope, DecodeError> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(DecodeError::TooLarge {
            size: body.len(),
            limit: MAX_EVENT_BYTES,
        });
    }
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::NotUtf8(e.to_string()))?;
    match serde_json::from_str::<Envelope>(text) {
        Ok(envelope) => {
            check_version(&envelope.version)?;
            check_payload(&envelope.payload)?;
            if envelope.event_type.is_erasure() && !envelope.payload.is_erased() {
                return Err(DecodeError::InvalidPayload(
                    "payload.erasedAt: required in user.erased".into(),
                ));
            }
            Ok(envelope)
        }
        Err(typed_error) => Err(diagnose(text, typed_error)),
    }
}

/// The payload as strictly as the HTTP API checks the same fields: names, phone number and
/// version (the email is checked by its type). A consumer stores what passes, and shows it to
/// people.
fn check_payload(p: &UserSnapshot) -> Result<(), DecodeError> {
    let invalid = |e: ValidationError| DecodeError::InvalidPayload(format!("payload.{e}"));
    PersonName::parse("firstName", &p.first_name).map_err(invalid)?;
    PersonName::parse("lastName", &p.last_name).map_err(invalid)?;
    if let Some(phone) = &p.phone_number {
        PhoneNumber::parse(phone).map_err(invalid)?;
    }
    if p.user_version.is_some_and(|v| v < 1) {
        return Err(invalid(ValidationError::new(
            "userVersion",
            "must be 1 or more",
        )));
    }
    Ok(())
}

fn check_version(version: &str) -> Result<(), DecodeError> {
    match version.split('.').next() {
        Some(SUPPORTED_MAJOR) => Ok(()),
        _ => Err(DecodeError::UnsupportedVersion(version.to_owned())),
    }
}

fn diagnose(text: &str, typed_error: serde_json::Error) -> DecodeError {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return DecodeError::NotJson(e.to_string()),
    };
    let Some(object) = value.as_object() else {
        return DecodeError::InvalidPayload("body is not a JSON object".into());
    };
    // The version decides how the rest is read, so a foreign major is reported as such even when
    // its shape is also unfamiliar.
    if let Some(version) = object.get("version").and_then(|v| v.as_str()) {
        if let Err(e) = check_version(version) {
            return e;
        }
    }
    match object.get("eventType").and_then(|t| t.as_str()) {
        Some(t) if EventType::parse(t).is_none() => DecodeError::UnknownEventType(t.to_owned()),
        _ => DecodeError::InvalidPayload(typed_error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn legacy_created() -> serde_json::Value {
        // The body the portal's original TypeScript producer emitted (its envelope, ARCHITECTURE.md).
        json!({
            "eventId": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "eventType": "user.created",
            "timestamp": "2026-02-07T10:00:00.000Z",
            "source": "auth-service",
            "version": "1.0",
            "payload": {
                "userId": "0f8fad5b-d9cb-469f-a165-70867728950e",
                "email": "user@example.com",
                "firstName": "John",
                "lastName": "Doe",
                "role": "doctor",
                "phoneNumber": "+263771234567",
                "isActive": true,
                "mustChangePassword": false,
                "createdAt": "2026-02-07T10:00:00.000Z"
            }
        })
    }

    fn decode_value(v: &serde_json::Value) -> Result<Envelope, DecodeError> {
        decode(&serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn older_producer_events_decode_without_user_version() {
        let e = decode_value(&legacy_created()).unwrap();
        assert_eq!(e.event_type, EventType::Created);
        assert_eq!(e.payload.user_version, None);
        assert_eq!(e.payload.email.as_str(), "user@example.com");
    }

    #[test]
    fn unknown_fields_are_ignored_and_minor_versions_accepted() {
        let mut v = legacy_created();
        v["version"] = json!("1.7");
        v["traceId"] = json!("abc");
        v["payload"]["department"] = json!("cardiology");
        assert!(decode_value(&v).is_ok());
    }

    #[test]
    fn each_kind_of_bad_body_gets_its_reason() {
        let reason = |body: &[u8]| decode(body).unwrap_err().reason();
        assert_eq!(reason(&[0xff, 0xfe]), "not-utf8");
        assert_eq!(reason(b"{not json"), "not-json");
        assert_eq!(reason(&vec![b' '; MAX_EVENT_BYTES + 1]), "too-large");
        assert_eq!(reason(b"[1,2]"), "invalid-payload");

        let mut v = legacy_created();
        v["eventType"] = json!("user.exploded");
        assert_eq!(decode_value(&v).unwrap_err().reason(), "unknown-event-type");

        let mut v = legacy_created();
        v["version"] = json!("2.0");
        assert_eq!(
            decode_value(&v).unwrap_err().reason(),
            "unsupported-version"
        );

        for (field, value) in [
            ("email", json!("nope")),
            ("role", json!("wizard")),
            ("firstName", json!("")),
            ("lastName", json!("Moyo\u{202E}evil")),
            ("phoneNumber", json!("call me")),
            ("userVersion", json!(0)),
        ] {
            let mut v = legacy_created();
            v["payload"][field] = value;
            assert_eq!(
                decode_value(&v).unwrap_err().reason(),
                "invalid-payload",
                "{field}"
            );
        }
        let mut v = legacy_created();
        v["payload"].as_object_mut().unwrap().remove("userId");
        let err = decode_value(&v).unwrap_err();
        assert_eq!(err.reason(), "invalid-payload");
        assert!(err.to_string().contains("userId"), "{err}");
    }

    #[test]
    fn every_decode_error_reason_is_a_published_dead_letter_reason() {
        let one_of_each = [
            DecodeError::TooLarge { size: 1, limit: 0 },
            DecodeError::NotUtf8(String::new()),
            DecodeError::NotJson(String::new()),
            DecodeError::UnknownEventType(String::new()),
            DecodeError::UnsupportedVersion(String::new()),
            DecodeError::InvalidPayload(String::new()),
        ];
        for e in &one_of_each {
            // No wildcard: a new variant stops this compiling until it is added above.
            match e {
                DecodeError::TooLarge { .. }
                | DecodeError::NotUtf8(_)
                | DecodeError::NotJson(_)
                | DecodeError::UnknownEventType(_)
                | DecodeError::UnsupportedVersion(_)
                | DecodeError::InvalidPayload(_) => {}
            }
            assert!(DEAD_LETTER_REASONS.contains(&e.reason()), "{}", e.reason());
        }
        let mut reasons: Vec<&str> = one_of_each.iter().map(DecodeError::reason).collect();
        reasons.push("retries-exhausted");
        reasons.push("untrusted-publisher");
        reasons.sort_unstable();
        let mut published = DEAD_LETTER_REASONS.to_vec();
        published.sort_unstable();
        assert_eq!(reasons, published, "no stale or duplicate reasons");
    }

    #[test]
    fn produced_envelope_has_exactly_the_contract_fields() {
        let e = decode_value(&legacy_created()).unwrap();
        let mut snapshot = e.payload.clone();
        snapshot.user_version = Some(1);
        let out = serde_json::to_value(Envelope::new(EventType::Created, snapshot)).unwrap();
        let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 6);
        for k in [
            "eventId",
            "eventType",
            "timestamp",
            "source",
            "version",
            "payload",
        ] {
            assert!(keys.contains(&k.to_owned()), "{k}");
        }
        assert_eq!(out["source"], "auth-service");
        assert_eq!(out["version"], "1.1");
        assert_eq!(out["payload"]["userVersion"], 1);
        assert!(out["payload"]["phoneNumber"].is_string());
    }
}
