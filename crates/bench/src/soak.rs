//! `portal-bench soak`: retention without bloat, measured. The real auth-service (with its
//! relay, the outbox cleanup and the event store's maintenance), the user-service, the
//! appointment-service and the gateway run as child processes of the `portal` binary, with
//! exactly the settings below (never the caller's environment); profile changes are committed
//! through the auth-service's store at a fixed rate for `--minutes`, and every
//! `--report-every` seconds a row says how big the outbox and the event store are (rows, bytes,
//! dead-tuple ratio) and how long the cleanup's batches held their locks.
//!
//! The rate: a large hospital (about 10,000 staff) changes its users at most about 10 times a
//! second in its busiest hour (a directory sync, a morning of onboarding and password resets);
//! the soak runs at ten times that, 100 changes a second, by default.
//!
//! Bloat is the work of autovacuum, not of this code: on a server where it is off (the CI
//! server's configuration turns it off for speed), the soak vacuums its tables itself every
//! minute, as autovacuum would with its default `autovacuum_naptime`, and says so.
//!
//! It passes when the outbox never held more than `--max-outbox-rows` (by default twice what
//! the rate leaves there between the grace and the cleanup's interval, plus 1,000), the event
//! store grew by exactly the events written, and both copies ended equal to `auth_db`.

use super::env::BenchEnv;
use super::http::Stack;
use super::import::{check_alive, start_appointments, stop_and_verify_appointments, Appointments};
use super::report::Setting;
use super::sync;
use anyhow::{bail, Context};
use auth_service::relay::RelayConfig;
use auth_service::store::{self, ProfileChange, UserChange};
use clap::Args;
use contract::topology::{APPOINTMENT_SERVICE, USER_SERVICE};
use contract::PhoneNumber;
use platform::exit::Failure;
use sqlx::PgPool;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

/// Ten times a large hospital's busiest hour (about 10 changes a second).
pub const DEFAULT_RATE: u32 = 100;
/// The outbox cleanup starts a round this often (`outbox::CleanupConfig::every`).
const CLEANUP_EVERY_SECS: u64 = 10;
/// Changes committing at once at most (a stalled database shows as a rate not reached).
const MAX_IN_FLIGHT: usize = 64;
/// The auth-service's table the cleanup figures are read for.
const OUTBOX: &str = "auth_db.outbox";
/// autovacuum's default `autovacuum_naptime`: how often it looks at each database.
const NAPTIME: Duration = Duration::from_secs(60);

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    #[command(flatten)]
    pub servers: sandbox::ServerArgs,
    /// How long the load runs, in minutes (fractions allowed: the CI form runs 0.75).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Profile changes committed per second: ten times the usual 10 of a large hospital's
    /// busiest hour.
    #[arg(long, default_value_t = DEFAULT_RATE, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rate: u32,
    /// Staff the changes are spread over (written in bulk before the load).
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub users: u64,
    /// OUTBOX_KEEP_PUBLISHED_SECS of the services (the CI form shortens it).
    #[arg(long, default_value_t = auth_service::relay::CleanupConfig::DEFAULT_KEEP_PUBLISHED_SECS)]
    pub keep_published_secs: u64,
    /// Seconds between two rows of the table.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub report_every: u64,
    /// Outbox rows above which the run fails [default: 2 × rate × (grace + the cleanup's 10 s)
    /// + 1000].
    #[arg(long)]
    pub max_outbox_rows: Option<i64>,
    /// Names the databases (<ID>_auth, <ID>_user, <ID>_appointment) and the vhost.
    #[arg(long, default_value = "soak", value_parser = crate::parse_id)]
    pub id: String,
}

impl SoakArgs {
    fn bound(&self) -> i64 {
        self.max_outbox_rows.unwrap_or_else(|| {
            let window = self.keep_published_secs + CLEANUP_EVERY_SECS;
            i64::from(self.rate) * i64::try_from(window).unwrap_or(i64::MAX / 4) * 2 + 1000
        })
    }
}

