//! The checked-in contract documents under `contracts/` must be exactly what the code generates,
//! and must say what the code does: the example events and control messages validate, every
//! event type, control message and appointment event has its channel and message.
//! `UPDATE_CONTRACTS=1` rewrites the files instead of failing.

// Helpers outside `#[test]` functions panic on purpose too: this is test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::control::{
    AppointmentChange, AppointmentEvent, AppointmentEventType, AppointmentPolicy, DoctorResolved,
    Receipt, ReceiptEntry, Resolution, ResolveDoctor, ResolvedAppointment,
    APPOINTMENT_EVENT_VERSION, APPOINTMENT_SOURCE,
};
use contract::schema::{self, ENVELOPE_FILE};
use contract::topology::{self, ConsumerQueues, ControlQueue, Declaration};
use contract::wire::{header, HistoryComplete};
use contract::{Email, Envelope, EventType, Role, Timestamp, UserId, UserSnapshot};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use uuid::Uuid;

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
    let (sent, received) = sent_and_received(&doc);
    let mut all: BTreeSet<String> = EventType::ALL.iter().map(|t| t.as_str().into()).collect();
    all.extend(
        [
            "portal.receipt",
            "portal.command.resolve-doctor",
            "portal.reply.doctor-resolved",
            "portal.history.complete",
        ]
        .map(String::from),
    );
    // The operator reads what waits in the dead-letter and unrouted queues.
    let mut read = all.clone();
    read.extend(["dead letter", "rejected control message", "user event"].map(String::from));
    assert_eq!(received, read);
    // Appointment events are sent; nobody in the portal reads them (they wait for whoever
    // informs patients). Consumers send the copies they set aside.
    all.extend(
        [
            "appointment.reassigned",
            "appointment.cancelled",
            "retried user event",
            "dead letter",
        ]
        .map(String::from),
    );
    assert_eq!(sent, all);
}

/// The names of the messages the document's operations send and receive; every reference from
/// an operation must land.
fn sent_and_received(doc: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut sent = BTreeSet::new();
    let mut received = BTreeSet::new();
    for op in doc["operations"].as_object().unwrap().values() {
        let channel = resolve(doc, &op["channel"]);
        for m in op["messages"].as_array().unwrap() {
            // An operation's message is one of its channel's.
            let reference = m["$ref"].as_str().unwrap();
            let prefix = format!("{}/messages/", op["channel"]["$ref"].as_str().unwrap());
            let key = reference
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{reference}"));
            assert!(channel["messages"][key].is_object(), "{reference}");
            let name = resolve(doc, resolve(doc, m))["name"].as_str().unwrap();
            match op["action"].as_str().unwrap() {
                "send" => sent.insert(name.to_owned()),
                _ => received.insert(name.to_owned()),
            };
        }
    }
    (sent, received)
}

/// The channel at `address`.
fn channel<'a>(doc: &'a Value, address: &str) -> &'a Value {
    doc["channels"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["address"] == address)
        .unwrap_or_else(|| panic!("no channel {address}"))
}

/// The names of the messages a channel carries.
fn message_names(doc: &Value, channel: &Value) -> BTreeSet<String> {
    channel["messages"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| resolve(doc, r)["name"].as_str().unwrap().to_owned())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|n| (*n).to_owned()).collect()
}

