//! RabbitMQ on the tokio runtime: connecting, declaring the contract's topology, publishing with
//! confirms, reading headers and queue depths. What is declared and which names and headers are
//! used is the contract's (`contract::topology`, `contract::wire`); this module only speaks AMQP.
//!
//! Both producer and consumer declare the whole topology at start (declarations are idempotent),
//! so the user-service's queue exists before the first event is published even if the
//! user-service has never run.

use contract::topology::{self, Argument, ConsumerQueues, Declaration, ExchangeKind};
use contract::wire::EventProperties;
use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// How long one node may take to accept a connection before the next is tried: a node that
/// is cut off (not refusing, just silent) must not hold a reconnect for TCP's minutes.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// For each list of nodes this process connects to, the node to try first: the last one that
/// accepted. A connection lost with its node comes back on the next node that answers and stays
/// there, instead of returning to a node that may be hanging.
static PREFERRED: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Mutex::default);

/// Opens a connection named `name` (shown in the management UI) that runs on tokio. `url` may
/// be a cluster: comma-separated URLs, one per node (`amqp://u:p@a:5672/v,amqp://u:p@b:5672/v`).
/// The nodes are tried in turn, starting with the one that last accepted (the first, at
/// start), each for at most 5 s; the error is the last node's when none accepts.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    connect_node(url, name).await.map(|(conn, _)| conn)
}

/// [`connect`], also telling which node accepted (`host:port`), for the log line of a
/// long-lived connection.
pub async fn connect_node(url: &str, name: &str) -> Result<(Connection, String), lapin::Error> {
    let nodes = crate::addresses::split(url);
    if nodes.len() <= 1 {
        let node = crate::addresses::first(url);
        let conn = Connection::connect(node, properties(name)).await?;
        return Ok((conn, node_label(node)));
    }
    let start = PREFERRED
        .lock()
        .map(|p| p.get(url).copied().unwrap_or(0))
        .unwrap_or(0);
    let mut last_error = None;
    for offset in 0..nodes.len() {
        let i = (start + offset) % nodes.len();
        let attempt = Connection::connect(nodes[i], properties(name));
        match tokio::time::timeout(NODE_CONNECT_TIMEOUT, attempt).await {
            Ok(Ok(conn)) => {
                if let Ok(mut preferred) = PREFERRED.lock() {
                    preferred.insert(url.to_owned(), i);
                }
                return Ok((conn, node_label(nodes[i])));
            }
            Ok(Err(e)) => {
                tracing::debug!(node = %crate::secret::redact_url(nodes[i]), error = %e, "RabbitMQ node refused; trying the next");
                last_error = Some(e);
            }
            Err(_) => {
                tracing::debug!(node = %crate::secret::redact_url(nodes[i]), "RabbitMQ node did not answer in 5 s; trying the next");
                last_error = Some(lapin::Error::IOError(std::sync::Arc::new(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no RabbitMQ node answered within 5 s",
                    ),
                )));
            }
        }
    }
    Err(last_error.unwrap_or(lapin::Error::InvalidConnectionState(
        lapin::ConnectionState::Closed,
    )))
}

/// `host:port` of a node's URL: what an operator needs to know, without user or password.
fn node_label(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("?"),
            u.port()
                .unwrap_or(if u.scheme() == "amqps" { 5671 } else { 5672 })
        ),
        Err(_) => "<a URL that does not parse>".to_owned(),
    }
}

fn properties(name: &str) -> ConnectionProperties {
    ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
}

