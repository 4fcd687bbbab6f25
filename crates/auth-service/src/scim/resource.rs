//! A portal user as a SCIM `User` ([`to_scim`]), and a SCIM `User` as the portal's fields
//! ([`Desired::parse`]).
//!
//! The portal keeps one email, one phone and one role; a directory sends lists. What the client
//! sent is kept beside the record (`scim_users`) and answered back while it still agrees with
//! the record; once the record changed through the portal, SCIM shows the record. Attribute
//! names are matched without regard to case (RFC 7643 §2.1), booleans may be the strings
//! `"True"`/`"False"` (as Microsoft Entra sends them), and attributes the portal does not keep
//! (title, addresses, the enterprise extension, …) are accepted and ignored.

use super::{ScimConfig, ScimError, USER_SCHEMA};
use chrono::{DateTime, Utc};
use contract::{Email, PersonName, PhoneNumber, Role};
use directory::record::{UserRecord, RECORD_COLUMNS};
use serde_json::{json, Map, Value};

/// A user and what SCIM keeps of them: one row of the SCIM view. Reads of the record's fields
/// go through to it (`row.email`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScimRow {
    #[sqlx(flatten)]
    pub user: UserRecord,
    pub user_name: Option<String>,
    pub external_id: Option<String>,
    pub emails: Option<Value>,
    pub phone_numbers: Option<Value>,
    pub roles: Option<Value>,
    /// SCIM-only changes since the record's version (see the migration); 0 without a row.
    pub scim_version: i32,
    pub scim_updated_at: Option<DateTime<Utc>>,
}

/// The SQL of the SCIM view: every user, with what SCIM keeps; `u` and `s` are the aliases
/// filters and sorting use. A user deleted through SCIM is not in it while inactive.
pub static VIEW: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} WHERE NOT {HIDDEN}", ALL.as_str()));

/// Deleted through SCIM and still inactive: not in the view.
const HIDDEN: &str = "(s.deleted_at IS NOT NULL AND NOT u.is_active)";

/// Every user, those deleted through SCIM included (`WHERE` follows): what a re-provisioning
/// of a deleted person looks in.
pub static ALL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    // The record's columns are the users table's alone (scim_users names none of them).
    format!(
        "SELECT {RECORD_COLUMNS}, s.user_name, s.external_id, s.emails, s.phone_numbers, s.roles, \
                coalesce(s.scim_version, 0) AS scim_version, s.changed_at AS scim_updated_at \
         FROM users u LEFT JOIN scim_users s ON s.user_id = u.id"
    )
});

/// The condition that picks a user deleted through SCIM by its userName or email (`$1`, `$2`).
pub fn hidden_by_name() -> String {
    format!("{HIDDEN} AND (lower(s.user_name) = lower($1) OR u.email = $2)")
}

impl std::ops::Deref for ScimRow {
    type Target = UserRecord;

    fn deref(&self) -> &UserRecord {
        &self.user
    }
}

impl ScimRow {
    /// A nurse `a@b.example` at `version`, nothing kept by SCIM but its count of SCIM-only
    /// changes: what unit tests start from.
    #[cfg(test)]
    pub(crate) fn sample(version: i64, scim_version: i32) -> Self {
        ScimRow {
            user: UserRecord {
                id: uuid::Uuid::nil(),
                email: "a@b.example".into(),
                first_name: "A".into(),
                last_name: "B".into(),
                role: "nurse".into(),
                phone_number: None,
                is_active: true,
                must_change_password: false,
                created_at: Utc::now(),
                updated_at: None,
                user_version: Some(version),
                erased_at: None,
            },
            user_name: None,
            external_id: None,
            emails: None,
            phone_numbers: None,
            roles: None,
            scim_version,
            scim_updated_at: None,
        }
    }

    /// The user's version (every `auth_db` row has one).
    pub fn version(&self) -> i64 {
        self.user.user_version.unwrap_or_default()
    }

