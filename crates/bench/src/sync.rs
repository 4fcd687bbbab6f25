//! Rows 2, 3, 5, 6 and 7: users written in bulk through the auth-service's store
//! ([`auth_service::bulk::create_users`]), carried by the relay and the user-service running as
//! child processes, and timed on the PostgreSQL server's clock: from the first outbox row's
//! transaction (`outbox.created_at`) to the last apply in `user_db` (`users.synced_at`). Every
//! run ends with [`ops::verify::compare`] reporting the two databases in sync, or fails.
//!
//! Also the shared pieces of the other pipeline rows: the end-to-end probe that proves the relay
//! and consumer are up, the bulk writer, and the wait for `user_db` to hold everything.

use super::env::BenchEnv;
use super::profile;
use super::report::{BacklogRun, Setting, SyncRun, Throughput, VerifyRun};
use anyhow::{bail, Context};
use auth_service::store::NewUser;
use chrono::{DateTime, Utc};
use contract::{Email, PersonName, PhoneNumber, Role};
use indicatif::ProgressBar;
use sandbox::process::Process;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long `user_db` may go without a single new apply before a run is declared stuck.
const STALL: Duration = Duration::from_secs(60);

const FIRST_NAMES: [&str; 8] = [
    "Tendai",
    "Rudo",
    "Farai",
    "Nyasha",
    "Tatenda",
    "Chipo",
    "Rumbidzai",
    "Tafadzwa",
];
const LAST_NAMES: [&str; 8] = [
    "Moyo",
    "Chikwanha",
    "Ncube",
    "Mutasa",
    "Dube",
    "Sibanda",
    "Zhou",
    "Marufu",
];
const ROLES: [Role; 5] = [
    Role::Doctor,
    Role::Nurse,
    Role::Doctor,
    Role::Pharmacist,
    Role::Consultant,
];

/// The `i`-th bench user of series `tag` (emails are unique per tag and index).
pub fn new_user(tag: &str, i: u64, password_hash: &str) -> anyhow::Result<NewUser> {
    let k = i as usize;
    Ok(NewUser {
        email: Email::parse(&format!("{tag}{i}@bench.example"))?,
        password_hash: password_hash.to_owned(),
        first_name: PersonName::parse("firstName", FIRST_NAMES[k % FIRST_NAMES.len()])?,
        last_name: PersonName::parse("lastName", LAST_NAMES[(k / 8) % LAST_NAMES.len()])?,
        role: ROLES[k % ROLES.len()],
        phone_number: Some(PhoneNumber::parse(&format!(
            "+263 77 {:03} {:04}",
            (i / 10_000) % 1000,
            i % 10_000
        ))?),
        is_active: true,
        must_change_password: false,
    })
}

pub struct Written {
    /// The last user committed (a single writer commits in outbox order, so it is also the last
    /// event the relay publishes and the consumer applies).
    pub last_id: Option<Uuid>,
    pub seconds: f64,
}

