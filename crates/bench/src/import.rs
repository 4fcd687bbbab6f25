//! Row 9: onboarding a hospital's staff. A CSV file of `users` accounts is imported with
//! `portal users import` (the command an operator runs: 1,000 accounts per request through the
//! gateway, temporary passwords written to an owner-only file) while the auth-service with its
//! relay and the user-service run; timed on the PostgreSQL server's clock from just before the
//! command starts to the last account applied in `user_db`.

use super::env::{BenchEnv, PASSWORD};
use super::http::Stack;
use super::report::{ImportRun, Setting};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
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

pub async fn onboarding(env: &BenchEnv, setting: Setting, users: u64) -> anyhow::Result<ImportRun> {
    let label = "row 9: bulk onboarding";
    let mut stack = Stack::start(env, setting, 8, label).await?;
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
    spin.set_message(format!("{label}: waiting for user_db"));
    let deadline = Instant::now() + Duration::from_secs(600);
    let expected = before + users as i64;
    loop {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&stack.user)
            .await?;
        if n >= expected {
            break;
        }
        for s in [&mut stack.auth_service, &mut stack.user_service] {
            s.check_alive()?;
        }
        if Instant::now() > deadline {
            bail!("user_db held {n} of {expected} users after 600 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last_apply: DateTime<Utc> = sqlx::query_scalar("SELECT max(synced_at) FROM users")
        .fetch_one(&stack.user)
        .await?;
    spin.finish_and_clear();
    let applied_seconds = (last_apply - start).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let run = ImportRun {
        users,
        command_seconds,
        applied_seconds,
        users_per_s: users as f64 / applied_seconds.max(1e-6),
        auth_service_peak_rss_mib: stack.auth_service.peak_rss_kib()? as f64 / 1024.0,
        auth_service_peak_before_mib: auth_peak_before_kib as f64 / 1024.0,
        user_service_peak_rss_mib: stack.user_service.peak_rss_kib()? as f64 / 1024.0,
        gateway_peak_rss_mib: stack.gateway.peak_rss_kib()? as f64 / 1024.0,
    };
    stack.stop_and_verify().await?;
    Ok(run)
}
