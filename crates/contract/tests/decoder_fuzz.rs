//! The event decoder takes bytes from anyone who can reach the broker, so no input may make it
//! panic: arbitrary bytes, and valid events mutated at the byte level (flips, cuts, insertions)
//! and at the JSON level (any field replaced by any JSON value, fields removed). Each input
//! either decodes to an event that encodes and decodes again to itself, or fails with one of
//! the dead-letter reasons. A property test (proptest) rather than cargo-fuzz: it runs in every
//! CI on the stable toolchain; `PROPTEST_CASES=100000` is the long form.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::event::{decode, DEAD_LETTER_REASONS};
use contract::{Email, Envelope, EventType, Role, Timestamp, UserId, UserSnapshot};
use proptest::prelude::*;
use serde_json::Value;

fn valid_event(t: EventType) -> Value {
    let now = Timestamp::now();
    let snapshot = UserSnapshot {
        user_id: UserId::new(),
        email: Email::parse("tendai.moyo@clinic.co.zw").unwrap(),
        first_name: "Tendai".into(),
        last_name: "Moyo".into(),
        role: Role::Doctor,
        phone_number: Some("+263 77 123 4567".into()),
        is_active: true,
        must_change_password: false,
        created_at: now,
        updated_at: Some(now),
        user_version: Some(3),
        previous_role: (t == EventType::RoleChanged).then_some(Role::Nurse),
        changed_fields: (t == EventType::Updated).then(|| vec!["firstName".to_owned()]),
        erased_at: (t == EventType::Erased).then(Timestamp::now),
    };
    serde_json::to_value(Envelope::new(t, snapshot)).unwrap()
}

/// Decoding `bytes` panics nowhere, and its outcome is one of the two allowed.
fn check(bytes: &[u8]) {
    match decode(bytes) {
        Ok(event) => {
            let again = serde_json::to_vec(&event).unwrap();
            assert_eq!(
                decode(&again).unwrap(),
                event,
                "a decoded event round-trips"
            );
        }
        Err(e) => assert!(
            DEAD_LETTER_REASONS.contains(&e.reason()),
            "{} is not a dead-letter reason",
            e.reason()
        ),
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String("\u{202e}evil".into())),
        Just(Value::from(u64::MAX)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_event_type() -> impl Strategy<Value = EventType> {
    prop::sample::select(EventType::ALL.to_vec())
}

/// A JSON pointer to a field of a valid event: top level or payload.
fn any_field() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "/eventId",
        "/eventType",
        "/timestamp",
        "/version",
        "/source",
        "/payload",
        "/payload/userId",
        "/payload/email",
        "/payload/firstName",
        "/payload/lastName",
        "/payload/role",
        "/payload/phoneNumber",
        "/payload/isActive",
        "/payload/mustChangePassword",
        "/payload/createdAt",
        "/payload/updatedAt",
        "/payload/userVersion",
        "/payload/previousRole",
        "/payload/changedFields",
    ])
    .prop_map(str::to_owned)
}

/// Cases per property: `PROPTEST_CASES` when set (the long form), else CI's 2,000.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn byte_mutations_of_valid_events_never_panic(
        t in any_event_type(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = serde_json::to_vec(&valid_event(t)).unwrap();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len());
            match kind {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        check(&bytes);
    }

    #[test]
    fn json_mutations_of_valid_events_never_panic(
        t in any_event_type(),
        replaced in prop::collection::vec((any_field(), any_json()), 0..4),
        removed in prop::collection::vec(any_field(), 0..3),
    ) {
        let mut event = valid_event(t);
        for (field, value) in replaced {
            if let Some(slot) = event.pointer_mut(&field) {
                *slot = value;
            }
        }
        for field in removed {
            let (parent, key) = field.rsplit_once('/').unwrap();
            let parent = if parent.is_empty() { Some(&mut event) } else { event.pointer_mut(parent) };
            if let Some(Value::Object(map)) = parent {
                map.remove(key);
            }
        }
        check(&serde_json::to_vec(&event).unwrap());
    }
}

#[test]
fn the_valid_events_themselves_decode() {
    for t in EventType::ALL {
        let bytes = serde_json::to_vec(&valid_event(t)).unwrap();
        assert!(decode(&bytes).is_ok(), "{}", t.as_str());
    }
}
