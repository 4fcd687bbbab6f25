//! The wire contract between the auth-service (producer) and every consumer of user events.
//!
//! Layout:
//! - [`domain`]: value types that can only hold valid values (`Email`, `Role`, `UserId`, ...).
//! - [`time`]: the timestamp format of the contract (ISO-8601 UTC, milliseconds, `Z`).
//! - [`event`]: the envelope, the user snapshot payload, the event types, and decoding of
//!   untrusted bytes into a validated event (with a dead-letter reason when that fails).
//! - [`erasure`]: the placeholders an erased person's record and `user.erased` event hold.
//! - [`topology`]: exchange, queue and routing names, which other teams' programs rely on, and
//!   the declarations (with their arguments) that make them exist.
//! - [`wire`]: the AMQP properties of a published event and the headers of a message set aside
//!   (retry and dead-letter).
//! - [`control`]: receipts, the offboarding saga's command and reply, appointment events.
//! - [`api`]: the JSON bodies of the HTTP API, shared by the services and their clients.
//! - [`schema`]: the JSON Schemas and the AsyncAPI document generated from the above, checked in
//!   under `contracts/` for teams that do not read Rust.
//! - [`sync_status`]: the JSON bodies of the sync admin API (the outbox, each consumer's
//!   queues and dead letters, the last verify).
//! - [`openapi`]: the HTTP API as an OpenAPI 3.1 document (bodies from [`api`]), checked in as
//!   `contracts/openapi.json` and served by the gateway.
//! - [`compat`]: which changes of the JSON Schemas and the AsyncAPI document break consumers,
//!   checked against the last release's copy under `contracts/released/`.
//!
//! Version policy: `1.x` only adds optional fields; readers ignore unknown fields; a new major
//! version is published beside the old one; a reader dead-letters a major version it does not know.

pub mod api;
pub mod compat;
pub mod control;
pub mod domain;
pub mod erasure;
pub mod event;
pub mod openapi;
pub mod schema;
pub mod sync_status;
pub mod time;
pub mod topology;
pub mod wire;

pub use domain::{Email, PersonName, PhoneNumber, Role, UserId, ValidationError};
pub use event::{
    DecodeError, Envelope, EventType, UserSnapshot, DEAD_LETTER_REASONS, MAX_EVENT_BYTES,
};
pub use time::Timestamp;
