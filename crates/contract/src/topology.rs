//! Names of the RabbitMQ topology. They are part of the contract: other teams bind their own
//! queues to the exchange and operators look for these names in the management UI.

use std::time::Duration;

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
/// The consumer name of the appointment-service (its copy: the clinicians).
pub const APPOINTMENT_SERVICE: &str = "appointment-service";
/// The auth-service's name on the control exchange (it reads receipts and replies).
pub const AUTH_SERVICE: &str = "auth-service";

/// The durable topic exchange of control messages (`contract::control`): receipts
/// (`receipt.<consumer>`), commands (`command.<service>.<name>`) and replies
/// (`reply.<service>.<name>`).
pub const CONTROL_EXCHANGE: &str = "portal.control";
/// The routing key of the saga's command to the appointment-service.
pub const RESOLVE_DOCTOR_KEY: &str = "command.appointment-service.resolve-doctor";
/// The routing key of the appointment-service's reply to the auth-service.
pub const DOCTOR_RESOLVED_KEY: &str = "reply.auth-service.doctor-resolved";
/// The durable topic exchange of appointment events; routing key = `eventType`.
pub const APPOINTMENT_EXCHANGE: &str = "appointment.events";
/// `appointment.events`' alternate exchange (fanout) and the quorum queue it feeds: appointment
/// events no other queue takes wait there for whoever informs patients.
pub const APPOINTMENT_UNROUTED: &str = "appointment.events.unrouted";

/// The routing key of a consumer's receipts.
pub fn receipt_key(consumer: &str) -> String {
    format!("receipt.{consumer}")
}

/// The routing key on `user.events` that reaches `consumer`'s queue alone: a snapshot sent again
/// to one late consumer (the offboarding saga), not to every copy.
pub fn resend_key(consumer: &str) -> String {
    format!("resend.{consumer}")
}

/// A service's control queue (`<service>.control`, quorum) and where what it rejects goes
/// (`<service>.control.dlq`, by the queue's own dead-letter arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlQueue {
    pub main: String,
    pub dead_letter: String,
}

impl ControlQueue {
    pub fn of(service: &str) -> Self {
        let main = format!("{service}.control");
        Self {
            dead_letter: format!("{main}.dlq"),
            main,
        }
    }

    fn declaration(&self) -> Declaration {
        let mut arguments = quorum_arguments();
        arguments.push(("x-dead-letter-exchange", Argument::Text(String::new())));
        arguments.push((
            "x-dead-letter-routing-key",
            Argument::Text(self.dead_letter.clone()),
        ));
        Declaration::Queue {
            name: self.main.clone(),
            arguments,
        }
    }
}

/// How long a message that failed for a reason of its own waits before each new attempt; after
/// the last one it goes to the dead-letter queue.
pub const RETRY_DELAYS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
];

/// A delay queue: messages wait there `delay` (message TTL), then dead-letter back to the
/// consumer's main queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryQueue {
    pub name: String,
    pub delay: Duration,
}

/// The queues that belong to one consumer service, named after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerQueues {
    /// `<name>.user-events`: the quorum queue the consumer reads.
    pub main: String,
    /// `<name>.user-events.dlq`: messages that can never succeed, with the reason in headers.
    pub dead_letter: String,
    /// `<name>.user-events.retry.<delay>`, shortest first.
    pub retries: Vec<RetryQueue>,
    /// `<name>.user-events.set-aside`: the direct exchange through which the consumer sends a
    /// message to one of its retry queues or its dead-letter queue (routing key = the queue's
    /// name). Its own exchange, not the default one, so the consumer's broker user may publish
    /// to its own queues and nowhere else.
    pub set_aside: String,
    /// `resend.<name>`: the key on `user.events` bound to `main` alone ([`resend_key`]).
    pub resend: String,
}

impl ConsumerQueues {
    /// The consumer these queues belong to (`main` without `.user-events`).
    pub fn consumer(&self) -> &str {
        self.main.strip_suffix(".user-events").unwrap_or(&self.main)
    }

