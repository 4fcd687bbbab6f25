//! RabbitMQ connection on the tokio runtime, and the user-event topology.
//!
//! Both producer and consumer declare the whole topology at start (declarations are idempotent),
//! so the user-service's queue exists before the first event is published even if the
//! user-service has never run.

use contract::topology::{self, ConsumerQueues, RetryQueue};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// Opens a connection named `name` (shown in the management UI) that runs on tokio.
pub async fn connect(url: &str, name: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name(name.into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, props).await
}

fn args(pairs: &[(&str, &str)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in pairs {
        table.insert(
            ShortString::from(k.to_string()),
            AMQPValue::LongString(LongString::from(v.to_string())),
        );
    }
    table
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares a durable quorum queue: replicated on a cluster, and it keeps every message on disk.
pub async fn declare_quorum_queue(ch: &Channel, name: &str) -> Result<(), lapin::Error> {
    ch.queue_declare(name, durable(), args(&[("x-queue-type", "quorum")]))
        .await
        .map(|_| ())
}

/// Declares the exchange, its alternate exchange with the unrouted queue, and for each consumer
/// its main queue (bound with `user.#`), its retry queues and its dead-letter queue.
pub async fn declare_topology(
    ch: &Channel,
    consumers: &[ConsumerQueues],
) -> Result<(), lapin::Error> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(
        topology::UNROUTED_EXCHANGE,
        ExchangeKind::Fanout,
        durable_exchange,
        FieldTable::default(),
    )
    .await?;
    declare_quorum_queue(ch, topology::UNROUTED_QUEUE).await?;
    ch.queue_bind(
        topology::UNROUTED_QUEUE,
        topology::UNROUTED_EXCHANGE,
        "",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        topology::EXCHANGE,
        ExchangeKind::Topic,
        durable_exchange,
        args(&[("alternate-exchange", topology::UNROUTED_EXCHANGE)]),
    )
    .await?;
    for queues in consumers {
        declare_quorum_queue(ch, &queues.main).await?;
        for retry in &queues.retries {
            declare_retry_queue(ch, retry, &queues.main).await?;
        }
        declare_quorum_queue(ch, &queues.dead_letter).await?;
        ch.queue_bind(
            &queues.main,
            topology::EXCHANGE,
            topology::ALL_USER_EVENTS,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// A classic durable queue that holds each message `retry.delay`, then dead-letters it to
/// `main` through the default exchange. Nobody consumes it: the TTL is the timer.
async fn declare_retry_queue(
    ch: &Channel,
    retry: &RetryQueue,
    main: &str,
) -> Result<(), lapin::Error> {
    let mut table = args(&[
        ("x-queue-type", "classic"),
        ("x-dead-letter-exchange", ""),
        ("x-dead-letter-routing-key", main),
    ]);
    let ttl = i64::try_from(retry.delay.as_millis()).unwrap_or(i64::MAX);
    table.insert(
        ShortString::from("x-message-ttl"),
        AMQPValue::LongLongInt(ttl),
    );
    ch.queue_declare(&retry.name, durable(), table)
        .await
        .map(|_| ())
}

/// Connects, declares the topology for `consumers`, and closes: used by `portal up`.
pub async fn ensure_topology(url: &str, consumers: &[ConsumerQueues]) -> Result<(), lapin::Error> {
    let conn = connect(url, "portal-topology").await?;
    let ch = conn.create_channel().await?;
    declare_topology(&ch, consumers).await?;
    conn.close(200, "topology declared").await.ok();
    Ok(())
}
