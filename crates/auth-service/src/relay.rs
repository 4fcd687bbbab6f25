//! The auth-service's two outboxes, published by the shared relay (`crates/outbox`), which also
//! removes their published rows: [`user_events`] (`outbox`, each row written with its copy in
//! the event store) to `user.events`, and [`messages`], the saga's commands and re-sent
//! snapshots (`message_outbox`) to wherever each row says.

use contract::topology::{self, ConsumerQueues};
pub use outbox::{
    batch, claim_and_send, pace, Backlog, Cleaner, CleanupConfig, CleanupMetrics, InFlight, Relay,
    RelayConfig, RelayError, RelayMetrics, Table,
};
use sqlx::PgPool;

/// The channel PostgreSQL notifies on when user events commit (see the migrations' trigger).
pub const NOTIFY_CHANNEL: &str = "outbox_events";
/// The channel PostgreSQL notifies on when saga messages commit.
pub const MESSAGE_NOTIFY_CHANNEL: &str = "message_outbox";

/// The whole topology, so every consumer's queue exists before the first publish even if it
/// has never run.
fn topology() -> (Vec<topology::Declaration>, String) {
    let queues = ConsumerQueues::for_consumer(topology::USER_SERVICE);
    (
        topology::declarations(std::slice::from_ref(&queues)),
        queues.main,
    )
}

/// `auth_db.outbox`: every user event, routed by its `eventType` on `user.events`.
pub fn user_events() -> Table {
    let (declarations, main) = topology();
    Table::custom(
        "auth_db.outbox",
        "outbox",
        &format!(
            "event_id AS message_id, '{}' AS exchange, event_type AS routing_key, \
             event_type AS message_type",
            topology::EXCHANGE
        ),
        "relay_wakeup",
        NOTIFY_CHANNEL,
        contract::event::SOURCE,
        declarations,
        &main,
    )
    .with_connection_name("auth-service relay")
}

/// `auth_db.message_outbox`: the saga's commands and snapshots sent again to a late consumer.
pub fn messages() -> Table {
    let (declarations, main) = topology();
    Table::messages(
        "auth_db.message_outbox",
        "message_outbox",
        "message_relay_wakeup",
        MESSAGE_NOTIFY_CHANNEL,
        contract::event::SOURCE,
        declarations,
        &main,
    )
    .with_connection_name("auth-service messages")
}

/// [`messages`], built once: where the saga writes its messages.
pub static MESSAGES: std::sync::LazyLock<Table> = std::sync::LazyLock::new(messages);

/// The relay of user events.
pub fn relay(pool: PgPool, amqp_url: String, config: RelayConfig) -> Relay {
    Relay::new(user_events(), pool, amqp_url, config)
}

/// What waits in the user outbox.
pub async fn outbox_backlog(pool: &PgPool) -> Result<Backlog, sqlx::Error> {
    outbox::backlog(&user_events(), pool).await
}

/// Sets the user outbox's wake-up flag (tests and the relay).
pub async fn declare_waiting(pool: &PgPool, waiting: bool) -> Result<(), sqlx::Error> {
    outbox::declare_waiting(&user_events(), pool, waiting).await
}

/// A connection and a confirm channel for the user outbox (tests run the relay step by step).
pub async fn open_channel(
    url: &str,
    declare_topology: bool,
) -> Result<(lapin::Connection, lapin::Channel), lapin::Error> {
    outbox::open_channel(&user_events(), url, declare_topology).await
}

/// One batch of the user outbox, published and marked (tests).
pub async fn publish_batch(
    pool: &PgPool,
    channel: &lapin::Channel,
    batch_size: i64,
    publisher: &str,
) -> Result<usize, RelayError> {
    outbox::publish_batch(&user_events(), pool, channel, batch_size, publisher).await
}
