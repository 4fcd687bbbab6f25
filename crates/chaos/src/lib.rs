//! `portal-chaos` (also run as `portal chaos`): the chaos run. It proves the synchronisation survives the faults it was built
//! for by causing them on purpose while a mixed user load runs: the user-service and the outbox
//! relay are `kill -9`ed and restarted, every broker connection is closed, the `user_db` backends
//! are terminated, and malformed messages are published. Afterwards the system must come to rest
//! with `user_db` equal to `auth_db` (verify: 0 differences) and every malformed message in the
//! dead-letter queue. `--inject-drift` deletes a `user_db` row before the check, to show the
//! run does fail when the copies differ.
//!
//! `portal-chaos offboarding` ([`offboarding`]) is the offboarding saga's fault run: every part
//! (the auth-service with its saga, the relay, the user-service, the appointment-service) is
//! `kill -9`ed at random during hundreds of offboardings; every saga must end completed or
//! needs-attention, no appointment resolved or announced twice, every copy in sync.
//!
//! Layout: [`args`] the flags; [`env`] the private databases, vhost and key pair; [`fleet`] the
//! services as child processes; [`load`] the HTTP workload; [`faults`] the injector;
//! [`malformed`] the bad messages; [`broker`] the RabbitMQ look-ups; [`progress`] the display;
//! [`report`] the verdict and summary line; [`offboarding`] the offboarding run.

pub mod args;
pub mod broker;
pub mod env;
pub mod faults;
pub mod fleet;
pub mod load;
pub mod malformed;
pub mod offboarding;
pub mod progress;
pub mod report;

pub use args::ChaosArgs;

use anyhow::{anyhow, bail, Context};
use api_client::ApiClient;
use auth_service::store::NewUser;
use contract::topology::{ConsumerQueues, USER_SERVICE};
use contract::Role;
use env::ChaosEnv;
use faults::{FaultCounts, Injector};
use fleet::{Fleet, SyncCounters};
use load::Load;
use platform::exit::Failure;
use progress::Progress;
use rand::rngs::StdRng;
use rand::SeedableRng;
use report::Summary;
use sqlx::PgPool;
use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long "outbox empty, queue empty" must hold before the system counts as at rest: longer
/// than RabbitMQ's default statistics interval (5 s), so the management API's count of unacked
/// messages has been refreshed at least once while everything looked quiet.
const QUIET_FOR: Duration = Duration::from_secs(6);

