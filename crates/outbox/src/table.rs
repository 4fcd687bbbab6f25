//! Which outbox a relay moves: its table, its wake-up flag, the channel its writers notify on,
//! who its messages come from, and what must exist on the broker before the first publish.
//! Each is SQL built once, so the relay's loop is the same code for every outbox.

use contract::topology::Declaration;

/// An outbox table and how its rows become messages. See [`Table::messages`] for the shape
/// every outbox but the auth-service's event store has.
#[derive(Debug, Clone)]
pub struct Table {
    /// For log lines: `auth_db.outbox`.
    pub name: &'static str,
    /// The AMQP `app-id` of every message (the producing service).
    pub app_id: &'static str,
    /// The connection's name in the broker's management UI.
    pub connection_name: &'static str,
    /// The channel writers notify on while the relay sleeps (the table's trigger).
    pub notify_channel: &'static str,
    /// Declared on connecting (unless the setup declared them); the last must be a queue that
    /// then exists, checked when a declaration fails on a cluster with a node down.
    pub topology: Vec<Declaration>,
    /// The queue checked when declaring fails (see `platform::amqp::declare_on`).
    pub check_queue: String,
    /// `$1` = batch size; returns `seq, message_id, exchange, routing_key, message_type, body,
    /// trace_id`, locked `FOR UPDATE SKIP LOCKED`, in `seq` order.
    pub(crate) claim: String,
    /// `$1` = the confirmed `seq`s.
    pub(crate) mark: String,
    /// Returns `(count, oldest created_at)` of unpublished rows.
    pub(crate) backlog: String,
    /// The table's SQL name (its cleanup: `crate::cleanup`).
    pub(crate) relation: String,
    /// `$1` = waiting.
    pub(crate) declare_waiting: String,
    /// Writes one message (a table of [`Table::messages`]' shape only).
    insert: Option<String>,
}

/// One message to write to an outbox of [`Table::messages`]' shape, in the caller's
/// transaction; the relay publishes it after the commit.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    /// Its AMQP `message-id`; a message sent again keeps its id (the receiver's dedup key).
    pub id: uuid::Uuid,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    /// Its AMQP `type`.
    pub kind: &'a str,
    pub body: &'a serde_json::Value,
}

impl Table {
    /// An outbox of the shape `seq bigserial, message_id uuid, exchange text, routing_key text,
    /// message_type text, body jsonb, trace_id text, created_at timestamptz, published_at
    /// timestamptz`, with a one-row wake-up table `wakeup (waiting boolean)` and a trigger
    /// notifying `notify_channel` while it is true (`crates/appointment-service/migrations`
    /// and `auth_db`'s `message_outbox` are both made so).
    pub fn messages(
        name: &'static str,
        table: &str,
        wakeup: &str,
        notify_channel: &'static str,
        app_id: &'static str,
        topology: Vec<Declaration>,
        check_queue: &str,
    ) -> Self {
        let mut table_spec = Self::custom(
            name,
            table,
            "message_id, exchange, routing_key, message_type",
            wakeup,
            notify_channel,
            app_id,
            topology,
            check_queue,
        );
        table_spec.insert = Some(format!(
            "INSERT INTO {table} (message_id, exchange, routing_key, message_type, body, trace_id) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        ));
        table_spec
    }

    /// Writes `message` in `conn`'s transaction, with the current request's trace id. Only for
    /// a table of [`Table::messages`]' shape (an error otherwise).
    pub async fn enqueue(
        &self,
        conn: &mut sqlx::PgConnection,
        message: &Message<'_>,
    ) -> Result<(), sqlx::Error> {
        let Some(insert) = &self.insert else {
            return Err(sqlx::Error::Protocol(format!(
                "{} is not an outbox of messages",
                self.name
            )));
        };
        sqlx::query(insert)
            .bind(message.id)
            .bind(message.exchange)
            .bind(message.routing_key)
            .bind(message.kind)
            .bind(sqlx::types::Json(message.body))
            .bind(platform::trace::current())
            .execute(conn)
            .await?;
        Ok(())
    }

    /// An outbox whose rows give the message's id, exchange, routing key and type by
    /// `columns` (SQL expressions named `message_id, exchange, routing_key, message_type`); the
    /// other columns are as in [`Table::messages`].
    #[allow(clippy::too_many_arguments)]
    pub fn custom(
        name: &'static str,
        table: &str,
        columns: &str,
        wakeup: &str,
        notify_channel: &'static str,
        app_id: &'static str,
        topology: Vec<Declaration>,
        check_queue: &str,
    ) -> Self {
        Self {
            name,
            app_id,
            connection_name: name,
            notify_channel,
            topology,
            check_queue: check_queue.to_owned(),
            claim: format!(
                "SELECT seq, {columns}, body::text AS body, trace_id FROM {table} \
                 WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
            ),
            mark: format!("UPDATE {table} SET published_at = now() WHERE seq = ANY($1)"),
            backlog: format!(
                "SELECT (SELECT count(*) FROM {table} WHERE published_at IS NULL), \
                        (SELECT created_at FROM {table} WHERE published_at IS NULL \
                         ORDER BY seq LIMIT 1)"
            ),
            relation: table.to_owned(),
            declare_waiting: format!(
                "UPDATE {wakeup} SET waiting = $1 WHERE waiting IS DISTINCT FROM $1"
            ),
            insert: None,
        }
    }

    /// The connection's name in the management UI.
    pub fn with_connection_name(mut self, name: &'static str) -> Self {
        self.connection_name = name;
        self
    }
}
