//! The contract as documents for teams that do not read Rust: JSON Schemas (draft-07) of the
//! envelope and of each event type, and an AsyncAPI 3.0 document of the exchange, routing keys,
//! queues and messages. Everything is generated from this crate's types and constants, so the
//! documents cannot drift from what the services actually send and accept; the checked-in copies
//! under `contracts/` are compared with these functions by `tests/contracts_are_current.rs`.

use crate::event::{Envelope, EventType, DEAD_LETTER_REASONS, VERSION};
use crate::topology::{
    self, Argument, Arguments, ConsumerQueues, ALL_USER_EVENTS, EXCHANGE, UNROUTED_EXCHANGE,
    UNROUTED_QUEUE, USER_SERVICE,
};
use crate::wire::{header, PERSISTENT};
use schemars::gen::SchemaSettings;
use serde_json::{json, Map, Value};

/// The file of the schema that accepts any event type.
pub const ENVELOPE_FILE: &str = "envelope.json";
/// The AMQP binding version the AsyncAPI document's bindings follow.
const AMQP_BINDING_VERSION: &str = "0.3.0";
/// The virtual host of the documented server.
const VHOST: &str = "/";

/// The schema file of one event type, named after its wire name.
pub fn schema_file(t: EventType) -> String {
    format!("{}.json", t.as_str())
}

/// `(file name, schema)`: `envelope.json` first, then one file per event type in
/// [`EventType::ALL`] order. Keys are sorted at every level.
pub fn schema_files() -> Vec<(String, Value)> {
    let envelope = envelope_schema();
    let mut files = vec![(ENVELOPE_FILE.to_owned(), sorted(envelope.clone()))];
    for t in EventType::ALL {
        files.push((schema_file(t), sorted(event_schema(&envelope, t))));
    }
    files
}

/// Pretty JSON with a trailing newline: the form of the checked-in files.
pub fn render(value: &Value) -> String {
    format!("{value:#}\n")
}

/// What each event type means, for the documents. Exhaustive on purpose: a new type needs words.
pub fn summary(t: EventType) -> &'static str {
    match t {
        EventType::Created => "A user was created; the first event of every user.",
        EventType::Updated => "Profile fields changed; `changedFields` names them.",
        EventType::Activated => "The user was activated and may sign in again.",
        EventType::Deactivated => "The user was deactivated and may no longer sign in.",
        EventType::RoleChanged => "The role changed; `previousRole` is the role before.",
        EventType::Snapshot => {
            "A repair published by `portal reconcile` for a copy found missing or different: the \
             user's current state. Applied when its `userVersion` is greater than or equal to the \
             stored one (every other type needs greater), so a row altered behind the system's \
             back at the same version is put right. A copy holding a version the producer never \
             wrote (forged or corrupt, ahead of it) is passed first: the producer moves the \
             user's `userVersion` beyond it, so this repair and every later event apply."
        }
    }
}

fn envelope_schema() -> Value {
    let root = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<Envelope>();
    // Cannot fail: a schema is plain data with string keys.
    let mut schema = serde_json::to_value(root).unwrap_or(Value::Null);
    schema["title"] = json!("User event (any type)");
    schema
}

/// The envelope narrowed to one type: `eventType` fixed, plus the payload fields that type
/// requires. The rest stays as tolerant as the envelope, so older producers' events still pass.
fn event_schema(envelope: &Value, t: EventType) -> Value {
    let mut schema = envelope.clone();
    schema["title"] = json!(format!("{} event", t.as_str()));
    schema["description"] = json!(format!(
        "{} The envelope of every user event, with eventType fixed to {}.",
        summary(t),
        t.as_str()
    ));
    // With eventType fixed, the list of all types is no longer referenced.
    if let Some(definitions) = schema["definitions"].as_object_mut() {
        definitions.remove("EventType");
    }
    schema["properties"]["eventType"] = json!({
        "description": "What happened; also the routing key.",
        "const": t.as_str(),
    });
    // The payload's own requirements for this type; allOf because draft-07 ignores siblings of
    // `$ref`.
    let required = match t {
        EventType::Updated => Some(json!({
            "required": ["changedFields"],
            "properties": {"changedFields": {"type": "array"}},
        })),
        EventType::RoleChanged => Some(json!({
            "required": ["previousRole"],
            "properties": {"previousRole": {"$ref": "#/definitions/Role"}},
        })),
        EventType::Created
        | EventType::Activated
        | EventType::Deactivated
        | EventType::Snapshot => None,
    };
    if let Some(required) = required {
        let payload = &mut schema["properties"]["payload"];
        let description = payload["description"].take();
        *payload = json!({
            "description": description,
            "allOf": [{"$ref": "#/definitions/UserSnapshot"}, required],
        });
    }
    schema
}

