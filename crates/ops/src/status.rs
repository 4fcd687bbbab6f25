//! The figures of the synchronisation an operator watches: what waits in the outbox and how
//! old it is, and for each consumer its queue (messages ready, consumers attached), what waits
//! in its retry queues and what is dead-lettered, and its last receipt (when, and its lag).
//! Read-only and cheap enough for every load of a page (one indexed query for the outbox, one
//! passive declare per queue, one pass over the receipts' table for the last receipts).

use crate::OpsError;
use chrono::{DateTime, Utc};
use contract::sync_status::{ConsumerFigures, OutboxFigures, QueueCounts};
use contract::topology::ConsumerQueues;
use lapin::Connection;
use platform::secret::redact_url;
use sqlx::PgPool;

/// Reads the outbox's backlog (the relay's own query, which its metrics serve too).
pub async fn outbox(auth: &PgPool) -> Result<OutboxFigures, OpsError> {
    let backlog = auth_service::relay::outbox_backlog(auth)
        .await
        .map_err(|e| {
            if platform::db::is_unavailable(&e) {
                OpsError::Unreachable(format!("auth_db: {e}"))
            } else {
                OpsError::Failed(anyhow::anyhow!("cannot read the outbox: {e}"))
            }
        })?;
    Ok(OutboxFigures {
        unpublished: backlog.unpublished,
        oldest_unpublished_at: backlog.oldest.map(Into::into),
        oldest_unpublished_age_seconds: backlog.oldest_age_seconds(),
    })
}

/// The registered consumers (`auth_db.consumers`: the setup's and `portal consumer add`'s),
/// each with its queues and whether it is required: what every operator view lists.
pub async fn registered(auth: &PgPool) -> Result<Vec<(ConsumerQueues, bool)>, OpsError> {
    let registered = auth_service::consumers::registered(auth)
        .await
        .map_err(|e| OpsError::Unreachable(format!("auth_db: {e}")))?;
    Ok(registered
        .into_iter()
        .map(|c| (ConsumerQueues::for_consumer(&c.name), c.required))
        .collect())
}

/// The counts of `queue` by a passive declare on a channel of its own (a missing queue closes
/// the channel it was asked on).
async fn counts(conn: &Connection, queue: &str) -> QueueCounts {
    let declared = async {
        let ch = conn.create_channel().await?;
        let counts = platform::amqp::queue_counts(&ch, queue).await?;
        ch.close(200, "done").await.ok();
        Ok::<_, lapin::Error>(counts)
    }
    .await;
    match declared {
        Ok((messages, consumers)) => QueueCounts {
            name: queue.to_owned(),
            messages: Some(messages),
            consumers: Some(consumers),
            problem: None,
        },
        Err(e) => QueueCounts {
            name: queue.to_owned(),
            messages: None,
            consumers: None,
            problem: Some(match e {
                lapin::Error::ProtocolError(p) => p.to_string(),
                other => other.to_string(),
            }),
        },
    }
}

/// The queues of each of `consumers` (and whether it is a required one), read as `amqp_url`'s
/// user.
pub async fn consumers(
    amqp_url: &str,
    consumers: &[(ConsumerQueues, bool)],
) -> Result<Vec<ConsumerFigures>, OpsError> {
    let conn = platform::amqp::connect(amqp_url, "portal sync status")
        .await
        .map_err(|e| OpsError::Unreachable(format!("RabbitMQ at {}: {e}", redact_url(amqp_url))))?;
    let mut out = Vec::new();
    for (c, required) in consumers {
        let mut retrying = 0;
        for retry in &c.retries {
            retrying += counts(&conn, &retry.name).await.messages.unwrap_or(0);
        }
        out.push(ConsumerFigures {
            consumer: c.consumer().to_owned(),
            queue: counts(&conn, &c.main).await,
            retrying,
            dead_letter: counts(&conn, &c.dead_letter).await,
            required: Some(*required),
            last_receipt_at: None,
            last_receipt_lag_ms: None,
        });
    }
    conn.close(200, "done").await.ok();
    Ok(out)
}

/// A consumer's last receipt as `auth_db` recorded it: when that batch was applied, and the
/// largest delay in it from a change in `auth_db` to its apply in the copy. The same figure a
/// consumer of this repository reports in its readiness (`lastBatchLagMs`), here for every
/// registered consumer, those that have no readiness an operator can ask included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastReceipt {
    pub consumer: String,
    pub applied_at: DateTime<Utc>,
    pub lag_ms: u64,
}

/// The last receipt of each registered consumer that has sent one (`auth_db.consumer_versions`:
/// each user's row holds the batch that last raised its version, so the rows of the newest
/// `applied_at` are the last receipt that changed anything).
pub async fn last_receipts(auth: &PgPool) -> Result<Vec<LastReceipt>, OpsError> {
    let rows: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
        "WITH last AS ( \
             SELECT v.consumer, max(v.applied_at) AS at FROM consumer_versions v \
             JOIN consumers c ON c.name = v.consumer GROUP BY v.consumer) \
         SELECT l.consumer, l.at, \
             max(greatest(extract(epoch FROM v.applied_at - v.changed_at), 0) * 1000)::int8 \
         FROM last l JOIN consumer_versions v ON v.consumer = l.consumer AND v.applied_at = l.at \
         GROUP BY l.consumer, l.at ORDER BY l.consumer",
    )
    .fetch_all(auth)
    .await
    .map_err(|e| {
        if platform::db::is_unavailable(&e) {
            OpsError::Unreachable(format!("auth_db: {e}"))
        } else {
            OpsError::Failed(anyhow::anyhow!("cannot read the receipts: {e}"))
        }
    })?;
    Ok(rows
        .into_iter()
        .map(|(consumer, applied_at, lag_ms)| LastReceipt {
            consumer,
            applied_at,
            lag_ms: u64::try_from(lag_ms).unwrap_or(0),
        })
        .collect())
}
