//! Row 4: end-to-end latency at a fixed offered rate. Changes are offered open-loop on a fixed
//! schedule (`rate` per second for `seconds`), each its own transaction through the single-user
//! store path (`store::create_user`, as an HTTP request writes), so a slow pipeline cannot slow
//! the offered load down and hide its own latency.
//!
//! Latency of one change = `user_db.users.synced_at` − `auth_db.outbox.created_at`: both are
//! `now()` of PostgreSQL, i.e. the start of the transaction that wrote the event and of the one
//! that applied it, read from the same server clock. That is commit-to-commit up to the
//! difference of the two transactions' own durations (each one short statement or two and a
//! commit, about a millisecond), and needs no clock in the benchmark at all.

use super::env::BenchEnv;
use super::report::Setting;
use super::report::{LatencyRun, Percentiles};
use super::sync;
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

/// Writer connections: enough for the highest rate's commits to overlap (group commit).
const WRITERS: u32 = 12;
/// Changes offered but not yet committed, at most; past it the schedule slips (and says so),
/// and changes not started by the end of the run are not offered at all.
const MAX_IN_FLIGHT: usize = 2_000;

pub async fn fixed_rate(
    env: &BenchEnv,
    setting: Setting,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<LatencyRun> {
    if rate == 0 {
        bail!("a latency rate must be above 0");
    }
    let label = format!("row 4: latency at {rate}/s");
    let (auth, user) = env.fresh_databases(WRITERS).await?;
    let mut relay = env.spawn_relay(setting).await?;
    let mut users = env.spawn_user_service(setting.prefetch).await?;
    let spin = super::spinner(format!("{label}: starting relay and user-service"));
    sync::probe(env, &auth, &user, &mut [&mut relay, &mut users]).await?;
    spin.finish_and_clear();
    let seq0 = sync::max_seq(&auth).await?;

    let scheduled = u64::from(rate) * seconds;
    let bar = super::bar(scheduled, format!("{label}: committed in auth_db"));
    let committed = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut tasks = JoinSet::new();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = tokio::time::Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut worst_slip = Duration::ZERO;
    let mut total = 0u64;
    // The run lasts `seconds` whatever happens: when the writers cannot keep up, the changes
    // still due at the end are not offered, and the reached rate says so.
    for i in 0..scheduled {
        let due = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        let permit = tokio::select! {
            permit = in_flight.clone().acquire_owned() => permit?,
            _ = tokio::time::sleep_until(end) => break,
        };
        let now = tokio::time::Instant::now();
        if now >= end {
            break;
        }
        worst_slip = worst_slip.max(now - due);
        let new = sync::new_user("l", i, &env.password_hash)?;
        let (auth, committed, bar) = (auth.clone(), committed.clone(), bar.clone());
        total += 1;
        tasks.spawn(async move {
            let mut tx = auth.begin().await?;
            auth_service::store::create_user(&mut tx, new).await?;
            tx.commit().await?;
            drop(permit);
            committed.fetch_add(1, Ordering::Relaxed);
            bar.inc(1);
            anyhow::Ok(Instant::now())
        });
        while let Some(done) = tasks.try_join_next() {
            done.context("writer task panicked")??;
        }
    }
    let mut last_commit = Instant::now();
    while let Some(done) = tasks.join_next().await {
        last_commit = last_commit.max(done.context("writer task panicked")??);
    }
    let offered_seconds = (last_commit - started.into_std()).as_secs_f64();
    bar.finish_and_clear();

    let bar = super::bar(total, format!("{label}: applied in user_db"));
    sync::wait_applied(
        &user,
        total as i64 + 1,
        None,
        &bar,
        1,
        &mut [&mut relay, &mut users],
    )
    .await?;

    // outbox.published_at is the relay's now(): the start of the transaction that claimed the
    // row, which splits each latency into "waiting for the relay" and "relay to applied".
    let written: HashMap<Uuid, (DateTime<Utc>, Option<DateTime<Utc>>)> =
        sqlx::query_as::<_, (Uuid, DateTime<Utc>, Option<DateTime<Utc>>)>(
            "SELECT user_id, created_at, published_at FROM outbox WHERE seq > $1",
        )
        .bind(seq0)
        .fetch(&auth)
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .map(|(id, created, published)| (id, (created, published)))
        .collect();
    let micros = |d: chrono::TimeDelta| d.num_microseconds().unwrap_or(i64::MAX);
    let (mut total_us, mut claim_us, mut rest_us) = (Vec::new(), Vec::new(), Vec::new());
    let mut rows =
        sqlx::query_as::<_, (Uuid, DateTime<Utc>)>("SELECT id, synced_at FROM users").fetch(&user);
    while let Some((id, synced_at)) = rows.try_next().await? {
        if let Some((created, published)) = written.get(&id) {
            total_us.push(micros(synced_at - *created));
            if let Some(published) = published {
                claim_us.push(micros(*published - *created));
                rest_us.push(micros(synced_at - *published));
            }
        }
    }
    drop(rows);
    if total_us.len() as u64 != total {
        bail!(
            "{} of {total} changes found in both databases",
            total_us.len()
        );
    }
    let total_ms = Percentiles::of(total_us);
    let claim_ms = Percentiles::of(claim_us);
    let rest_ms = Percentiles::of(rest_us);
    let run = LatencyRun {
        offered_rate: rate,
        seconds,
        changes: total,
        achieved_rate: total as f64 / offered_seconds,
        worst_schedule_slip_ms: worst_slip.as_secs_f64() * 1000.0,
        p50_ms: total_ms.p50,
        p95_ms: total_ms.p95,
        p99_ms: total_ms.p99,
        max_ms: total_ms.max,
        until_claimed_ms: claim_ms,
        claimed_to_applied_ms: rest_ms,
    };
    bar.finish_with_message(format!(
        "{label}: p50 {:.1} ms, p99 {:.1} ms",
        run.p50_ms, run.p99_ms
    ));
    relay.stop().await?;
    users.stop().await?;
    sync::verify_in_sync(&auth, &user).await?;
    auth.close().await;
    user.close().await;
    Ok(run)
}
