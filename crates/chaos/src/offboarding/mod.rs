//! `portal-chaos offboarding`: the offboarding saga's fault run. Hundreds of doctors are
//! offboarded over the admin API while every part is `kill -9`ed at random and restarted after
//! a random downtime: the auth-service (with the saga's runner, its control queue and its
//! message relay inside), the user events' relay (`portal relay`), the user-service and the
//! appointment-service. Afterwards every saga must have ended completed or needs-attention
//! (those that stalled on the way are counted), no appointment resolved or announced twice,
//! each saga's outcome as `appointment_db` holds it, and both copies in sync with `auth_db`.
//!
//! Layout: [`setup`] the consumers, people, bookings and the event queue; [`driver`] the
//! offboarding requests; [`settle`] the waits afterwards and `--inject-duplicate`; [`checks`]
//! what the databases and the recorded events must show; [`report`] the verdict and summary
//! line. The databases, vhost, keys, child processes, injector and display are the chaos run's
//! own ([`crate::env`], [`crate::fleet`], [`crate::faults`], [`crate::progress`]).

pub mod checks;
pub mod driver;
pub mod report;
pub mod settle;
pub mod setup;

use crate::args::OffboardingArgs;
use crate::env::ChaosEnv;
use crate::faults::{self, FaultCounts, Injector};
use crate::fleet::{self, Fleet, Part};
use crate::progress::{self, Progress};
use anyhow::{anyhow, Context};
use contract::topology::{self, ConsumerQueues, ControlQueue, APPOINTMENT_SERVICE, USER_SERVICE};
use driver::{Driver, DriverCounts};
use platform::duration::Interval;
use platform::exit::Failure;
use rand::rngs::StdRng;
use rand::SeedableRng;
use report::Summary;
use sqlx::PgPool;
use std::ffi::OsString;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the appointment-service may take to hold the whole history after the backfill.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub async fn run(args: &OffboardingArgs) -> Result<(), Failure> {
    if args.min_fault_interval() > args.max_fault_interval() {
        return Err(anyhow!("--min-fault-interval is longer than --max-fault-interval").into());
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let shutdown = platform::shutdown::on_signal();
    let exe = args.servers.portal_bin()?;
    let mut env = ChaosEnv::create(&args.servers)
        .await
        .map_err(Failure::unreachable)?;
    eprintln!(
        "chaos offboarding: run {}: {} offboardings over {:?} ({} staying doctors, {}% \
         reassign), a kill every {:?}-{:?} (down up to {:?}), saga timeout {:?} with {} \
         re-sends, seed {seed}",
        env.id,
        args.offboardings(),
        args.duration(),
        args.staying_doctors(),
        args.reassign_percent,
        args.min_fault_interval(),
        args.max_fault_interval(),
        args.max_downtime,
        args.offboarding_timeout,
        args.offboarding_resends,
    );
    eprintln!(
        "chaos offboarding: databases {}, {} and {}, vhost {}, logs in {}",
        env.auth_db_url,
        env.user_db_url,
        env.appointment_db_url,
        env.vhost,
        env.dir.display()
    );
    // On Ctrl-C the run future is dropped, which kills every child (kill_on_drop); the
    // databases and the vhost are removed below either way.
    let outcome = tokio::select! {
        outcome = execute(&exe, args, &env, seed) => outcome,
        _ = shutdown.cancelled() => Err(anyhow!("interrupted").into()),
    };
    let passed = matches!(&outcome, Ok(summary) if summary.passed());
    let databases = [
        env.auth_db_url.clone(),
        env.user_db_url.clone(),
        env.appointment_db_url.clone(),
    ];
    crate::wrap_up(&mut env, &databases, args.keep, passed).await;
    let summary = outcome?;
    println!("{}", summary.line());
    if passed {
        Ok(())
    } else {
        Err(anyhow!(
            "chaos offboarding run failed: {}",
            summary.failures().join("; ")
        )
        .into())
    }
}

/// The environment of every child: the run's databases, vhost and keys, the saga's short
/// timers; the ports are set per part (and AUTH_SERVICE_URL by the fleet).
fn service_env(args: &OffboardingArgs, env: &ChaosEnv) -> Vec<(&'static str, OsString)> {
    let any_port = OsString::from("127.0.0.1:0");
    sandbox::process::sandbox_env(&env.sandbox)
        .into_iter()
        .chain([
            ("AUTH_ADDR", any_port.clone()),
            ("USER_ADDR", any_port.clone()),
            ("APPOINTMENT_ADDR", any_port),
            ("RELAY_HTTP_PORT", OsString::from("0")),
            ("RUST_LOG", "warn".into()),
            // The checks (and --inject-duplicate) read the appointment events the run published
            // from appointment_db.outbox: published rows are kept past the run.
            ("OUTBOX_KEEP_PUBLISHED_SECS", "86400".into()),
            (
                "OFFBOARDING_TIMEOUT",
                Interval(args.offboarding_timeout).to_string().into(),
            ),
            (
                "OFFBOARDING_RESENDS",
                args.offboarding_resends.to_string().into(),
            ),
        ])
        .collect()
}

async fn execute(
    exe: &std::path::Path,
    args: &OffboardingArgs,
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
    let appointment_pool = appointment_service::prepare_database(&env.appointment_db_url, 2)
        .await
        .map_err(Failure::unreachable)?;
    let admin_pool = env.user_admin_pool()?;
    // Both consumers' queues exist before the first user event is written, and the run's
    // queue before the first appointment event.
    platform::amqp::ensure_topology(
        &env.amqp_url,
        &[
            ConsumerQueues::for_consumer(USER_SERVICE),
            ConsumerQueues::for_consumer(APPOINTMENT_SERVICE),
        ],
    )
    .await
    .context("declaring the topology in the run's vhost")
    .map_err(Failure::unreachable)?;
    setup::declare_event_queue(&env.amqp_url)
        .await
        .map_err(Failure::unreachable)?;
    setup::register_consumers(&auth_pool, &env.amqp_url).await?;
    let people = setup::create_people(
        &auth_pool,
        &env.id,
        args.offboardings(),
        args.staying_doctors(),
    )
    .await?;
    let tokens = setup::Tokens::open(&env.key_dir)?;

    let mut fleet =
        Fleet::start(exe, service_env(args, env), &env.dir, &fleet::OFFBOARDING).await?;
    let appointments_url = fleet.url(Part::AppointmentService)?;
    ops::replay::backfill(
        &auth_pool,
        &env.amqp_url,
        &ConsumerQueues::for_consumer(APPOINTMENT_SERVICE).main,
        |_| {},
    )
    .await
    .map_err(|e| anyhow!("backfilling the appointment-service: {e}"))?;
    setup::wait_ready(&appointments_url, READY_TIMEOUT).await?;
    let (leaving_bookings, staying_bookings) =
        setup::book(&appointments_url, &tokens, &people).await?;

    let mut rng = StdRng::seed_from_u64(seed);
    let plan = driver::plan(&people.leaving, args.reassign_percent, &mut rng);
    let driver = Driver::new(
        fleet.auth_url()?,
        &tokens,
        people.admin,
        people.admin_email.clone(),
    )?;
    let counts = FaultCounts::default();
    let progress = Progress::counting(plan.len() as u64, "offboardings started");
    progress.log(format_args!(
        "set up: {} leaving and {} staying doctors, {} appointments booked; offboarding",
        people.leaving.len(),
        people.staying.len(),
        leaving_bookings.len() + staying_bookings.len()
    ));
    let injector = Injector {
        env,
        admin_pool: &admin_pool,
        min_interval: args.min_fault_interval(),
        max_interval: args.max_fault_interval(),
        max_downtime: args.max_downtime,
        faults: &faults::OFFBOARDING,
        first_long_kill: Some((Part::AppointmentService, args.first_outage())),
        counts: &counts,
        progress: &progress,
    };
    // `done` ends the faults when every offboarding is started; `abort` ends the requests when
    // the faults cannot go on (a part that will not restart).
    let (done, abort) = (CancellationToken::new(), CancellationToken::new());
    let driver_run = async {
        let result = driver
            .run(&plan, args.duration(), args.start_deadline(), &abort)
            .await;
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
    let display = show_progress(&progress, &auth_pool, &driver.counts, &counts, &done);
    let (driven, faulted, ()) = tokio::join!(driver_run, fault_run, display);
    progress.finish();
    faulted?;
    driven?;
    progress.log(format_args!(
        "{} offboardings started ({} requests sent again); faults stopped after {} kills; \
         waiting for every saga to finish",
        driver.counts.started.load(Ordering::Relaxed),
        driver.counts.retried.load(Ordering::Relaxed),
        counts.kills()
    ));

    let settled = settle::wait_for_sagas(&auth_pool, &mut fleet, args.settle_timeout, &progress)
        .await
        .map_err(|e| format!("{e:#}"));
    if let Ok(took) = &settled {
        progress.log(format_args!(
            "every saga finished {:.1}s after the faults stopped",
            took.as_secs_f64()
        ));
    }
    let duplicate_injected = if args.inject_duplicate {
        let appointment = settle::inject_duplicate(&appointment_pool).await?;
        progress.log(format_args!(
            "--inject-duplicate: a second event for appointment {appointment} written to \
             appointment_db's outbox"
        ));
        Some(appointment)
    } else {
        None
    };
    let quiescence = settle::wait_for_quiescence(
        &auth_pool,
        &appointment_pool,
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

    let findings = check(
        &auth_pool,
        &appointment_pool,
        env,
        &people,
        leaving_bookings,
        staying_bookings,
    )
    .await
    .map_err(|e| format!("{e:#}"));
    let dead_letters = dead_letters(&env.amqp_url)
        .await
        .map_err(|e| format!("{e:#}"));
    let verify_users = verify(&auth_pool, &ops::verify::USER_SERVICE, &user_pool).await;
    let verify_appointments = verify(
        &auth_pool,
        &ops::verify::APPOINTMENT_SERVICE,
        &appointment_pool,
    )
    .await;
    let unexpected_exits = fleet.unexpected_exits.clone();
    fleet.shutdown().await;
    for pool in [&auth_pool, &user_pool, &appointment_pool, &admin_pool] {
        pool.close().await;
    }
    Ok(Summary {
        offboardings: args.offboardings(),
        requests_retried: driver.counts.retried.load(Ordering::Relaxed),
        kills: [
            Part::AuthService,
            Part::Relay,
            Part::UserService,
            Part::AppointmentService,
        ]
        .into_iter()
        .map(|part| (part, counts.kills_of(part)))
        .collect(),
        settled,
        quiescence,
        findings,
        dead_letters,
        duplicate_injected,
        verify_users,
        verify_appointments,
        unexpected_exits,
        elapsed: started.elapsed(),
    })
}

/// Reads everything and runs [`checks::check`].
async fn check(
    auth_pool: &PgPool,
    appointment_pool: &PgPool,
    env: &ChaosEnv,
    people: &setup::People,
    leaving_bookings: Vec<setup::Booking>,
    staying_bookings: Vec<setup::Booking>,
) -> anyhow::Result<checks::Findings> {
    let (sagas, active_doctors, appointments, results) =
        checks::load(auth_pool, appointment_pool).await?;
    let events = setup::take_recorded_events(&env.amqp_url).await?;
    let unpublished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(appointment_pool)
            .await
            .context("counting appointment_db's unpublished rows")?;
    Ok(checks::check(&checks::State {
        sagas,
        active_doctors,
        appointments,
        results,
        leaving: people.leaving.clone(),
        leaving_bookings,
        staying_bookings,
        events,
        unpublished_appointment_messages: unpublished,
    }))
}

/// Compares `auth_db` with one copy, listing the first differences on stdout.
async fn verify(
    auth_pool: &PgPool,
    copy: &ops::verify::CopySpec,
    pool: &PgPool,
) -> Result<ops::verify::Report, String> {
    let report = ops::verify::compare(auth_pool, copy, pool, ops::verify::Options::listing(20))
        .await
        .map_err(|e| e.to_string())?;
    for difference in &report.listed {
        println!("  {}: {difference}", copy.service);
    }
    Ok(report)
}

/// Messages in a queue where nothing should be at the end: each consumer's dead letters, the
/// control queues' dead letters, unroutable user events; only the queues holding some.
async fn dead_letters(amqp_url: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let queues = [
        ConsumerQueues::for_consumer(USER_SERVICE).dead_letter,
        ConsumerQueues::for_consumer(APPOINTMENT_SERVICE).dead_letter,
        ControlQueue::of(topology::AUTH_SERVICE).dead_letter,
        ControlQueue::of(APPOINTMENT_SERVICE).dead_letter,
        topology::UNROUTED_QUEUE.to_owned(),
    ];
    let mut lookout = settle::Lookout::new(amqp_url);
    let counts = lookout.ready(&queues).await;
    lookout.close().await;
    Ok(queues
        .into_iter()
        .zip(counts?)
        .filter(|(_, n)| *n > 0)
        .collect())
}

/// Keeps the progress display current until `done`: offboardings started, how many sagas run,
/// how many of them are stalled now, how many finished, the kills.
async fn show_progress(
    progress: &Progress,
    auth_pool: &PgPool,
    driven: &DriverCounts,
    counts: &FaultCounts,
    done: &CancellationToken,
) {
    let mut last_plain = Instant::now();
    loop {
        let sagas: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state IN ('awaiting_receipts', \
                 'resolving_appointments')), \
             count(*) FILTER (WHERE stalled_reason IS NOT NULL), \
             count(*) FILTER (WHERE finished_at IS NOT NULL) FROM offboardings",
        )
        .fetch_one(auth_pool)
        .await
        .ok();
        let sagas = sagas.map_or(
            "sagas unknown".to_owned(),
            |(running, stalled, finished)| {
                format!("| running {running} (stalled {stalled}) finished {finished}")
            },
        );
        let status = format!(
            "{sagas} | kills {} (auth-service {}, relay {}, user-service {}, appointment-service \
             {})",
            counts.kills(),
            counts.kills_of(Part::AuthService),
            counts.kills_of(Part::Relay),
            counts.kills_of(Part::UserService),
            counts.kills_of(Part::AppointmentService),
        );
        let started = driven.started.load(Ordering::Relaxed);
        progress.update(started, status.clone());
        if progress.is_plain() && last_plain.elapsed() >= progress::PLAIN_EVERY {
            last_plain = Instant::now();
            progress.log(format_args!("{started} offboardings started {status}"));
        }
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
