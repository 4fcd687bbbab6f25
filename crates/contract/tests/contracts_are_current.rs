//! The checked-in contract documents under `contracts/` must be exactly what the code generates,
//! and must say what the code does: the example events validate, every event type has its
//! channel and message. `UPDATE_CONTRACTS=1` rewrites the files instead of failing.

// Helpers outside `#[test]` functions panic on purpose too: this is test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::schema::{self, ENVELOPE_FILE};
use contract::{Email, Envelope, EventType, Role, Timestamp, UserId, UserSnapshot};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const UPDATE_HINT: &str = "UPDATE_CONTRACTS=1 cargo test -p contract --test contracts_are_current";

fn contracts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contracts")
}

/// Every generated file, as a path relative to `contracts/` and its text.
fn generated() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = schema::schema_files()
        .iter()
        .map(|(name, value)| (format!("schemas/{name}"), schema::render(value)))
        .collect();
    files.push(("asyncapi.json".into(), schema::render(&schema::asyncapi())));
    files.push((
        "openapi.json".into(),
        schema::render(&contract::openapi::document()),
    ));
    files
}

#[test]
fn checked_in_contracts_are_current() {
    let dir = contracts_dir();
    let files = generated();
    let expected: BTreeSet<String> = files.iter().map(|(path, _)| path.clone()).collect();
    // A schema file no type generates any more would mislead readers: it counts as a difference.
    let stale: Vec<PathBuf> = std::fs::read_dir(dir.join("schemas"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    !expected.contains(&format!("schemas/{name}"))
                })
                .collect()
        })
        .unwrap_or_default();

    if std::env::var_os("UPDATE_CONTRACTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(dir.join("schemas")).unwrap();
        for (path, text) in &files {
            std::fs::write(dir.join(path), text).unwrap();
        }
        for path in &stale {
            std::fs::remove_file(path).unwrap();
        }
        return;
    }

    let mut differ: Vec<String> = files
        .iter()
        .filter(|(path, text)| std::fs::read_to_string(dir.join(path)).ok().as_ref() != Some(text))
        .map(|(path, _)| path.clone())
        .collect();
    differ.extend(stale.iter().map(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        format!("schemas/{name} (stale)")
    }));
    assert!(
        differ.is_empty(),
        "contracts/ is not what the code generates; differing: {differ:?}. \
         Run `{UPDATE_HINT}` and review the diff."
    );
}

#[test]
fn every_schema_file_is_referenced_by_a_message() {
    let doc = schema::asyncapi();
    let referenced: BTreeSet<&str> = doc["components"]["messages"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|m| m["payload"]["$ref"].as_str())
        .collect();
    for (name, _) in schema::schema_files() {
        assert!(
            referenced.contains(format!("./schemas/{name}").as_str()),
            "{name} is not the payload of any message"
        );
    }
}

/// Follows a local `#/a/b` reference of the AsyncAPI document.
fn resolve<'a>(doc: &'a Value, reference: &Value) -> &'a Value {
    let pointer = reference["$ref"]
        .as_str()
        .unwrap()
        .strip_prefix('#')
        .unwrap();
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("dangling {pointer}"))
}

#[test]
fn every_event_type_has_a_channel_and_a_message() {
    let doc = schema::asyncapi();
    let channels = doc["channels"].as_object().unwrap();
    for t in EventType::ALL {
        let channel = channels
            .values()
            .find(|c| c["address"] == t.as_str())
            .unwrap_or_else(|| panic!("no channel for {}", t.as_str()));
        assert_eq!(channel["bindings"]["amqp"]["is"], "routingKey");
        assert_eq!(
            channel["bindings"]["amqp"]["exchange"]["name"],
            "user.events"
        );
        let messages: Vec<&Value> = channel["messages"]
            .as_object()
            .unwrap()
            .values()
            .map(|r| resolve(&doc, r))
            .collect();
        assert_eq!(messages.len(), 1, "{}", t.as_str());
        assert_eq!(messages[0]["name"], t.as_str());
        assert_eq!(messages[0]["contentType"], "application/json");
        assert_eq!(
            messages[0]["payload"]["$ref"],
            format!("./schemas/{}", schema::schema_file(t))
        );
    }
    // Every reference from an operation lands, and each type is both sent and received.
    let mut sent = BTreeSet::new();
    let mut received = BTreeSet::new();
    for op in doc["operations"].as_object().unwrap().values() {
        resolve(&doc, &op["channel"]);
        for m in op["messages"].as_array().unwrap() {
            let name = resolve(&doc, resolve(&doc, m))["name"].as_str().unwrap();
            match op["action"].as_str().unwrap() {
                "send" => sent.insert(name.to_owned()),
                _ => received.insert(name.to_owned()),
            };
        }
    }
    let all: BTreeSet<String> = EventType::ALL.iter().map(|t| t.as_str().into()).collect();
    assert_eq!(sent, all);
    assert_eq!(received, all);
}