    /// Its weak ETag: the record's version, and the SCIM-only changes since, if any.
    pub fn etag(&self) -> String {
        match self.scim_version {
            0 => format!("W/\"{}\"", self.version()),
            n => format!("W/\"{}.{n}\"", self.version()),
        }
    }

    /// When the record or what SCIM keeps of it last changed.
    fn last_modified(&self) -> DateTime<Utc> {
        let record = self.user.updated_at.unwrap_or(self.user.created_at);
        self.scim_updated_at.map_or(record, |s| s.max(record))
    }
}

/// The user as SCIM shows it.
pub fn to_scim(row: &ScimRow, config: &ScimConfig, base: &str) -> Value {
    let mut user = json!({
        "schemas": [USER_SCHEMA],
        "id": row.id.to_string(),
        "userName": row.user_name.clone().unwrap_or_else(|| row.email.clone()),
        "name": {"givenName": row.first_name, "familyName": row.last_name},
        "displayName": format!("{} {}", row.first_name, row.last_name),
        "emails": kept_or(&row.emails, Some(&row.email), pick_email, || {
            json!([{"value": row.email, "type": "work", "primary": true}])
        }),
        "active": row.is_active,
        "meta": {
            "resourceType": "User",
            "created": row.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lastModified": row.last_modified()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "location": format!("{base}/Users/{}", row.id),
            "version": row.etag(),
        },
    });
    if let Some(phone) = &row.phone_number {
        user["phoneNumbers"] = kept_or(
            &row.phone_numbers,
            Some(phone),
            pick_phone,
            || json!([{"value": phone, "type": "work", "primary": true}]),
        );
    }
    let role: Option<Role> = row.role.parse().ok();
    let role_value = role.map(|r| r.as_str().to_owned());
    user["roles"] = kept_or(
        &row.roles,
        role_value.as_deref(),
        |list| {
            pick(list, None)
                .and_then(|v| config.role_for(&v))
                .map(|r| r.as_str().to_owned())
        },
        || json!([{"value": role.map_or_else(|| row.role.clone(), |r| config.value_for(r)), "primary": true}]),
    );
    if let Some(external) = &row.external_id {
        user["externalId"] = json!(external);
    }
    user
}

/// The list the client sent when the value the portal takes from it is still `current`, else
/// `fallback()`.
fn kept_or(
    kept: &Option<Value>,
    current: Option<&str>,
    taken: impl Fn(&Value) -> Option<String>,
    fallback: impl FnOnce() -> Value,
) -> Value {
    match kept {
        Some(list) if taken(list).as_deref() == current => list.clone(),
        _ => fallback(),
    }
}

/// `obj[name]`, the name matched without regard to case.
pub fn get_ci<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// A SCIM boolean: `true`, or the strings `"True"`/`"true"` some directories send.
pub fn as_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// The value the portal takes from a multi-valued attribute: the primary one, else the first of
/// `prefer_type`, else the first. Items may be objects with `value` or bare strings.
fn pick(list: &Value, prefer_type: Option<&str>) -> Option<String> {
    let items: Vec<&Value> = match list {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        single => vec![single],
    };
    let value_of = |item: &Value| match item {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => get_ci(o, "value")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    };
    let field = |item: &Value, name: &str| match item {
        Value::Object(o) => get_ci(o, name).cloned(),
        _ => None,
    };
    let primary = items
        .iter()
        .find(|i| field(i, "primary").as_ref().and_then(as_bool) == Some(true));
    let typed = prefer_type.and_then(|t| {
        items.iter().find(|i| {
            field(i, "type")
                .as_ref()
                .and_then(Value::as_str)
                .is_some_and(|v| v.eq_ignore_ascii_case(t))
        })
    });
    primary
        .or(typed)
        .or(items.first())
        .and_then(|i| value_of(i))
}

fn pick_email(list: &Value) -> Option<String> {
    pick(list, Some("work")).and_then(|v| Email::parse(&v).ok().map(|e| e.as_str().to_owned()))
}