/// Runs the soak in its own databases and vhost, removed at the end.
pub async fn run(args: SoakArgs) -> Result<(), Failure> {
    let mut env = BenchEnv::create(&args.servers, &args.id)
        .await
        .map_err(Failure::unreachable)?;
    env.keep_published_secs = args.keep_published_secs;
    let outcome = soak(&env, &args).await;
    env.cleanup().await;
    outcome.map_err(Failure::from)
}

/// One row of the table.
#[derive(Debug, Clone, Default)]
struct Sample {
    seconds: f64,
    written: u64,
    outbox_rows: i64,
    unpublished: i64,
    outbox_bytes: i64,
    outbox_dead: f64,
    store_rows: i64,
    store_bytes: i64,
    store_dead: f64,
    /// The cleanup's longest batch of its last whole minute (its gauge), seconds.
    longest_of_minute: f64,
    /// Cumulative batch counts of the cleanup's histogram, by bucket bound (seconds).
    buckets: Vec<(f64, f64)>,
}

impl Sample {
    /// The least bucket bound every batch since `before` stayed under (seconds); `None`
    /// without batches.
    fn longest_since(&self, before: &Sample) -> Option<f64> {
        let count = |s: &Sample, le: f64| {
            s.buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0.0, |(_, n)| *n)
        };
        let total = count(self, f64::INFINITY) - count(before, f64::INFINITY);
        if total <= 0.0 {
            return None;
        }
        self.buckets
            .iter()
            .map(|(le, _)| *le)
            .find(|le| count(self, *le) - count(before, *le) >= total)
    }
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

const HEADER: &str = "  time   written  outbox rows (unpubl.)  outbox MiB  dead  store rows  store MiB  dead  cleanup: longest of last minute / since last row";

fn row(s: &Sample, since: Option<f64>) -> String {
    let minutes = (s.seconds / 60.0).floor();
    format!(
        "{:>3.0}m{:02.0}s {:>9} {:>11} ({:>6}) {:>11.2} {:>4.0}% {:>11} {:>10.2} {:>4.0}%   {:>6.1} ms / {}",
        minutes,
        s.seconds - minutes * 60.0,
        s.written,
        s.outbox_rows,
        s.unpublished,
        mib(s.outbox_bytes),
        s.outbox_dead * 100.0,
        s.store_rows,
        mib(s.store_bytes),
        s.store_dead * 100.0,
        s.longest_of_minute * 1000.0,
        match since {
            Some(le) if le.is_finite() => format!("≤ {:.0} ms", le * 1000.0),
            Some(_) => "> 1 s".to_owned(),
            None => "no batch".to_owned(),
        }
    )
}