/// Writes `n` users of series `tag` in transactions of `batch` through the bulk store function.
pub async fn write_bulk(
    env: &BenchEnv,
    auth: &PgPool,
    n: u64,
    batch: u64,
    tag: &str,
    bar: &ProgressBar,
) -> anyhow::Result<Written> {
    let started = Instant::now();
    let mut last_id = None;
    let mut written = 0u64;
    while written < n {
        let size = batch.min(n - written);
        let users = (written..written + size)
            .map(|i| new_user(tag, i, &env.password_hash))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut tx = auth.begin().await.context("auth_db")?;
        let rows = auth_service::bulk::create_users(&mut tx, users)
            .await
            .context("bulk insert into auth_db")?;
        tx.commit().await.context("commit in auth_db")?;
        last_id = rows.last().map(|r| r.id).or(last_id);
        written += size;
        bar.set_position(written);
    }
    Ok(Written {
        last_id,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes one user through the single-user store path and waits until `user_db` has it: proves
/// the relay and the consumer are connected and listening before anything is timed.
pub async fn probe(
    env: &BenchEnv,
    auth: &PgPool,
    user: &PgPool,
    services: &mut [&mut Process],
) -> anyhow::Result<()> {
    let mut tx = auth.begin().await?;
    let row = auth_service::store::create_user(
        &mut tx,
        new_user("probe", rand::random::<u32>().into(), &env.password_hash)?,
    )
    .await?;
    tx.commit().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for s in services.iter_mut() {
            s.check_alive()?;
        }
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM users WHERE id = $1")
            .bind(row.id)
            .fetch_optional(user)
            .await?;
        if found.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the probe user did not reach user_db within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rows `user_db` has taken in (inserts and updates), from the statistics collector: cheap,
/// about a second behind, good for progress only.
async fn applied_estimate(user: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0)::int8 FROM pg_stat_user_tables \
         WHERE relname = 'users'",
    )
    .fetch_one(user)
    .await?)
}

/// Waits until `user_db` holds `expected` users. With `last` (the last user of a single
/// writer) it watches that one row by primary key and counts once, so a million-row table is
/// not scanned over and over while it is timed; otherwise it counts. Fails when a service
/// exits or nothing is applied for [`STALL`].
pub async fn wait_applied(
    user: &PgPool,
    expected: i64,
    last: Option<Uuid>,
    bar: &ProgressBar,
    base: i64,
    services: &mut [&mut Process],
) -> anyhow::Result<()> {
    let mut progress = (i64::MIN, Instant::now());
    let mut last_count_check = Instant::now() - Duration::from_secs(10);
    loop {
        for s in services.iter_mut() {
            s.check_alive()?;
        }
        let estimate = applied_estimate(user).await?;
        bar.set_position((estimate - base).clamp(0, i64::MAX) as u64);
        if estimate != progress.0 {
            progress = (estimate, Instant::now());
        } else if progress.1.elapsed() > STALL {
            bail!("user_db took no change for {STALL:?} (at about {estimate} rows)");
        }
        let last_seen = match last {
            Some(id) => sqlx::query_scalar::<_, i32>("SELECT 1 FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(user)
                .await?
                .is_some(),
            None => true,
        };
        if last_seen && last_count_check.elapsed() >= Duration::from_millis(250) {
            last_count_check = Instant::now();
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(user)
                .await?;
            if count >= expected {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server-clock span from the first outbox transaction after `seq0` to the last apply.
async fn server_span(auth: &PgPool, user: &PgPool, seq0: i64) -> anyhow::Result<f64> {
    let first: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT min(created_at) FROM event_store WHERE seq > $1")
            .bind(seq0)
            .fetch_one(auth)
            .await?;
    let last: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT max(synced_at) FROM users")
        .fetch_one(user)
        .await?;
    let (first, last) = first.zip(last).context("no events were written")?;
    Ok((last - first).num_microseconds().unwrap_or(0) as f64 / 1e6)
}

pub async fn max_seq(auth: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM event_store")
            .fetch_one(auth)
            .await?,
    )
}

/// Fails unless `verify` finds the two databases identical; returns the report and its time.
pub async fn verify_in_sync(auth: &PgPool, user: &PgPool) -> anyhow::Result<VerifyRun> {
    let started = Instant::now();
    let report = ops::verify::compare(
        auth,
        &ops::verify::USER_SERVICE,
        user,
        ops::verify::Options::listing(5),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    if !report.is_in_sync() {
        let listed: Vec<String> = report.listed.iter().map(ToString::to_string).collect();
        bail!("verify: {}\n{}", report.summary(), listed.join("\n"));
    }
    Ok(VerifyRun {
        users: report.checked,
        seconds,
        in_sync: true,
    })
}

/// Rows 2 and 3 (and 7 for the batched setting): `n` users written as fast as the bulk writer
/// goes while the relay and the consumer drain them.
pub async fn throughput(
    env: &BenchEnv,
    setting: Setting,
    n: u64,
    write_batch: u64,
    label: &str,
) -> anyhow::Result<SyncRun> {
    let (auth, user) = env.fresh_databases(2).await?;
    let mut relay = env.spawn_relay(setting).await?;
    let mut users = env.spawn_user_service(setting.prefetch).await?;
    let spin = super::spinner(format!("{label}: starting relay and user-service"));
    probe(env, &auth, &user, &mut [&mut relay, &mut users]).await?;
    spin.finish_and_clear();
    let seq0 = max_seq(&auth).await?;
    let base = applied_estimate(&user).await?;
    let cpu_before = profile::snapshot(&[&relay, &users]);

    let write_bar = super::bar(n, format!("{label}: writing auth_db"));
    let written = write_bulk(env, &auth, n, write_batch, "s", &write_bar).await?;
    write_bar.finish_and_clear();
    let bar = super::bar(n, format!("{label}: applied in user_db"));
    wait_applied(
        &user,
        n as i64 + 1,
        written.last_id,
        &bar,
        base,
        &mut [&mut relay, &mut users],
    )
    .await?;
    let cpu = profile::since(&cpu_before, &[&relay, &users]);
    let seconds = server_span(&auth, &user, seq0).await?;
    let rate = n as f64 / seconds;
    bar.finish_with_message(format!("{label}: {rate:.0} events/s"));
    let relay_rss = relay.peak_rss_kib()?;
    let user_rss = users.peak_rss_kib()?;
    relay.stop().await?;
    users.stop().await?;
    verify_in_sync(&auth, &user).await?;
    auth.close().await;
    user.close().await;
    Ok(SyncRun {
        setting,
        throughput: Throughput::new(n, seconds),
        writer_events_per_s: n as f64 / written.seconds,
        relay_peak_rss_mib: relay_rss as f64 / 1024.0,
        user_service_peak_rss_mib: user_rss as f64 / 1024.0,
        cpu,
    })
}

/// Rows 5 and 6: `n` events published with the consumer stopped, then the consumer started and
/// timed until `user_db` holds them all; then `verify` timed over at least `verify_users`.
pub async fn backlog_then_verify(
    env: &BenchEnv,
    setting: Setting,
    n: u64,
    verify_users: u64,
    write_batch: u64,
) -> anyhow::Result<(BacklogRun, VerifyRun)> {
    let (auth, user) = env.fresh_databases(2).await?;
    let mut relay = env.spawn_relay(setting).await?;
    let build_started = Instant::now();
    let bar = super::bar(n, "row 5: backlog, writing auth_db");
    let written = write_bulk(env, &auth, n, write_batch, "b", &bar).await?;
    bar.finish_and_clear();
    let bar = super::bar(n, "row 5: backlog, relay publishing");
    let mut progress = (i64::MAX, Instant::now());
    loop {
        relay.check_alive()?;
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&auth)
                .await?;
        bar.set_position(n.saturating_sub(pending as u64));
        if pending == 0 {
            break;
        }
        if pending < progress.0 {
            progress = (pending, Instant::now());
        } else if progress.1.elapsed() > STALL {
            bail!("the relay published nothing for {STALL:?} ({pending} events pending)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let build_seconds = build_started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let t0: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&user)
        .await?;
    let base = applied_estimate(&user).await?;
    let mut users = env.spawn_user_service(setting.prefetch).await?;
    let cpu_before = profile::snapshot(&[&relay, &users]);
    let bar = super::bar(n, "row 5: backlog, draining");
    wait_applied(
        &user,
        n as i64,
        written.last_id,
        &bar,
        base,
        &mut [&mut relay, &mut users],
    )
    .await?;
    let cpu = profile::since(&cpu_before, &[&relay, &users]);
    let last: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT max(synced_at) FROM users")
        .fetch_one(&user)
        .await?;
    let drain_seconds = (last.context("no user applied")? - t0)
        .num_microseconds()
        .unwrap_or(0) as f64
        / 1e6;
    bar.finish_with_message(format!("row 5: backlog drained in {drain_seconds:.1} s"));
    let relay_rss = relay.peak_rss_kib()?;
    let user_rss = users.peak_rss_kib()?;

    // Row 6 compares at least `verify_users`: top up through the running pipeline if needed.
    if verify_users > n {
        let extra = verify_users - n;
        let bar = super::bar(extra, "row 6: more users for verify");
        let more = write_bulk(env, &auth, extra, write_batch, "v", &bar).await?;
        wait_applied(
            &user,
            verify_users as i64,
            more.last_id,
            &bar,
            base + n as i64,
            &mut [&mut relay, &mut users],
        )
        .await?;
        bar.finish_and_clear();
    }
    relay.stop().await?;
    users.stop().await?;
    let spin = super::spinner("row 6: portal verify");
    let verify = verify_in_sync(&auth, &user).await?;
    spin.finish_with_message(format!(
        "row 6: verify {} users in {:.1} s, in sync",
        verify.users, verify.seconds
    ));
    auth.close().await;
    user.close().await;
    Ok((
        BacklogRun {
            events: n,
            build_seconds,
            drain_seconds,
            drain_events_per_s: n as f64 / drain_seconds,
            relay_peak_rss_mib: relay_rss as f64 / 1024.0,
            user_service_peak_rss_mib: user_rss as f64 / 1024.0,
            cpu,
        },
        verify,
    ))
}