/// The AsyncAPI 3.0 document of the user events. Keys are sorted at every level.
pub fn asyncapi() -> Value {
    let queues = ConsumerQueues::for_consumer(USER_SERVICE);
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();

    for t in EventType::ALL {
        let id = ident(t.as_str());
        messages.insert(
            id.clone(),
            json!({
                "name": t.as_str(),
                "title": t.as_str(),
                "summary": summary(t),
                "contentType": "application/json",
                "payload": {"$ref": format!("./schemas/{}", schema_file(t))},
                "bindings": {"amqp": {
                    "messageType": t.as_str(),
                    "bindingVersion": AMQP_BINDING_VERSION,
                }},
            }),
        );
        channels.insert(
            id.clone(),
            json!({
                "address": t.as_str(),
                "title": t.as_str(),
                "description": format!(
                    "{} events on exchange {EXCHANGE}, routing key {}.",
                    t.as_str(),
                    t.as_str()
                ),
                "messages": {id.clone(): {"$ref": format!("#/components/messages/{id}")}},
                "bindings": {"amqp": exchange_binding()},
            }),
        );
        operations.insert(
            format!("auth-service-send-{id}"),
            json!({
                "action": "send",
                "title": format!("auth-service publishes {}", t.as_str()),
                "description": "The auth-service's outbox relay publishes each event after the \
                    transaction that recorded it commits: persistent, mandatory, with publisher \
                    confirms, `message-id` = eventId, `type` = eventType, `user-id` = the broker \
                    user that publishes (checked by RabbitMQ; consumers apply only trusted \
                    publishers' events and dead-letter the rest as untrusted-publisher).",
                "channel": {"$ref": format!("#/channels/{id}")},
                "messages": [{"$ref": format!("#/channels/{id}/messages/{id}")}],
                "tags": [{"name": "auth-service"}],
                "bindings": {"amqp": {
                    "deliveryMode": PERSISTENT,
                    "mandatory": true,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }},
            }),
        );
    }

    messages.insert(
        "user-event".to_owned(),
        json!({
            "name": "user event",
            "title": "Any user event",
            "summary": "An event of any type, as found where events of all types wait.",
            "contentType": "application/json",
            "payload": {"$ref": format!("./schemas/{ENVELOPE_FILE}")},
        }),
    );
    messages.insert(
        "retried-user-event".to_owned(),
        json!({
            "name": "retried user event",
            "title": "A user event waiting for its next attempt",
            "summary": "A copy of an event that could not be applied yet, with why.",
            "contentType": "application/json",
            "payload": {"$ref": format!("./schemas/{ENVELOPE_FILE}")},
            "headers": failure_headers(false),
        }),
    );
    messages.insert(
        "dead-letter".to_owned(),
        json!({
            "name": "dead letter",
            "title": "A message that can never be applied",
            "summary": "The original message, body and properties unchanged, plus headers that \
                say why it was set aside. It never blocks the main queue; `portal dlq` inspects, \
                requeues or purges it; an untrusted publisher's is never requeued, only discarded.",
            "payload": {
                "description": "The original body, byte for byte: possibly not UTF-8, not JSON or \
                    not a valid event (see x-error-reason)."
            },
            "headers": failure_headers(true),
        }),
    );

    let typed_refs = |channel: &str| -> Vec<Value> {
        EventType::ALL
            .iter()
            .map(
                |t| json!({"$ref": format!("#/channels/{channel}/messages/{}", ident(t.as_str()))}),
            )
            .collect()
    };
    let main_id = ident(&queues.main);
    let mut main_messages = Map::new();
    for t in EventType::ALL {
        let id = ident(t.as_str());
        main_messages.insert(
            id.clone(),
            json!({"$ref": format!("#/components/messages/{id}")}),
        );
    }
    channels.insert(
        main_id.clone(),
        json!({
            "address": queues.main,
            "title": queues.main,
            "description": format!(
                "The user-service's quorum queue, bound to {EXCHANGE} with {ALL_USER_EVENTS}: \
                 every user event. Several replicas may consume it; userVersion keeps the order \
                 right."
            ),
            "messages": main_messages,
            "bindings": {"amqp": queue_binding(
                &queues.main,
                arguments_json(&topology::quorum_arguments()),
                Some((EXCHANGE, ALL_USER_EVENTS)),
            )},
        }),
    );
    operations.insert(
        "user-service-receive".to_owned(),
        json!({
            "action": "receive",
            "title": "user-service applies user events",
            "description": "Applies each snapshot if its userVersion is newer than the stored one \
                (or equal, for user.snapshot), else acks and ignores it. A message that can never \
                be applied is copied to the dead-letter queue; one that fails for a reason of its \
                own goes through the retry queues first.",
            "channel": {"$ref": format!("#/channels/{main_id}")},
            "messages": typed_refs(&main_id),
            "tags": [{"name": USER_SERVICE}],
            "bindings": {"amqp": {"ack": true, "bindingVersion": AMQP_BINDING_VERSION}},
        }),
    );

    for retry in &queues.retries {
        // The queue name ends in the delay's label (`1s`, `2m`), the form people read.
        let label = retry.name.rsplit('.').next().unwrap_or_default();
        channels.insert(
            ident(&retry.name),
            json!({
                "address": retry.name,
                "title": retry.name,
                "description": format!(
                    "Holds a failed event {label} (message TTL), then dead-letters it back to {} \
                     through the default exchange. Nobody consumes it: the TTL is the timer. The \
                     consumer puts messages here through its own direct exchange {} (routing key \
                     = this queue's name), so its broker user can publish to its own queues only.",
                    queues.main, queues.set_aside
                ),
                "messages": {"retried-user-event": {"$ref": "#/components/messages/retried-user-event"}},
                "bindings": {"amqp": queue_binding(
                    &retry.name,
                    arguments_json(&retry.arguments(&queues.main)),
                    Some((&queues.set_aside, &retry.name)),
                )},
            }),
        );
    }
    channels.insert(
        ident(&queues.dead_letter),
        json!({
            "address": queues.dead_letter,
            "title": queues.dead_letter,
            "description": "Messages the user-service can never apply, with the reason in their \
                headers.",
            "messages": {"dead-letter": {"$ref": "#/components/messages/dead-letter"}},
            "bindings": {"amqp": queue_binding(
                &queues.dead_letter,
                arguments_json(&topology::quorum_arguments()),
                Some((&queues.set_aside, &queues.dead_letter)),
            )},
        }),
    );
    channels.insert(
        ident(UNROUTED_QUEUE),
        json!({
            "address": UNROUTED_QUEUE,
            "title": UNROUTED_QUEUE,
            "description": format!(
                "Events no queue was bound for. {UNROUTED_EXCHANGE} is the fanout alternate \
                 exchange of {EXCHANGE}, so such an event is kept here instead of dropped."
            ),
            "messages": {"user-event": {"$ref": "#/components/messages/user-event"}},
            "bindings": {"amqp": queue_binding(
                UNROUTED_QUEUE,
                arguments_json(&topology::quorum_arguments()),
                Some((UNROUTED_EXCHANGE, "")),
            )},
        }),
    );

    sorted(json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "User events",
            "version": VERSION,
            "description": "Changes to portal users, published by the auth-service. Body: UTF-8 \
                JSON, persistent, content-type application/json, message-id = eventId, routing \
                key = eventType. Every payload is the user's full snapshot plus userVersion, a \
                per-user counter: a consumer applies a snapshot only if its userVersion is greater \
                than the stored one. Version policy: 1.x only adds optional fields; consumers \
                ignore unknown fields; a new major version is published beside the old one; a \
                consumer dead-letters a major version it does not know (unsupported-version).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": format!(
                    "The RabbitMQ of a local setup (scripts/up), virtual host {VHOST}."
                ),
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }))
}