fn field_table(arguments: &[(&'static str, Argument)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in arguments {
        let value = match value {
            Argument::Text(t) => text(t),
            Argument::Int(n) => AMQPValue::LongLongInt(*n),
        };
        table.insert(ShortString::from(*name), value);
    }
    table
}

/// Declares each of `declarations` in order (durable, idempotent).
pub async fn declare(ch: &Channel, declarations: &[Declaration]) -> Result<(), lapin::Error> {
    for declaration in declarations {
        match declaration {
            Declaration::Exchange {
                name,
                kind,
                arguments,
            } => {
                let kind = match kind {
                    ExchangeKind::Topic => lapin::ExchangeKind::Topic,
                    ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
                    ExchangeKind::Direct => lapin::ExchangeKind::Direct,
                };
                let options = ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                };
                ch.exchange_declare(name, kind, options, field_table(arguments))
                    .await?;
            }
            Declaration::Queue { name, arguments } => {
                let options = QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                };
                ch.queue_declare(name, options, field_table(arguments))
                    .await?;
            }
            Declaration::Binding {
                queue,
                exchange,
                routing_key,
            } => {
                ch.queue_bind(
                    queue,
                    exchange,
                    routing_key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Declares the exchange, its alternate exchange with the unrouted queue, and for each consumer
/// its main queue (bound with `user.#`), its retry queues and its dead-letter queue.
pub async fn declare_topology(
    ch: &Channel,
    consumers: &[ConsumerQueues],
) -> Result<(), lapin::Error> {
    declare(ch, &topology::declarations(consumers)).await
}

/// Declares the topology for `consumers` on `channel`, as a long-lived connection does each
/// time it (re)connects, and gives back a usable channel. On a cluster, a classic queue (the
/// retry queues) cannot be declared while the node that holds it is down: the broker closes the
/// channel (404). The topology was then declared before, so when `main` exists (a passive
/// declare on a fresh channel) that channel is given back and the work goes on; otherwise the
/// declaration's error is returned.
pub async fn declare_topology_on(
    conn: &Connection,
    channel: Channel,
    consumers: &[ConsumerQueues],
    main: &str,
) -> Result<Channel, lapin::Error> {
    declare_on(conn, channel, &topology::declarations(consumers), main).await
}

/// [`declare_topology_on`] for any `declarations`: declares them on `channel` and gives back a
/// usable channel, going on when the declaration failed but `main` exists.
pub async fn declare_on(
    conn: &Connection,
    channel: Channel,
    declarations: &[Declaration],
    main: &str,
) -> Result<Channel, lapin::Error> {
    let Err(e) = declare(&channel, declarations).await else {
        return Ok(channel);
    };
    let fresh = conn.create_channel().await?;
    match queue_depth(&fresh, main).await {
        Ok(_) => {
            tracing::warn!(error = %e, queue = main, "could not declare every queue (is a RabbitMQ node down?); the queue exists, going on");
            Ok(fresh)
        }
        Err(_) => Err(e),
    }
}

/// Connects, declares the topology for `consumers`, and closes: used by `portal up`.
pub async fn ensure_topology(url: &str, consumers: &[ConsumerQueues]) -> Result<(), lapin::Error> {
    let conn = connect(url, "portal-topology").await?;
    let ch = conn.create_channel().await?;
    declare_topology(&ch, consumers).await?;
    conn.close(200, "topology declared").await.ok();
    Ok(())
}

/// An AMQP URL that names no broker user. Such a URL still connects (as RabbitMQ's default
/// `guest`, which the client assumes), but the broker user is what every message's `user_id`
/// names and what consumers decide trust on, so it is never guessed: a part that publishes or
/// decides trust refuses to start on such a URL (a configuration error, exit 64).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the AMQP URL {url} names no broker user: write it as {EXAMPLE_URL} (the user is the user_id the broker checks and consumers trust; `guest` is never assumed)")]
pub struct NoBrokerUser {
    /// The URL, password hidden.
    pub url: String,
}

/// How an AMQP URL names its broker user, for messages.
const EXAMPLE_URL: &str = "amqp://USER:PASSWORD@host:5672/vhost";

/// The broker user `url` logs in as (decoded; a cluster's nodes are all reached as the first
/// URL's user), or [`NoBrokerUser`] when it names none.
pub fn broker_user_of(url: &str) -> Result<String, NoBrokerUser> {
    let first = crate::addresses::first(url);
    url::Url::parse(first)
        .ok()
        .map(|u| {
            percent_encoding::percent_decode_str(u.username())
                .decode_utf8_lossy()
                .into_owned()
        })
        .filter(|user| !user.is_empty())
        .ok_or_else(|| NoBrokerUser {
            url: crate::secret::redact_url(first),
        })
}

/// [`broker_user_of`] for callers that have checked the URL already (every part checks at
/// start): empty, never `guest`, when it names no user, so a message published with it is
/// refused by the broker (its `user_id` is not the connection's) rather than sent under a
/// guessed name.
pub fn broker_user(url: &str) -> String {
    broker_user_of(url).unwrap_or_default()
}

/// The AMQP properties of an event, from the contract's [`EventProperties`], published by the
/// broker user `publisher` (the `user_id` consumers trust, which the broker checks).
pub fn event_properties(event_id: &str, event_type: &str, publisher: &str) -> BasicProperties {
    let p = EventProperties::new(event_id, event_type);
    message_properties(&p.message_id, &p.kind, p.app_id, publisher)
}

/// The properties of any message of ours (an event, a receipt, a command, a reply):
/// persistent JSON named by `message_id` and `kind`, from the service `app_id`, published by
/// the broker user `publisher`.
pub fn message_properties(
    message_id: &str,
    kind: &str,
    app_id: &str,
    publisher: &str,
) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(contract::wire::PERSISTENT)
        .with_content_type(ShortString::from(contract::wire::CONTENT_TYPE))
        .with_message_id(ShortString::from(message_id))
        .with_type(ShortString::from(kind))
        .with_app_id(ShortString::from(app_id))
        .with_user_id(ShortString::from(publisher))
}

/// Persistent properties naming the broker user `publisher` as `user_id`: for bodies that are
/// not events of ours (tests, malformed messages).
pub fn persistent(publisher: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(contract::wire::PERSISTENT)
        .with_user_id(ShortString::from(publisher))
}

/// The `user_id` a message was published with, if any.
pub fn publisher_of(properties: &BasicProperties) -> Option<String> {
    properties.user_id().as_ref().map(|u| u.to_string())
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// `""` for the default exchange (the routing key is then a queue name).
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: BasicProperties,
}

/// What the broker answered about one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Taken by at least one queue and confirmed.
    Confirmed,
    /// No queue took it (every message is published `mandatory`); the reply text says why.
    Returned(String),
    /// The broker refused it.
    Refused,
}

/// The outcome of [`publish_confirmed`]: the broker's answer for each message, in order, as far
/// as it came. `error` is set when the channel failed first; the messages after the last
/// answer may or may not have reached a queue.
#[derive(Debug)]
pub struct Published {
    pub answers: Vec<Answer>,
    pub error: Option<lapin::Error>,
}

/// Why [`Published::require_all`] failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("RabbitMQ: {0}")]
    Broker(#[from] lapin::Error),
    #[error("no queue took a message ({0})")]
    Unroutable(String),
    #[error("the broker refused a message")]
    Refused,
}

impl Published {
    /// Ok with the number of messages when every one was confirmed, else the first problem.
    pub fn require_all(self) -> Result<usize, PublishError> {
        if let Some(e) = self.error {
            return Err(e.into());
        }
        for answer in &self.answers {
            match answer {
                Answer::Confirmed => {}
                Answer::Returned(why) => return Err(PublishError::Unroutable(why.clone())),
                Answer::Refused => return Err(PublishError::Refused),
            }
        }
        Ok(self.answers.len())
    }
}

/// Publishes every message `mandatory` (nothing we publish may vanish silently), all before
/// awaiting any confirm (pipelined), then collects the broker's answers in order. `ch` must be
/// in confirm mode. The one publishing loop of the system: the relay, replays, dead-letter
/// requeues, the consumer's retry and dead-letter copies, the benchmark and the tests use it.
/// (A `Vec`, not an iterator: a borrowing closure held across the awaits makes the future
/// unspawnable.)
pub async fn publish_confirmed<'a>(ch: &Channel, messages: Vec<Outgoing<'a>>) -> Published {
    publish_all(ch, messages).await.answers().await
}

/// Messages sent and their confirms not yet awaited: [`publish_all`]'s result. A caller that
/// overlaps publishing with other work (the relay claims its next batch meanwhile) collects the
/// answers later with [`Sent::answers`].
pub struct Sent {
    pending: Vec<PublisherConfirm>,
    error: Option<lapin::Error>,
}

/// The first half of [`publish_confirmed`]: sends every message `mandatory`, awaiting no
/// confirm. Stops at the first message the channel would not take.
pub async fn publish_all<'a>(ch: &Channel, messages: Vec<Outgoing<'a>>) -> Sent {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut pending = Vec::with_capacity(messages.len());
    let mut error = None;
    for m in messages {
        match ch
            .basic_publish(m.exchange, m.routing_key, options, m.body, m.properties)
            .await
        {
            Ok(confirm) => pending.push(confirm),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    Sent { pending, error }
}

impl Sent {
    /// The broker's answers, in order, as far as they came.
    pub async fn answers(self) -> Published {
        let Sent { pending, mut error } = self;
        let mut answers = Vec::with_capacity(pending.len());
        for confirm in pending {
            match confirm.await {
                Ok(Confirmation::Ack(None)) => answers.push(Answer::Confirmed),
                Ok(Confirmation::Ack(Some(returned))) => {
                    answers.push(Answer::Returned(returned.reply_text.to_string()))
                }
                Ok(Confirmation::Nack(_) | Confirmation::NotRequested) => {
                    answers.push(Answer::Refused)
                }
                Err(e) => {
                    error.get_or_insert(e);
                    break;
                }
            }
        }
        Published { answers, error }
    }
}

/// Messages ready in `queue` (a passive declare: exact, but unacked messages are not counted).
/// A passive declare of a missing queue closes the channel, so callers give it one of its own.
pub async fn queue_depth(ch: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    Ok(queue_counts(ch, queue).await?.0)
}

/// Messages ready in `queue` and consumers attached to it, as [`queue_depth`] reads them.
pub async fn queue_counts(ch: &Channel, queue: &str) -> Result<(u32, u32), lapin::Error> {
    let declared = ch
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((declared.message_count(), declared.consumer_count()))
}

/// [`queue_depth`] on a connection of its own, for callers that hold none.
pub async fn ready_messages(url: &str, queue: &str) -> Result<u32, lapin::Error> {
    let conn = connect(url, "queue depth").await?;
    let result = async {
        let ch = conn.create_channel().await?;
        let depth = queue_depth(&ch, queue).await?;
        // Closed before the connection, or lapin logs a spurious "Connection error".
        ch.close(200, "done").await?;
        Ok(depth)
    }
    .await;
    conn.close(200, "done").await.ok();
    result
}

/// A header value as AMQP text.
pub fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_owned()))
}

