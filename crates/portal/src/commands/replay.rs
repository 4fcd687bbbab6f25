//! `portal replay`, and the backfill of `portal consumer add` (`super::consumer`) and `portal
//! up`: the arguments, a progress bar and the report around [`ops::replay`].

use super::{check_links, failure, Failure};
use crate::cli::{ConsumerCommand, ReplayArgs};
use anyhow::{anyhow, Context};
use auth_service::event_store::{self, EventFilter};
use contract::{topology, Email, EventType};
use indicatif::{ProgressBar, ProgressStyle};
use ops::replay::{replay_to, Sent};
use ops::settings::OperatorArgs;
use platform::settings::NetworkArgs;
use sqlx::PgPool;

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

/// What a replay sent, in words.
pub fn describe(sent: &Sent, queue: &str) -> String {
    let events = match (sent.first_seq, sent.last_seq) {
        (Some(a), Some(b)) => format!("sent {} events (seq {a}..{b}) to {queue}", sent.events),
        _ => format!("sent 0 events to {queue}"),
    };
    match sent.snapshots {
        0 => events,
        n => format!("{events}, and {n} snapshots of users whose events expired"),
    }
}

pub async fn run(
    operator: &OperatorArgs,
    args: &ReplayArgs,
    network: &NetworkArgs,
) -> Result<(), Failure> {
    if !args.dry_run {
        check_links(network, &[operator.broker_link()])?;
    }
    let pool = platform::db::lazy_pool(&operator.operator_auth_database_url, 2)?;
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
    let sent = replay_to(&pool, &operator.operator_amqp_url, &args.to, &filter, |n| {
        bar.inc(n)
    })
    .await;
    bar.finish_and_clear();
    println!("{}", describe(&sent.map_err(failure)?, &args.to));
    Ok(())
}

/// `portal consumer`: see [`super::consumer`].
pub async fn consumer(command: ConsumerCommand) -> Result<(), Failure> {
    super::consumer::run(command).await
}

/// Every stored event to `queue`, with a progress bar, then the history-complete marker.
pub async fn backfill(operator: &OperatorArgs, queue: &str) -> Result<Sent, Failure> {
    let pool = platform::db::lazy_pool(&operator.operator_auth_database_url, 2)?;
    let total = event_store::count(&pool, &EventFilter::default())
        .await
        .map_err(|e| Failure::unreachable(anyhow!("cannot reach auth_db: {e}")))?;
    let bar = progress_bar(total.max(0) as u64);
    let sent =
        ops::replay::backfill(&pool, &operator.operator_amqp_url, queue, |n| bar.inc(n)).await;
    bar.finish_and_clear();
    sent.map_err(failure)
}

/// Sends the appointment-service's copy every stored event and the end-of-history mark when
/// the copy is new (no mark has reached it yet): a first start, an install's setup, the
/// service added to a running system. `appointments` reads appointment_db. A backfill that
/// cannot be sent is one warning: the service then reports not ready, and says why, until
/// `portal consumer add appointment-service` runs.
pub async fn backfill_new_copy(
    operator: &OperatorArgs,
    appointments: impl sqlx::PgExecutor<'_>,
) -> Result<(), Failure> {
    let history = appointment_service::history(appointments)
        .await
        .map_err(|e| Failure::unreachable(anyhow!("reading appointment_db: {e}")))?;
    if history.expected.is_some() {
        return Ok(());
    }
    let queue = topology::ConsumerQueues::for_consumer(topology::APPOINTMENT_SERVICE).main;
    match backfill(operator, &queue).await {
        Ok(sent) => println!(
            "appointment-service: {} stored events{} and the end-of-history mark sent to \
             {queue}; it is ready once it has applied them",
            sent.events,
            match sent.snapshots {
                0 => String::new(),
                n => format!(", {n} snapshots of users whose events expired"),
            }
        ),
        Err(e) => tracing::warn!(
            "appointment-service: backfill not sent ({}); it stays not ready until \
             `portal consumer add {}` runs",
            e.error,
            topology::APPOINTMENT_SERVICE
        ),
    }
    Ok(())
}