/// The AMQP binding of a routing-key channel: the exchange, as the services declare it.
fn exchange_binding() -> Value {
    json!({
        "is": "routingKey",
        "exchange": {
            "name": EXCHANGE,
            "type": "topic",
            "durable": true,
            "autoDelete": false,
            "vhost": VHOST,
        },
        // Declaration arguments have no field in the binding; an extension keeps them visible.
        "x-arguments": arguments_json(&topology::exchange_arguments()),
        "bindingVersion": AMQP_BINDING_VERSION,
    })
}

/// The AMQP binding of a queue channel, with its declaration arguments and the exchange binding
/// (if any) as extensions.
fn queue_binding(name: &str, arguments: Value, bound_to: Option<(&str, &str)>) -> Value {
    let mut binding = json!({
        "is": "queue",
        "queue": {
            "name": name,
            "durable": true,
            "exclusive": false,
            "autoDelete": false,
            "vhost": VHOST,
        },
        "x-arguments": arguments,
        "bindingVersion": AMQP_BINDING_VERSION,
    });
    if let Some((exchange, routing_key)) = bound_to {
        binding["x-bound-to"] = json!([{"exchange": exchange, "routingKey": routing_key}]);
    }
    binding
}

/// Declaration arguments as a JSON object.
fn arguments_json(arguments: &Arguments) -> Value {
    let map: Map<String, Value> = arguments
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Argument::Text(t) => json!(t),
                Argument::Int(n) => json!(n),
            };
            ((*name).to_owned(), value)
        })
        .collect();
    Value::Object(map)
}

