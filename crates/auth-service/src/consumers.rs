//! The consumer registry and the receipts: which consumers of user events exist (registered by
//! the setup and `portal consumer add`, never a list in code), and, per consumer and user, the
//! highest version it reported applied. Every operator view and the offboarding saga read these.
//!
//! A receipt is believed only when the broker user that published it (the AMQP `user_id`, which
//! RabbitMQ checks against the connection) is the one the consumer is registered with; anything
//! else is refused ([`Verdict`]) and never recorded.

use chrono::{DateTime, Utc};
use contract::api::{ConsumerPropagation, Propagation};
use contract::control::Receipt;
use contract::{Timestamp, UserId};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// A consumer of user events as registered.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Registered {
    pub name: String,
    pub required: bool,
    pub broker_user: String,
    pub registered_at: DateTime<Utc>,
}

/// Registers `name` (or changes how it is registered); when it first appeared is kept.
pub async fn register(
    db: impl PgExecutor<'_>,
    name: &str,
    required: bool,
    broker_user: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO consumers (name, required, broker_user) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET required = EXCLUDED.required, \
             broker_user = EXCLUDED.broker_user, updated_at = now() \
         WHERE (consumers.required, consumers.broker_user) \
             IS DISTINCT FROM (EXCLUDED.required, EXCLUDED.broker_user)",
    )
    .bind(name)
    .bind(required)
    .bind(broker_user)
    .execute(db)
    .await?;
    Ok(())
}

/// Removes `name` and its receipts; false when it was not registered.
pub async fn unregister(db: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM consumer_versions WHERE consumer = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let gone = sqlx::query("DELETE FROM consumers WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(gone == 1)
}

/// Every registered consumer, by name.
pub async fn registered(db: impl PgExecutor<'_>) -> Result<Vec<Registered>, sqlx::Error> {
    sqlx::query_as("SELECT name, required, broker_user, registered_at FROM consumers ORDER BY name")
        .fetch_all(db)
        .await
}

/// The registry as the receipts' check reads it: held in memory and read again every few
/// seconds, so a receipt costs one statement (the auth-service records one per consumer batch).
/// A name it does not hold makes it read again at once, so a consumer registered a moment ago is
/// believed without waiting for the next refresh (a receipt judged unregistered is dropped).
#[derive(Debug, Default)]
pub struct RegistryCache {
    held: tokio::sync::Mutex<Option<Held>>,
}

#[derive(Debug)]
struct Held {
    at: std::time::Instant,
    broker_users: std::collections::HashMap<String, String>,
}

impl RegistryCache {
    /// How long the registry is believed without reading it again.
    const FRESH: std::time::Duration = std::time::Duration::from_secs(5);

    /// The broker user `name` is registered with, if it is registered.
    pub async fn broker_user(
        &self,
        db: &PgPool,
        name: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        let mut held = self.held.lock().await;
        let stale = match held.as_ref() {
            None => true,
            Some(h) => h.at.elapsed() >= Self::FRESH || !h.broker_users.contains_key(name),
        };
        if stale {
            let broker_users = registered(db)
                .await?
                .into_iter()
                .map(|c| (c.name, c.broker_user))
                .collect();
            *held = Some(Held {
                at: std::time::Instant::now(),
                broker_users,
            });
        }
        Ok(held
            .as_ref()
            .and_then(|h| h.broker_users.get(name).cloned()))
    }
}

/// What became of a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded; these users' versions went up, and `woken` offboardings waiting for them are
    /// due now.
    Recorded { users: Vec<Uuid>, woken: i64 },
    /// No consumer of that name is registered.
    UnknownConsumer(String),
    /// Published by another broker user than the consumer's: ignored.
    WrongPublisher {
        consumer: String,
        expected: String,
        got: Option<String>,
    },
}