    /// The queues of `name` with the standard retry delays.
    pub fn for_consumer(name: &str) -> Self {
        Self::with_retry_delays(name, &RETRY_DELAYS)
    }

    pub fn with_retry_delays(name: &str, delays: &[Duration]) -> Self {
        let main = format!("{name}.user-events");
        Self {
            dead_letter: format!("{main}.dlq"),
            set_aside: format!("{main}.set-aside"),
            resend: resend_key(name),
            retries: delays
                .iter()
                .map(|&delay| RetryQueue {
                    name: format!("{main}.retry.{}", delay_label(delay)),
                    delay,
                })
                .collect(),
            main,
        }
    }
}

/// The kind of an exchange the contract declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    Topic,
    Fanout,
    Direct,
}

/// A value of a declaration argument, as RabbitMQ reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Argument {
    Text(String),
    Int(i64),
}

/// `(name, value)` arguments of a declaration (`x-queue-type`, `x-message-ttl`, ...).
pub type Arguments = Vec<(&'static str, Argument)>;

/// One thing to declare on the broker. Everything is durable, and declaring twice is harmless,
/// so producers and consumers both declare the whole topology when they connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declaration {
    Exchange {
        name: String,
        kind: ExchangeKind,
        arguments: Arguments,
    },
    Queue {
        name: String,
        arguments: Arguments,
    },
    Binding {
        queue: String,
        exchange: String,
        routing_key: String,
    },
}

impl Declaration {
    /// A durable quorum queue: replicated on a cluster, every message kept on disk.
    pub fn quorum_queue(name: &str) -> Self {
        Declaration::Queue {
            name: name.to_owned(),
            arguments: quorum_arguments(),
        }
    }

    /// A durable exchange without arguments.
    pub fn exchange(name: &str, kind: ExchangeKind) -> Self {
        Declaration::Exchange {
            name: name.to_owned(),
            kind,
            arguments: Vec::new(),
        }
    }

    pub fn binding(queue: &str, exchange: &str, routing_key: &str) -> Self {
        Declaration::Binding {
            queue: queue.to_owned(),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
        }
    }
}

/// The arguments of every quorum queue.
pub fn quorum_arguments() -> Arguments {
    vec![("x-queue-type", Argument::Text("quorum".into()))]
}

/// The arguments of `user.events`: its alternate exchange keeps what no queue takes.
pub fn exchange_arguments() -> Arguments {
    vec![(
        "alternate-exchange",
        Argument::Text(UNROUTED_EXCHANGE.into()),
    )]
}

impl RetryQueue {
    /// A classic queue that holds each message `delay` (message TTL), then dead-letters it to
    /// `main` through the default exchange. Nobody consumes it: the TTL is the timer.
    pub fn arguments(&self, main: &str) -> Arguments {
        vec![
            ("x-queue-type", Argument::Text("classic".into())),
            ("x-dead-letter-exchange", Argument::Text(String::new())),
            ("x-dead-letter-routing-key", Argument::Text(main.to_owned())),
            (
                "x-message-ttl",
                Argument::Int(i64::try_from(self.delay.as_millis()).unwrap_or(i64::MAX)),
            ),
        ]
    }
}

impl ConsumerQueues {
    /// The consumer's main queue (bound to `user.events` with `user.#`), its retry queues and
    /// its dead-letter queue, each of these bound to its set-aside exchange by its own name.
    pub fn declarations(&self) -> Vec<Declaration> {
        let mut out = vec![
            Declaration::quorum_queue(&self.main),
            Declaration::exchange(&self.set_aside, ExchangeKind::Direct),
        ];
        for retry in &self.retries {
            out.push(Declaration::Queue {
                name: retry.name.clone(),
                arguments: retry.arguments(&self.main),
            });
            out.push(Declaration::binding(
                &retry.name,
                &self.set_aside,
                &retry.name,
            ));
        }
        out.push(Declaration::quorum_queue(&self.dead_letter));
        out.push(Declaration::binding(
            &self.dead_letter,
            &self.set_aside,
            &self.dead_letter,
        ));
        out.push(Declaration::binding(&self.main, EXCHANGE, ALL_USER_EVENTS));
        out.push(Declaration::binding(&self.main, EXCHANGE, &self.resend));
        out
    }
}

