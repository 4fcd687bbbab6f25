//! Domain value types shared by producer and consumer. Each `parse` is the only way to build
//! one, so a value of these types is valid by construction.

use schemars::gen::SchemaGenerator;
use schemars::schema::{InstanceType, Metadata, Schema, SchemaObject, StringValidation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A field that failed validation, named so HTTP answers and dead-letter reasons can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// The identity of a user, assigned by the auth-service and kept by every copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    /// A new id. UUIDv7 keeps ids roughly time-ordered, which keeps the primary key index compact.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

// By hand: `UserId` is a transparent `Uuid` on the wire; the schema names what it means.
impl JsonSchema for UserId {
    fn schema_name() -> String {
        "UserId".to_owned()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            "uuid",
            "The user's id (a UUID), assigned by the auth-service and kept by every copy.",
            StringValidation::default(),
        )
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An email address, trimmed and lower-cased so uniqueness is case-insensitive everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let email = raw.trim().to_lowercase();
        let invalid = || ValidationError::new("email", "must be a valid email address");
        if email.is_empty()
            || email.len() > 254
            || email
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || is_bidi_control(c))
        {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let domain_ok = !domain.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..");
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Email::parse(&raw).map_err(serde::de::Error::custom)
    }
}

// By hand: the custom `Deserialize` accepts any case and surrounding blanks, which a derived
// schema could not say.
impl JsonSchema for Email {
    fn schema_name() -> String {
        "Email".to_owned()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            "email",
            "An email address. The producer writes it trimmed and lower-cased; readers normalise \
             the same way, so uniqueness is case-insensitive everywhere.",
            StringValidation {
                max_length: Some(254),
                ..StringValidation::default()
            },
        )
    }
}

/// A `type: string` schema with a `format`, for the value types whose serde is written by hand.
pub(crate) fn string_schema(
    format: &str,
    description: &str,
    validation: StringValidation,
) -> Schema {
    SchemaObject {
        metadata: Some(Box::new(Metadata {
            description: Some(description.to_owned()),
            ..Metadata::default()
        })),
        instance_type: Some(InstanceType::String.into()),
        format: Some(format.to_owned()),
        string: Some(Box::new(validation)),
        ..SchemaObject::default()
    }
    .into()
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A first or last name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValidationError> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(ValidationError::new(field, "must not be empty"));
        }
        if name.chars().count() > 100 {
            return Err(ValidationError::new(
                field,
                "must be at most 100 characters",
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(ValidationError::new(
                field,
                "must not contain control characters",
            ));
        }
        if name.chars().any(is_bidi_control) {
            return Err(ValidationError::new(
                field,
                "must not contain bidirectional override characters",
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The Unicode characters that reorder the text around them (embeddings, overrides and
/// isolates, U+202A–U+202E and U+2066–U+2069): in a name they make what a colleague reads differ
/// from what is stored ("Trojan Source").
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A phone number: an optional leading `+`, then 5 to 20 digits, spaces, dashes or brackets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let phone = raw.trim();
        let body = phone.strip_prefix('+').unwrap_or(phone);
        let digits = body.chars().filter(char::is_ascii_digit).count();
        let allowed = body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')'));
        if !allowed || !(5..=20).contains(&digits) || phone.len() > 32 {
            return Err(ValidationError::new(
                "phoneNumber",
                "must be a phone number such as +263 77 123 4567",
            ));
        }
        Ok(Self(phone.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The roles of the portal. Their lower-case names are part of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Doctor,
    Nurse,
    Pharmacist,
    Consultant,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Doctor,
        Role::Nurse,
        Role::Pharmacist,
        Role::Consultant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Doctor => "doctor",
            Role::Nurse => "nurse",
            Role::Pharmacist => "pharmacist",
            Role::Consultant => "consultant",
        }
    }
}

impl FromStr for Role {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "role",
                    "must be one of admin, doctor, nurse, pharmacist, consultant",
                )
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Dr.Moyo@Clinic.CO.ZW ").map(|e| e.0),
            Ok("dr.moyo@clinic.co.zw".to_owned())
        );
        for bad in [
            "",
            "a",
            "a@b",
            "@b.c",
            "a@.c",
            "a@b.",
            "a b@c.d",
            "a@b@c.d",
            "a@b..c",
            "a\u{0}@b.c",
            "a\u{202E}@b.c",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn phone_numbers_allow_common_forms_only() {
        assert!(PhoneNumber::parse("+263 77 123 4567").is_ok());
        assert!(PhoneNumber::parse("(024) 270-0000").is_ok());
        assert!(PhoneNumber::parse("12").is_err());
        assert!(PhoneNumber::parse("+263abc").is_err());
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("superuser".parse::<Role>().is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            PersonName::parse("firstName", " Tendai ").map(|n| n.0),
            Ok("Tendai".into())
        );
        assert_eq!(
            PersonName::parse("lastName", "  ").map_err(|e| e.field),
            Err("lastName")
        );
        assert!(PersonName::parse("firstName", &"x".repeat(101)).is_err());
        assert!(PersonName::parse("firstName", "Tendai\u{202E}omyM").is_err());
        assert!(PersonName::parse("lastName", "Ab\u{2067}c").is_err());
    }
}