fn pick_phone(list: &Value) -> Option<String> {
    pick(list, Some("work")).and_then(|v| {
        PhoneNumber::parse(v.trim().trim_start_matches("tel:"))
            .ok()
            .map(|p| p.as_str().to_owned())
    })
}

/// A SCIM `User` as the portal's fields: what a create or a replacement asks for.
#[derive(Debug, Clone)]
pub struct Desired {
    pub user_name: String,
    pub external_id: Option<String>,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub email: Email,
    pub emails: Option<Value>,
    pub phone: Option<PhoneNumber>,
    pub phone_numbers: Option<Value>,
    /// `None`: no `roles` given.
    pub role: Option<Role>,
    pub roles: Option<Value>,
    /// `None`: `active` not given.
    pub active: Option<bool>,
}

impl Desired {
    /// Reads a SCIM `User` body.
    pub fn parse(body: &Value, config: &ScimConfig) -> Result<Self, ScimError> {
        let obj = body
            .as_object()
            .ok_or_else(|| ScimError::invalid_syntax("a User must be a JSON object"))?;
        // Attributes may come qualified by the schema's URN.
        let attr = |name: &str| {
            get_ci(obj, name).or_else(|| get_ci(obj, &format!("{USER_SCHEMA}:{name}")))
        };
        let text = |name: &'static str, v: Option<&Value>| -> Result<Option<String>, ScimError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(ScimError::invalid_value(format!("{name} must be a string"))),
            }
        };
        let user_name = text("userName", attr("userName"))?
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ScimError::invalid_value("userName is required"))?;
        if user_name.chars().count() > 254 || user_name.chars().any(char::is_control) {
            return Err(ScimError::invalid_value(
                "userName must be at most 254 characters, without control characters",
            ));
        }
        let external_id = text("externalId", attr("externalId"))?;
        if external_id
            .as_ref()
            .is_some_and(|x| x.chars().count() > 255 || x.chars().any(char::is_control))
        {
            return Err(ScimError::invalid_value(
                "externalId must be at most 255 characters, without control characters",
            ));
        }
        let name = match attr("name") {
            Some(Value::Object(n)) => n.clone(),
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(ScimError::invalid_value("name must be an object")),
        };
        let given = text("name.givenName", get_ci(&name, "givenName"))?
            .ok_or_else(|| ScimError::invalid_value("name.givenName is required"))?;
        let family = text("name.familyName", get_ci(&name, "familyName"))?
            .ok_or_else(|| ScimError::invalid_value("name.familyName is required"))?;
        let first_name = PersonName::parse("name.givenName", &given)?;
        let last_name = PersonName::parse("name.familyName", &family)?;

        let emails = attr("emails").filter(|v| !v.is_null()).cloned();
        let email = match emails.as_ref().and_then(|l| pick(l, Some("work"))) {
            Some(v) => Email::parse(&v).map_err(|_| {
                ScimError::invalid_value(format!("emails: {v:?} is not a valid email address"))
            })?,
            None => Email::parse(&user_name).map_err(|_| {
                ScimError::invalid_value(
                    "a work email is required (emails), unless userName is an email address: \
                     the portal signs people in by email",
                )
            })?,
        };
        let phone_numbers = attr("phoneNumbers")
            .filter(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
            .cloned();
        let phone = match phone_numbers.as_ref().and_then(|l| pick(l, Some("work"))) {
            Some(v) => Some(
                PhoneNumber::parse(v.trim().trim_start_matches("tel:"))
                    .map_err(|e| ScimError::invalid_value(format!("phoneNumbers: {e}")))?,
            ),
            None => None,
        };
        let roles = attr("roles")
            .filter(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
            .cloned();
        let role = match roles.as_ref().and_then(|l| pick(l, None)) {
            Some(v) => Some(config.role_for(&v).ok_or_else(|| {
                let known: Vec<&str> = config.role_map.keys().map(String::as_str).collect();
                ScimError::invalid_value(format!(
                    "roles: {v:?} gives no portal role (SCIM_ROLE_MAP knows {})",
                    known.join(", ")
                ))
            })?),
            None => None,
        };
        let active = match attr("active") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                as_bool(v).ok_or_else(|| ScimError::invalid_value("active must be a boolean"))?,
            ),
        };
        Ok(Self {
            user_name,
            external_id,
            first_name,
            last_name,
            email,
            emails,
            phone,
            phone_numbers,
            role,
            roles,
            active,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: Value) -> Result<Desired, ScimError> {
        Desired::parse(&body, &ScimConfig::default())
    }

    #[test]
    fn entra_shaped_user_is_read() {
        let d = parse(json!({
            "schemas": [USER_SCHEMA, "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "externalId": "0a2b",
            "userName": "Jane.Doe@Hospital.example",
            "active": "False",
            "displayName": "Jane Doe",
            "title": "Registrar",
            "emails": [{"primary": true, "type": "work", "value": "jane.doe@hospital.example"}],
            "name": {"formatted": "Jane Doe", "familyName": "Doe", "givenName": "Jane"},
            "phoneNumbers": [{"type": "mobile", "value": "+263 77 123 4567"}],
            "roles": [{"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "value": "Doctor"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Surgery"}
        }))
        .expect("parses");
        assert_eq!(d.email.as_str(), "jane.doe@hospital.example");
        assert_eq!(d.active, Some(false));
        assert_eq!(d.role, Some(Role::Doctor));
        assert_eq!(
            d.phone.map(|p| p.as_str().to_owned()).as_deref(),
            Some("+263 77 123 4567")
        );
        assert_eq!(d.external_id.as_deref(), Some("0a2b"));
    }

    #[test]
    fn the_email_comes_from_user_name_only_when_it_is_one() {
        let base = json!({"name": {"givenName": "A", "familyName": "B"}});
        let mut with_email_name = base.clone();
        with_email_name["userName"] = json!("a.b@clinic.example");
        assert_eq!(
            parse(with_email_name).expect("parses").email.as_str(),
            "a.b@clinic.example"
        );
        let mut plain = base;
        plain["userName"] = json!("ab123");
        let e = parse(plain).expect_err("no email");
        assert_eq!(e.scim_type, Some("invalidValue"));
    }

    #[test]
    fn unknown_roles_and_bad_types_are_refused_with_the_attribute_named() {
        let e = parse(
            json!({"userName": "a@b.example", "name": {"givenName": "A", "familyName": "B"},
                             "roles": [{"value": "surgeon"}]}),
        )
        .expect_err("unknown role");
        assert!(e.detail.contains("surgeon"), "{}", e.detail);
        let e = parse(
            json!({"userName": "a@b.example", "name": {"givenName": "A", "familyName": "B"},
                             "active": "maybe"}),
        )
        .expect_err("bad boolean");
        assert!(e.detail.contains("active"), "{}", e.detail);
        assert!(parse(json!(["not", "an", "object"])).is_err());
    }

    #[test]
    fn what_the_client_sent_is_answered_while_it_agrees_with_the_record() {
        let config = ScimConfig::default();
        let sent = json!([{"value": "a@b.example", "type": "work", "primary": false}]);
        let mut row = ScimRow {
            user_name: Some("ab".into()),
            emails: Some(sent.clone()),
            roles: Some(json!([{"value": "Nurse"}])),
            ..ScimRow::sample(3, 0)
        };
        let user = to_scim(&row, &config, "http://x/scim/v2");
        assert_eq!(user["emails"], sent);
        assert_eq!(user["roles"], json!([{"value": "Nurse"}]));
        assert_eq!(user["meta"]["version"], json!("W/\"3\""));
        // Changed through the portal since: the record wins.
        row.user.email = "new@b.example".into();
        row.user.role = "doctor".into();
        let user = to_scim(&row, &config, "http://x/scim/v2");
        assert_eq!(user["emails"][0]["value"], json!("new@b.example"));
        assert_eq!(user["roles"][0]["value"], json!("doctor"));
    }
}
