//! The figures of the synchronisation an operator watches: what waits in the outbox and how
//! old it is, and for each consumer its queue (messages ready, consumers attached), what waits
//! in its retry queues and what is dead-lettered. Read-only and cheap (one indexed query, one
//! passive declare per queue), so a page may ask for them on every load.

use crate::OpsError;
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
            consumer: c
                .main
                .strip_suffix(".user-events")
                .unwrap_or(&c.main)
                .to_owned(),
            queue: counts(&conn, &c.main).await,
            retrying,
            dead_letter: counts(&conn, &c.dead_letter).await,
            required: Some(*required),
        });
    }
    conn.close(200, "done").await.ok();
    Ok(out)
}
