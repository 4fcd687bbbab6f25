//! The contract as documents for teams that do not read Rust: JSON Schemas (draft-07) of the
//! envelope and of each event type, of the control messages (receipts, the offboarding saga's
//! command and reply) and of each appointment event type, and an AsyncAPI 3.0 document of the
//! exchanges, routing keys, queues and messages. Everything is generated from this crate's types
//! and constants, so the documents cannot drift from what the services actually send and accept;
//! the checked-in copies under `contracts/` are compared with these functions by
//! `tests/contracts_are_current.rs`.

use crate::control::{
    AppointmentEvent, AppointmentEventType, DoctorResolved, Receipt, ResolveDoctor,
    APPOINTMENT_SOURCE, DOCTOR_RESOLVED_TYPE, RECEIPT_TYPE, RESOLVE_DOCTOR_TYPE,
};
use crate::event::{Envelope, EventType, DEAD_LETTER_REASONS, VERSION};
use crate::topology::{
    self, Argument, Arguments, ConsumerQueues, ControlQueue, Declaration, ExchangeKind,
    ALL_USER_EVENTS, APPOINTMENT_EXCHANGE, APPOINTMENT_SERVICE, APPOINTMENT_UNROUTED, AUTH_SERVICE,
    CONTROL_EXCHANGE, DOCTOR_RESOLVED_KEY, EXCHANGE, RESOLVE_DOCTOR_KEY, UNROUTED_EXCHANGE,
    UNROUTED_QUEUE, USER_SERVICE,
};
use crate::wire::{
    header, HistoryComplete, CONTENT_TYPE, HISTORY_COMPLETE_TYPE, OPERATOR_USER, PERSISTENT,
};
use schemars::gen::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// The file of the schema that accepts any event type.
pub const ENVELOPE_FILE: &str = "envelope.json";
/// The AMQP binding version the AsyncAPI document's bindings follow.
const AMQP_BINDING_VERSION: &str = "0.3.0";
/// The virtual host of the documented server.
const VHOST: &str = "/";
/// The consumers the AsyncAPI document shows queues of: the standard ones. Every consumer added
/// with `portal consumer add` gets queues named and declared the same way.
const CONSUMERS: [&str; 2] = [USER_SERVICE, APPOINTMENT_SERVICE];
/// The parameter of the receipts' channel: the consumer named in the routing key.
const CONSUMER_PARAMETER: &str = "consumer";
/// The parameter of a set-aside exchange's channel: the queue named by the routing key.
const QUEUE_PARAMETER: &str = "queue";

/// The schema file of a message, named after its AMQP `type` (for an event, its eventType).
pub fn message_file(amqp_type: &str) -> String {
    format!("{amqp_type}.json")
}

/// The schema file of one event type, named after its wire name.
pub fn schema_file(t: EventType) -> String {
    message_file(t.as_str())
}

/// The schema file of one appointment event type, named after its wire name.
pub fn appointment_schema_file(t: AppointmentEventType) -> String {
    message_file(t.as_str())
}

/// `(file name, schema)`: `envelope.json` first, then one file per event type in
/// [`EventType::ALL`] order, one per control message ([`control_messages`] order), one per
/// appointment event type in [`AppointmentEventType::ALL`] order. Keys are sorted at every level.
pub fn schema_files() -> Vec<(String, Value)> {
    let envelope = envelope_schema();
    let mut files = vec![(ENVELOPE_FILE.to_owned(), sorted(envelope.clone()))];
    for t in EventType::ALL {
        files.push((schema_file(t), sorted(event_schema(&envelope, t))));
    }
    for message in control_messages() {
        files.push((
            message_file(message.amqp_type),
            sorted(control_schema(&message)),
        ));
    }
    let appointment = root_schema::<AppointmentEvent>();
    for t in AppointmentEventType::ALL {
        files.push((
            appointment_schema_file(t),
            sorted(appointment_event_schema(&appointment, t)),
        ));
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
        EventType::Erased => {
            "The person was erased (contract 1.1): a tombstone. The payload keeps the id, role, \
             activation, times and `userVersion`, carries `erasedAt`, and holds placeholders \
             instead of personal data (email `erased-<userId>@erased.invalid`, names `Erased` \
             `User`, no phone). A copy keeps the id and version so no older event brings the \
             person back, forgets every personal field, and applies nothing over the record \
             again; it is the user's last event."
        }
    }
}

/// What each appointment event type means. Exhaustive on purpose: a new type needs words.
pub fn appointment_summary(t: AppointmentEventType) -> &'static str {
    match t {
        AppointmentEventType::Reassigned => {
            "An appointment moved to another doctor at the same time, because its doctor left \
             (offboarding with policy `reassign`): `doctorId` is the doctor the patient now sees, \
             `previousDoctorId` the one who left. The patient is to be informed."
        }
        AppointmentEventType::Cancelled => {
            "An appointment was cancelled because its doctor left: the offboarding's policy was \
             `cancel`, or no active doctor was free at its time. The patient is to be informed \
             (and booked again); `reason` says why."
        }
    }
}

