//! Row 9: onboarding a hospital's staff. A CSV file of `users` accounts is imported with
//! `portal users import` (the command an operator runs: 1,000 accounts per request through the
//! gateway, temporary passwords written to an owner-only file) while the auth-service with its
//! relay, the user-service and the appointment-service run; timed on the PostgreSQL server's
//! clock from just before the command starts to the last account applied in every consumer's
//! copy (`user_db`'s `users`, `appointment_db`'s `clinicians`).

use super::env::{BenchEnv, PASSWORD};
use super::http::Stack;
use super::report::{ImportRun, Setting};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use contract::topology::{ConsumerQueues, APPOINTMENT_SERVICE};
use sandbox::process::{free_port, Process};
use sqlx::PgPool;
use std::io::Write;
use std::time::{Duration, Instant};

const ROLES: [&str; 4] = ["doctor", "nurse", "pharmacist", "consultant"];

/// Writes the file: `users` distinct staff with a header row, as an HR export would be.
fn write_csv(path: &std::path::Path, users: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "email,firstName,lastName,role,phoneNumber")?;
    for i in 0..users {
        writeln!(
            f,
            "staff{i}@bench.example,Rumbidzai,Staff{i},{},+263 77 {:07}",
            ROLES[(i % 4) as usize],
            i % 10_000_000
        )?;
    }
    f.flush()?;
    Ok(())
}

/// The appointment-service as a child process, on a fresh database of its own.
pub(crate) struct Appointments {
    pub process: Process,
    pub pool: PgPool,
    /// Where its API answers.
    pub url: String,
}

/// Every service of a row that runs the stack and the appointment-service, alive, or the first
/// that exited.
pub(crate) fn check_alive(
    stack: &mut Stack,
    appointments: &mut Appointments,
) -> anyhow::Result<()> {
    for s in [
        &mut stack.auth_service,
        &mut stack.user_service,
        &mut stack.gateway,
        &mut appointments.process,
    ] {
        s.check_alive()?;
    }
    Ok(())
}