#[test]
fn control_messages_travel_where_the_topology_routes_them() {
    let doc = schema::asyncapi();
    for (address, name, file) in [
        (
            "receipt.{consumer}",
            "portal.receipt",
            "portal.receipt.json",
        ),
        (
            "command.appointment-service.resolve-doctor",
            "portal.command.resolve-doctor",
            "portal.command.resolve-doctor.json",
        ),
        (
            "reply.auth-service.doctor-resolved",
            "portal.reply.doctor-resolved",
            "portal.reply.doctor-resolved.json",
        ),
    ] {
        let c = channel(&doc, address);
        assert_eq!(c["bindings"]["amqp"]["is"], "routingKey");
        assert_eq!(c["bindings"]["amqp"]["exchange"]["name"], "portal.control");
        assert_eq!(c["bindings"]["amqp"]["exchange"]["type"], "topic");
        assert_eq!(message_names(&doc, c), names(&[name]));
        let message = resolve(
            &doc,
            c["messages"].as_object().unwrap().values().next().unwrap(),
        );
        assert_eq!(message["payload"]["$ref"], format!("./schemas/{file}"));
        assert_eq!(message["bindings"]["amqp"]["messageType"], name);
    }
    assert_eq!(
        topology::receipt_key("{consumer}"),
        "receipt.{consumer}",
        "the receipts' channel is the consumer's routing key"
    );
    assert!(channel(&doc, "receipt.{consumer}")["parameters"]["consumer"].is_object());

    // Each control queue carries what its bindings route to it, and has its dead-letter queue.
    for (service, keys, carried) in [
        (
            "auth-service",
            vec!["receipt.#", "reply.auth-service.#"],
            names(&["portal.receipt", "portal.reply.doctor-resolved"]),
        ),
        (
            "appointment-service",
            vec!["command.appointment-service.#"],
            names(&["portal.command.resolve-doctor"]),
        ),
    ] {
        let queue = ControlQueue::of(service);
        let c = channel(&doc, &format!("{service}.control"));
        assert_eq!(message_names(&doc, c), carried, "{service}");
        let bound: Vec<&str> = c["bindings"]["amqp"]["x-bound-to"]
            .as_array()
            .unwrap()
            .iter()
            .inspect(|b| assert_eq!(b["exchange"], "portal.control"))
            .map(|b| b["routingKey"].as_str().unwrap())
            .collect();
        assert_eq!(bound, keys, "{service}");
        let arguments = &c["bindings"]["amqp"]["x-arguments"];
        assert_eq!(arguments["x-queue-type"], "quorum");
        assert_eq!(arguments["x-dead-letter-routing-key"], queue.dead_letter);
        let dlq = channel(&doc, &format!("{service}.control.dlq"));
        assert_eq!(
            dlq["bindings"]["amqp"]["x-arguments"]["x-queue-type"],
            "quorum"
        );
    }

    // Appointment events: a channel per type on their exchange, all kept in the unrouted queue.
    for t in AppointmentEventType::ALL {
        let c = channel(&doc, t.as_str());
        assert_eq!(
            c["bindings"]["amqp"]["exchange"]["name"],
            "appointment.events"
        );
        assert_eq!(
            c["bindings"]["amqp"]["x-arguments"]["alternate-exchange"],
            "appointment.events.unrouted"
        );
        assert_eq!(message_names(&doc, c), names(&[t.as_str()]));
    }
    let unrouted = channel(&doc, "appointment.events.unrouted");
    assert_eq!(
        message_names(&doc, unrouted),
        names(&["appointment.reassigned", "appointment.cancelled"])
    );
}

#[test]
fn each_consumer_queue_takes_every_event_its_resends_and_the_end_of_history_mark() {
    let doc = schema::asyncapi();
    let mut carried: BTreeSet<String> = EventType::ALL.iter().map(|t| t.as_str().into()).collect();
    carried.insert("portal.history.complete".into());
    for consumer in ["user-service", "appointment-service"] {
        let queues = ConsumerQueues::for_consumer(consumer);
        let main = channel(&doc, &format!("{consumer}.user-events"));
        assert_eq!(message_names(&doc, main), carried, "{consumer}");
        assert_eq!(
            main["bindings"]["amqp"]["x-bound-to"],
            json!([
                {"exchange": "user.events", "routingKey": "user.#"},
                {"exchange": "user.events", "routingKey": format!("resend.{consumer}")},
            ]),
            "{consumer}"
        );
        assert_eq!(queues.resend, format!("resend.{consumer}"));
        let resend = channel(&doc, &queues.resend);
        assert_eq!(
            resend["bindings"]["amqp"]["exchange"]["name"],
            "user.events"
        );
        assert_eq!(message_names(&doc, resend), names(&["user.snapshot"]));
    }
    // The mark's body as the backfill writes it, against the schema the document gives it.
    let mark = &doc["components"]["messages"]["portal-history-complete"];
    assert_eq!(mark["name"], "portal.history.complete");
    assert_eq!(
        mark["bindings"]["amqp"]["messageType"],
        "portal.history.complete"
    );
    let validator = jsonschema::validator_for(&mark["payload"]).unwrap();
    let body = serde_json::to_value(HistoryComplete { users: 1000 }).unwrap();
    assert_eq!(body, json!({"users": 1000}));
    assert!(validator.is_valid(&body));
    for wrong in [json!({}), json!({"users": "1000"}), json!({"users": -1})] {
        assert!(!validator.is_valid(&wrong), "{wrong}");
    }
}