/// A control message the documents describe: its AMQP type, the routing key it travels with on
/// [`CONTROL_EXCHANGE`], its body's schema and what it is for.
pub struct ControlMessage {
    pub amqp_type: &'static str,
    /// The routing key; `{consumer}` stands for the sending consumer's name in a receipt's.
    pub routing_key: String,
    /// Who publishes it.
    pub senders: &'static [&'static str],
    schema: Value,
    summary: &'static str,
    /// How it is published, for the send operations.
    published: &'static str,
    /// Published `mandatory` (returned when no queue takes it).
    mandatory: bool,
    /// Published by an outbox relay, which sets `traceparent` when the change has a trace.
    relayed: bool,
}

/// The receipt, the offboarding saga's command and its reply, in that order.
pub fn control_messages() -> [ControlMessage; 3] {
    [
        ControlMessage {
            amqp_type: RECEIPT_TYPE,
            routing_key: topology::receipt_key(&format!("{{{CONSUMER_PARAMETER}}}")),
            senders: &CONSUMERS,
            schema: root_schema::<Receipt>(),
            summary: "What a consumer applied in one committed batch: for each user, the \
                userVersion its copy now holds. Every consumer publishes one after each commit, \
                on its own broker user; the auth-service believes it only when the AMQP user_id \
                is the broker user the consumer is registered with (`portal consumer add`). \
                Receipts show how far a change has reached (the admin API's propagation) and \
                let the offboarding saga go on.",
            published: "Published after each committed batch, for the users of the batch, on \
                the consumer's own broker user (AMQP user-id, checked by RabbitMQ): persistent, \
                not mandatory, without waiting for confirms. A receipt lost is made good by the \
                next change, or by the snapshot the offboarding saga sends again to a late \
                consumer. Every consumer built on the shared consumer crate (any added with \
                `portal consumer add`) does the same.",
            mandatory: false,
            relayed: false,
        },
        ControlMessage {
            amqp_type: RESOLVE_DOCTOR_TYPE,
            routing_key: RESOLVE_DOCTOR_KEY.to_owned(),
            senders: &[AUTH_SERVICE],
            schema: root_schema::<ResolveDoctor>(),
            summary: "The offboarding saga's command to the appointment-service: reassign or \
                cancel (`policy`) every future appointment of a doctor who left. Sent again with \
                the same message id when no reply came in time; the appointment-service acts on \
                one message id once and answers every copy with the same reply.",
            published: "Written to the auth-service's outbox by the offboarding saga once every \
                required consumer confirmed the deactivation, and published by its relay: \
                persistent, mandatory, with publisher confirms, message-id = the command's id \
                (the same in every copy sent again), user-id = the relay's broker user, a \
                trusted publisher.",
            mandatory: true,
            relayed: true,
        },
        ControlMessage {
            amqp_type: DOCTOR_RESOLVED_TYPE,
            routing_key: DOCTOR_RESOLVED_KEY.to_owned(),
            senders: &[APPOINTMENT_SERVICE],
            schema: root_schema::<DoctorResolved>(),
            summary: "The appointment-service's reply to the command (`commandId` is the \
                command's message id): what became of each future appointment of the doctor, \
                naming the patients to inform. Those cancelled because no doctor was free need \
                a new booking.",
            published: "Written to the appointment-service's outbox once every appointment is \
                resolved, and published by its relay on the appointment-service's registered \
                broker user (the only one whose replies the auth-service believes): persistent, \
                mandatory, with publisher confirms. A copy of an answered command gets the same \
                reply, with the same message id.",
            mandatory: true,
            relayed: true,
        },
    ]
}

/// The draft-07 schema of `T`, its definitions inline.
fn root_schema<T: JsonSchema>() -> Value {
    let root = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<T>();
    // Cannot fail: a schema is plain data with string keys.
    serde_json::to_value(root).unwrap_or(Value::Null)
}