/// The control topology, declared with the user events' by everyone who declares: the control
/// exchange with the auth-service's queue (receipts and replies) and the appointment-service's
/// (commands), each with its dead-letter queue, and the appointment events' exchange with its
/// alternate exchange and queue.
pub fn control_declarations() -> Vec<Declaration> {
    let auth = ControlQueue::of(AUTH_SERVICE);
    let appointments = ControlQueue::of(APPOINTMENT_SERVICE);
    let mut out = vec![Declaration::exchange(CONTROL_EXCHANGE, ExchangeKind::Topic)];
    for queue in [&auth, &appointments] {
        out.push(Declaration::quorum_queue(&queue.dead_letter));
        out.push(queue.declaration());
    }
    out.push(Declaration::binding(
        &auth.main,
        CONTROL_EXCHANGE,
        "receipt.#",
    ));
    out.push(Declaration::binding(
        &auth.main,
        CONTROL_EXCHANGE,
        &format!("reply.{AUTH_SERVICE}.#"),
    ));
    out.push(Declaration::binding(
        &appointments.main,
        CONTROL_EXCHANGE,
        &format!("command.{APPOINTMENT_SERVICE}.#"),
    ));
    out.extend([
        Declaration::exchange(APPOINTMENT_UNROUTED, ExchangeKind::Fanout),
        Declaration::quorum_queue(APPOINTMENT_UNROUTED),
        Declaration::binding(APPOINTMENT_UNROUTED, APPOINTMENT_UNROUTED, ""),
        Declaration::Exchange {
            name: APPOINTMENT_EXCHANGE.to_owned(),
            kind: ExchangeKind::Topic,
            arguments: vec![(
                "alternate-exchange",
                Argument::Text(APPOINTMENT_UNROUTED.into()),
            )],
        },
    ]);
    out
}

/// The whole topology for `consumers`, in the order it must be declared: the alternate exchange
/// and its queue, the exchange, then each consumer's queues and binding.
pub fn declarations(consumers: &[ConsumerQueues]) -> Vec<Declaration> {
    let mut out = vec![
        Declaration::exchange(UNROUTED_EXCHANGE, ExchangeKind::Fanout),
        Declaration::quorum_queue(UNROUTED_QUEUE),
        Declaration::binding(UNROUTED_QUEUE, UNROUTED_EXCHANGE, ""),
        Declaration::Exchange {
            name: EXCHANGE.to_owned(),
            kind: ExchangeKind::Topic,
            arguments: exchange_arguments(),
        },
    ];
    for queues in consumers {
        out.extend(queues.declarations());
    }
    out.extend(control_declarations());
    out
}

/// `1s`, `2m`, `250ms`: the delay in the queue's name, so changing a delay makes a new queue
/// instead of clashing with the old one's fixed arguments.
fn delay_label(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
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
        let retries: Vec<&str> = q.retries.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            retries,
            [
                "user-service.user-events.retry.1s",
                "user-service.user-events.retry.5s",
                "user-service.user-events.retry.30s",
                "user-service.user-events.retry.2m",
                "user-service.user-events.retry.10m"
            ]
        );
        assert_eq!(q.set_aside, "user-service.user-events.set-aside");
        let fast = ConsumerQueues::with_retry_delays("t", &[Duration::from_millis(250)]);
        assert_eq!(fast.retries[0].name, "t.user-events.retry.250ms");
    }

    /// Every exchange, queue, binding and argument the user-service's topology declares, in
    /// order: a change here changes what other teams' programs see on the broker, so it shows
    /// as a reviewed snapshot diff.
    #[test]
    fn the_declared_topology_is_the_reviewed_one() {
        let topology = declarations(&[ConsumerQueues::for_consumer(USER_SERVICE)]);
        insta::assert_debug_snapshot!(topology);
    }
}
