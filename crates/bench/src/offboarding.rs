//! Rows 10 and 11: the offboarding saga end to end. `portal auth-service` (with its relay and
//! the saga's runner), `portal user-service`, `portal appointment-service` and `portal gateway`
//! run as child processes ([`Stack`], [`start_appointments`]); both consumers are registered as
//! required in the bench's `auth_db` with the broker user of the bench's AMQP URL before any
//! service starts, as the setup registers them (no `portal setup` runs). The admin's requests go
//! through the gateway, as `portal offboard` and the web portal send them.
//!
//! - Row 10: `n` clinicians offboarded by `clients` concurrent clients, each sending its next
//!   request when the last was answered. Per offboarding: from the moment the request was sent
//!   (this process's clock) to the saga's record of the receipts of both required consumers at
//!   the deactivating version (the later `receipt` step of `offboarding_steps`, written with
//!   `clock_timestamp()` by PostgreSQL on this same machine, in the transaction that sends the
//!   command). Also from the request to the later consumer's commit (`consumer_versions.applied_at`,
//!   the consumer's clock, from its receipt) and to the saga's end.
//! - Row 11: one doctor with `n` future appointments, some at times when another active doctor
//!   is free (reassigned) and some when every other doctor is booked (cancelled), offboarded
//!   with the policy `reassign`; timed from the request to the later of the saga's end
//!   (`offboardings.finished_at`) and the last appointment event published
//!   (`appointment_db.outbox.published_at`, once no row is left unpublished).
//!
//! Both rows end with both copies verified equal to `auth_db`, or fail.

use super::env::{BenchEnv, PASSWORD};
use super::http::Stack;
use super::import::{check_alive, start_appointments, stop_and_verify_appointments, Appointments};
use super::profile;
use super::report::{LeavingDoctorRun, OffboardingRun, Percentiles, Setting};
use anyhow::{bail, Context};
use api_client::ApiClient;
use auth_service::store::{self, NewUser};
use chrono::{DateTime, Utc};
use contract::api::{NewAppointment, OffboardingRequest};
use contract::control::{AppointmentPolicy, DoctorResolved, Resolution};
use contract::topology::{APPOINTMENT_SERVICE, USER_SERVICE};
use contract::Role;
use sqlx::types::Json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The consumers registered as required: every offboarding waits for both.
const REQUIRED: [&str; 2] = [USER_SERVICE, APPOINTMENT_SERVICE];

/// How long the sagas may go without one more of them finishing before the run is declared
/// stuck (a saga stalls visibly after its timeout and re-sends: 4 × 10 s by default).
const STALL: Duration = Duration::from_secs(90);

/// Why the benchmark offboards.
const REASON: &str = "left the clinic (benchmark)";

/// The other doctors of row 11, by last name.
const OTHER_DOCTORS: [&str; 3] = ["Moyo", "Ncube", "Dube"];

/// `to - from` in microseconds, never negative.
fn micros(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_microseconds().unwrap_or(0).max(0)
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    micros(from, to) as f64 / 1e6
}

