//! After the faults: waiting, with deadlines, for every saga to finish and then for the system
//! to come to rest (every outbox published, every queue empty, for a while), restarting any
//! part that died by itself meanwhile (a finding); and the `--inject-duplicate` fault.

use crate::env::ChaosEnv;
use crate::fleet::Fleet;
use crate::progress::Progress;
use anyhow::{bail, Context};
use contract::topology::{self, ConsumerQueues, ControlQueue};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long "every outbox published, every queue empty" must hold: longer than RabbitMQ's
/// default statistics interval (5 s), so the management API's count of unacked messages has
/// been refreshed at least once while everything looked quiet.
const QUIET_FOR: Duration = Duration::from_secs(6);
/// How often a wait says what it waits for.
const SAY_EVERY: Duration = Duration::from_secs(5);

/// Restarts what exited by itself, saying so.
async fn restart_exited(fleet: &mut Fleet, progress: &Progress) -> anyhow::Result<()> {
    for exit in fleet.restart_exited().await? {
        progress.log(format_args!("UNEXPECTED: {exit}; restarted"));
    }
    Ok(())
}

/// Waits until no saga is running (each completed, needs attention or, wrongly, cancelled);
/// returns how long it took.
pub async fn wait_for_sagas(
    auth_pool: &PgPool,
    fleet: &mut Fleet,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut said = Instant::now();
    loop {
        restart_exited(fleet, progress).await?;
        let (running, stalled): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE stalled_reason IS NOT NULL) \
             FROM offboardings WHERE state IN ('awaiting_receipts', 'resolving_appointments')",
        )
        .fetch_one(auth_pool)
        .await
        .context("counting running offboardings")?;
        if running == 0 {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            let late: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(
                "SELECT id, state, stalled_reason FROM offboardings \
                 WHERE state IN ('awaiting_receipts', 'resolving_appointments') \
                 ORDER BY created_at LIMIT 3",
            )
            .fetch_all(auth_pool)
            .await
            .context("reading running offboardings")?;
            let late: Vec<String> = late
                .iter()
                .map(|(id, state, why)| match why {
                    Some(why) => format!("{id} {state}, stalled: {why}"),
                    None => format!("{id} {state}"),
                })
                .collect();
            bail!(
                "after {timeout:?}, {running} offboardings still running ({stalled} stalled), \
                 e.g. {}",
                late.join("; ")
            );
        }
        if said.elapsed() >= SAY_EVERY {
            said = Instant::now();
            progress.log(format_args!(
                "waiting for {running} running offboardings ({stalled} stalled)"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The queues that must be empty at rest: each consumer's user events and each control queue.
fn queues() -> Vec<String> {
    vec![
        ConsumerQueues::for_consumer(topology::USER_SERVICE).main,
        ConsumerQueues::for_consumer(topology::APPOINTMENT_SERVICE).main,
        ControlQueue::of(topology::AUTH_SERVICE).main,
        ControlQueue::of(topology::APPOINTMENT_SERVICE).main,
    ]
}

/// One broker connection for the run's look-ups (ready messages by passive declares), kept
/// open across them: opened again only after it failed.
pub struct Lookout {
    amqp_url: String,
    open: Option<(lapin::Connection, lapin::Channel)>,
}

impl Lookout {
    pub fn new(amqp_url: &str) -> Self {
        Self {
            amqp_url: amqp_url.to_owned(),
            open: None,
        }
    }

    /// Ready messages of each queue, exactly (every one must exist: a passive declare of a
    /// missing queue closes the channel, and the connection is opened again next time).
    pub async fn ready(&mut self, queues: &[String]) -> anyhow::Result<Vec<u32>> {
        if self.open.is_none() {
            let conn = platform::amqp::connect(&self.amqp_url, "chaos lookout").await?;
            let ch = conn.create_channel().await?;
            self.open = Some((conn, ch));
        }
        let mut counts = Vec::new();
        if let Some((_, ch)) = &self.open {
            for queue in queues {
                match platform::amqp::queue_depth(ch, queue).await {
                    Ok(n) => counts.push(n),
                    Err(e) => {
                        self.close().await;
                        return Err(anyhow::Error::from(e).context(format!("counting {queue}")));
                    }
                }
            }
        }
        Ok(counts)
    }

    pub async fn close(&mut self) {
        if let Some((conn, ch)) = self.open.take() {
            ch.close(200, "done").await.ok();
            conn.close(200, "done").await.ok();
        }
    }
}

/// Unpublished rows of the three outboxes: user events and saga messages in `auth_db`,
/// appointment events and replies in `appointment_db`.
pub async fn unpublished(auth_pool: &PgPool, appointment_pool: &PgPool) -> anyhow::Result<i64> {
    let (events, messages): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL), \
                (SELECT count(*) FROM message_outbox WHERE published_at IS NULL)",
    )
    .fetch_one(auth_pool)
    .await
    .context("counting auth_db's unpublished rows")?;
    let appointments: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(appointment_pool)
            .await
            .context("counting appointment_db's unpublished rows")?;
    Ok(events + messages + appointments)
}

/// Waits until every outbox is published and every queue of [`queues`] holds nothing (ready or
/// unacked), for [`QUIET_FOR`]; returns how long it took.
pub async fn wait_for_quiescence(
    auth_pool: &PgPool,
    appointment_pool: &PgPool,
    env: &ChaosEnv,
    fleet: &mut Fleet,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<Duration> {
    let queues = queues();
    let mut lookout = Lookout::new(&env.amqp_url);
    let start = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let result = async {
        loop {
            restart_exited(fleet, progress).await?;
            let unpublished = unpublished(auth_pool, appointment_pool).await?;
            let ready = lookout.ready(&queues).await.ok();
            let mut totals = Vec::new();
            for queue in &queues {
                totals.push(
                    env.management
                        .queue_messages(&env.vhost, queue)
                        .await
                        .ok()
                        .flatten(),
                );
            }
            let quiet = unpublished == 0
                && ready.as_ref().is_some_and(|r| r.iter().all(|n| *n == 0))
                && totals.iter().all(|t| *t == Some(0));
            if quiet {
                if quiet_since.get_or_insert_with(Instant::now).elapsed() >= QUIET_FOR {
                    return Ok(start.elapsed());
                }
            } else {
                quiet_since = None;
            }
            if start.elapsed() > timeout {
                let held: Vec<String> = queues
                    .iter()
                    .zip(&totals)
                    .map(|(q, t)| match t {
                        Some(n) => format!("{q} {n}"),
                        None => format!("{q} unknown"),
                    })
                    .collect();
                bail!(
                    "after {timeout:?}: {unpublished} outbox rows unpublished; queues hold {}",
                    held.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    .await;
    lookout.close().await;
    result
}

/// `--inject-duplicate`: writes a copy of one appointment event, under a new event id, into
/// `appointment_db.outbox`, as a saga that resolved the appointment twice would; the relay
/// publishes it like any other. Returns the appointment's id.
pub async fn inject_duplicate(appointment_pool: &PgPool) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    let appointment: Option<String> = sqlx::query_scalar(
        "INSERT INTO outbox (message_id, exchange, routing_key, message_type, body) \
         SELECT $1, exchange, routing_key, message_type, \
                jsonb_set(body, '{eventId}', to_jsonb($1::text)) \
         FROM outbox WHERE exchange = $2 ORDER BY seq LIMIT 1 \
         RETURNING body -> 'payload' ->> 'appointmentId'",
    )
    .bind(id)
    .bind(topology::APPOINTMENT_EXCHANGE)
    .fetch_optional(appointment_pool)
    .await
    .context("writing a duplicate appointment event")?;
    let Some(appointment) = appointment else {
        bail!("appointment_db's outbox holds no appointment event to duplicate");
    };
    appointment
        .parse()
        .with_context(|| format!("appointment id {appointment:?}"))
}