fn envelope_schema() -> Value {
    let mut schema = root_schema::<Envelope>();
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
        EventType::Erased => Some(json!({
            "required": ["erasedAt"],
            "properties": {"erasedAt": {"type": "string"}},
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

/// The schema of a control message's body: the type's own, titled by its AMQP type and saying
/// what it is for and where it travels.
fn control_schema(message: &ControlMessage) -> Value {
    let mut schema = message.schema.clone();
    schema["title"] = json!(format!("{} message", message.amqp_type));
    schema["description"] = json!(format!(
        "{} The body of AMQP type {}, published to the exchange {CONTROL_EXCHANGE} with routing \
         key {}.",
        message.summary, message.amqp_type, message.routing_key
    ));
    schema
}

/// The appointment event narrowed to one type: `eventType` fixed.
fn appointment_event_schema(event: &Value, t: AppointmentEventType) -> Value {
    let mut schema = event.clone();
    schema["title"] = json!(format!("{} event", t.as_str()));
    schema["description"] = json!(format!(
        "{} The body of every appointment event (source {APPOINTMENT_SOURCE}, exchange \
         {APPOINTMENT_EXCHANGE}), with eventType fixed to {}.",
        appointment_summary(t),
        t.as_str()
    ));
    // With eventType fixed, the list of all types is no longer referenced.
    if let Some(definitions) = schema["definitions"].as_object_mut() {
        definitions.remove("AppointmentEventType");
    }
    schema["properties"]["eventType"] = json!({
        "description": "What happened; also the routing key.",
        "const": t.as_str(),
    });
    schema
}

/// The end-of-history mark's body ([`HistoryComplete`]), inline in the AsyncAPI document. By
/// hand, from a serialized body: the type has no [`JsonSchema`]. Its fields are counts.
fn history_complete_schema() -> Value {
    let example = serde_json::to_value(HistoryComplete { users: 0 }).unwrap_or_default();
    let fields: Vec<String> = example
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let properties: Map<String, Value> = fields
        .iter()
        .map(|f| (f.clone(), json!({"type": "integer", "minimum": 0})))
        .collect();
    json!({
        "type": "object",
        "description": "The users auth_db held when the backfill began: a complete copy holds at \
            least these.",
        "required": fields,
        "properties": properties,
    })
}

/// The channels, operations and messages of the AsyncAPI document, as it is built.
struct Document {
    /// What the standard consumers and the control topology declare: where every queue's and
    /// exchange's arguments and bindings are read from.
    declared: Vec<Declaration>,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
}

/// The AsyncAPI 3.0 document of user events, control messages and appointment events. Keys are
/// sorted at every level.
pub fn asyncapi() -> Value {
    let consumers: Vec<ConsumerQueues> = CONSUMERS
        .iter()
        .map(|c| ConsumerQueues::for_consumer(c))
        .collect();
    let mut doc = Document {
        declared: topology::declarations(&consumers),
        channels: Map::new(),
        operations: Map::new(),
        messages: Map::new(),
    };
    doc.user_events();
    for (consumer, queues) in CONSUMERS.iter().zip(&consumers) {
        doc.consumer_queue(consumer, queues);
        doc.retries_and_dead_letters(consumer, queues);
    }
    doc.control();
    doc.appointment_events();

    sorted(json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "User events and control messages",
            "version": VERSION,
            "description": format!(
                "Changes to portal users, published by the auth-service on {EXCHANGE}. Body: \
                 UTF-8 JSON, persistent, content-type {CONTENT_TYPE}, message-id = eventId, \
                 routing key = eventType. Every payload is the user's full snapshot plus \
                 userVersion, a per-user counter: a consumer applies a snapshot only if its \
                 userVersion is greater than the stored one. Version policy: 1.x only adds \
                 optional fields; consumers ignore unknown fields; a new major version is \
                 published beside the old one; a consumer dead-letters a major version it does \
                 not know (unsupported-version). Besides: the control messages on \
                 {CONTROL_EXCHANGE} (each consumer's receipts, the offboarding saga's command to \
                 the appointment-service and its reply), the appointment events on \
                 {APPOINTMENT_EXCHANGE} (a patient to inform), and the end-of-history mark a \
                 backfill sends to one consumer's queue."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
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
        "channels": doc.channels,
        "operations": doc.operations,
        "components": {"messages": doc.messages},
    }))
}

impl Document {
    /// A message of the components, whose body has the schema `file` under `schemas/`, with
    /// the schema of the headers it may carry.
    fn typed_message(
        &mut self,
        amqp_type: &str,
        summary: &str,
        file: &str,
        headers: Option<Value>,
    ) -> String {
        let id = ident(amqp_type);
        let mut message = json!({
            "name": amqp_type,
            "title": amqp_type,
            "summary": summary,
            "contentType": CONTENT_TYPE,
            "payload": {"$ref": format!("./schemas/{file}")},
            "bindings": {"amqp": {
                "messageType": amqp_type,
                "bindingVersion": AMQP_BINDING_VERSION,
            }},
        });
        if let Some(headers) = headers {
            message["headers"] = headers;
        }
        self.messages.insert(id.clone(), message);
        id
    }

    /// A routing-key channel of `exchange` carrying `messages`; its id.
    fn routing_key_channel(
        &mut self,
        exchange: &str,
        routing_key: &str,
        description: String,
        messages: &[String],
    ) -> String {
        let id = ident(routing_key);
        let channel = json!({
            "address": routing_key,
            "title": routing_key,
            "description": description,
            "messages": channel_messages(messages),
            "bindings": {"amqp": self.exchange_binding(exchange)},
        });
        self.channels.insert(id.clone(), channel);
        id
    }

    /// A queue channel carrying `messages`; its id.
    fn queue_channel(&mut self, queue: &str, description: String, messages: &[String]) -> String {
        let id = ident(queue);
        let channel = json!({
            "address": queue,
            "title": queue,
            "description": description,
            "messages": channel_messages(messages),
            "bindings": {"amqp": self.queue_binding(queue)},
        });
        self.channels.insert(id.clone(), channel);
        id
    }

    /// An operation named `id` on `channel`, of those of its `messages`.
    #[allow(clippy::too_many_arguments)]
    fn operation(
        &mut self,
        id: String,
        action: &str,
        title: String,
        description: &str,
        channel: &str,
        messages: &[String],
        tags: &[&str],
        amqp: Value,
    ) {
        let mut amqp = amqp;
        amqp["bindingVersion"] = json!(AMQP_BINDING_VERSION);
        self.operations.insert(
            id,
            json!({
                "action": action,
                "title": title,
                "description": description,
                "channel": {"$ref": format!("#/channels/{channel}")},
                "messages": messages
                    .iter()
                    .map(|m| json!({"$ref": format!("#/channels/{channel}/messages/{m}")}))
                    .collect::<Vec<_>>(),
                "tags": tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
                "bindings": {"amqp": amqp},
            }),
        );
    }

    /// One channel per event type on `user.events`, its message and the auth-service's send
    /// operation; the messages of the queues where events of every type wait; the unrouted queue.
    fn user_events(&mut self) {
        for t in EventType::ALL {
            let id = self.typed_message(
                t.as_str(),
                summary(t),
                &schema_file(t),
                Some(user_event_headers()),
            );
            let channel = self.routing_key_channel(
                EXCHANGE,
                t.as_str(),
                format!(
                    "{} events on exchange {EXCHANGE}, routing key {}.",
                    t.as_str(),
                    t.as_str()
                ),
                std::slice::from_ref(&id),
            );
            self.operation(
                format!("{AUTH_SERVICE}-send-{id}"),
                "send",
                format!("{AUTH_SERVICE} publishes {}", t.as_str()),
                "The auth-service's outbox relay publishes each event after the transaction that \
                 recorded it commits: persistent, mandatory, with publisher confirms, \
                 `message-id` = eventId, `type` = eventType, `user-id` = the broker user that \
                 publishes (checked by RabbitMQ; consumers apply only trusted publishers' events \
                 and dead-letter the rest as untrusted-publisher).",
                &channel,
                &[id],
                &[AUTH_SERVICE],
                json!({"deliveryMode": PERSISTENT, "mandatory": true}),
            );
        }

        self.messages.insert(
            "user-event".to_owned(),
            json!({
                "name": "user event",
                "title": "Any user event",
                "summary": "An event of any type, as found where events of all types wait.",
                "contentType": CONTENT_TYPE,
                "payload": {"$ref": format!("./schemas/{ENVELOPE_FILE}")},
                "headers": user_event_headers(),
            }),
        );
        self.messages.insert(
            "retried-user-event".to_owned(),
            json!({
                "name": "retried user event",
                "title": "A user event waiting for its next attempt",
                "summary": "A copy of an event that could not be applied yet, with why.",
                "contentType": CONTENT_TYPE,
                "payload": {"$ref": format!("./schemas/{ENVELOPE_FILE}")},
                "headers": failure_headers(false),
            }),
        );
        self.messages.insert(
            "dead-letter".to_owned(),
            json!({
                "name": "dead letter",
                "title": "A message that can never be applied",
                "summary": "The original message, body and properties unchanged, plus headers \
                    that say why it was set aside. It never blocks the main queue; `portal dlq` \
                    inspects, requeues or purges it; an untrusted publisher's is never requeued, \
                    only discarded.",
                "payload": {
                    "description": "The original body, byte for byte: possibly not UTF-8, not \
                        JSON or not a valid event (see x-error-reason)."
                },
                "headers": failure_headers(true),
            }),
        );
        self.messages.insert(
            ident(HISTORY_COMPLETE_TYPE),
            json!({
                "name": HISTORY_COMPLETE_TYPE,
                "title": HISTORY_COMPLETE_TYPE,
                "summary": "The end-of-history mark, not an event: a backfill sends it to the \
                    one queue it filled, after the last stored event. A consumer built on the \
                    shared consumer crate records it; a service that must know every existing \
                    user before it serves (the appointment-service) is ready once it has the mark \
                    and holds at least the users it counts. A consumer that does not know the \
                    type dead-letters it like any unknown event type.",
                "contentType": CONTENT_TYPE,
                "payload": history_complete_schema(),
                "bindings": {"amqp": {
                    "messageType": HISTORY_COMPLETE_TYPE,
                    "bindingVersion": AMQP_BINDING_VERSION,
                }},
            }),
        );

        let unrouted = self.queue_channel(
            UNROUTED_QUEUE,
            format!(
                "Events no queue was bound for. {UNROUTED_EXCHANGE} is the fanout alternate \
                 exchange of {EXCHANGE}, so such an event is kept here instead of dropped."
            ),
            &["user-event".to_owned()],
        );
        self.operation(
            format!("{OPERATOR_USER}-receive-unrouted-user-events"),
            "receive",
            "The operator inspects unrouted user events".to_owned(),
            "`portal dlq --queue user.events.unrouted` reads them like dead letters; a requeue \
             publishes each back to the user events' exchange with its own routing key, once a \
             queue is bound for it.",
            &unrouted,
            &["user-event".to_owned()],
            &[OPERATOR_USER],
            json!({"ack": true}),
        );
    }

    /// A consumer's main queue, what it receives there, the routing key that reaches it alone
    /// and the end-of-history mark an operator's backfill sends it.
    fn consumer_queue(&mut self, consumer: &str, queues: &ConsumerQueues) {
        let snapshot = ident(EventType::Snapshot.as_str());
        let mark = ident(HISTORY_COMPLETE_TYPE);
        let mut messages: Vec<String> = EventType::ALL.iter().map(|t| ident(t.as_str())).collect();
        messages.push(mark.clone());
        let applies = if consumer == USER_SERVICE {
            "Applies each snapshot if its userVersion is newer than the stored one (or equal, for \
             user.snapshot), else acks and ignores it. A message that can never be applied is \
             copied to the dead-letter queue; one that fails for a reason of its own goes through \
             the retry queues first. Records the end-of-history mark. After each committed batch \
             it publishes a receipt."
        } else {
            "Keeps the service's copy of the users by the same rule (a snapshot applies if its \
             userVersion is newer, or equal for a repair; retries, then the dead-letter queue). \
             The appointment-service answers bookings 503 until it has the end-of-history mark \
             and holds at least the users the mark counts. After each committed batch it \
             publishes a receipt."
        };
        let main = self.queue_channel(
            &queues.main,
            format!(
                "The {consumer}'s quorum queue, bound to {EXCHANGE} with {ALL_USER_EVENTS} (every user event) \
                 and with {} (a {} the offboarding saga sends again to this consumer alone). A \
                 backfill also sends it the end-of-history mark, through the default exchange. \
                 Several replicas may consume it; userVersion keeps the order right. Its retry \
                 queues and dead-letter queue are {}.retry.<delay> and {}.",
                queues.resend,
                EventType::Snapshot.as_str(),
                queues.main,
                queues.dead_letter,
            ),
            &messages,
        );
        self.operation(
            format!("{consumer}-receive"),
            "receive",
            format!("{consumer} applies user events"),
            applies,
            &main,
            &messages,
            &[consumer],
            json!({"ack": true}),
        );
        self.operation(
            format!("{OPERATOR_USER}-send-{mark}-to-{consumer}"),
            "send",
            format!("A backfill marks the end of {consumer}'s history"),
            "`portal consumer add` (and `portal up` for a new appointment_db) sends every stored \
             event to this queue, then the mark with the number of users auth_db held when it \
             began: through the default exchange (routing key = the queue's name), never to the \
             user events' exchange; persistent, mandatory, with publisher confirms, user-id = the \
             operator's broker user.",
            &main,
            std::slice::from_ref(&mark),
            &[OPERATOR_USER],
            json!({"deliveryMode": PERSISTENT, "mandatory": true}),
        );
        let events: Vec<String> = EventType::ALL.iter().map(|t| ident(t.as_str())).collect();
        self.operation(
            format!("{OPERATOR_USER}-send-user-events-to-{consumer}"),
            "send",
            format!("The operator sends events to {consumer} alone"),
            &format!(
                "`portal replay` (stored events from the event store) and `portal dlq requeue` \
                 (messages from {}) publish to this queue alone, through the default exchange \
                 (routing key = the queue's name), never to the user events' exchange: \
                 persistent, mandatory, with publisher confirms, user-id = the operator's broker \
                 user. A requeued copy keeps its headers except {}, and names its first \
                 publisher in {}, which the consumer must trust too.",
                queues.dead_letter,
                header::CLEARED_ON_REQUEUE.join(", "),
                header::ORIGINAL_USER_ID,
            ),
            &main,
            &events,
            &[OPERATOR_USER],
            json!({"deliveryMode": PERSISTENT, "mandatory": true}),
        );
        let resend = self.routing_key_channel(
            EXCHANGE,
            &queues.resend,
            format!(
                "{} on exchange {EXCHANGE}, routing key {}: bound to {} alone. The offboarding \
                 saga sends a user's current state again there when {consumer}'s receipt of a \
                 change is late; applied at an equal version, it also makes good a lost receipt.",
                EventType::Snapshot.as_str(),
                queues.resend,
                queues.main
            ),
            std::slice::from_ref(&snapshot),
        );
        self.operation(
            format!("{AUTH_SERVICE}-resend-{snapshot}-to-{consumer}"),
            "send",
            format!(
                "{AUTH_SERVICE} sends a {} again to {consumer}",
                EventType::Snapshot.as_str()
            ),
            "The offboarding saga writes it to the auth-service's message outbox; the relay \
             publishes it like any event: persistent, mandatory, with publisher confirms, \
             `message-id` = eventId, `type` = eventType, `user-id` = the relay's broker user.",
            &resend,
            &[snapshot],
            &[AUTH_SERVICE],
            json!({"deliveryMode": PERSISTENT, "mandatory": true}),
        );
    }

    /// A consumer's retry queues and its dead-letter queue.
    fn retries_and_dead_letters(&mut self, consumer: &str, queues: &ConsumerQueues) {
        for retry in &queues.retries {
            // The queue name ends in the delay's label (`1s`, `2m`), the form people read.
            let label = retry.name.rsplit('.').next().unwrap_or_default();
            self.queue_channel(
                &retry.name,
                format!(
                    "Holds a failed event {label} (message TTL), then dead-letters it back to {} \
                     through the default exchange. Nobody consumes it: the TTL is the timer. The \
                     consumer puts messages here through its own direct exchange {} (routing key \
                     = this queue's name), so its broker user can publish to its own queues only.",
                    queues.main, queues.set_aside
                ),
                &["retried-user-event".to_owned()],
            );
        }
        let dead = self.queue_channel(
            &queues.dead_letter,
            format!(
                "Messages the {consumer} can never apply, with the reason in their headers. The \
                 consumer puts them here through {}; `portal dlq` reads them.",
                queues.set_aside
            ),
            &["dead-letter".to_owned()],
        );
        self.operation(
            format!("{OPERATOR_USER}-receive-dead-letters-of-{consumer}"),
            "receive",
            format!("The operator inspects {consumer}'s dead letters"),
            "`portal dlq list|show|requeue|purge` (and the sync admin API) read this queue with \
             basic.get, putting back every message it does not act on; a requeue publishes a \
             copy to the consumer's main queue with confirms before it acks the original. An \
             untrusted publisher's message is never requeued, only discarded.",
            &dead,
            &["dead-letter".to_owned()],
            &[OPERATOR_USER],
            json!({"ack": true}),
        );

        // The consumer's own direct exchange: the only way its broker user may write to its
        // retry and dead-letter queues (routing key = the queue's name).
        let mut targets: Vec<String> = queues.retries.iter().map(|r| r.name.clone()).collect();
        targets.push(queues.dead_letter.clone());
        let set_aside = ident(&queues.set_aside);
        let retried = "retried-user-event".to_owned();
        let dead_letter = "dead-letter".to_owned();
        self.channels.insert(
            set_aside.clone(),
            json!({
                "address": format!("{{{QUEUE_PARAMETER}}}"),
                "title": queues.set_aside,
                "description": format!(
                    "The {consumer}'s direct exchange {}: it sets a message aside by \
                     publishing a copy there with the name of one of its retry queues or of its \
                     dead-letter queue as the routing key, each queue bound by its own name. \
                     Its own exchange, not the default one, so its broker user may write to its \
                     own queues and nowhere else.",
                    queues.set_aside
                ),
                "parameters": {QUEUE_PARAMETER: {
                    "description": "The queue the copy goes to: a retry queue (the next delay) \
                        or the dead-letter queue.",
                    "enum": targets,
                }},
                "messages": channel_messages(&[retried.clone(), dead_letter.clone()]),
                "bindings": {"amqp": self.exchange_binding(&queues.set_aside)},
            }),
        );
        self.operation(
            format!("{consumer}-retry-later"),
            "send",
            format!("{consumer} sends an event to its next retry queue"),
            "When applying fails for a reason of its own (its database unreachable or \
             refusing), the consumer publishes a copy to the retry queue of the next delay \
             (x-retry-count = the attempts so far), waits for the broker's confirm, then acks \
             the original. Once every delay is spent the copy goes to the dead-letter queue as \
             retries-exhausted. The copy carries the consumer's own broker user as user-id; who \
             first published it is in x-original-user-id.",
            &set_aside,
            std::slice::from_ref(&retried),
            &[consumer],
            json!({"deliveryMode": PERSISTENT, "mandatory": true}),
        );
        self.operation(
            format!("{consumer}-dead-letter"),
            "send",
            format!("{consumer} sets a message aside for good"),
            "A message that can never be applied (see x-error-reason) is published, body and \
             properties unchanged plus the failure headers, to the dead-letter queue with \
             confirms, then the original is acked: it never blocks the main queue and is never \
             dropped silently.",
            &set_aside,
            std::slice::from_ref(&dead_letter),
            &[consumer],
            json!({"deliveryMode": PERSISTENT, "mandatory": true}),
        );
    }

    /// The control exchange: a channel per routing key, each service's control queue and its
    /// dead-letter queue, who sends and who receives.
    fn control(&mut self) {
        let mut routed: Vec<(String, String)> = Vec::new();
        for message in control_messages() {
            let id = self.typed_message(
                message.amqp_type,
                message.summary,
                &message_file(message.amqp_type),
                message.relayed.then(relay_headers),
            );
            let channel = self.routing_key_channel(
                CONTROL_EXCHANGE,
                &message.routing_key,
                format!(
                    "{} messages on exchange {CONTROL_EXCHANGE}, routing key {}.",
                    message.amqp_type, message.routing_key
                ),
                std::slice::from_ref(&id),
            );
            let parameter = format!("{{{CONSUMER_PARAMETER}}}");
            if message.routing_key.contains(&parameter) {
                if let Some(channel) = self.channels.get_mut(&channel) {
                    channel["parameters"] = json!({CONSUMER_PARAMETER: {
                        "description": "The name of the consumer that sends the receipt, as \
                            registered with `portal consumer add`.",
                        "examples": CONSUMERS,
                    }});
                }
            }
            for sender in message.senders {
                self.operation(
                    format!("{sender}-send-{id}"),
                    "send",
                    format!("{sender} publishes {}", message.amqp_type),
                    message.published,
                    &channel,
                    std::slice::from_ref(&id),
                    &[sender],
                    json!({"deliveryMode": PERSISTENT, "mandatory": message.mandatory}),
                );
            }
            routed.push((message.routing_key, id));
        }

        self.messages.insert(
            "rejected-control-message".to_owned(),
            json!({
                "name": "rejected control message",
                "title": "A control message its service rejected",
                "summary": "The original message, unchanged, dead-lettered by RabbitMQ (which \
                    adds its x-death header): unreadable, of a type the service does not know, \
                    or from a broker user it does not believe for it. The reason is in the \
                    service's log.",
                "payload": {"description": "The original body, byte for byte."},
            }),
        );

        for (service, handles) in [
            (
                AUTH_SERVICE,
                "Records each receipt whose AMQP user_id is the broker user its consumer is \
                 registered with, keeping the highest version per consumer and user, and wakes \
                 the offboardings waiting for it. Believes a reply only from the \
                 appointment-service's registered broker user, once per message id. Anything \
                 else (unreadable, an unknown type or consumer, another publisher) is rejected \
                 into its dead-letter queue, the reason logged. While auth_db is unreachable a \
                 message waits, retried in place.",
            ),
            (
                APPOINTMENT_SERVICE,
                "Acts on a command only from a trusted publisher (AMQP user_id): moves or \
                 cancels each future appointment of the doctor, each in a transaction of its own \
                 with its appointment event, then replies. Acts on one message id once: a copy \
                 of an answered command gets the same reply. Anything else (unreadable, an \
                 unknown type, no UUID message-id, an untrusted publisher) is rejected into its \
                 dead-letter queue, the reason logged.",
            ),
        ] {
            let queue = ControlQueue::of(service);
            let bound = self.bindings_of(&queue.main);
            let messages: Vec<String> = routed
                .iter()
                .filter(|(key, _)| bound.iter().any(|(_, pattern)| topic_matches(pattern, key)))
                .map(|(_, id)| id.clone())
                .collect();
            let keys: Vec<&str> = bound.iter().map(|(_, key)| key.as_str()).collect();
            let main = self.queue_channel(
                &queue.main,
                format!(
                    "The {service}'s control queue (quorum), bound to {CONTROL_EXCHANGE} with {}. \
                     What it rejects goes to {} by the queue's own dead-letter arguments.",
                    keys.join(" and "),
                    queue.dead_letter
                ),
                &messages,
            );
            self.operation(
                format!("{service}-receive-control"),
                "receive",
                format!("{service} reads its control queue"),
                handles,
                &main,
                &messages,
                &[service],
                json!({"ack": true}),
            );
            let dead = self.queue_channel(
                &queue.dead_letter,
                format!("Control messages {} rejected.", queue.main),
                &["rejected-control-message".to_owned()],
            );
            self.operation(
                format!("{OPERATOR_USER}-receive-rejected-control-messages-of-{service}"),
                "receive",
                format!("The operator inspects what the {service} rejected"),
                "`portal dlq --queue <this queue>` reads them (basic.get, putting back what it \
                 does not act on); a requeue sends one back to the control queue it came from.",
                &dead,
                &["rejected-control-message".to_owned()],
                &[OPERATOR_USER],
                json!({"ack": true}),
            );
        }
    }

    /// The appointment events: a channel per type on their exchange, the appointment-service's
    /// send operations, and the queue where they wait when no one else binds them.
    fn appointment_events(&mut self) {
        let mut ids = Vec::new();
        for t in AppointmentEventType::ALL {
            let id = self.typed_message(
                t.as_str(),
                appointment_summary(t),
                &appointment_schema_file(t),
                Some(relay_headers()),
            );
            let channel = self.routing_key_channel(
                APPOINTMENT_EXCHANGE,
                t.as_str(),
                format!(
                    "{} events on exchange {APPOINTMENT_EXCHANGE}, routing key {}.",
                    t.as_str(),
                    t.as_str()
                ),
                std::slice::from_ref(&id),
            );
            self.operation(
                format!("{APPOINTMENT_SERVICE}-send-{id}"),
                "send",
                format!("{APPOINTMENT_SERVICE} publishes {}", t.as_str()),
                "Written in the transaction that changes the appointment and published by the \
                 appointment-service's outbox relay: persistent, mandatory, with publisher \
                 confirms, `message-id` = eventId, `type` = eventType. (appointmentId, \
                 appointmentVersion) names one change, so a reader can drop a duplicate.",
                &channel,
                std::slice::from_ref(&id),
                &[APPOINTMENT_SERVICE],
                json!({"deliveryMode": PERSISTENT, "mandatory": true}),
            );
            ids.push(id);
        }
        self.queue_channel(
            APPOINTMENT_UNROUTED,
            format!(
                "Appointment events no other queue takes: {APPOINTMENT_UNROUTED} is also the \
                 fanout alternate exchange of {APPOINTMENT_EXCHANGE}. They wait here for whoever \
                 informs patients, who may as well bind a queue of their own to \
                 {APPOINTMENT_EXCHANGE}."
            ),
            &ids,
        );
    }

    /// The AMQP binding of a routing-key channel: the exchange, as the services declare it.
    fn exchange_binding(&self, name: &str) -> Value {
        let declared = self.declared.iter().find_map(|d| match d {
            Declaration::Exchange {
                name: n,
                kind,
                arguments,
            } if n == name => Some((*kind, arguments)),
            _ => None,
        });
        json!({
            "is": "routingKey",
            "exchange": {
                "name": name,
                // Null for an exchange nobody declares: the tests refuse it.
                "type": declared.map(|(kind, _)| kind_name(kind)),
                "durable": true,
                "autoDelete": false,
                "vhost": VHOST,
            },
            // Declaration arguments have no field in the binding; an extension keeps them visible.
            "x-arguments": declared.map(|(_, arguments)| arguments_json(arguments)),
            "bindingVersion": AMQP_BINDING_VERSION,
        })
    }

    /// The AMQP binding of a queue channel, with its declaration arguments and its bindings to
    /// exchanges as extensions.
    fn queue_binding(&self, name: &str) -> Value {
        let arguments = self.declared.iter().find_map(|d| match d {
            Declaration::Queue { name: n, arguments } if n == name => {
                Some(arguments_json(arguments))
            }
            _ => None,
        });
        let mut binding = json!({
            "is": "queue",
            "queue": {
                "name": name,
                "durable": true,
                "exclusive": false,
                "autoDelete": false,
                "vhost": VHOST,
            },
            // Null for a queue nobody declares: the tests refuse it.
            "x-arguments": arguments,
            "bindingVersion": AMQP_BINDING_VERSION,
        });
        let bound: Vec<Value> = self
            .bindings_of(name)
            .into_iter()
            .map(|(exchange, key)| json!({"exchange": exchange, "routingKey": key}))
            .collect();
        if !bound.is_empty() {
            binding["x-bound-to"] = json!(bound);
        }
        binding
    }

    /// `(exchange, routing key)` of every binding declared for `queue`, in declaration order.
    fn bindings_of(&self, queue: &str) -> Vec<(String, String)> {
        self.declared
            .iter()
            .filter_map(|d| match d {
                Declaration::Binding {
                    queue: q,
                    exchange,
                    routing_key,
                } if q == queue => Some((exchange.clone(), routing_key.clone())),
                _ => None,
            })
            .collect()
    }
}

/// `{"<id>": {"$ref": "#/components/messages/<id>"}}` for each id: a channel's messages.
fn channel_messages(ids: &[String]) -> Value {
    Value::Object(
        ids.iter()
            .map(|id| {
                (
                    id.clone(),
                    json!({"$ref": format!("#/components/messages/{id}")}),
                )
            })
            .collect(),
    )
}

/// Whether a topic exchange's binding `pattern` (`*` one word, `#` any number) takes `key`.
fn topic_matches(pattern: &str, key: &str) -> bool {
    fn words(p: &[&str], k: &[&str]) -> bool {
        match (p.split_first(), k.split_first()) {
            (None, None) => true,
            (Some((&"#", rest)), _) => words(rest, k) || (!k.is_empty() && words(p, &k[1..])),
            (Some((&"*", rest)), Some((_, k_rest))) => words(rest, k_rest),
            (Some((w, rest)), Some((kw, k_rest))) => w == kw && words(rest, k_rest),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    words(&p, &k)
}

fn kind_name(kind: ExchangeKind) -> &'static str {
    match kind {
        ExchangeKind::Topic => "topic",
        ExchangeKind::Fanout => "fanout",
        ExchangeKind::Direct => "direct",
    }
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

/// The `traceparent` header as the outbox relays write it.
fn traceparent_header() -> Value {
    json!({
        "type": "string",
        "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        "description": "W3C trace context: the trace of the HTTP request that made the change, \
            set by the outbox relay when the change has one (absent otherwise, e.g. a change \
            made by the seed). For logs and tracing only: it never changes what a message \
            means. Readers should accept any valid W3C traceparent (a later version too).",
    })
}

/// The headers of a message an outbox relay publishes (commands, replies, appointment events).
fn relay_headers() -> Value {
    json!({
        "type": "object",
        "description": "Optional; readers ignore headers they do not know.",
        "properties": {header::TRACEPARENT: traceparent_header()},
    })
}

/// The headers a user event may carry where a consumer reads it, none of them required: the
/// relay's `traceparent`, and on a copy that comes back from a retry queue (or that the operator
/// sent back) the headers the consumer added when it set the message aside, so a consumer in
/// another language knows every name it may meet and which ones it must read.
fn user_event_headers() -> Value {
    let mut properties = match failure_headers(true).get("properties") {
        Some(Value::Object(p)) => p.clone(),
        _ => Map::new(),
    };
    // Only a dead letter carries why it died; a requeue removes both (CLEARED_ON_REQUEUE).
    properties.remove(header::ERROR_REASON);
    properties.remove(header::ERROR_DETAIL);
    properties.insert(header::TRACEPARENT.to_owned(), traceparent_header());
    properties.insert(
        header::DEATH.to_owned(),
        json!({
            "type": "array",
            "description": "Added by RabbitMQ when a retry queue's TTL sent the copy back: \
                where and why it was dead-lettered. Informational; no consumer of the portal \
                reads it.",
        }),
    );
    json!({
        "type": "object",
        "description": format!(
            "None required; readers ignore headers they do not know. As published by the \
             relay an event carries at most {tp}. A copy coming back from a retry queue also \
             carries {retry} (the attempts so far: a consumer reads it to choose the next retry \
             queue), {exchange}, {key}, {first}, {last} and {original} (who first published \
             it: a consumer must trust it as well as the AMQP user-id), and RabbitMQ's {death}. \
             A copy the operator sent back (`portal dlq requeue`) keeps them except {cleared}, \
             so it may still carry {consumer}.",
            tp = header::TRACEPARENT,
            retry = header::RETRY_COUNT,
            exchange = header::ORIGINAL_EXCHANGE,
            key = header::ORIGINAL_ROUTING_KEY,
            first = header::FIRST_FAILURE_TIME,
            last = header::LAST_ERROR,
            original = header::ORIGINAL_USER_ID,
            death = header::DEATH,
            cleared = header::CLEARED_ON_REQUEUE.join(", "),
            consumer = header::CONSUMER,
        ),
        "properties": properties,
    })
}

/// An AsyncAPI identifier for a name: channel and message keys allow no dots (nor the braces of
/// a channel parameter).
fn ident(name: &str) -> String {
    name.replace('.', "-").replace(['{', '}'], "")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_match_as_rabbitmq_matches_them() {
        assert!(topic_matches("receipt.#", "receipt.user-service"));
        assert!(topic_matches("receipt.#", "receipt"));
        assert!(topic_matches("receipt.#", "receipt.a.b"));
        assert!(topic_matches(
            "reply.*.doctor-resolved",
            "reply.auth-service.doctor-resolved"
        ));
        assert!(!topic_matches(
            "reply.*",
            "reply.auth-service.doctor-resolved"
        ));
        assert!(!topic_matches(
            "command.appointment-service.#",
            "reply.auth-service.doctor-resolved"
        ));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("user.#", "user.role.changed"));
    }
}