/// Records `receipt`, published by the broker user `publisher`, when that is the consumer's
/// registered one: per user, the version only ever goes up. In the same statement, an
/// offboarding waiting for this version becomes due now, whether or not the other required
/// consumers' receipts are in: receipts are recorded several at a time, and two last receipts
/// committed at the same moment would each miss the other's (seen: a tenth of a thousand
/// offboardings then waited for their deadline). Due now, the saga is looked at after this
/// commit, and after any runner that holds it, so it always sees this receipt; it costs a
/// second look for a saga whose other receipts are still on their way.
pub async fn record(
    db: &PgPool,
    registry: &RegistryCache,
    receipt: &Receipt,
    publisher: Option<&str>,
) -> Result<Verdict, sqlx::Error> {
    let Some(expected) = registry.broker_user(db, &receipt.consumer).await? else {
        return Ok(Verdict::UnknownConsumer(receipt.consumer.clone()));
    };
    if publisher != Some(expected.as_str()) {
        return Ok(Verdict::WrongPublisher {
            consumer: receipt.consumer.clone(),
            expected,
            got: publisher.map(str::to_owned),
        });
    }
    let ids: Vec<Uuid> = receipt.users.iter().map(|u| u.user_id.0).collect();
    let versions: Vec<i64> = receipt.users.iter().map(|u| u.user_version).collect();
    let changed: Vec<DateTime<Utc>> = receipt
        .users
        .iter()
        .map(|u| u.changed_at.as_datetime())
        .collect();
    // Receipts are recorded one after another, each in a transaction of its own: waiting for
    // each commit's WAL flush held them to a few dozen a second on this machine's disk (a
    // backlog of seconds during 1,000 offboardings). A receipt lost in a crash of PostgreSQL
    // before the flush (a fraction of a second's worth) is made good by the user's next change,
    // or by the snapshot an offboarding sends again.
    //
    // Planned for its own arguments each time: a plan cached while `consumer_versions` was
    // small (a new install, the benchmark) scans it whole for each user of every receipt.
    let mut tx = db.begin().await?;
    sqlx::query(
        "SELECT set_config('synchronous_commit', 'off', true), \
                set_config('plan_cache_mode', 'force_custom_plan', true)",
    )
    .execute(&mut *tx)
    .await?;
    // The newest entry per user first (a receipt holds one per user; a hand-made one may not).
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "WITH moved AS ( \
             INSERT INTO consumer_versions AS v \
                 (consumer, user_id, user_version, changed_at, applied_at) \
             SELECT DISTINCT ON (id) $1, id, version, changed, $5 \
             FROM UNNEST($2::uuid[], $3::int8[], $4::timestamptz[]) AS r (id, version, changed) \
             ORDER BY id, version DESC \
             ON CONFLICT (consumer, user_id) DO UPDATE SET user_version = EXCLUDED.user_version, \
                 changed_at = EXCLUDED.changed_at, applied_at = EXCLUDED.applied_at \
             WHERE EXCLUDED.user_version > v.user_version \
             RETURNING user_id, user_version), \
         woken AS ( \
             UPDATE offboardings o SET due_at = now() FROM moved m \
             WHERE o.state = 'awaiting_receipts' AND o.user_id = m.user_id \
               AND m.user_version >= o.target_version \
             RETURNING 1) \
         SELECT user_id, (SELECT count(*) FROM woken) FROM moved",
    )
    .bind(&receipt.consumer)
    .bind(&ids)
    .bind(&versions)
    .bind(&changed)
    .bind(receipt.applied_at.as_datetime())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let woken = rows.first().map_or(0, |(_, n)| *n);
    Ok(Verdict::Recorded {
        users: rows.into_iter().map(|(id, _)| id).collect(),
        woken,
    })
}

#[derive(sqlx::FromRow)]
struct PropagationRow {
    name: String,
    required: bool,
    user_version: Option<i64>,
    changed_at: Option<DateTime<Utc>>,
    applied_at: Option<DateTime<Utc>>,
}

/// Each registered consumer's receipt for `user`, against `current` (the user's version now).
pub async fn receipts_of(
    db: impl PgExecutor<'_>,
    user: Uuid,
    current: i64,
) -> Result<Vec<ConsumerPropagation>, sqlx::Error> {
    let rows: Vec<PropagationRow> = sqlx::query_as(
        "SELECT c.name, c.required, v.user_version, v.changed_at, v.applied_at \
         FROM consumers c LEFT JOIN consumer_versions v \
             ON v.consumer = c.name AND v.user_id = $1 \
         ORDER BY c.name",
    )
    .bind(user)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ConsumerPropagation {
            consumer: r.name,
            required: r.required,
            current: r.user_version.is_some_and(|v| v >= current),
            user_version: r.user_version,
            delay_seconds: r
                .applied_at
                .zip(r.changed_at)
                .map(|(applied, changed)| seconds_between(changed, applied)),
            applied_at: r.applied_at.map(Timestamp::from),
        })
        .collect())
}

/// `to - from` in seconds, never negative (the clocks of two machines may disagree a little).
pub fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_microseconds().unwrap_or(0).max(0) as f64) / 1e6
}

/// How far `user`'s current version has reached; `None` for an unknown user.
pub async fn propagation(db: &PgPool, user: Uuid) -> Result<Option<Propagation>, sqlx::Error> {
    let row: Option<(i64, bool, DateTime<Utc>)> =
        sqlx::query_as("SELECT user_version, is_active, updated_at FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(db)
            .await?;
    let Some((version, is_active, changed_at)) = row else {
        return Ok(None);
    };
    Ok(Some(Propagation {
        user_id: UserId(user),
        user_version: version,
        is_active,
        changed_at: changed_at.into(),
        consumers: receipts_of(db, user, version).await?,
    }))
}

/// The required consumers that have not confirmed `version` of `user`.
pub async fn unconfirmed(
    db: impl PgExecutor<'_>,
    user: Uuid,
    version: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.name FROM consumers c LEFT JOIN consumer_versions v \
             ON v.consumer = c.name AND v.user_id = $1 \
         WHERE c.required AND (v.user_version IS NULL OR v.user_version < $2) \
         ORDER BY c.name",
    )
    .bind(user)
    .bind(version)
    .fetch_all(db)
    .await
}

/// Per required consumer, the deactivations written more than `after` ago (and since the
/// consumer was registered, within the last 30 days) that it has not confirmed: what the alert
/// on unconfirmed deactivations watches.
pub async fn unconfirmed_deactivations(
    db: &PgPool,
    after: std::time::Duration,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.name, count(u.id) FROM consumers c \
         LEFT JOIN users u ON NOT u.is_active \
             AND u.updated_at > greatest(c.registered_at, now() - interval '30 days') \
             AND u.updated_at < now() - make_interval(secs => $1) \
             AND NOT EXISTS (SELECT 1 FROM consumer_versions v \
                 WHERE v.consumer = c.name AND v.user_id = u.id \
                   AND v.user_version >= u.user_version) \
         WHERE c.required GROUP BY c.name ORDER BY c.name",
    )
    .bind(after.as_secs_f64())
    .fetch_all(db)
    .await
}
