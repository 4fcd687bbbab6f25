//! Restarts of the shared RabbitMQ and PostgreSQL servers. This is its own test binary (cargo
//! runs test binaries one after another), so no other test is running while the servers go
//! down; a guard brings them back even if an assertion fails. Needs root (as CI runs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use std::process::Command;
use std::time::Duration;
use test_support::{poll_until, wait_for_user_version, TestEnv};

const SETTLE: Duration = Duration::from_secs(60);

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

fn postgres_version() -> String {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version")
}

/// Starts whatever this test stopped, whatever happens to the test.
struct ServersUp;

impl Drop for ServersUp {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "start_app"])
            .status();
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "await_startup"])
            .status();
        let _ = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                &postgres_version(),
                "main",
                "start",
            ])
            .status();
    }
}

#[tokio::test]
async fn relay_and_consumer_ride_out_restarts_of_rabbitmq_and_postgresql() {
    let _guard = ServersUp;
    let env = TestEnv::new().await;
    let _auth = env.start_auth().await;
    let _users = env.start_users().await;
    let (auth, users) = (env.auth_pool().await, env.user_pool().await);
    let before = env
        .create_user(&auth, "before@clinic.test", Role::Doctor)
        .await;
    wait_for_user_version(&users, before, 1, SETTLE).await;

    // RabbitMQ goes away; a user written meanwhile waits in the outbox and arrives after.
    run("rabbitmqctl", &["-q", "stop_app"]);
    let during = env
        .create_user(&auth, "during-broker-restart@clinic.test", Role::Nurse)
        .await;
    run("rabbitmqctl", &["-q", "start_app"]);
    run("rabbitmqctl", &["-q", "await_startup"]);
    wait_for_user_version(&users, during, 1, SETTLE).await;

    // PostgreSQL restarts under both services (both databases live on it).
    run(
        "pg_ctlcluster",
        &[
            "--skip-systemctl-redirect",
            &postgres_version(),
            "main",
            "restart",
        ],
    );
    let after = poll_until(SETTLE, "auth_db writable again", || async {
        let pool = auth_service::prepare_database(&env.auth_db_url, 1)
            .await
            .ok()?;
        let new = auth_service::store::NewUser {
            email: contract::Email::parse("after-pg-restart@clinic.test").ok()?,
            password_hash: "not-a-real-hash".into(),
            first_name: contract::PersonName::parse("firstName", "After").ok()?,
            last_name: contract::PersonName::parse("lastName", "Restart").ok()?,
            role: Role::Pharmacist,
            phone_number: None,
            is_active: true,
            must_change_password: false,
        };
        let mut tx = pool.begin().await.ok()?;
        let row = auth_service::store::create_user(&mut tx, new).await.ok()?;
        tx.commit().await.ok()?;
        Some(row.id)
    })
    .await;
    let users = env.user_pool().await;
    wait_for_user_version(&users, after, 1, SETTLE).await;
    let auth = env.auth_pool().await;
    let report = ops::verify::compare(&auth, &users, 5).await.unwrap();
    assert!(report.is_in_sync(), "{}", report.summary());
}