/// Every queue and exchange the document names is one the services declare: the arguments and
/// bindings it shows are read from the declarations.
#[test]
fn every_channel_names_a_declared_queue_or_exchange() {
    let doc = schema::asyncapi();
    for (id, c) in doc["channels"].as_object().unwrap() {
        let amqp = &c["bindings"]["amqp"];
        match amqp["is"].as_str().unwrap() {
            "queue" => assert!(amqp["x-arguments"].is_object(), "{id}: queue not declared"),
            _ => assert!(
                amqp["exchange"]["type"].is_string() && amqp["x-arguments"].is_object(),
                "{id}: exchange not declared"
            ),
        }
    }
}

/// The other way round: every queue the services declare has its channel, and every exchange
/// is named by one (as the exchange of a routing key, or in a queue's bindings).
#[test]
fn every_declared_queue_and_exchange_is_in_the_document() {
    let doc = schema::asyncapi();
    let consumers: Vec<ConsumerQueues> = ["user-service", "appointment-service"]
        .map(ConsumerQueues::for_consumer)
        .to_vec();
    let mut queues = BTreeSet::new();
    let mut exchanges = BTreeSet::new();
    for c in doc["channels"].as_object().unwrap().values() {
        let amqp = &c["bindings"]["amqp"];
        if let Some(q) = amqp["queue"]["name"].as_str() {
            queues.insert(q.to_owned());
        }
        if let Some(e) = amqp["exchange"]["name"].as_str() {
            exchanges.insert(e.to_owned());
        }
        for b in amqp["x-bound-to"].as_array().into_iter().flatten() {
            exchanges.insert(b["exchange"].as_str().unwrap().to_owned());
        }
    }
    for d in topology::declarations(&consumers) {
        match d {
            Declaration::Queue { name, .. } => assert!(queues.contains(&name), "queue {name}"),
            Declaration::Exchange { name, .. } => {
                assert!(exchanges.contains(&name), "exchange {name}")
            }
            Declaration::Binding { .. } => {}
        }
    }
}

/// Both consumers' retry and dead-letter queues are there, with the set-aside exchange that
/// feeds them and who sends what through it.
#[test]
fn each_consumer_sets_messages_aside_through_its_own_exchange() {
    let doc = schema::asyncapi();
    for consumer in ["user-service", "appointment-service"] {
        let queues = ConsumerQueues::for_consumer(consumer);
        let mut targets: Vec<String> = queues.retries.iter().map(|r| r.name.clone()).collect();
        for retry in &queues.retries {
            let c = channel(&doc, &retry.name);
            assert_eq!(message_names(&doc, c), names(&["retried user event"]));
            assert_eq!(
                c["bindings"]["amqp"]["x-arguments"]["x-dead-letter-routing-key"],
                queues.main
            );
        }
        let dlq = channel(&doc, &queues.dead_letter);
        assert_eq!(message_names(&doc, dlq), names(&["dead letter"]));
        targets.push(queues.dead_letter.clone());

        let id = queues.set_aside.replace('.', "-");
        let set_aside = &doc["channels"][&id];
        assert_eq!(set_aside["address"], "{queue}", "{consumer}");
        assert_eq!(set_aside["parameters"]["queue"]["enum"], json!(targets));
        assert_eq!(
            set_aside["bindings"]["amqp"]["exchange"],
            json!({
                "name": queues.set_aside, "type": "direct", "durable": true,
                "autoDelete": false, "vhost": "/",
            })
        );
        for (op, message) in [
            ("retry-later", "retried-user-event"),
            ("dead-letter", "dead-letter"),
        ] {
            let op = &doc["operations"][format!("{consumer}-{op}")];
            assert_eq!(op["action"], "send");
            assert_eq!(op["channel"]["$ref"], format!("#/channels/{id}"));
            assert_eq!(
                op["messages"],
                json!([{"$ref": format!("#/channels/{id}/messages/{message}")}])
            );
        }
    }
}

