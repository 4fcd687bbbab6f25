//! Faults injected for real, each on this test's own link or databases only (a TCP proxy, its
//! own backends, its own vhost's connections), so tests running beside it are not disturbed:
//! the system answers what it can, catches up afterwards and ends with the comparison of
//! `portal verify` reporting no difference; what was set aside (dead letters, unroutable
//! events) is recovered with `portal dlq`.

use crate::cli::portal_output;
use contract::topology::UNROUTED_QUEUE;
use contract::Role;
use sandbox::auth::all_published;
use sandbox::db::count;
use sandbox::events::{body, user_event};
use sandbox::http::{get, post};
use sandbox::proxy::TcpProxy;
use sandbox::users::eventually_in_sync;
use sandbox::{auth, users, System};
use sandbox::{poll_until, wait_for_user_version, Sandbox, SETTLE};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::test]
async fn requests_that_need_a_database_that_is_down_answer_503_json_within_the_timeout() {
    let sb = Sandbox::for_test().await;
    let (auth_proxy, auth_db_via_proxy) = TcpProxy::in_front_of(&sb.database_url("auth"))
        .await
        .unwrap();
    let (user_proxy, user_db_via_proxy) = TcpProxy::in_front_of(&sb.database_url("user"))
        .await
        .unwrap();
    let sys = System::builder(&sb)
        .auth_with(|config| config.database_url = auth_db_via_proxy)
        .users_with(|config| config.database_url = user_db_via_proxy)
        .start()
        .await;
    let (auth, users) = (&sys.auth, sys.users());
    let (auth_pool, user_pool) = (&sys.auth_db, sys.user_db());
    let token = sys.admin_token().await;

    auth_proxy.cut();
    user_proxy.cut();
    let started = Instant::now();
    let (s, b) = post(
        &format!("{}/api/v1/auth/admin/users", auth.url()),
        Some(&token),
        &json!({"email": "late@clinic.test", "firstName": "L", "lastName": "Ate", "role": "nurse"}),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (503, Some("unavailable")), "{b}");
    let (s, b) = get(
        &format!("{}/api/v1/users?role=doctor", users.url()),
        Some(&token),
    )
    .await;
    assert_eq!((s, b["error"].as_str()), (503, Some("unavailable")), "{b}");
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "answered within the timeouts: {:?}",
        started.elapsed()
    );
    let (s, b) = get(&format!("{}/health/ready", auth.url()), None).await;
    assert_eq!((s, b["unavailable"].clone()), (503, json!(["auth_db"])));

    auth_proxy.restore();
    user_proxy.restore();
    poll_until(SETTLE, "the auth-service to answer again", || async {
        let (s, _) = post(
            &format!("{}/api/v1/auth/admin/users", auth.url()),
            Some(&token),
            &json!({"email": "back@clinic.test", "firstName": "B", "lastName": "Ack", "role": "nurse"}),
        )
        .await;
        (s == 201).then_some(())
    })
    .await;
    eventually_in_sync(auth_pool, user_pool).await;
}

#[tokio::test]
async fn relay_and_consumer_survive_closed_broker_connections_and_terminated_backends() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().start().await;
    let auth = sys.auth_db.clone();
    let user_db_name = format!("{}_user", sb.base);
    let admin = sqlx::PgPool::connect(&sb.admin_database_url())
        .await
        .unwrap();

    let mut last = Uuid::nil();
    for round in 0..3 {
        for i in 0..20 {
            last =
                auth::create_user(&auth, &format!("r{round}-{i}@clinic.test"), Role::Nurse).await;
        }
        // Close every connection of this test's vhost (relay, consumer), like
        // `rabbitmqctl close_all_connections` but for this vhost only.
        sb.management
            .close_connections(&sb.vhost, "fault injected by a test")
            .await
            .unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
            .bind(&user_db_name)
            .execute(&admin)
            .await
            .unwrap();
    }
    let user_db = users::pool(&sb).await;
    wait_for_user_version(&user_db, last, 1, Duration::from_secs(30)).await;
    assert_eq!(count(&auth, "SELECT count(*) FROM users").await, 60);
    eventually_in_sync(&auth, &user_db).await;
}

