//! The outbox cleanup (`outbox::cleanup`) against the real servers: under a continuous write
//! load, with the relay publishing, its batches hold their locks for milliseconds and no writer
//! ever waits on a lock it holds; the outbox ends with only unpublished or young rows while the
//! event store kept every event; and one cleaner per table works at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auth_service::relay::{
    user_events, Cleaner, CleanupConfig, CleanupMetrics, Relay, RelayConfig,
};
use auth_service::store::{self, UserChange};
use contract::{PhoneNumber, Role};
use outbox::cleanup::{Batch, APPLICATION_NAME};
use sandbox::poll::{poll_until, SETTLE};
use sandbox::{auth, Sandbox};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long the writers write.
const LOAD: Duration = Duration::from_secs(12);
/// Concurrent writers.
const WRITERS: usize = 6;
/// The cleanup's grace in this test: short, so rows are removed while the load runs.
const KEEP: Duration = Duration::from_secs(1);
/// When the test's cleaner starts: several thousand rows are due by then, so its first round
/// has full batches.
const FIRST_ROUND: Duration = Duration::from_secs(5);
/// The criterion: the longest batch holds its locks under this.
const MAX_HOLD: Duration = Duration::from_millis(100);

/// Backends waiting for a heavyweight lock that a cleanup batch holds (pg_locks through
/// pg_blocking_pids), by the query they wait in.
const BLOCKED_BY_CLEANUP: &str = "SELECT w.pid, left(w.query, 120) FROM pg_stat_activity w \
     WHERE w.datname = current_database() AND w.wait_event_type = 'Lock' \
       AND EXISTS (SELECT 1 FROM unnest(pg_blocking_pids(w.pid)) AS b(pid) \
                   JOIN pg_stat_activity c ON c.pid = b.pid \
                   WHERE c.application_name = $1)";

async fn pool(sb: &Sandbox, connections: u32) -> PgPool {
    auth::pool(sb).await;
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(&sb.database_url("auth"))
        .await
        .unwrap()
}