/// Every header a consumer, the relay or the operator's tools write is documented on the
/// messages it can appear on; which ones each kind of copy must carry is required there.
#[test]
fn every_header_on_the_wire_is_documented() {
    let doc = schema::asyncapi();
    let messages = &doc["components"]["messages"];
    let all = [
        header::ERROR_REASON,
        header::ERROR_DETAIL,
        header::CONSUMER,
        header::ORIGINAL_EXCHANGE,
        header::ORIGINAL_ROUTING_KEY,
        header::FIRST_FAILURE_TIME,
        header::LAST_ERROR,
        header::RETRY_COUNT,
        header::ORIGINAL_USER_ID,
    ];
    for name in all {
        assert!(
            messages["dead-letter"]["headers"]["properties"][name].is_object(),
            "dead letter: {name}"
        );
    }
    // A copy back in a main queue may carry any of them but why it died (a retry copy never
    // had it, a requeue removes it).
    let on_events = all
        .iter()
        .filter(|h| ![header::ERROR_REASON, header::ERROR_DETAIL].contains(h))
        .chain(&[header::TRACEPARENT, header::DEATH]);
    for name in on_events {
        for t in EventType::ALL {
            let headers = &messages[t.as_str().replace('.', "-")]["headers"];
            assert!(headers["properties"][name].is_object(), "{t:?}: {name}");
            assert!(headers.get("required").is_none(), "{t:?}: none required");
        }
        assert!(messages["user-event"]["headers"]["properties"][name].is_object());
    }
    let retried: BTreeSet<&str> = messages["retried-user-event"]["headers"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(retried.contains(header::RETRY_COUNT));
    let dead: BTreeSet<&str> = messages["dead-letter"]["headers"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in [header::ERROR_REASON, header::ERROR_DETAIL, header::CONSUMER] {
        assert!(dead.contains(name), "{name}");
    }
    // The relays' other messages may carry the trace; a receipt carries nothing.
    for id in [
        "portal-command-resolve-doctor",
        "portal-reply-doctor-resolved",
        "appointment-reassigned",
        "appointment-cancelled",
    ] {
        assert!(
            messages[id]["headers"]["properties"][header::TRACEPARENT].is_object(),
            "{id}"
        );
    }
    assert!(messages["portal-receipt"].get("headers").is_none());
    // The pattern matches what the relay writes.
    let pattern = &messages["user-created"]["headers"]["properties"]["traceparent"];
    let validator = jsonschema::validator_for(pattern).unwrap();
    assert!(validator.is_valid(&json!(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    )));
    assert!(!validator.is_valid(&json!("not-a-trace")));
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
        erased_at: None,
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

    let erased = produced(EventType::Erased, |s| {
        *s = contract::erasure::erase(s, Timestamp::now());
    });
    assert_valid("user.erased.json", &erased);
    assert_invalid("user.erased.json", &produced(EventType::Erased, |_| {}));

    for t in EventType::ALL {
        let event = produced(t, |s| {
            s.previous_role = Some(Role::Admin);
            s.changed_fields = Some(vec!["role".into()]);
            s.erased_at = Some(Timestamp::now());
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

fn at(instant: &str) -> Timestamp {
    serde_json::from_value(json!(instant)).unwrap()
}

fn receipt() -> Receipt {
    Receipt {
        consumer: "user-service".into(),
        applied_at: Timestamp::now(),
        users: vec![ReceiptEntry {
            user_id: UserId::new(),
            user_version: 4,
            changed_at: Timestamp::now(),
        }],
    }
}

fn resolved() -> DoctorResolved {
    let starts_at = at("2026-03-02T09:00:00.000Z");
    DoctorResolved {
        offboarding_id: Uuid::now_v7(),
        command_id: Uuid::now_v7(),
        doctor_id: UserId::new(),
        appointments: vec![
            ResolvedAppointment {
                appointment_id: Uuid::now_v7(),
                patient_name: "Chipo Ndlovu".into(),
                starts_at,
                resolution: Resolution::Reassigned,
                doctor_id: Some(UserId::new()),
                doctor_name: Some("Rudo Chikwanha".into()),
            },
            ResolvedAppointment {
                appointment_id: Uuid::now_v7(),
                patient_name: "Farai Moyo".into(),
                starts_at,
                resolution: Resolution::CancelledNoDoctorFree,
                doctor_id: None,
                doctor_name: None,
            },
        ],
    }
}

fn appointment_event(event_type: AppointmentEventType) -> AppointmentEvent {
    let starts_at = at("2026-03-02T09:00:00.000Z");
    let ends_at = at("2026-03-02T09:30:00.000Z");
    let reassigned = event_type == AppointmentEventType::Reassigned;
    AppointmentEvent {
        event_id: Uuid::now_v7(),
        event_type,
        timestamp: Timestamp::now(),
        source: APPOINTMENT_SOURCE.into(),
        version: APPOINTMENT_EVENT_VERSION.into(),
        payload: AppointmentChange {
            appointment_id: Uuid::now_v7(),
            appointment_version: 2,
            patient_name: "Chipo Ndlovu".into(),
            starts_at,
            ends_at,
            doctor_id: UserId::new(),
            doctor_name: reassigned.then(|| "Rudo Chikwanha".into()),
            previous_doctor_id: UserId::new(),
            status: if reassigned { "booked" } else { "cancelled" }.into(),
            reason: "Left the clinic".into(),
            offboarding_id: Some(Uuid::now_v7()),
        },
    }
}

#[test]
fn control_messages_validate_and_read_back() {
    let sent = receipt();
    let body = serde_json::to_value(&sent).unwrap();
    assert_valid("portal.receipt.json", &body);
    assert_eq!(
        serde_json::from_value::<Receipt>(body.clone()).unwrap(),
        sent
    );
    let mut text_version = body.clone();
    text_version["users"][0]["userVersion"] = json!("4");
    assert_invalid("portal.receipt.json", &text_version);
    let mut no_users = body.clone();
    no_users.as_object_mut().unwrap().remove("users");
    assert_invalid("portal.receipt.json", &no_users);
    // Readers ignore fields they do not know.
    let mut newer = body;
    newer["batch"] = json!(17);
    assert_valid("portal.receipt.json", &newer);

    for policy in [AppointmentPolicy::Reassign, AppointmentPolicy::Cancel] {
        let command = ResolveDoctor {
            offboarding_id: Uuid::now_v7(),
            doctor_id: UserId::new(),
            policy,
            from: Timestamp::now(),
            reason: "Left the clinic".into(),
        };
        let body = serde_json::to_value(&command).unwrap();
        assert_valid("portal.command.resolve-doctor.json", &body);
        assert_eq!(
            serde_json::from_value::<ResolveDoctor>(body.clone()).unwrap(),
            command
        );
        let mut fired = body;
        fired["policy"] = json!("fire");
        assert_invalid("portal.command.resolve-doctor.json", &fired);
    }

    let reply = resolved();
    let body = serde_json::to_value(&reply).unwrap();
    assert_valid("portal.reply.doctor-resolved.json", &body);
    assert_eq!(
        serde_json::from_value::<DoctorResolved>(body.clone()).unwrap(),
        reply
    );
    let mut moved = body;
    moved["appointments"][0]["resolution"] = json!("moved");
    assert_invalid("portal.reply.doctor-resolved.json", &moved);
}

#[test]
fn appointment_events_validate_with_their_type() {
    for t in AppointmentEventType::ALL {
        let event = appointment_event(t);
        let body = serde_json::to_value(&event).unwrap();
        assert_eq!(body["eventType"], t.as_str());
        assert_valid(&schema::appointment_schema_file(t), &body);
        assert_eq!(
            serde_json::from_value::<AppointmentEvent>(body.clone()).unwrap(),
            event
        );
        for other in AppointmentEventType::ALL.into_iter().filter(|o| *o != t) {
            assert_invalid(&schema::appointment_schema_file(other), &body);
        }
        let mut no_patient = body;
        no_patient["payload"]
            .as_object_mut()
            .unwrap()
            .remove("patientName");
        assert_invalid(&schema::appointment_schema_file(t), &no_patient);
    }
    assert_eq!(
        schema::appointment_schema_file(AppointmentEventType::Reassigned),
        "appointment.reassigned.json"
    );
}