/// The headers a consumer adds when it sets a message aside: for a retry, or (`dead`) for good.
/// The message's own headers stay, so more may be present.
fn failure_headers(dead: bool) -> Value {
    let mut properties = Map::new();
    let mut add = |name: &str, schema: Value| {
        properties.insert(name.to_owned(), schema);
    };
    add(
        header::ORIGINAL_EXCHANGE,
        json!({"type": "string", "description": "The exchange of the delivery that failed first."}),
    );
    add(
        header::ORIGINAL_ROUTING_KEY,
        json!({"type": "string", "description": "The routing key of the delivery that failed first."}),
    );
    add(
        header::FIRST_FAILURE_TIME,
        json!({
            "type": "string",
            "format": "date-time",
            "description": "When it failed first; kept through every retry.",
        }),
    );
    add(
        header::LAST_ERROR,
        json!({"type": "string", "description": "The latest failure."}),
    );
    add(
        header::ORIGINAL_USER_ID,
        json!({
            "type": "string",
            "description": "The AMQP user_id the message was first published with (the copy \
                carries the consumer's own, a requeued one the operator's); absent when it had \
                none. Believed only from a trusted publisher, and must name one itself: a \
                requeued forgery stays untrusted.",
        }),
    );
    add(
        header::RETRY_COUNT,
        json!({
            "type": "integer",
            "minimum": 1,
            "description": "How many attempts failed; set once the message has been retried.",
        }),
    );
    let mut required = vec![
        header::ORIGINAL_EXCHANGE,
        header::ORIGINAL_ROUTING_KEY,
        header::FIRST_FAILURE_TIME,
        header::LAST_ERROR,
    ];
    if dead {
        add(
            header::ERROR_REASON,
            json!({
                "type": "string",
                "enum": DEAD_LETTER_REASONS,
                "description": "Why it can never be applied: a body that is not UTF-8, not JSON, of an \
                    unknown eventType, of a major version this consumer does not know, with an invalid \
                    payload, over 256 KiB, a valid event that failed on every retry, or a message \
                    whose AMQP user_id (or, sent back by a trusted one, whose x-original-user-id) is \
                    not a trusted publisher's (not read at all).",
            }),
        );
        add(
            header::ERROR_DETAIL,
            json!({"type": "string", "description": "The failure in words, for people."}),
        );
        add(
            header::CONSUMER,
            json!({"type": "string", "description": "The consumer service that set it aside."}),
        );
        required.extend([header::ERROR_REASON, header::ERROR_DETAIL, header::CONSUMER]);
    } else {
        required.push(header::RETRY_COUNT);
    }
    required.sort_unstable();
    json!({"type": "object", "required": required, "properties": properties})
}

/// An AsyncAPI identifier for a name: channel and message keys allow no dots.
fn ident(name: &str) -> String {
    name.replace('.', "-")
}

/// The value with object keys sorted at every level, whatever serde_json's map preserves, so the
/// files come out the same on every run.
pub(crate) fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
