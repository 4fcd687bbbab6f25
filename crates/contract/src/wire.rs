//! What travels on the wire besides the body: the AMQP properties every event is published with,
//! and the headers a consumer adds when it sets a message aside (for a retry, or for good in its
//! dead-letter queue). The names are part of the contract: operators' tools (`portal dlq`), the
//! AsyncAPI document and other teams' consumers read them.

use crate::event::SOURCE;

/// The content type of every event body.
pub const CONTENT_TYPE: &str = "application/json";
/// AMQP delivery mode 2: the broker keeps the message on disk.
pub const PERSISTENT: u8 = 2;

/// The AMQP basic properties of one published event, as plain values (the AMQP client's own
/// type is built from them in `platform::amqp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventProperties {
    /// `application/json`.
    pub content_type: &'static str,
    /// Always [`PERSISTENT`].
    pub delivery_mode: u8,
    /// The event's `eventId`, so a consumer or an operator can name one message.
    pub message_id: String,
    /// The event's `eventType` (also its routing key).
    pub kind: String,
    /// The producing service.
    pub app_id: &'static str,
}

impl EventProperties {
    /// The properties of the event `event_id` of type `event_type`, as the relay and a replay
    /// publish it.
    pub fn new(event_id: &str, event_type: &str) -> Self {
        Self {
            content_type: CONTENT_TYPE,
            delivery_mode: PERSISTENT,
            message_id: event_id.to_owned(),
            kind: event_type.to_owned(),
            app_id: SOURCE,
        }
    }
}

/// The broker users whose events every consumer trusts: the outbox relay and the operator's
/// tools (`portal replay`, `portal dlq requeue`). Trust rests on the AMQP `user_id` property,
/// which RabbitMQ checks against the publishing connection's user, so no one can claim another
/// user's name. A consumer also trusts its own user (the copies it sends through its retry
/// queues come back with it) and any name in `TRUSTED_PUBLISHERS`.
pub const SYSTEM_PUBLISHERS: [&str; 2] = [RELAY_USER, OPERATOR_USER];
/// The broker user of the outbox relay.
pub const RELAY_USER: &str = "portal-relay";
/// The broker user of the operator's tools.
pub const OPERATOR_USER: &str = "portal-operator";

/// The AMQP `type` of the end-of-history mark a backfill (`portal consumer add`) sends to one
/// consumer's queue after the last stored event. Its body is a [`HistoryComplete`], not an
/// event. A consumer records it in the transaction of its batch; a service that must know every
/// existing user before it serves (the appointment-service) is ready once it has the mark *and*
/// holds at least the users the mark counts — the count, not the mark's place in the queue, is
/// what proves completeness (an event may still wait in a retry queue, another replica may
/// still hold an earlier window, retention may have pruned a user's events). Published by a
/// trusted publisher like any event; a consumer that does not know the type dead-letters it as
/// `unknown-event-type`, like any event type it does not know.
pub const HISTORY_COMPLETE_TYPE: &str = "portal.history.complete";

/// The body of the end-of-history mark (JSON, `{"users": 1000}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryComplete {
    /// The users `auth_db` held when the backfill began: a complete copy holds at least these.
    pub users: i64,
}

/// Headers a consumer adds to a message it sets aside. The message's own headers stay.
pub mod header {
    /// Why a dead letter can never be applied: one of [`crate::DEAD_LETTER_REASONS`].
    pub const ERROR_REASON: &str = "x-error-reason";
    /// The failure in words, for people.
    pub const ERROR_DETAIL: &str = "x-error-detail";
    /// The consumer service that set it aside.
    pub const CONSUMER: &str = "x-consumer";
    /// The exchange of the delivery that failed first (kept through every retry).
    pub const ORIGINAL_EXCHANGE: &str = "x-original-exchange";
    /// The routing key of the delivery that failed first (kept through every retry).
    pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
    /// When it failed first (kept through every retry).
    pub const FIRST_FAILURE_TIME: &str = "x-first-failure-time";
    /// The latest failure.
    pub const LAST_ERROR: &str = "x-last-error";
    /// How many attempts failed; set once the message has been through a retry queue.
    pub const RETRY_COUNT: &str = "x-retry-count";
    /// The `user_id` the message was first published with: the consumer's copy carries its own
    /// (RabbitMQ allows no other), so who first published it is kept here.
    pub const ORIGINAL_USER_ID: &str = "x-original-user-id";

    /// Dropped when an operator requeues a dead letter, so it starts over with a fresh retry
    /// budget; where it first came from and when it first failed stay.
    pub const CLEARED_ON_REQUEUE: [&str; 4] = [ERROR_REASON, ERROR_DETAIL, RETRY_COUNT, LAST_ERROR];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_persistent_json_named_by_their_id_and_type() {
        let p = EventProperties::new("0193a6a4-0000-7000-8000-000000000000", "user.created");
        assert_eq!(p.content_type, "application/json");
        assert_eq!(p.delivery_mode, 2);
        assert_eq!(p.message_id, "0193a6a4-0000-7000-8000-000000000000");
        assert_eq!(p.kind, "user.created");
        assert_eq!(p.app_id, "auth-service");
    }
}