/// Waits until `user_db` holds every user of `auth_db` and both consumers' receipts of
/// `users` are recorded: nothing of the set-up is still on its way when the timing starts.
async fn settle(
    stack: &mut Stack,
    appointments: &mut Appointments,
    users: &[Uuid],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected_receipts = (users.len() * REQUIRED.len()) as i64;
    loop {
        let in_auth: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&stack.auth)
            .await?;
        let in_user: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&stack.user)
            .await?;
        let receipts: i64 =
            sqlx::query_scalar("SELECT count(*) FROM consumer_versions WHERE user_id = ANY($1)")
                .bind(users)
                .fetch_one(&stack.auth)
                .await?;
        if in_user >= in_auth && receipts >= expected_receipts {
            return Ok(());
        }
        check_alive(stack, appointments)?;
        if Instant::now() > deadline {
            bail!(
                "not settled after 120 s: user_db holds {in_user} of {in_auth} users, \
                 {receipts} of {expected_receipts} receipts recorded"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One offboarding request as the client saw it.
struct Sent {
    saga: Uuid,
    /// This process's clock just before the request was sent.
    at: DateTime<Utc>,
    /// Until the answer, microseconds.
    answered_us: i64,
}

/// A finished saga's times, from `auth_db`.
#[derive(sqlx::FromRow)]
struct SagaTimes {
    id: Uuid,
    state: String,
    finished_at: Option<DateTime<Utc>>,
    /// The later `receipt` step: when the saga recorded the last required receipt.
    receipts_at: Option<DateTime<Utc>>,
    receipts: i64,
    resent: i64,
    stalled: i64,
    /// The later consumer's commit of the deactivating version, from its receipt.
    applied_at: Option<DateTime<Utc>>,
    confirmed: i64,
}

/// Waits until every saga of `ids` has finished, failing when none finishes for [`STALL`].
async fn wait_finished(
    stack: &mut Stack,
    appointments: &mut Appointments,
    ids: &[Uuid],
) -> anyhow::Result<()> {
    let mut progress = (-1i64, Instant::now());
    loop {
        let finished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM offboardings WHERE id = ANY($1) AND finished_at IS NOT NULL",
        )
        .bind(ids)
        .fetch_one(&stack.auth)
        .await?;
        if finished >= ids.len() as i64 {
            return Ok(());
        }
        check_alive(stack, appointments)?;
        if finished != progress.0 {
            progress = (finished, Instant::now());
        } else if progress.1.elapsed() > STALL {
            let states: Vec<(String, Option<String>, i64)> = sqlx::query_as(
                "SELECT state, stalled_reason, count(*) FROM offboardings WHERE id = ANY($1) \
                 GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5",
            )
            .bind(ids)
            .fetch_all(&stack.auth)
            .await?;
            bail!(
                "{finished} of {} offboardings finished, none more for {STALL:?}: {states:?}",
                ids.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Row 10: `n` clinicians offboarded by `clients` concurrent clients through the gateway.
pub async fn receipts(
    env: &BenchEnv,
    setting: Setting,
    n: u64,
    clients: usize,
    write_batch: u64,
) -> anyhow::Result<OffboardingRun> {
    let label = "row 10: offboardings";
    let mut stack = Stack::start(env, setting, clients, label, &REQUIRED).await?;
    let spin = super::spinner(format!(
        "{label}: {n} clinicians, the appointment-service and its backfill"
    ));
    let mut leavers = Vec::with_capacity(n as usize);
    let mut written = 0;
    while written < n {
        let size = write_batch.min(n - written);
        let users = (written..written + size)
            .map(|i| super::sync::new_user("leaver", i, &env.password_hash))
            .collect::<anyhow::Result<Vec<NewUser>>>()?;
        let mut tx = stack.auth.begin().await?;
        let rows = auth_service::bulk::create_users(&mut tx, users).await?;
        tx.commit().await?;
        leavers.extend(rows.iter().map(|r| r.id));
        written += size;
    }
    let mut appointments = start_appointments(env, &stack.auth, &stack.auth_url).await?;
    settle(&mut stack, &mut appointments, &leavers).await?;
    spin.finish_and_clear();

    let client = ApiClient::with_http(stack.http.clone(), &stack.gateway_url)?
        .logged_in(stack.admin_email, PASSWORD)
        .await
        .context("admin login through the gateway")?;
    let request = OffboardingRequest {
        reason: REASON.to_owned(),
        policy: AppointmentPolicy::Reassign,
    };
    let cpu_before = profile::snapshot(&[
        &stack.auth_service,
        &stack.user_service,
        &stack.gateway,
        &appointments.process,
    ]);
    let bar = super::bar(n, format!("{label}: requests, {clients} clients"));
    let next = Arc::new(AtomicUsize::new(0));
    let leavers = Arc::new(leavers);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, request, next, leavers, bar) = (
            client.clone(),
            request.clone(),
            next.clone(),
            leavers.clone(),
            bar.clone(),
        );
        tasks.spawn(async move {
            let mut sent = Vec::new();
            while let Some(&user) = leavers.get(next.fetch_add(1, Ordering::Relaxed)) {
                let at = Utc::now();
                let clock = Instant::now();
                let saga = client
                    .offboard(user, &request)
                    .await
                    .with_context(|| format!("offboarding {user}"))?;
                sent.push(Sent {
                    saga: saga.id,
                    at,
                    answered_us: clock.elapsed().as_micros() as i64,
                });
                bar.inc(1);
            }
            anyhow::Ok(sent)
        });
    }
    let mut sent = Vec::with_capacity(leavers.len());
    while let Some(done) = tasks.join_next().await {
        sent.extend(done.context("an offboarding client panicked")??);
    }
    let requests_seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let spin = super::spinner(format!("{label}: waiting for every saga to finish"));
    let ids: Vec<Uuid> = sent.iter().map(|s| s.saga).collect();
    wait_finished(&mut stack, &mut appointments, &ids).await?;
    let cpu = profile::since(
        &cpu_before,
        &[
            &stack.auth_service,
            &stack.user_service,
            &stack.gateway,
            &appointments.process,
        ],
    );
    spin.finish_and_clear();

    let times: Vec<SagaTimes> = sqlx::query_as(
        "SELECT o.id, o.state, o.finished_at, \
             max(s.at) FILTER (WHERE s.step = 'receipt') AS receipts_at, \
             count(*) FILTER (WHERE s.step = 'receipt') AS receipts, \
             count(*) FILTER (WHERE s.step = 'resent') AS resent, \
             count(*) FILTER (WHERE s.step = 'stalled') AS stalled, \
             (SELECT max(v.applied_at) FROM consumer_versions v WHERE v.user_id = o.user_id \
                 AND v.user_version >= o.target_version) AS applied_at, \
             (SELECT count(*) FROM consumer_versions v WHERE v.user_id = o.user_id \
                 AND v.user_version >= o.target_version) AS confirmed \
         FROM offboardings o JOIN offboarding_steps s ON s.offboarding_id = o.id \
         WHERE o.id = ANY($1) GROUP BY o.id",
    )
    .bind(&ids)
    .fetch_all(&stack.auth)
    .await?;
    let times: HashMap<Uuid, SagaTimes> = times.into_iter().map(|t| (t.id, t)).collect();
    let required = REQUIRED.len() as i64;
    let (mut receipts, mut applied, mut reaction, mut answered, mut completed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut resent, mut stalled) = (0, 0);
    let mut first_sent: Option<DateTime<Utc>> = None;
    let mut last_finished: Option<DateTime<Utc>> = None;
    for s in &sent {
        let t = times
            .get(&s.saga)
            .with_context(|| format!("offboarding {} not found in auth_db", s.saga))?;
        let (Some(receipts_at), Some(applied_at), Some(finished_at)) =
            (t.receipts_at, t.applied_at, t.finished_at)
        else {
            bail!("offboarding {} finished without its receipts", s.saga);
        };
        if t.state != "completed" || t.receipts != required || t.confirmed != required {
            bail!(
                "offboarding {} ended {} with {} receipt steps and {} consumers confirming \
                 ({required} required)",
                s.saga,
                t.state,
                t.receipts,
                t.confirmed
            );
        }
        receipts.push(micros(s.at, receipts_at));
        applied.push(micros(s.at, applied_at));
        reaction.push(micros(applied_at, receipts_at));
        completed.push(micros(s.at, finished_at));
        answered.push(s.answered_us);
        resent += t.resent;
        stalled += t.stalled;
        first_sent = Some(first_sent.map_or(s.at, |f| f.min(s.at)));
        last_finished = Some(last_finished.map_or(finished_at, |l| l.max(finished_at)));
    }
    let all_completed_seconds = first_sent
        .zip(last_finished)
        .map_or(0.0, |(f, l)| seconds(f, l));
    let run = OffboardingRun {
        offboardings: sent.len() as u64,
        clients,
        through: "gateway",
        requests_seconds,
        requests_per_s: sent.len() as f64 / requests_seconds.max(1e-9),
        receipts_ms: Percentiles::of(receipts),
        consumers_applied_ms: Percentiles::of(applied),
        recorded_after_applied_ms: Percentiles::of(reaction),
        answered_ms: Percentiles::of(answered),
        completed_ms: Percentiles::of(completed),
        all_completed_seconds,
        resent,
        stalled,
        auth_service_peak_rss_mib: stack.auth_service.peak_rss_kib()? as f64 / 1024.0,
        cpu,
    };
    stop_and_verify_appointments(appointments, &stack.auth)
        .await
        .context("after the offboardings")?;
    stack.stop_and_verify().await?;
    Ok(run)
}

/// How many of the other doctors are booked at the leaving doctor's `i`-th appointment: every
/// fourth, all of them (nobody can take it: cancelled); otherwise 0, 1 or 2 of the 3 (one is
/// free: reassigned).
fn others_busy_at(i: usize, others: usize) -> usize {
    match i % 4 {
        3 => others,
        k => k.min(others.saturating_sub(1)),
    }
}

/// Books `patient` with `doctor` at `starts` for 30 minutes.
async fn book(
    client: &ApiClient,
    doctor: Uuid,
    starts: DateTime<Utc>,
    patient: &str,
) -> anyhow::Result<()> {
    client
        .book(&NewAppointment {
            patient_name: patient.to_owned(),
            doctor_id: doctor.to_string(),
            starts_at: starts.to_rfc3339(),
            duration_minutes: 30,
            reason: Some("follow-up".to_owned()),
        })
        .await
        .with_context(|| format!("booking {patient} with {doctor} at {starts}"))?;
    Ok(())
}

/// Row 11: a doctor with `n` future appointments offboarded.
pub async fn leaving_doctor(
    env: &BenchEnv,
    setting: Setting,
    n: u64,
) -> anyhow::Result<LeavingDoctorRun> {
    let label = "row 11: a leaving doctor";
    let mut stack = Stack::start(env, setting, 2, label, &REQUIRED).await?;
    let spin = super::spinner(format!(
        "{label}: doctors, the appointment-service, {n} appointments"
    ));
    let doctor = |email: &str, first: &str, last: &str| {
        NewUser::staff(email, first, last, Role::Doctor, env.password_hash.clone())
    };
    let mut tx = stack.auth.begin().await?;
    let leaving = store::create_user(
        &mut tx,
        doctor("leaving.doctor@bench.example", "Tendai", "Leaving")?,
    )
    .await?
    .id;
    let mut others = Vec::new();
    for (i, last) in OTHER_DOCTORS.iter().enumerate() {
        let email = format!("doctor{i}@bench.example");
        others.push(
            store::create_user(&mut tx, doctor(&email, "Rudo", last)?)
                .await?
                .id,
        );
    }
    tx.commit().await?;
    let mut appointments = start_appointments(env, &stack.auth, &stack.auth_url).await?;

    // A nurse books, with a token signed by the bench's keys (the auth-service's own).
    let nurse = platform::jwt::KeyRing::open(
        &env.sandbox.key_dir,
        platform::jwt::LOCAL_ACCESS_TTL_SECONDS,
    )?
    .sign(Uuid::now_v7(), "bench.nurse@bench.example", Role::Nurse)?;
    let booker = ApiClient::with_http(stack.http.clone(), &appointments.url)?.authenticated(nurse);
    let first = (Utc::now() + chrono::Duration::days(2))
        .date_naive()
        .and_hms_opt(8, 0, 0)
        .context("08:00")?
        .and_utc();
    let mut expected_cancelled = 0u64;
    for i in 0..n as usize {
        let starts = first + chrono::Duration::hours(i as i64);
        book(&booker, leaving, starts, &format!("Patient {i}")).await?;
        let busy = others_busy_at(i, others.len());
        for (k, other) in others.iter().take(busy).enumerate() {
            book(&booker, *other, starts, &format!("Patient {i}-{k}")).await?;
        }
        if busy == others.len() {
            expected_cancelled += 1;
        }
    }
    let mut everyone = others.clone();
    everyone.push(leaving);
    settle(&mut stack, &mut appointments, &everyone).await?;
    spin.finish_and_clear();

    let spin = super::spinner(format!("{label}: offboarding, {n} appointments"));
    let admin = ApiClient::with_http(stack.http.clone(), &stack.gateway_url)?
        .authenticated(stack.token.clone());
    let sent_at = Utc::now();
    let saga = admin
        .offboard(
            leaving,
            &OffboardingRequest {
                reason: REASON.to_owned(),
                policy: AppointmentPolicy::Reassign,
            },
        )
        .await
        .context("offboarding the doctor")?;
    let saga_id = saga.id.to_string();
    let events_of_saga = "message_type IN ('appointment.reassigned', 'appointment.cancelled') \
         AND body->'payload'->>'offboardingId' = $1";
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let finished: Option<DateTime<Utc>> =
            sqlx::query_scalar("SELECT finished_at FROM offboardings WHERE id = $1")
                .bind(saga.id)
                .fetch_one(&stack.auth)
                .await?;
        let (unpublished, events): (i64, i64) = sqlx::query_as(&format!(
            "SELECT count(*) FILTER (WHERE published_at IS NULL), \
                 count(*) FILTER (WHERE {events_of_saga}) FROM outbox"
        ))
        .bind(&saga_id)
        .fetch_one(&appointments.pool)
        .await?;
        if finished.is_some() && unpublished == 0 && events >= n as i64 {
            break;
        }
        check_alive(&mut stack, &mut appointments)?;
        if Instant::now() > deadline {
            bail!(
                "after 120 s: the saga {}, {events} of {n} appointment events written, \
                 {unpublished} outbox rows unpublished",
                if finished.is_some() {
                    "finished"
                } else {
                    "not finished"
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    spin.finish_and_clear();

    type Row = (
        String,
        Option<DateTime<Utc>>,
        Option<Json<DoctorResolved>>,
        Option<DateTime<Utc>>,
        Option<DateTime<Utc>>,
    );
    let (state, finished_at, outcome, receipts_at, command_at): Row = sqlx::query_as(
        "SELECT o.state, o.finished_at, o.outcome, \
             (SELECT max(at) FROM offboarding_steps WHERE offboarding_id = o.id \
                 AND step = 'receipt'), \
             (SELECT min(at) FROM offboarding_steps WHERE offboarding_id = o.id \
                 AND step = 'command-sent') \
         FROM offboardings o WHERE o.id = $1",
    )
    .bind(saga.id)
    .fetch_one(&stack.auth)
    .await?;
    let (Some(finished_at), Some(Json(outcome)), Some(receipts_at), Some(command_at)) =
        (finished_at, outcome, receipts_at, command_at)
    else {
        bail!("the saga finished ({state}) without its receipts, command or outcome");
    };
    let (events, distinct, last_published): (i64, i64, Option<DateTime<Utc>>) =
        sqlx::query_as(&format!(
            "SELECT count(*) FILTER (WHERE {events_of_saga}), \
                 count(DISTINCT body->'payload'->>'appointmentId') FILTER (WHERE {events_of_saga}), \
                 max(published_at) FROM outbox"
        ))
        .bind(&saga_id)
        .fetch_one(&appointments.pool)
        .await?;
    let last_published = last_published.context("no appointment event was published")?;
    let (last_resolved, still_booked): (Option<DateTime<Utc>>, i64) = sqlx::query_as(
        "SELECT (SELECT max(done_at) FROM command_results), \
             (SELECT count(*) FROM appointments WHERE doctor_id = $1 \
                 AND status IN ('booked', 'needs_reassignment'))",
    )
    .bind(leaving)
    .fetch_one(&appointments.pool)
    .await?;
    let last_resolved = last_resolved.context("no appointment was resolved")?;
    let reassigned = outcome
        .appointments
        .iter()
        .filter(|a| a.resolution == Resolution::Reassigned)
        .count() as u64;
    let cancelled = outcome.appointments.len() as u64 - reassigned;
    let expected_state = match expected_cancelled {
        0 => "completed",
        _ => "needs_attention",
    };
    if outcome.appointments.len() as u64 != n
        || cancelled != expected_cancelled
        || events != n as i64
        || distinct != n as i64
        || still_booked != 0
        || state != expected_state
    {
        bail!(
            "the saga ended {state} with {} appointments resolved ({reassigned} reassigned, \
             {cancelled} cancelled; expected {} and {expected_cancelled}), {events} events for \
             {distinct} appointments, {still_booked} still the leaving doctor's",
            outcome.appointments.len(),
            n - expected_cancelled
        );
    }
    let run = LeavingDoctorRun {
        appointments: n,
        other_doctors: others.len() as u64,
        reassigned,
        cancelled,
        state,
        seconds: seconds(sent_at, finished_at.max(last_published)),
        receipts_seconds: seconds(sent_at, receipts_at),
        command_sent_seconds: seconds(sent_at, command_at),
        last_resolved_seconds: seconds(sent_at, last_resolved),
        finished_seconds: seconds(sent_at, finished_at),
        last_published_seconds: seconds(sent_at, last_published),
    };
    stop_and_verify_appointments(appointments, &stack.auth)
        .await
        .context("after the leaving doctor's offboarding")?;
    stack.stop_and_verify().await?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fourth_appointment_has_no_free_doctor_and_the_others_one_at_least() {
        let busy: Vec<usize> = (0..8).map(|i| others_busy_at(i, 3)).collect();
        assert_eq!(busy, [0, 1, 2, 3, 0, 1, 2, 3]);
        let cancelled = (0..50).filter(|&i| others_busy_at(i, 3) == 3).count();
        assert_eq!(cancelled, 12);
        assert_eq!((0..10).filter(|&i| others_busy_at(i, 3) == 3).count(), 2);
    }
}