/// The figures now: tables from `auth_db`, the cleanup's from the auth-service's `/metrics`.
async fn sample(
    auth: &PgPool,
    http: &reqwest::Client,
    auth_url: &str,
    started: Instant,
    written: u64,
) -> anyhow::Result<Sample> {
    let (outbox_rows, unpublished, store_rows): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox), \
                (SELECT count(*) FROM outbox WHERE published_at IS NULL), \
                (SELECT count(*) FROM event_store)",
    )
    .fetch_one(auth)
    .await?;
    let tables = ["outbox".to_owned(), "event_store".to_owned()];
    let figures = platform::metrics::table_figures(auth, &tables).await?;
    let of = |name: &str| figures.iter().find(|f| f.table == name);
    let text = http
        .get(format!("{auth_url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let (longest_of_minute, buckets) = cleanup_figures(&text, OUTBOX);
    Ok(Sample {
        seconds: started.elapsed().as_secs_f64(),
        written,
        outbox_rows,
        unpublished,
        outbox_bytes: of("outbox").map_or(0, |f| f.bytes),
        outbox_dead: of("outbox").map_or(0.0, |f| f.dead_ratio()),
        store_rows,
        store_bytes: of("event_store").map_or(0, |f| f.bytes),
        store_dead: of("event_store").map_or(0.0, |f| f.dead_ratio()),
        longest_of_minute,
        buckets,
    })
}

/// From `/metrics` text: the cleanup of `table`'s longest batch of its last whole minute
/// (seconds), and its histogram's cumulative counts by bucket bound, in order.
fn cleanup_figures(text: &str, table: &str) -> (f64, Vec<(f64, f64)>) {
    let mut longest = 0.0;
    let mut buckets = Vec::new();
    let label = format!("table=\"{table}\"");
    for line in text.lines().filter(|l| l.contains(&label)) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        if series.starts_with("portal_outbox_cleanup_longest_batch_seconds{") {
            longest = value;
        } else if series.starts_with("portal_outbox_cleanup_batch_seconds_bucket{") {
            // The last `le="`: `table="` ends with those letters too.
            let le = series
                .rsplit("le=\"")
                .next()
                .and_then(|rest| rest.split('"').next());
            let le = match le {
                Some("+Inf") => Some(f64::INFINITY),
                Some(bound) => bound.parse::<f64>().ok(),
                None => None,
            };
            if let Some(le) = le {
                buckets.push((le, value));
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (longest, buckets)
}

/// Commits `rate` profile changes a second over `users` until `end`, each a new phone number
/// of one user through the store's locked write (a version and its event); adds each commit
/// to `written`.
async fn drive(
    auth: PgPool,
    users: Arc<Vec<Uuid>>,
    rate: u32,
    end: tokio::time::Instant,
    written: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = tokio::time::Instant::now();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    for i in 0u64.. {
        let due = started + interval.mul_f64(i as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => permit?,
            _ = tokio::time::sleep_until(end) => break,
        };
        let user = users[(i % users.len() as u64) as usize];
        let phone = PhoneNumber::parse(&format!("+263 77 {:07}", i % 10_000_000))?;
        let (auth, written) = (auth.clone(), written.clone());
        tasks.spawn(async move {
            let mut tx = auth.begin().await?;
            let change = UserChange::Profile(ProfileChange {
                phone_number: Some(Some(phone)),
                ..ProfileChange::default()
            });
            let outcome = store::change_user(&mut tx, user, change).await?;
            tx.commit().await?;
            if matches!(outcome, store::Outcome::Changed(_)) {
                written.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
            anyhow::Ok(())
        });
        while let Some(done) = tasks.try_join_next() {
            done.context("a writer task panicked")??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a writer task panicked")??;
    }
    Ok(())
}

/// Vacuums the tables the load churns every [`NAPTIME`] until `end`, standing in for the
/// autovacuum the server has turned off; returns how many rounds ran.
async fn vacuum_like_autovacuum(
    auth: PgPool,
    appointments: PgPool,
    end: tokio::time::Instant,
) -> anyhow::Result<u64> {
    let mut rounds = 0;
    loop {
        let next = tokio::time::Instant::now() + NAPTIME;
        if next >= end {
            return Ok(rounds);
        }
        tokio::time::sleep_until(next).await;
        sqlx::query("VACUUM (ANALYZE) outbox, message_outbox, event_store")
            .execute(&auth)
            .await
            .context("vacuuming auth_db")?;
        sqlx::query("VACUUM (ANALYZE) outbox")
            .execute(&appointments)
            .await
            .context("vacuuming appointment_db")?;
        rounds += 1;
    }
}

/// Waits until both copies hold every version `auth_db` has (the load's last changes applied).
async fn wait_converged(stack: &mut Stack, appointments: &mut Appointments) -> anyhow::Result<()> {
    let sum = "SELECT coalesce(sum(user_version), 0)::int8 FROM ";
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (a, u, c): (i64, i64, i64) = (
            sqlx::query_scalar(&format!("{sum} users"))
                .fetch_one(&stack.auth)
                .await?,
            sqlx::query_scalar(&format!("{sum} users"))
                .fetch_one(&stack.user)
                .await?,
            sqlx::query_scalar(&format!("{sum} clinicians"))
                .fetch_one(&appointments.pool)
                .await?,
        );
        if a == u && a == c {
            return Ok(());
        }
        check_alive(stack, appointments)?;
        if Instant::now() > deadline {
            bail!("the copies had not caught up 180 s after the load: versions {a} in auth_db, {u} in user_db, {c} in appointment_db");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn soak(env: &BenchEnv, args: &SoakArgs) -> anyhow::Result<()> {
    if !(args.minutes > 0.0 && args.minutes.is_finite()) {
        bail!("--minutes must be above 0");
    }
    let setting = Setting {
        relay_batch_size: RelayConfig::DEFAULT_BATCH_SIZE,
        relay_in_flight: RelayConfig::DEFAULT_IN_FLIGHT,
        prefetch: consumer::ConsumerConfig::DEFAULT_PREFETCH,
    };
    let mut stack = Stack::start(
        env,
        setting,
        2,
        "soak",
        &[USER_SERVICE, APPOINTMENT_SERVICE],
    )
    .await?;
    let bar = super::bar(args.users, "soak: writing the staff");
    let staff = sync::write_bulk(env, &stack.auth, args.users, 1000, "s", &bar).await?;
    bar.finish_and_clear();
    let bar = super::bar(args.users, "soak: staff applied in user_db");
    sync::wait_applied(
        &stack.user,
        i64::try_from(args.users).unwrap_or(i64::MAX) + 1,
        staff.last_id,
        &bar,
        0,
        &mut [&mut stack.auth_service, &mut stack.user_service],
    )
    .await?;
    bar.finish_and_clear();
    let mut appointments = start_appointments(env, &stack.auth, &stack.auth_url).await?;
    let users: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE role <> 'admin'")
        .fetch_all(&stack.auth)
        .await?;
    let store_before: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store")
        .fetch_one(&stack.auth)
        .await?;

    let bound = args.bound();
    println!(
        "soak: {} changes/s (ten times a large hospital's busiest hour) over {} staff for {} \
         min; OUTBOX_KEEP_PUBLISHED_SECS={}, cleanup every {CLEANUP_EVERY_SECS} s; outbox bound \
         {bound} rows",
        args.rate, args.users, args.minutes, args.keep_published_secs
    );
    let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(&stack.auth)
        .await?;
    let written = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(args.minutes * 60.0);
    let vacuum = (autovacuum != "on").then(|| {
        println!(
            "soak: autovacuum is {autovacuum} on this server: the soak vacuums the outboxes and \
             the event store itself every {} s, as autovacuum would",
            NAPTIME.as_secs()
        );
        tokio::spawn(vacuum_like_autovacuum(
            stack.auth.clone(),
            appointments.pool.clone(),
            end,
        ))
    });
    println!("{HEADER}");
    let mut load = tokio::spawn(drive(
        stack.auth.clone(),
        Arc::new(users),
        args.rate,
        end,
        written.clone(),
    ));
    let every = Duration::from_secs(args.report_every);
    let mut last = sample(&stack.auth, &stack.http, &stack.auth_url, started, 0).await?;
    // The largest outbox under the load (the staff written before it are not counted).
    let mut most = Sample::default();
    let mut longest_bound: Option<f64> = None;
    let mut longest_of_minute: f64 = 0.0;
    let mut largest_bytes: i64 = 0;
    let mut next = tokio::time::Instant::now() + every;
    let mut loaded = None;
    loop {
        tokio::select! {
            done = &mut load, if loaded.is_none() => {
                loaded = Some(done.context("the load panicked")?);
            }
            _ = tokio::time::sleep_until(next) => {
                next += every;
                let now = sample(
                    &stack.auth,
                    &stack.http,
                    &stack.auth_url,
                    started,
                    written.load(Ordering::Relaxed),
                )
                .await?;
                let since = now.longest_since(&last);
                println!("{}", row(&now, since));
                std::io::stdout().flush().ok();
                if let Some(le) = since {
                    longest_bound = Some(longest_bound.map_or(le, |b| b.max(le)));
                }
                longest_of_minute = longest_of_minute.max(now.longest_of_minute);
                largest_bytes = largest_bytes.max(now.outbox_bytes);
                if now.outbox_rows > most.outbox_rows {
                    most = now.clone();
                }
                last = now;
                check_alive(&mut stack, &mut appointments)?;
            }
        }
        if let Some(result) = &loaded {
            if let Err(e) = result {
                bail!("the load failed: {e:#}");
            }
            break;
        }
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let written = written.load(Ordering::Relaxed);
    if let Some(vacuum) = vacuum {
        vacuum.await.context("the vacuum task panicked")??;
    }
    auth_unpublished_drained(&mut stack, &mut appointments).await?;
    wait_converged(&mut stack, &mut appointments).await?;
    let end = sample(&stack.auth, &stack.http, &stack.auth_url, started, written).await?;
    let since = end.longest_since(&last);
    println!("{}", row(&end, since));
    if let Some(le) = since {
        longest_bound = Some(longest_bound.map_or(le, |b| b.max(le)));
    }
    longest_of_minute = longest_of_minute.max(end.longest_of_minute);
    largest_bytes = largest_bytes.max(end.outbox_bytes);
    let grew = end.store_rows - store_before;
    println!(
        "soak: {written} changes in {load_seconds:.0} s ({:.1}/s); outbox at most {} rows (at \
         {:.0} s) and {:.2} MiB, {} rows at the end; event store +{grew} rows for {written} \
         events ({:.2} MiB); cleanup batches held their locks ≤ {} (longest of a minute {:.1} \
         ms)",
        written as f64 / load_seconds,
        most.outbox_rows,
        most.seconds,
        mib(largest_bytes),
        end.outbox_rows,
        mib(end.store_bytes),
        longest_bound.map_or("no batch".to_owned(), |le| format!("{:.0} ms", le * 1000.0)),
        longest_of_minute * 1000.0,
    );
    // The appointment-service's copy first: stopping the stack closes the pool on auth_db.
    stop_and_verify_appointments(appointments, &stack.auth).await?;
    stack.stop_and_verify().await?;
    let mut problems = Vec::new();
    if most.outbox_rows > bound {
        problems.push(format!(
            "the outbox held {} rows, over its bound of {bound}",
            most.outbox_rows
        ));
    }
    if grew != i64::try_from(written).unwrap_or(i64::MAX) {
        problems.push(format!(
            "the event store grew by {grew} rows for {written} events written"
        ));
    }
    if problems.is_empty() {
        println!("soak: every copy in sync; result=PASS");
        Ok(())
    } else {
        println!("soak: result=FAIL ({})", problems.join("; "));
        bail!("{}", problems.join("; "))
    }
}

/// Waits until the relay has published every event of the load.
async fn auth_unpublished_drained(
    stack: &mut Stack,
    appointments: &mut Appointments,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let waiting: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&stack.auth)
                .await?;
        if waiting == 0 {
            return Ok(());
        }
        check_alive(stack, appointments)?;
        if Instant::now() > deadline {
            bail!("{waiting} events were still unpublished 120 s after the load");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPED: &str = "\
portal_outbox_cleanup_batch_seconds_bucket{table=\"auth_db.message_outbox\",le=\"0.001\"} 4
portal_outbox_cleanup_batch_seconds_bucket{table=\"auth_db.outbox\",le=\"0.001\"} 0
portal_outbox_cleanup_batch_seconds_bucket{table=\"auth_db.outbox\",le=\"0.002\"} 2
portal_outbox_cleanup_batch_seconds_bucket{table=\"auth_db.outbox\",le=\"0.005\"} 3
portal_outbox_cleanup_batch_seconds_bucket{table=\"auth_db.outbox\",le=\"+Inf\"} 3
portal_outbox_cleanup_batch_seconds_sum{table=\"auth_db.outbox\"} 0.006
portal_outbox_cleanup_longest_batch_seconds{table=\"auth_db.outbox\"} 0.0042
";

    #[test]
    fn the_cleanups_figures_are_read_for_one_table_and_bound_the_longest_batch() {
        let (longest, buckets) = cleanup_figures(SCRAPED, OUTBOX);
        assert_eq!(longest, 0.0042);
        assert_eq!(
            buckets,
            [
                (0.001, 0.0),
                (0.002, 2.0),
                (0.005, 3.0),
                (f64::INFINITY, 3.0)
            ]
        );
        let before = Sample::default();
        let now = Sample {
            buckets,
            ..Sample::default()
        };
        assert_eq!(now.longest_since(&before), Some(0.005));
        assert_eq!(now.longest_since(&now), None);
    }
}
