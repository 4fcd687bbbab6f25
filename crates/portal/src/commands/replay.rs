//! `portal replay` and `portal consumer add`: publish stored events to ONE consumer's queue
//! (through the default exchange, so other subscribers of `user.events` see nothing), pipelined
//! with publisher confirms, with a progress bar. Replaying twice is harmless: consumers apply by
//! `userVersion`.

use super::Failure;
use crate::cli::{ConsumerCommand, ReplayArgs, Settings};
use anyhow::{anyhow, Context};
use auth_service::event_store::{self, Cursor, EventFilter};
use contract::topology::ConsumerQueues;
use contract::{Email, EventType};
use indicatif::{ProgressBar, ProgressStyle};
use lapin::options::ConfirmSelectOptions;
use platform::amqp::{self, Outgoing};
use sqlx::PgPool;

/// Events read and published per round trip.
const PAGE: i64 = 1000;
/// How long a replay waits for a long-running transaction before giving up.
const HORIZON_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

fn parse_time(field: &str, raw: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            anyhow!("--{field} {raw:?} is not an ISO-8601 time such as 2026-11-27T08:00:00Z")
        })
}

async fn filter(pool: &PgPool, args: &ReplayArgs) -> anyhow::Result<EventFilter> {
    let user_id = match args.user.as_deref() {
        None => None,
        Some(u) => match uuid::Uuid::parse_str(u) {
            Ok(id) => Some(id),
            Err(_) => {
                let email = Email::parse(u)
                    .map_err(|_| anyhow!("--user {u:?} is neither an id nor an email"))?;
                let row = auth_service::store::find_by_email(pool, &email)
                    .await?
                    .ok_or_else(|| anyhow!("no user {u}"))?;
                Some(row.id)
            }
        },
    };
    if let Some(t) = args.event_type.as_deref() {
        EventType::parse(t).ok_or_else(|| anyhow!("--type {t:?} is not a user event type"))?;
    }
    Ok(EventFilter {
        from_seq: args.from_seq,
        since: args
            .since
            .as_deref()
            .map(|t| parse_time("since", t))
            .transpose()?,
        until: args
            .until
            .as_deref()
            .map(|t| parse_time("until", t))
            .transpose()?,
        user_id,
        event_type: args.event_type.clone(),
    })
}

/// What a replay sent.
#[derive(Debug, Default)]
pub struct Sent {
    pub events: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
}

/// Publishes every stored event matching `filter` to `queue`; returns what it sent.
pub async fn replay_to(
    pool: &PgPool,
    amqp_url: &str,
    queue: &str,
    filter: &EventFilter,
    progress: &ProgressBar,
) -> Result<Sent, Failure> {
    let conn = amqp::connect(amqp_url, "portal replay")
        .await
        .map_err(|e| Failure::unreachable(anyhow!("cannot reach RabbitMQ at {amqp_url}: {e}")))?;
    let ch = conn.create_channel().await.map_err(|e| anyhow!(e))?;
    amqp::queue_depth(&ch, queue)
        .await
        .map_err(|_| anyhow!("no queue {queue}: replay sends to an existing consumer queue (see `portal consumer add`)"))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| anyhow!(e))?;
    let mut sent = Sent::default();
    let mut cursor = Cursor::START;
    let mut held_since: Option<std::time::Instant> = None;
    let mut backoff = platform::backoff::Backoff::new(
        std::time::Duration::from_millis(5),
        std::time::Duration::from_millis(500),
    );
    loop {
        let page = event_store::read_page(pool, filter, cursor, PAGE)
            .await
            .context("reading the event store")?;
        let Some(last) = page.last() else {
            if !event_store::held_back(pool, filter, cursor)
                .await
                .context("reading the event store")?
            {
                break;
            }
            // Committed events wait behind a transaction that is still running somewhere in the
            // cluster; they become readable when it ends.
            if held_since
                .get_or_insert_with(std::time::Instant::now)
                .elapsed()
                > HORIZON_PATIENCE
            {
                return Err(anyhow!(
                    "events are held back by a transaction running for over {}s (see \
                     pg_stat_activity); replay stopped, safe to run again",
                    HORIZON_PATIENCE.as_secs()
                )
                .into());
            }
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        };
        held_since = None;
        backoff.reset();
        cursor = Cursor::after(last);
        let messages: Vec<_> = page
            .iter()
            .map(|event| Outgoing {
                exchange: "",
                routing_key: queue,
                body: event.body.as_bytes(),
                properties: amqp::event_properties(&event.event_id.to_string(), &event.event_type),
            })
            .collect();
        amqp::publish_confirmed(&ch, messages)
            .await
            .require_all()
            .map_err(|e| anyhow!("{e}; replay stopped (safe to run again)"))?;
        for event in &page {
            sent.first_seq = Some(sent.first_seq.map_or(event.seq, |s| s.min(event.seq)));
            sent.last_seq = Some(sent.last_seq.map_or(event.seq, |s| s.max(event.seq)));
        }
        sent.events += page.len() as u64;
        progress.inc(page.len() as u64);
    }
    conn.close(200, "replay done").await.ok();
    Ok(sent)
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replay [{bar:40}] {pos}/{len} events ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

fn describe(sent: &Sent, queue: &str) -> String {
    match (sent.first_seq, sent.last_seq) {
        (Some(a), Some(b)) => format!("sent {} events (seq {a}..{b}) to {queue}", sent.events),
        _ => format!("sent 0 events to {queue}"),
    }
}

pub async fn run(s: &Settings, args: &ReplayArgs) -> Result<(), Failure> {
    let pool = platform::db::lazy_pool(&s.auth_database_url, 2)?;
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .map_err(|e| Failure::unreachable(anyhow!("cannot reach auth_db: {e}")))?;
    let filter = filter(&pool, args).await?;
    let total = event_store::count(&pool, &filter)
        .await
        .context("counting events")?;
    if args.dry_run {
        println!("dry run: {total} events would be sent to {}", args.to);
        return Ok(());
    }
    let bar = progress_bar(total.max(0) as u64);
    let sent = replay_to(&pool, &s.amqp_url, &args.to, &filter, &bar).await;
    bar.finish_and_clear();
    println!("{}", describe(&sent?, &args.to));
    Ok(())
}

pub async fn consumer(s: &Settings, command: ConsumerCommand) -> Result<(), Failure> {
    let ConsumerCommand::Add { name } = command;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(anyhow!("consumer names are lower-case letters, digits and dashes").into());
    }
    let queues = ConsumerQueues::for_consumer(&name);
    // Bind first: from then on live events reach the queue; the backfill below sends what was
    // stored before. An event in both is applied once (userVersion), so the overlap is harmless.
    platform::amqp::ensure_topology(&s.amqp_url, std::slice::from_ref(&queues))
        .await
        .map_err(|e| {
            Failure::unreachable(anyhow!("cannot reach RabbitMQ at {}: {e}", s.amqp_url))
        })?;
    println!(
        "created {} (bound to user.# on user.events), {} and {} retry queues",
        queues.main,
        queues.dead_letter,
        queues.retries.len()
    );
    let pool = platform::db::lazy_pool(&s.auth_database_url, 2)?;
    let filter = EventFilter::default();
    let total = event_store::count(&pool, &filter)
        .await
        .map_err(|e| Failure::unreachable(anyhow!("cannot reach auth_db: {e}")))?;
    let bar = progress_bar(total.max(0) as u64);
    let sent = replay_to(&pool, &s.amqp_url, &queues.main, &filter, &bar).await;
    bar.finish_and_clear();
    println!("backfilled: {}", describe(&sent?, &queues.main));
    Ok(())
}
