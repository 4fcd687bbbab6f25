//! Names of the RabbitMQ topology. They are part of the contract: other teams bind their own
//! queues to the exchange and operators look for these names in the management UI.

/// The durable topic exchange every user event is published to; routing key = `eventType`.
pub const EXCHANGE: &str = "user.events";
/// The fanout exchange set as `user.events`' alternate exchange: it catches what no queue binds.
pub const UNROUTED_EXCHANGE: &str = "user.events.unrouted";
/// The durable queue where unroutable events wait instead of vanishing.
pub const UNROUTED_QUEUE: &str = "user.events.unrouted";
/// The binding every full-copy consumer uses: all user events.
pub const ALL_USER_EVENTS: &str = "user.#";
/// The consumer name of the user-service.
pub const USER_SERVICE: &str = "user-service";

/// The queues that belong to one consumer service, named after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerQueues {
    /// `<name>.user-events`: the quorum queue the consumer reads.
    pub main: String,
    /// `<name>.user-events.dlq`: messages that can never succeed, with the reason in headers.
    pub dead_letter: String,
}

impl ConsumerQueues {
    pub fn for_consumer(name: &str) -> Self {
        Self {
            main: format!("{name}.user-events"),
            dead_letter: format!("{name}.user-events.dlq"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_service_queue_names_match_the_design() {
        let q = ConsumerQueues::for_consumer(USER_SERVICE);
        assert_eq!(q.main, "user-service.user-events");
        assert_eq!(q.dead_letter, "user-service.user-events.dlq");
    }
}
