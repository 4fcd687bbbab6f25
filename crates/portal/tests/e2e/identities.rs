//! The least-privilege setup: every part gets an identity of its own with only the rights it
//! needs, the system runs under those identities, and each boundary holds — a service's
//! database role cannot reach the other service's database, the relay's broker user cannot
//! consume or configure, a consumer's broker user cannot publish to `user.events` or into
//! another queue. Setup is idempotent, safe when run twice at once, and puts back what a
//! recreated database lost. Everything is named after this test's sandbox (roles and broker
//! users are server-wide) and removed with it.

use contract::topology::{
    ConsumerQueues, CONTROL_EXCHANGE, DOCTOR_RESOLVED_KEY, EXCHANGE, RESOLVE_DOCTOR_KEY,
    USER_SERVICE,
};
use contract::Role;
use lapin::options::{BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use ops::setup::{Credentials, Identities, SetupConfig};
use platform::amqp::{self, Outgoing};
use sandbox::{appointments, auth, System};
use sandbox::{poll_until, Sandbox, SETTLE};
use sqlx::Connection;

/// The least-privilege setup of `sb`'s databases, roles and broker users.
pub fn config(sb: &Sandbox) -> SetupConfig {
    SetupConfig {
        admin_database_url: sb.admin_database_url(),
        admin_amqp_url: sb.amqp_url.clone(),
        management_url: sb.management_url().to_owned(),
        auth_db: format!("{}_auth", sb.base),
        user_db: format!("{}_user", sb.base),
        appointment_db: format!("{}_appointment", sb.base),
        identities: Identities {
            migrator: sb.pg_role("migrator"),
            auth_service: sb.pg_role("auth_service"),
            relay: sb.pg_role("relay"),
            user_service: sb.pg_role("user_service"),
            appointment_service: sb.pg_role("appointment_service"),
            operator: sb.pg_role("operator"),
            relay_user: sb.broker_user("relay"),
            user_service_user: sb.broker_user("user-service"),
            appointment_service_user: sb.broker_user("appointment-service"),
            operator_user: sb.broker_user("operator"),
        },
        credentials: sb.dir.join("credentials.env"),
        // Never the machine's guest from a test (tests/e2e/transport.rs deletes a user of its
        // own through the same call).
        part_files: None,
        disable_guest: false,
    }
}

/// True when `url` (a role of the setup) may connect and run `sql`.
pub(crate) async fn may(url: &str, sql: &str) -> bool {
    match sqlx::PgConnection::connect(url).await {
        Ok(mut conn) => sqlx::query(sql).execute(&mut conn).await.is_ok(),
        Err(_) => false,
    }
}

/// What the broker answers `user` (over `url`) trying one thing on a fresh channel.
async fn broker_allows(url: &str, what: &str) -> bool {
    let conn = amqp::connect(url, "boundary test").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let queues = ConsumerQueues::for_consumer(USER_SERVICE);
    let ok = match what {
        "consume" => ch
            .basic_get(&queues.main, BasicGetOptions::default())
            .await
            .is_ok(),
        "configure" => ch
            .queue_declare(
                "intruder.queue",
                QueueDeclareOptions::default(),
                Default::default(),
            )
            .await
            .is_ok(),
        "publish-events"
        | "publish-default"
        | "receipt.user-service"
        | "receipt.appointment-service"
        | "command"
        | "reply" => {
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            let user = amqp::broker_user(url);
            let (exchange, key) = match what {
                "publish-events" => (EXCHANGE, "user.created"),
                "publish-default" => ("", queues.main.as_str()),
                "command" => (CONTROL_EXCHANGE, RESOLVE_DOCTOR_KEY),
                "reply" => (CONTROL_EXCHANGE, DOCTOR_RESOLVED_KEY),
                receipt => (CONTROL_EXCHANGE, receipt),
            };
            amqp::publish_confirmed(
                &ch,
                vec![Outgoing {
                    exchange,
                    routing_key: key,
                    body: b"{}",
                    properties: amqp::persistent(&user),
                }],
            )
            .await
            .require_all()
            .is_ok()
        }
        other => panic!("no such test: {other}"),
    };
    conn.close(200, "done").await.ok();
    ok
}

#[tokio::test]
async fn setup_makes_least_privilege_identities_and_the_system_runs_under_them() {
    let sb = Sandbox::for_test().await;
    let config = config(&sb);
    // Twice at once: the advisory lock serialises them and the second reuses the first's
    // passwords.
    let (a, b) = tokio::join!(ops::setup::run(&config), ops::setup::run(&config));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.created_roles.len() + b.created_roles.len(),
        6,
        "each role created once"
    );
    let creds = Credentials::load(&config.credentials).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config.credentials)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the credentials file is its owner's only"
        );
    }
    let get = |key: &str| creds.get(key).unwrap().to_owned();
    assert_eq!(creds.get("MANAGED_BY_SETUP"), Some("true"));

    // The system, under the identities the setup wrote.
    let trusted_publishers: Vec<String> = get("TRUSTED_PUBLISHERS")
        .split(',')
        .map(str::to_owned)
        .collect();
    let sys = System::builder(&sb)
        .auth_with(|config| {
            config.database_url = get("AUTH_DATABASE_URL");
            config.amqp_url = get("RELAY_AMQP_URL");
            config.managed_by_setup = true;
        })
        .users_with(|config| {
            config.database_url = get("USER_DATABASE_URL");
            config.amqp_url = get("USER_SERVICE_AMQP_URL");
            config.managed_by_setup = true;
            config.consumer.trusted_publishers = trusted_publishers.clone();
        })
        .appointments_with(|config| {
            config.database_url = get("APPOINTMENT_DATABASE_URL");
            config.amqp_url = get("APPOINTMENT_SERVICE_AMQP_URL");
            config.managed_by_setup = true;
            config.consumer.trusted_publishers = trusted_publishers.clone();
        })
        .start()
        .await;
    let appointments = sys.appointments();
    let admin_auth = sys.auth_db.clone(); // the test's own writes, as the administrator
    let doctor = auth::create_user(&admin_auth, "least.priv@clinic.test", Role::Doctor).await;
    let operator_auth = platform::db::lazy_pool(&get("OPERATOR_AUTH_DATABASE_URL"), 2).unwrap();
    let operator_users = platform::db::lazy_pool(&get("OPERATOR_USER_DATABASE_URL"), 2).unwrap();
    poll_until(
        SETTLE,
        "the doctor in user_db, seen by the operator",
        || async {
            let report = sandbox::users::compare(&operator_auth, &operator_users)
                .await
                .ok()?;
            (report.is_in_sync() && report.checked == 1).then_some(())
        },
    )
    .await;
    let operator_appointments =
        platform::db::lazy_pool(&get("OPERATOR_APPOINTMENT_DATABASE_URL"), 2).unwrap();
    poll_until(
        SETTLE,
        "the doctor in appointment_db, seen by the operator",
        || async {
            let report = ops::verify::compare(
                &operator_auth,
                &ops::verify::APPOINTMENT_SERVICE,
                &operator_appointments,
                ops::verify::Options::listing(5),
            )
            .await
            .ok()?;
            (report.is_in_sync() && report.checked == 1).then_some(())
        },
    )
    .await;
    // The operator's backfill (its end-of-history mark), then a booking: the service records
    // the mark and books (the exclusion constraint's btree_gist) under its own role.
    let queue = ConsumerQueues::for_consumer(contract::topology::APPOINTMENT_SERVICE).main;
    ops::replay::backfill(&operator_auth, &get("OPERATOR_AMQP_URL"), &queue, |_| {})
        .await
        .unwrap();
    appointments::wait_ready(appointments).await;
    let nurse = appointments::token_for(&sb, uuid::Uuid::new_v4(), Role::Nurse);
    let (status, booked) = sandbox::http::post(
        &format!("{}/api/v1/appointments", appointments.url()),
        Some(&nurse),
        &appointments::booking(doctor, 24, 30),
    )
    .await;
    assert_eq!(status, 201, "{booked}");

    // An offboarding under these identities: receipts from each consumer's own broker user,
    // the auth-service's command, the appointment-service's reply and its event.
    let token = sys.admin_token().await;
    let (status, started) = sandbox::http::post(
        &format!(
            "{}/api/v1/auth/admin/users/{doctor}/offboarding",
            sys.auth.url()
        ),
        Some(&token),
        &serde_json::json!({"reason": "left", "policy": "cancel"}),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let saga = format!(
        "{}/api/v1/auth/admin/offboardings/{}",
        sys.auth.url(),
        started["id"].as_str().unwrap()
    );
    poll_until(SETTLE, "the offboarding completed", || async {
        let (_, body) = sandbox::http::get(&saga, Some(&token)).await;
        (body["state"] == "completed").then_some(())
    })
    .await;
    poll_until(SETTLE, "the cancellation event published", || async {
        let n = amqp::ready_messages(&sb.amqp_url, contract::topology::APPOINTMENT_UNROUTED)
            .await
            .ok()?;
        (n == 1).then_some(())
    })
    .await;

    // PostgreSQL boundaries.
    let (auth_db, user_db) = (&config.auth_db, &config.user_db);
    let as_role = |key: &str, db: &str| {
        let mut url = url::Url::parse(&get(key)).unwrap();
        url.set_path(&format!("/{db}"));
        url.to_string()
    };
    assert!(may(&get("AUTH_DATABASE_URL"), "SELECT count(*) FROM users").await);
    assert!(
        !may(
            &as_role("USER_DATABASE_URL", auth_db),
            "SELECT password_hash FROM users"
        )
        .await,
        "the user-service's role cannot read auth_db's users (or their password hashes)"
    );
    assert!(
        !may(&as_role("AUTH_DATABASE_URL", user_db), "SELECT 1").await,
        "the auth-service's role cannot reach user_db"
    );
    assert!(
        !may(&get("AUTH_DATABASE_URL"), "CREATE TABLE intruder (x int)").await,
        "a service's role cannot change the schema"
    );
    assert!(
        !may(&get("USER_DATABASE_URL"), "DELETE FROM users").await,
        "the user-service's role cannot delete its copy"
    );
    assert!(
        !may(&as_role("APPOINTMENT_DATABASE_URL", user_db), "SELECT 1").await,
        "the appointment-service's role cannot reach user_db"
    );
    assert!(
        may(
            &get("APPOINTMENT_DATABASE_URL"),
            "SELECT count(*) FROM appointments"
        )
        .await
    );
    assert!(
        !may(
            &get("OPERATOR_AUTH_DATABASE_URL"),
            "UPDATE users SET role = 'admin'"
        )
        .await,
        "the operator can move a version (reconcile), not change a user"
    );
    assert!(
        !may(
            &get("OPERATOR_AUTH_DATABASE_URL"),
            "SELECT password_hash FROM users"
        )
        .await,
        "the operator never reads a password hash"
    );
    assert!(
        may(
            &get("OPERATOR_AUTH_DATABASE_URL"),
            "SELECT id, email, user_version FROM users"
        )
        .await,
        "but reads what it compares"
    );

    // A relay of its own: the outbox's unpublished rows, claimed and marked, and nothing of
    // the users.
    let relay_db = get("RELAY_AUTH_DATABASE_URL");
    for sql in [
        "SELECT seq, event_id, event_type, body::text, trace_id FROM outbox \
         WHERE published_at IS NULL ORDER BY seq LIMIT 10 FOR UPDATE SKIP LOCKED",
        "UPDATE outbox SET published_at = now() WHERE false",
        "DELETE FROM outbox WHERE false",
        "UPDATE relay_wakeup SET waiting = waiting WHERE false",
        "SELECT count(*) FROM _sqlx_migrations",
    ] {
        assert!(may(&relay_db, sql).await, "the relay's role may: {sql}");
    }
    for sql in [
        "SELECT email FROM users",
        "UPDATE outbox SET body = body WHERE false",
        "SELECT count(*) FROM refresh_tokens",
    ] {
        assert!(
            !may(&relay_db, sql).await,
            "the relay's role may not: {sql}"
        );
    }

    // RabbitMQ boundaries.
    let (relay, consumer, operator) = (
        get("RELAY_AMQP_URL"),
        get("USER_SERVICE_AMQP_URL"),
        get("OPERATOR_AMQP_URL"),
    );
    assert!(
        !broker_allows(&relay, "consume").await,
        "the relay cannot consume"
    );
    assert!(
        !broker_allows(&relay, "configure").await,
        "the relay cannot configure"
    );
    assert!(
        !broker_allows(&relay, "publish-default").await,
        "the relay publishes to user.events only"
    );
    assert!(
        !broker_allows(&consumer, "publish-events").await,
        "a consumer cannot publish to user.events"
    );
    assert!(
        !broker_allows(&consumer, "publish-default").await,
        "a consumer cannot publish into a queue but through its own set-aside exchange"
    );
    assert!(
        !broker_allows(&consumer, "configure").await,
        "a consumer cannot configure"
    );
    assert!(
        broker_allows(&consumer, "consume").await,
        "a consumer reads its own queue"
    );
    assert!(
        !broker_allows(&get("APPOINTMENT_SERVICE_AMQP_URL"), "consume").await,
        "a consumer cannot read another consumer's queue"
    );
    assert!(
        !broker_allows(&operator, "configure").await,
        "the operator cannot configure"
    );
    // Receipts, commands and replies: each identity only its own.
    assert!(
        broker_allows(&consumer, "receipt.user-service").await,
        "a consumer sends its own receipts"
    );
    assert!(
        !broker_allows(&consumer, "receipt.appointment-service").await,
        "a consumer cannot send another consumer's receipts"
    );
    assert!(
        !broker_allows(&consumer, "command").await && !broker_allows(&consumer, "reply").await,
        "the user-service neither commands nor replies"
    );
    let appointments = get("APPOINTMENT_SERVICE_AMQP_URL");
    assert!(
        broker_allows(&appointments, "reply").await
            && !broker_allows(&appointments, "command").await,
        "the appointment-service replies, and does not command"
    );
    assert!(
        broker_allows(&relay, "command").await
            && !broker_allows(&relay, "receipt.user-service").await,
        "the auth-service commands, and cannot forge a receipt"
    );

    // A recreated grant is put back by running the setup again; nothing new is generated.
    let mut admin = sqlx::PgConnection::connect(&sb.database_url("user"))
        .await
        .unwrap();
    sqlx::query(&format!(
        "REVOKE ALL ON users FROM \"{}\"",
        config.identities.user_service
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    assert!(!may(&get("USER_DATABASE_URL"), "SELECT count(*) FROM users").await);
    let again = ops::setup::run(&config).await.unwrap();
    assert!(!again.wrote_new_passwords && again.created_roles.is_empty());
    assert_eq!(Credentials::load(&config.credentials).unwrap(), creds);
    assert!(may(&get("USER_DATABASE_URL"), "SELECT count(*) FROM users").await);
}