#[tokio::test]
async fn portal_dlq_requeues_unrouted_events_to_a_user_service_that_declared_its_queue_again() {
    // The auth-service's own tests show an event no queue takes is kept in the unrouted queue;
    // here the operator brings it to the user-service with the `portal` binary.
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).start().await; // its relay declares the topology
    let auth = sys.auth_db.clone();
    auth::create_user(&auth, "first@clinic.test", Role::Doctor).await;
    all_published(&auth).await;
    // Someone deletes the consumer's queue: nothing is bound to user.# any more.
    let conn = platform::amqp::connect(&sb.amqp_url, "queue deleter")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(&users::queues().main, Default::default())
        .await
        .unwrap();
    auth::create_user(&auth, "orphan@clinic.test", Role::Doctor).await;
    poll_until(
        SETTLE,
        "the orphan event in user.events.unrouted",
        || async { (users::depth(&sb, UNROUTED_QUEUE).await == 1).then_some(()) },
    )
    .await;

    // The user-service re-declares its queue on start; `portal dlq requeue` re-publishes the
    // kept event to the exchange, and the directory ends complete.
    let _users_svc = users::start_ready(users::config(&sb)).await;
    let out = portal_output(
        &sb,
        &["dlq", "--queue", "user.events.unrouted", "requeue", "--all"],
    )
    .await;
    assert_eq!(out.0, 0, "{}", out.1);
    assert!(out.1.contains("requeued 1 of 1"), "{}", out.1);
    // The first user's event went down with the deleted queue: verify names exactly that user
    // (repairing it is `portal reconcile`'s job).
    let user_db = users::pool(&sb).await;
    poll_until(SETTLE, "the requeued event applied", || async {
        (count(
            &user_db,
            "SELECT count(*) FROM users WHERE email = 'orphan@clinic.test'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await;
    let report = sandbox::users::compare(&auth, &user_db).await.unwrap();
    assert_eq!(
        (report.missing, report.total_differences()),
        (1, 1),
        "{}",
        report.summary()
    );
    conn.close(200, "done").await.ok();
}

#[tokio::test]
async fn portal_dlq_lists_shows_requeues_and_purges() {
    let sb = Sandbox::for_test().await;
    let _users = users::start(users::config(&sb)).await;
    let pool = users::pool(&sb).await;
    let dlq = users::queues().dead_letter;
    let mut bad_version = user_event(
        Uuid::new_v4(),
        Some(1),
        "fixable@clinic.test",
        "doctor",
        true,
    );
    bad_version["payload"]["firstName"] = json!("Fixable");
    bad_version["version"] = json!("2.0");
    users::publish(
        &sb,
        &[
            b"not json".to_vec(),
            body(&bad_version),
            b"\xff\xfe".to_vec(),
        ],
    )
    .await;
    poll_until(SETTLE, "three dead letters", || async {
        (users::depth(&sb, &dlq).await == 3).then_some(())
    })
    .await;

    let (code, out) = portal_output(&sb, &["dlq", "list"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("not-json") && out.contains("unsupported-version") && out.contains("not-utf8"),
        "{out}"
    );
    assert!(
        out.contains("3 messages in user-service.user-events.dlq"),
        "{out}"
    );
    let (code, out) = portal_output(&sb, &["dlq", "show", "2"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("x-error-reason")
            && out.contains("unsupported-version")
            && out.contains("\"Fixable\""),
        "{out}"
    );
    assert_eq!(users::depth(&sb, &dlq).await, 3, "looking loses nothing");

    // Requeued as it is, the 2.0 message fails again and comes back with its reason.
    let (code, out) = portal_output(&sb, &["dlq", "requeue", "2"]).await;
    assert_eq!(code, 0, "{out}");
    poll_until(
        SETTLE,
        "the requeued message back in the dead-letter queue",
        || async {
            let (_, out) = portal_output(&sb, &["dlq", "list"]).await;
            out.contains("3 messages").then_some(())
        },
    )
    .await;
    let (code, out) = portal_output(&sb, &["dlq", "purge"]).await;
    assert_eq!(code, 1, "purge without --yes refuses: {out}");
    let (code, out) = portal_output(&sb, &["dlq", "purge", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("purged 3"), "{out}");
    assert_eq!(users::depth(&sb, &dlq).await, 0);
    assert_eq!(count(&pool, "SELECT count(*) FROM users").await, 0);
}