/// The headers of a message (empty when it has none).
pub fn headers_of(properties: &BasicProperties) -> FieldTable {
    properties.headers().clone().unwrap_or_default()
}

/// A header read as an integer, whichever integer type the publisher used.
pub fn header_int(headers: &FieldTable, key: &str) -> Option<i64> {
    match headers.inner().get(key)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// A header shown as text: strings as they are, numbers in decimal, anything else debug-printed.
pub fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    headers.inner().get(key).map(show_value)
}

/// An AMQP value for people.
pub fn show_value(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => s.to_string(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_user_is_the_urls_own_and_never_guessed() {
        assert_eq!(
            broker_user_of("amqp://portal%2Drelay:pw@127.0.0.1:5672/%2f").ok(),
            Some("portal-relay".to_owned())
        );
        assert_eq!(
            broker_user_of("amqp://a:pw@n1:5672/v,amqp://b:pw@n2:5672/v").ok(),
            Some("a".to_owned()),
            "a cluster is reached as its first URL's user"
        );
        for nameless in [
            "amqp://127.0.0.1:5672/%2f",
            "amqp://:s3cret@127.0.0.1:5672/%2f",
            "not a url",
        ] {
            let e = broker_user_of(nameless).unwrap_err();
            let said = e.to_string();
            assert!(said.contains("names no broker user"), "{said}");
            assert!(
                !said.contains("s3cret"),
                "the password stays hidden: {said}"
            );
            assert_eq!(broker_user(nameless), "", "never `guest`");
        }
    }
}
