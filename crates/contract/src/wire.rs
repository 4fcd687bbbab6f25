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

/// Whom a consumer applies messages from: [`SYSTEM_PUBLISHERS`], its own broker user (its
/// copies come back from its retry queues) and the names configured in `TRUSTED_PUBLISHERS`.
/// The operator's tools judge dead letters with the same rule before sending any back.
///
/// A message names two publishers, and both must be trusted:
/// - its AMQP `user_id`, which RabbitMQ checks against the publishing connection's user;
/// - [`header::ORIGINAL_USER_ID`], who first published a message that a consumer set aside
///   (a retry) or an operator sent back (a requeue, a replay of a set-aside message). A header
///   is anyone's to write, so it is believed only from a trusted `user_id`; and it is what keeps
///   a forged event forged when a trusted operator requeues it: the copy carries the operator's
///   `user_id`, but its first publisher is still the untrusted one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedPublishers(std::collections::BTreeSet<String>);

/// Why a message is not a trusted publisher's (the words go to `x-error-detail`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error("published without a user_id: not a trusted publisher")]
    Unnamed,
    #[error("published by broker user {0:?}, not a trusted publisher")]
    Publisher(String),
    #[error(
        "sent by {by:?} but first published by broker user {first:?}, not a trusted publisher"
    )]
    FirstPublisher { by: String, first: String },
}

impl Untrusted {
    /// The broker user to blame, if the message named one.
    pub fn publisher(&self) -> Option<&str> {
        match self {
            Self::Unnamed => None,
            Self::Publisher(p) | Self::FirstPublisher { first: p, .. } => Some(p),
        }
    }
}

impl TrustedPublishers {
    /// [`SYSTEM_PUBLISHERS`], `own_user` and `configured` (empty names are no one's).
    pub fn new<S: AsRef<str>>(own_user: &str, configured: impl IntoIterator<Item = S>) -> Self {
        let names = SYSTEM_PUBLISHERS
            .iter()
            .map(|u| (*u).to_owned())
            .chain([own_user.to_owned()])
            .chain(configured.into_iter().map(|u| u.as_ref().trim().to_owned()))
            .filter(|u| !u.is_empty())
            .collect();
        Self(names)
    }

    /// Whether `user` is one of them.
    pub fn trusts(&self, user: &str) -> bool {
        self.0.contains(user)
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Who first published a message whose `user_id` is `user_id` and whose
    /// [`header::ORIGINAL_USER_ID`] says `recorded`: the recorded one when a trusted publisher
    /// vouches for it, else the `user_id` itself (`None`: it named no one).
    pub fn first_publisher<'a>(
        &self,
        user_id: Option<&'a str>,
        recorded: Option<&'a str>,
    ) -> Option<&'a str> {
        match user_id {
            Some(user) if self.trusts(user) => recorded.or(Some(user)),
            other => other,
        }
    }

    /// Whether a message published as `user_id`, first published by `recorded`, is applied.
    pub fn check(&self, user_id: Option<&str>, recorded: Option<&str>) -> Result<(), Untrusted> {
        match (user_id, self.first_publisher(user_id, recorded)) {
            (None, _) | (_, None) => Err(Untrusted::Unnamed),
            (Some(user), _) if !self.trusts(user) => Err(Untrusted::Publisher(user.to_owned())),
            (Some(user), Some(first)) if !self.trusts(first) => Err(Untrusted::FirstPublisher {
                by: user.to_owned(),
                first: first.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

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
    /// (RabbitMQ allows no other), so who first published it is kept here, as is an operator's
    /// requeue. Believed only from a trusted publisher, and must name one itself (see
    /// [`super::TrustedPublishers`]); absent from a dead letter whose publisher named no one.
    pub const ORIGINAL_USER_ID: &str = "x-original-user-id";
    /// The W3C trace context (`00-<trace id>-<parent id>-<flags>`) an outbox relay sets on a
    /// message whose change has a trace, so one trace id follows it from the HTTP request to
    /// each consumer's apply. The same name as `platform::trace::TRACEPARENT`, which HTTP uses
    /// too; here because it is part of what travels on the wire.
    pub const TRACEPARENT: &str = "traceparent";
    /// Added by RabbitMQ itself when a queue dead-letters a message (a retry queue's TTL ran
    /// out, a control queue rejected it): an array of where and why, newest first. No
    /// consumer of the portal reads it.
    pub const DEATH: &str = "x-death";

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

    #[test]
    fn both_the_user_id_and_the_first_publisher_must_be_trusted() {
        let trusted = TrustedPublishers::new("portal-user-service", ["legacy", " "]);
        assert_eq!(
            trusted.names().collect::<Vec<_>>(),
            [
                "legacy",
                "portal-operator",
                "portal-relay",
                "portal-user-service"
            ]
        );
        // The relay's own events, and a requeue or retry of them.
        assert_eq!(trusted.check(Some(RELAY_USER), None), Ok(()));
        assert_eq!(trusted.check(Some(OPERATOR_USER), Some(RELAY_USER)), Ok(()));
        assert_eq!(
            trusted.check(Some("portal-user-service"), Some("legacy")),
            Ok(())
        );
        // A stranger, and a stranger claiming someone else first published it.
        assert_eq!(
            trusted.check(Some("mallory"), Some(RELAY_USER)),
            Err(Untrusted::Publisher("mallory".into()))
        );
        assert_eq!(
            trusted.first_publisher(Some("mallory"), Some(RELAY_USER)),
            Some("mallory"),
            "an untrusted user's header is not believed"
        );
        // A forged event the operator sent back: still the stranger's.
        let requeued = trusted.check(Some(OPERATOR_USER), Some("mallory"));
        assert_eq!(
            requeued,
            Err(Untrusted::FirstPublisher {
                by: OPERATOR_USER.into(),
                first: "mallory".into()
            })
        );
        assert_eq!(requeued.unwrap_err().publisher(), Some("mallory"));
        assert_eq!(
            trusted.check(None, Some(RELAY_USER)),
            Err(Untrusted::Unnamed)
        );
        assert_eq!(
            trusted.check(Some(OPERATOR_USER), Some("")),
            Err(Untrusted::FirstPublisher {
                by: OPERATOR_USER.into(),
                first: String::new()
            }),
            "an empty name is no one's"
        );
        assert!(!TrustedPublishers::new("", Vec::<String>::new()).trusts(""));
    }
}