pub async fn run(mut args: ChaosArgs) -> Result<(), Failure> {
    if let Some(args::Mode::Offboarding(offboarding)) = args.mode.take() {
        return offboarding::run(&offboarding).await;
    }
    if args.min_fault_interval > args.max_fault_interval {
        return Err(anyhow!("--min-fault-interval is longer than --max-fault-interval").into());
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let shutdown = platform::shutdown::on_signal();
    let exe = args.servers.portal_bin()?;
    let mut env = ChaosEnv::create(&args.servers)
        .await
        .map_err(Failure::unreachable)?;
    eprintln!(
        "chaos: run {}: {} operations over {:?} by {} workers, {} malformed messages, seed {seed}",
        env.id,
        args.operations(),
        args.duration(),
        args.workers,
        args.malformed
    );
    eprintln!(
        "chaos: databases {} and {}, vhost {}, logs in {}",
        env.auth_db_url,
        env.user_db_url,
        env.vhost,
        env.dir.display()
    );
    // On Ctrl-C the run future is dropped, which kills every child (kill_on_drop); the
    // databases and the vhost are removed below either way.
    let outcome = tokio::select! {
        outcome = execute(&exe, &args, &env, seed) => outcome,
        _ = shutdown.cancelled() => Err(anyhow!("interrupted").into()),
    };
    let passed = matches!(&outcome, Ok(summary) if summary.passed());
    let databases = [env.auth_db_url.clone(), env.user_db_url.clone()];
    wrap_up(&mut env, &databases, args.keep, passed).await;
    let summary = outcome?;
    println!("{}", summary.line());
    if passed {
        Ok(())
    } else {
        Err(anyhow!("chaos run failed: {}", summary.failures().join("; ")).into())
    }
}

/// Removes the run's world (a failed run keeps its service logs, what there is to look at), or
/// with `--keep` leaves all of it in place and says where.
pub(crate) async fn wrap_up(env: &mut ChaosEnv, databases: &[String], keep: bool, passed: bool) {
    if keep {
        env.keep();
        eprintln!(
            "chaos: kept databases {}, vhost {} and {}",
            databases.join(" / "),
            env.vhost,
            env.dir.display()
        );
    } else {
        for problem in env.cleanup(!passed).await {
            eprintln!("chaos: cleanup: {problem}");
        }
        if !passed {
            eprintln!("chaos: service logs kept in {}", env.dir.display());
        }
    }
}

/// The environment variables of every child: the run's databases, vhost and keys; the ports
/// are set per start.
fn service_env(args: &ChaosArgs, env: &ChaosEnv) -> Vec<(&'static str, OsString)> {
    let any_port = OsString::from("127.0.0.1:0");
    let tuning = args
        .relay
        .env()
        .into_iter()
        .chain(args.consumer.env())
        .map(|(var, value)| (var, OsString::from(value)));
    sandbox::process::sandbox_env(&env.sandbox)
        .into_iter()
        .chain([
            ("AUTH_ADDR", any_port.clone()),
            ("USER_ADDR", any_port.clone()),
            ("GATEWAY_ADDR", any_port),
            // Its relays side by side: each its own health and metrics port.
            ("RELAY_HTTP_PORT", OsString::from("0")),
            ("RUST_LOG", "warn".into()),
        ])
        .chain(tuning)
        .collect()
}

/// Writes an active admin straight through the auth-service's store (with its event, like
/// every user), to drive the admin API with.
async fn create_admin(pool: &PgPool, email: &str, password: &str) -> anyhow::Result<()> {
    let hash = auth_service::password::hash(password.to_owned()).await?;
    let admin = NewUser::staff(email, "Chaos", "Admin", Role::Admin, hash)?;
    auth_service::store::insert_user(pool, admin).await?;
    Ok(())
}

async fn execute(
    exe: &std::path::Path,
    args: &ChaosArgs,
    env: &ChaosEnv,
    seed: u64,
) -> Result<Summary, Failure> {
    let started = Instant::now();
    let auth_pool = auth_service::prepare_database(&env.auth_db_url, 4)
        .await
        .map_err(Failure::unreachable)?;
    let user_pool = user_service::prepare_database(&env.user_db_url, 2)
        .await
        .map_err(Failure::unreachable)?;
    let admin_pool = env.user_admin_pool()?;
    // The queues exist before anything is published, malformed messages included.
    platform::amqp::ensure_topology(
        &env.amqp_url,
        &[contract::topology::ConsumerQueues::for_consumer(
            USER_SERVICE,
        )],
    )
    .await
    .context("declaring the topology in the run's vhost")
    .map_err(Failure::unreachable)?;
    let admin_email = format!("chaos-admin-{}@clinic.example", env.id);
    let admin_password = auth_service::password::temporary();
    create_admin(&auth_pool, &admin_email, &admin_password).await?;

    let mut fleet = Fleet::start(exe, service_env(args, env), &env.dir, &fleet::USER_SYNC).await?;
    let auth_url = fleet.auth_url()?;
    let api = ApiClient::new(&auth_url)
        .context("API client")?
        .logged_in(&admin_email, &admin_password)
        .await
        .context("admin login")?;
    let load = Load::new(
        api,
        env.id.clone(),
        args.operations(),
        args.duration(),
        args.load_deadline(),
        args.create_percent,
    )?;
    let counts = FaultCounts::default();
    let progress = Progress::new(load.operations());
    let injector = Injector {
        env,
        admin_pool: &admin_pool,
        min_interval: args.min_fault_interval,
        max_interval: args.max_fault_interval,
        max_downtime: args.max_downtime,
        faults: &faults::USER_SYNC,
        first_long_kill: None,
        counts: &counts,
        progress: &progress,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let published = AtomicU64::new(0);
    // `done` ends the faults when the load is through; `abort` ends the load when the faults
    // cannot go on (a service that will not restart).
    let (done, abort) = (CancellationToken::new(), CancellationToken::new());

    let load_run = async {
        let result = load.run(args.workers, seed, &abort).await;
        done.cancel();
        result
    };
    let fault_run = async {
        let result = injector.run(&mut fleet, &mut rng, &done).await;
        if result.is_err() {
            abort.cancel();
        }
        result
    };
    let malformed_run = malformed::publish_spread(
        &env.amqp_url,
        args.malformed,
        args.duration(),
        &published,
        &progress,
        &abort,
    );
    let display = show_progress(&progress, &load, &counts, &published, args.malformed, &done);
    let (loaded, faulted, injected, ()) = tokio::join!(load_run, fault_run, malformed_run, display);
    progress.finish();
    faulted?;
    loaded?;
    injected?;
    let load_time = progress.elapsed();
    progress.log(format_args!(
        "load done: {} operations accepted ({:.0}/s; {} refused and retried); waiting for \
         quiescence",
        load.counts.accepted(),
        load.counts.accepted() as f64 / load_time.as_secs_f64().max(0.001),
        load.counts.refused.load(Ordering::Relaxed)
    ));

    let quiescence = wait_for_quiescence(
        &auth_pool,
        env,
        &mut fleet,
        args.quiescence_timeout,
        &progress,
    )
    .await
    .map_err(|e| format!("{e:#}"));
    if let Ok(took) = &quiescence {
        progress.log(format_args!("quiescent after {:.1}s", took.as_secs_f64()));
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store")
        .fetch_one(&auth_pool)
        .await
        .context("counting outbox events")?;
    let counters = fleet.total_counters().await;
    let duplicates_absorbed = duplicates(counters, events);
    let queues = ConsumerQueues::for_consumer(USER_SERVICE);
    let dead_letters =
        broker::read_dead_letters(&env.amqp_url, &queues.dead_letter, malformed::ID_PREFIX).await?;
    let reasons: Vec<String> = dead_letters
        .reasons
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    progress.log(format_args!(
        "dead-letter queue: {} messages ({}); consumers received {} valid events for {} events written",
        dead_letters.copies,
        reasons.join(", "),
        counters.deliveries(),
        events
    ));
    let drift_injected = if args.inject_drift {
        Some(inject_drift(&user_pool, &progress).await?)
    } else {
        None
    };
    let verify = ops::verify::compare(
        &auth_pool,
        &ops::verify::USER_SERVICE,
        &user_pool,
        ops::verify::Options::listing(20),
    )
    .await
    .map_err(|e| e.to_string());
    if let Ok(report) = &verify {
        for difference in &report.listed {
            println!("  {difference}");
        }
    }
    let unexpected_exits = fleet.unexpected_exits.clone();
    fleet.shutdown().await;
    auth_pool.close().await;
    user_pool.close().await;
    admin_pool.close().await;
    Ok(Summary {
        creates: load.counts.creates.load(Ordering::Relaxed),
        changes: load.counts.changes.load(Ordering::Relaxed),
        events,
        user_service_kills: counts.user_service_kills.load(Ordering::Relaxed),
        relay_kills: counts.relay_kills.load(Ordering::Relaxed),
        connection_cuts: counts.connection_cuts.load(Ordering::Relaxed),
        backend_terminations: counts.backend_terminations.load(Ordering::Relaxed),
        duplicates_absorbed,
        malformed_injected: published.load(Ordering::Relaxed),
        dead_letters,
        quiescence,
        drift_injected,
        verify,
        unexpected_exits,
        elapsed: started.elapsed(),
    })
}

/// Duplicates absorbed: valid events the consumers received beyond one per event written.
///
/// Every event is written once to the outbox, yet may reach a consumer more than once: the relay
/// republishes a batch it published but could not mark (killed, or its broker connection cut,
/// before the commit), and the broker redelivers what a consumer had not acked when it died or
/// lost its connection. Each received valid event is either applied or ignored as not newer
/// (user-service counters `applied` + `ignoredStale`, summed over every user-service process
/// of the run), so received − written is the number of copies the idempotent consumer absorbed.
/// The counters of a killed process are read just before its SIGKILL, so the few milliseconds
/// in between go uncounted: the figure is a lower bound, hence the saturation at 0.
pub fn duplicates(counters: SyncCounters, events: i64) -> u64 {
    counters
        .deliveries()
        .saturating_sub(u64::try_from(events).unwrap_or_default())
}

/// Deletes one random `user_db` row behind the system's back; returns which.
async fn inject_drift(user_pool: &PgPool, progress: &Progress) -> anyhow::Result<String> {
    let row: Option<(uuid::Uuid, String)> = sqlx::query_as(
        "DELETE FROM users WHERE id = (SELECT id FROM users ORDER BY random() LIMIT 1) \
         RETURNING id, email",
    )
    .fetch_optional(user_pool)
    .await
    .context("deleting a user_db row")?;
    let (id, email) = row.ok_or_else(|| anyhow!("user_db has no row to delete"))?;
    let what = format!("{id} {email}");
    progress.log(format_args!(
        "--inject-drift: deleted user {what} from user_db behind the system's back"
    ));
    Ok(what)
}

/// Waits until no outbox row is unpublished, the user-service's queue holds nothing (ready or
/// unacked) and its consumer's counters stand still, for [`QUIET_FOR`]; restarts a service that died meanwhile (recorded as
/// unexpected). Returns how long it took.
async fn wait_for_quiescence(
    auth_pool: &PgPool,
    env: &ChaosEnv,
    fleet: &mut Fleet,
    timeout: Duration,
    progress: &Progress,
) -> anyhow::Result<Duration> {
    let queue = ConsumerQueues::for_consumer(USER_SERVICE).main;
    let start = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut last_counters: Option<SyncCounters> = None;
    loop {
        for exit in fleet.restart_exited().await? {
            progress.log(format_args!("UNEXPECTED: {exit}; restarted"));
        }
        let unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(auth_pool)
                .await
                .context("counting unpublished outbox rows")?;
        // Ready messages exactly (passive declare) and ready + unacked as last sampled.
        let ready = platform::amqp::ready_messages(&env.amqp_url, &queue)
            .await
            .ok();
        let total = env
            .management
            .queue_messages(&env.vhost, &queue)
            .await
            .ok()
            .flatten();
        // The consumer's counters must stand still too: a batch it finishes during the window
        // was in flight, whatever the sampled statistics said.
        let counters = fleet.user_counters().await;
        let consumer_idle = counters.is_some() && counters == last_counters;
        last_counters = counters;
        let quiet = unpublished == 0 && ready == Some(0) && total == Some(0) && consumer_idle;
        if quiet {
            if quiet_since.get_or_insert_with(Instant::now).elapsed() >= QUIET_FOR {
                return Ok(start.elapsed());
            }
        } else {
            quiet_since = None;
        }
        if start.elapsed() > timeout {
            let show = |v: Option<u64>| v.map_or("unknown".to_owned(), |v| v.to_string());
            bail!(
                "after {timeout:?}: {unpublished} outbox rows unpublished, queue {queue} holds {} \
                 ready, {} ready + unacked",
                show(ready.map(u64::from)),
                show(total)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keeps the progress display current until `done`.
async fn show_progress(
    progress: &Progress,
    load: &Load,
    counts: &FaultCounts,
    published: &AtomicU64,
    malformed: u64,
    done: &CancellationToken,
) {
    let mut last_plain = Instant::now();
    loop {
        let status = format!(
            "| kills {} cuts {} backend-terminations {} malformed {}/{malformed}",
            counts.kills(),
            counts.connection_cuts.load(Ordering::Relaxed),
            counts.backend_terminations.load(Ordering::Relaxed),
            published.load(Ordering::Relaxed)
        );
        progress.update(load.counts.accepted(), status.clone());
        if progress.is_plain() && last_plain.elapsed() >= progress::PLAIN_EVERY {
            last_plain = Instant::now();
            progress.log(format_args!(
                "{}/{} operations {status}",
                load.counts.accepted(),
                load.operations()
            ));
        }
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