/// The appointment-service on a fresh database of its own, joined as `portal up` joins it: once
/// its consumer holds its broker connection (its queue declared and bound), the history is sent
/// to its queue (`portal consumer add`'s backfill) and awaited in `clinicians`, then its
/// `/health/ready` answers 200. It checks tokens with the keys of the auth-service at
/// `auth_url`.
pub(crate) async fn start_appointments(
    env: &BenchEnv,
    auth: &PgPool,
    auth_url: &str,
) -> anyhow::Result<Appointments> {
    let url = env.sandbox.recreate_database("appointment").await?;
    let pool = appointment_service::prepare_database(&url, 2).await?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut service = env
        .spawn(
            "appointment-service",
            "appointment-service",
            &[
                ("APPOINTMENT_DATABASE_URL", url),
                ("APPOINTMENT_ADDR", addr.clone()),
                ("AUTH_SERVICE_URL", auth_url.to_owned()),
            ],
        )
        .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let ready = format!("http://{addr}/health/ready");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connected = match http.get(&ready).send().await {
            Ok(answer) => answer
                .json::<serde_json::Value>()
                .await
                .is_ok_and(|body| body["checks"]["broker"] == true),
            Err(_) => false,
        };
        if connected {
            break;
        }
        service.check_alive()?;
        if Instant::now() > deadline {
            bail!("the appointment-service's consumer was not connected within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queue = ConsumerQueues::for_consumer(APPOINTMENT_SERVICE).main;
    ops::replay::backfill(auth, &env.sandbox.amqp_url, &queue, |_| {}).await?;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(auth)
        .await?;
    applied(&pool, "clinicians", users, &mut [&mut service]).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(&ready)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        service.check_alive()?;
        if Instant::now() > deadline {
            bail!("the appointment-service was not ready within 60 s of its backfill");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Appointments {
        process: service,
        pool,
        url: format!("http://{addr}"),
    })
}

/// Stops the appointment-service and checks its copy against `auth_db` user by user, as
/// `portal verify` does; closes its pool.
pub(crate) async fn stop_and_verify_appointments(
    service: Appointments,
    auth: &PgPool,
) -> anyhow::Result<()> {
    service.process.stop().await?;
    let report = ops::verify::compare(
        auth,
        &ops::verify::APPOINTMENT_SERVICE,
        &service.pool,
        ops::verify::Options::listing(5),
    )
    .await?;
    service.pool.close().await;
    if !report.is_in_sync() {
        let listed: Vec<String> = report.listed.iter().map(ToString::to_string).collect();
        bail!(
            "appointment_db: {}\n{}",
            report.summary(),
            listed.join("\n")
        );
    }
    Ok(())
}

/// Waits until `pool`'s `table` holds `expected` rows (checking that `services` live), then
/// answers its last apply on the server clock.
async fn applied(
    pool: &PgPool,
    table: &str,
    expected: i64,
    services: &mut [&mut Process],
) -> anyhow::Result<DateTime<Utc>> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(pool)
            .await?;
        if n >= expected {
            break;
        }
        for s in services.iter_mut() {
            s.check_alive()?;
        }
        if Instant::now() > deadline {
            bail!("{table} held {n} of {expected} rows after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(
        sqlx::query_scalar(&format!("SELECT max(synced_at) FROM {table}"))
            .fetch_one(pool)
            .await?,
    )
}

pub async fn onboarding(env: &BenchEnv, setting: Setting, users: u64) -> anyhow::Result<ImportRun> {
    let label = "row 9: bulk onboarding";
    let mut stack = Stack::start(env, setting, 8, label, &[]).await?;
    let mut service = start_appointments(env, &stack.auth, &stack.auth_url).await?;
    let clinicians = service.pool.clone();
    let clinicians_before: i64 = sqlx::query_scalar("SELECT count(*) FROM clinicians")
        .fetch_one(&clinicians)
        .await?;
    let dir = env.sandbox.dir.join("import");
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("staff.csv");
    let passwords = dir.join("staff.passwords.csv");
    write_csv(&csv, users)?;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&stack.user)
        .await?;

    // What the auth-service holds before the import (its start and the admin's login, whose
    // argon2 check keeps a 19 MiB block on its hashing thread), to tell the import's own cost.
    let auth_peak_before_kib = stack.auth_service.peak_rss_kib()?;
    let spin = super::spinner(format!("{label}: portal users import, {users} rows"));
    let start: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&stack.auth)
        .await?;
    let started = Instant::now();
    let csv_arg = csv.to_string_lossy().into_owned();
    let passwords_arg = passwords.to_string_lossy().into_owned();
    let output = env
        .command(
            &[
                "users",
                "import",
                &csv_arg,
                "--passwords-out",
                &passwords_arg,
            ],
            &[
                ("PORTAL_URL", stack.gateway_url.clone()),
                ("PORTAL_EMAIL", stack.admin_email.to_owned()),
                ("PORTAL_PASSWORD", PASSWORD.to_owned()),
            ],
        )
        .output()
        .await
        .context("run portal users import")?;
    let command_seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "portal users import failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let created = std::fs::read_to_string(&passwords)?.lines().count() as u64 - 1;
    if created != users {
        bail!("{created} temporary passwords written for {users} rows");
    }
    spin.set_message(format!("{label}: waiting for user_db and appointment_db"));
    let user_last = applied(
        &stack.user,
        "users",
        before + users as i64,
        &mut [&mut stack.auth_service, &mut stack.user_service],
    )
    .await?;
    let appointment_last = applied(
        &clinicians,
        "clinicians",
        clinicians_before + users as i64,
        &mut [&mut stack.auth_service, &mut service.process],
    )
    .await?;
    spin.finish_and_clear();
    let since_start = |t: DateTime<Utc>| (t - start).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let (user_db_seconds, appointment_db_seconds) =
        (since_start(user_last), since_start(appointment_last));
    let applied_seconds = user_db_seconds.max(appointment_db_seconds);
    let run = ImportRun {
        users,
        command_seconds,
        applied_seconds,
        user_db_seconds,
        appointment_db_seconds,
        users_per_s: users as f64 / applied_seconds.max(1e-6),
        auth_service_peak_rss_mib: stack.auth_service.peak_rss_kib()? as f64 / 1024.0,
        auth_service_peak_before_mib: auth_peak_before_kib as f64 / 1024.0,
        user_service_peak_rss_mib: stack.user_service.peak_rss_kib()? as f64 / 1024.0,
        appointment_service_peak_rss_mib: service.process.peak_rss_kib()? as f64 / 1024.0,
        gateway_peak_rss_mib: stack.gateway.peak_rss_kib()? as f64 / 1024.0,
    };
    // The appointment-service's copy agrees with auth_db user by user, as `portal verify` checks.
    stop_and_verify_appointments(service, &stack.auth)
        .await
        .context("after the import")?;
    stack.stop_and_verify().await?;
    Ok(run)
}