fn validator(file: &str) -> jsonschema::Validator {
    let (_, schema) = schema::schema_files()
        .into_iter()
        .find(|(name, _)| name == file)
        .unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
}

fn assert_valid(file: &str, instance: &Value) {
    let errors: Vec<String> = validator(file)
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{file}: {errors:?}");
}

fn assert_invalid(file: &str, instance: &Value) {
    assert!(
        !validator(file).is_valid(instance),
        "{file} accepted {instance}"
    );
}

/// The body as the portal's original producer wrote it: no userVersion, no updatedAt.
fn legacy_created() -> Value {
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

fn produced(event_type: EventType, edit: impl FnOnce(&mut UserSnapshot)) -> Value {
    let now = Timestamp::now();
    let mut snapshot = UserSnapshot {
        user_id: UserId::new(),
        email: Email::parse("tendai.moyo@clinic.co.zw").unwrap(),
        first_name: "Tendai".into(),
        last_name: "Moyo".into(),
        role: Role::Doctor,
        phone_number: None,
        is_active: true,
        must_change_password: false,
        created_at: now,
        updated_at: Some(now),
        user_version: Some(3),
        previous_role: None,
        changed_fields: None,
    };
    edit(&mut snapshot);
    serde_json::to_value(Envelope::new(event_type, snapshot)).unwrap()
}

#[test]
fn legacy_events_validate_and_decode() {
    let body = legacy_created();
    assert_valid(ENVELOPE_FILE, &body);
    assert_valid("user.created.json", &body);
    assert_invalid("user.updated.json", &body);
    // The schema and the decoder agree on it.
    assert!(contract::event::decode(body.to_string().as_bytes()).is_ok());
}

#[test]
fn produced_events_validate_with_their_type_requirements() {
    let role_changed = produced(EventType::RoleChanged, |s| {
        s.previous_role = Some(Role::Nurse);
    });
    assert_valid(ENVELOPE_FILE, &role_changed);
    assert_valid("user.role.changed.json", &role_changed);
    assert_invalid("user.created.json", &role_changed);
    assert_invalid(
        "user.role.changed.json",
        &produced(EventType::RoleChanged, |_| {}),
    );

    let updated = produced(EventType::Updated, |s| {
        s.changed_fields = Some(vec!["lastName".into()]);
    });
    assert_valid("user.updated.json", &updated);
    assert_invalid("user.updated.json", &produced(EventType::Updated, |_| {}));

    for t in EventType::ALL {
        let event = produced(t, |s| {
            s.previous_role = Some(Role::Admin);
            s.changed_fields = Some(vec!["role".into()]);
        });
        assert_valid(&schema::schema_file(t), &event);
    }
}

#[test]
fn foreign_major_versions_and_unknown_roles_are_rejected() {
    let mut v2 = legacy_created();
    v2["version"] = json!("2.0");
    let mut wizard = legacy_created();
    wizard["payload"]["role"] = json!("wizard");
    for file in [ENVELOPE_FILE, "user.created.json"] {
        assert_invalid(file, &v2);
        assert_invalid(file, &wizard);
    }
    let mut minor = legacy_created();
    minor["version"] = json!("1.7");
    minor["payload"]["department"] = json!("cardiology");
    assert_valid(ENVELOPE_FILE, &minor);
}