/// A user, then profile changes (a new phone number each) until `stop`; returns the events
/// written.
async fn writer(pool: PgPool, w: usize, stop: Arc<AtomicBool>) -> u64 {
    let user = auth::create_user(&pool, &format!("writer{w}@clinic.test"), Role::Nurse).await;
    let mut events = 1;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let phone = PhoneNumber::parse(&format!("+263 77{w}{n:07}")).unwrap();
        let change = UserChange::Profile(store::ProfileChange {
            phone_number: Some(Some(phone)),
            ..Default::default()
        });
        let mut tx = pool.begin().await.unwrap();
        store::change_user(&mut tx, user, change).await.unwrap();
        tx.commit().await.unwrap();
        events += 1;
    }
    events
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cleanup_batches_hold_locks_briefly_block_no_writer_and_keep_every_event_in_the_store() {
    let sb = Sandbox::for_test().await;
    let db = pool(&sb, 16).await;
    let shutdown = CancellationToken::new();
    // The relay publishes as in production; its own cleaner is left idle (its first round finds
    // nothing, the next is an hour away): this test runs the rounds itself to time each batch.
    let relay = tokio::spawn(
        Relay::new(
            user_events(),
            db.clone(),
            sb.amqp_url.clone(),
            RelayConfig {
                cleanup: CleanupConfig {
                    every: Duration::from_secs(3600),
                    ..CleanupConfig::default()
                },
                ..RelayConfig::default()
            },
        )
        .run(shutdown.clone()),
    );
    let metrics = platform::metrics::Metrics::new("test").unwrap();
    let cleaner = Arc::new(
        Cleaner::new(
            Arc::new(user_events()),
            db.clone(),
            CleanupConfig {
                keep_published: KEEP,
                ..CleanupConfig::default()
            },
        )
        .with_metrics(CleanupMetrics::register(&metrics).unwrap()),
    );

    // The sampler: every few milliseconds, is any backend waiting on a lock a cleanup batch
    // holds? And how old is the oldest open cleanup transaction (the server's view)?
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (db, stop) = (db.clone(), stop_sampling.clone());
        tokio::spawn(async move {
            let (mut samples, mut blocked, mut oldest) = (0u64, Vec::new(), 0f64);
            while !stop.load(Ordering::Relaxed) {
                let waiting: Vec<(i32, String)> = sqlx::query_as(BLOCKED_BY_CLEANUP)
                    .bind(APPLICATION_NAME)
                    .fetch_all(&db)
                    .await
                    .unwrap();
                let age: Option<f64> = sqlx::query_scalar(
                    "SELECT extract(epoch FROM max(clock_timestamp() - xact_start))::float8 \
                     FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(APPLICATION_NAME)
                .fetch_one(&db)
                .await
                .unwrap();
                oldest = oldest.max(age.unwrap_or(0.0));
                samples += 1;
                blocked.extend(waiting);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (samples, blocked, oldest)
        })
    };

    // The load, and the cleanup's rounds beside it: the first once rows for more than a full
    // batch are due, then every 300 ms instead of 10 s, to see many.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(db.clone(), w, stop_writing.clone())))
        .collect();
    let batches = Arc::new(std::sync::Mutex::new((Vec::new(), Vec::new())));
    let removed = Arc::new(AtomicU64::new(0));
    let cleaning = {
        let (cleaner, batches, removed, shutdown) = (
            cleaner.clone(),
            batches.clone(),
            removed.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(FIRST_ROUND).await;
            while !shutdown.is_cancelled() {
                // (Skipped only if the relay's own cleaner, at its start, holds the lock.)
                let round = cleaner.round(&shutdown).await.unwrap();
                {
                    let mut seen = batches.lock().unwrap();
                    seen.0.extend(round.batches);
                    seen.1.extend(round.round_trips);
                }
                removed.fetch_add(round.removed, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    tokio::time::sleep(LOAD).await;
    stop_writing.store(true, Ordering::Relaxed);
    let mut written = 0;
    for w in writers {
        written += w.await.unwrap();
    }
    auth::all_published(&db).await;
    // Rows published during the load are past the grace a moment later: the rounds remove them.
    poll_until(
        SETTLE,
        "every published row past the grace removed",
        || async {
            let old: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM outbox \
             WHERE published_at < now() - make_interval(secs => $1)",
            )
            .bind(KEEP.as_secs_f64() + 1.0)
            .fetch_one(&db)
            .await
            .unwrap();
            (old == 0).then_some(())
        },
    )
    .await;
    shutdown.cancel();
    cleaning.await.unwrap();
    relay.await.unwrap();
    stop_sampling.store(true, Ordering::Relaxed);
    let (samples, blocked, oldest_xact) = sampler.await.unwrap();

    let (mut held, mut round_trips): (Vec<Duration>, Vec<Duration>) =
        batches.lock().unwrap().clone();
    held.sort();
    round_trips.sort();
    let removed = removed.load(Ordering::Relaxed);
    let longest = held.last().copied().unwrap_or_default();
    let left: i64 = sandbox::db::count(&db, "SELECT count(*) FROM outbox").await;
    let stored: i64 = sandbox::db::count(&db, "SELECT count(DISTINCT seq) FROM event_store").await;
    println!(
        "cleanup under load: {written} events from {WRITERS} writers in {LOAD:?}; {} batches \
         removed {removed} rows; locks held (server) p50 {:.1} ms, p99 {:.1} ms, longest {:.1} \
         ms; round trip (client) p50 {:.1} ms, longest {:.1} ms; oldest cleanup transaction \
         seen by the sampler {:.1} ms; {samples} lock samples, {} waits on the cleanup; outbox \
         left {left} rows, event store {stored}",
        held.len(),
        percentile(&held, 0.50).as_secs_f64() * 1000.0,
        percentile(&held, 0.99).as_secs_f64() * 1000.0,
        longest.as_secs_f64() * 1000.0,
        percentile(&round_trips, 0.50).as_secs_f64() * 1000.0,
        round_trips
            .last()
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
        oldest_xact * 1000.0,
        blocked.len(),
    );
    assert!(written > 500, "the load wrote too little to say anything");
    assert!(removed > 0 && held.len() > 5, "the cleanup removed nothing");
    assert!(
        blocked.is_empty(),
        "backends waited on a lock the cleanup held: {blocked:?}"
    );
    assert!(
        longest < MAX_HOLD,
        "the longest batch held its locks {longest:?} (limit {MAX_HOLD:?})"
    );
    assert_eq!(
        stored, written as i64,
        "the event store kept every event written"
    );
    let unpublished_or_young: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox \
         WHERE published_at IS NULL OR published_at >= now() - make_interval(secs => $1)",
    )
    .bind(KEEP.as_secs_f64() + 1.0)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(
        left, unpublished_or_young,
        "only unpublished or young rows are left"
    );
    assert_eq!(
        removed as i64 + left,
        written as i64,
        "every removed row was an event of the load"
    );
    let exported = metrics.render().await;
    assert!(
        exported.contains("portal_outbox_cleanup_batch_seconds_count{table=\"auth_db.outbox\"}"),
        "{exported}"
    );
}

/// Writes `n` users whose outbox rows were published an hour ago.
async fn published_long_ago(db: &PgPool, n: usize) {
    for i in 0..n {
        auth::create_user(
            db,
            &format!("old{i}-{}@clinic.test", Uuid::new_v4()),
            Role::Doctor,
        )
        .await;
    }
    sqlx::query("UPDATE outbox SET published_at = now() - interval '1 hour'")
        .execute(db)
        .await
        .unwrap();
}

#[tokio::test]
async fn one_cleaner_per_table_works_at_a_time_and_the_second_skips_while_the_first_holds_it() {
    let sb = Sandbox::for_test().await;
    let db = pool(&sb, 6).await;
    published_long_ago(&db, 30).await;
    let config = CleanupConfig {
        batch_size: 10,
        ..CleanupConfig::default()
    };
    let first = Cleaner::new(Arc::new(user_events()), db.clone(), config.clone());
    let second = Cleaner::new(Arc::new(user_events()), db.clone(), config.clone());
    let messages = Cleaner::new(
        Arc::new(auth_service::relay::messages()),
        db.clone(),
        config,
    );

    // The first holds the table's lock (as during its batch)...
    let mut holding = db.begin().await.unwrap();
    assert!(first.try_lock(&mut holding).await.unwrap());
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND objid = 'outbox'::regclass::oid",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(held, 1, "the lock is keyed by the table");
    // ...so the second skips, at once, and removes nothing.
    let started = Instant::now();
    assert_eq!(second.batch().await.unwrap(), Batch::Skipped);
    let round = second.round(&CancellationToken::new()).await.unwrap();
    assert!(round.skipped && round.removed == 0, "{round:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a skipped cleaner does not wait for the lock"
    );
    assert_eq!(
        sandbox::db::count(&db, "SELECT count(*) FROM outbox").await,
        30
    );
    // Another table's cleaner is not held up by this one's lock.
    assert!(matches!(
        messages.batch().await.unwrap(),
        Batch::Done { rows: 0, .. }
    ));

    // Once the first is done, the second cleans: in batches of 10, until one is not full.
    holding.commit().await.unwrap();
    let round = second.round(&CancellationToken::new()).await.unwrap();
    assert!(!round.skipped);
    assert_eq!(round.removed, 30);
    assert_eq!(
        round.batches.len(),
        4,
        "three full batches and an empty one"
    );
    assert_eq!(
        sandbox::db::count(&db, "SELECT count(*) FROM outbox").await,
        0
    );
    assert_eq!(
        sandbox::db::count(&db, "SELECT count(*) FROM event_store").await,
        30,
        "the history keeps them"
    );

    // Two cleaners racing round after round: together they remove each row once.
    published_long_ago(&db, 40).await;
    let rounds = |c: Cleaner| async move {
        let (mut removed, mut skipped) = (0, 0);
        for _ in 0..20 {
            let round = c.round(&CancellationToken::new()).await.unwrap();
            removed += round.removed;
            skipped += u64::from(round.skipped);
        }
        (removed, skipped)
    };
    let ((a, _), (b, _)) = tokio::join!(rounds(first), rounds(second));
    assert_eq!(a + b, 40);
}
