//! The contract's timestamp: ISO-8601 in UTC with exactly three fractional digits and `Z`
//! (`2026-02-07T10:00:00.000Z`), the format the portal's JavaScript producers emit.

use crate::domain::string_schema;
use chrono::{DateTime, SubsecRound, Utc};
use schemars::gen::SchemaGenerator;
use schemars::schema::{Schema, StringValidation};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An instant at millisecond precision. Truncating at construction means the value written to
/// `auth_db`, the value on the wire and the value stored in `user_db` are identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn now() -> Self {
        Self::from(Utc::now())
    }

    pub fn as_datetime(self) -> DateTime<Utc> {
        self.0
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t.trunc_subsecs(3))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%dT%H:%M:%S%.3fZ"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    /// Accepts any RFC 3339 instant (other producers may send offsets or more digits).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| Self::from(t.with_timezone(&Utc)))
            .map_err(|e| serde::de::Error::custom(format!("not an ISO-8601 timestamp: {e}")))
    }
}

/// What this crate writes: `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub const OUTPUT_PATTERN: &str =
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$";

// By hand: serde is custom (strict on output, lenient on input), so the schema states the output
// format and says in words what readers accept.
impl JsonSchema for Timestamp {
    fn schema_name() -> String {
        "Timestamp".to_owned()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            "date-time",
            "An instant in UTC. Producers write it as YYYY-MM-DDTHH:MM:SS.mmmZ (exactly three \
             fractional digits and Z), which the pattern checks. Readers accept any RFC 3339 \
             instant (another offset, more or fewer fractional digits) and truncate it to \
             milliseconds.",
            StringValidation {
                pattern: Some(OUTPUT_PATTERN.to_owned()),
                ..StringValidation::default()
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_and_z() {
        let t: Timestamp = serde_json::from_str("\"2026-02-07T12:00:00.123456+02:00\"").unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-02-07T10:00:00.123Z\""
        );
        let whole: Timestamp = serde_json::from_str("\"2026-02-07T10:00:00Z\"").unwrap();
        assert_eq!(whole.to_string(), "2026-02-07T10:00:00.000Z");
    }
}
