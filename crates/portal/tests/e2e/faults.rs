//! Faults injected for real, each on this test's own link or databases only (a TCP proxy, its
//! own backends, its own vhost's connections), so tests running beside it are not disturbed.
//! Each ends with the comparison of `portal verify` reporting no difference.

use crate::{count, get, post, SETTLE};
use contract::Role;
use serde_json::json;
use std::time::{Duration, Instant};
use test_support::proxy::TcpProxy;
use test_support::{poll_until, wait_for_user_version, TestEnv};
use uuid::Uuid;

fn postgres_addr() -> std::net::SocketAddr {
    "127.0.0.1:5432".parse().unwrap()
}

fn via(proxy: &TcpProxy, url: &str) -> String {
    url.replacen("127.0.0.1:5432", &proxy.addr.to_string(), 1)
}

fn snapshot_event(user: Uuid, version: i64, first_name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventId": Uuid::new_v4(), "eventType": "user.updated", "timestamp": "2026-02-07T10:00:00.000Z",
        "source": "auth-service", "version": "1.0",
        "payload": {"userId": user, "email": format!("{user}@clinic.test"), "firstName": first_name,
                    "lastName": "Dube", "role": "doctor", "phoneNumber": null, "isActive": true,
                    "mustChangePassword": false, "createdAt": "2026-02-07T10:00:00.000Z", "userVersion": version}
    }))
    .unwrap()
}

async fn sync_counters(users: &test_support::Running) -> serde_json::Value {
    get(&format!("{}/health/ready", users.url()), None).await.1["sync"].clone()
}

async fn assert_in_sync(env: &TestEnv) {
    crate::eventually_in_sync(&env.auth_pool().await, &env.user_pool().await).await;
}

#[tokio::test]
async fn a_message_user_db_refuses_is_retried_with_growing_delay_then_dead_lettered() {
    let env = TestEnv::new().await;
    let mut config = env.user_config();
    config.consumer.retry_delays = vec![Duration::from_millis(200), Duration::from_millis(600)];
    let users = env.start_users_with(config).await;
    let pool = env.user_pool().await;
    // Valid JSON and a valid snapshot, but PostgreSQL text cannot hold a NUL character.
    let poison = snapshot_event(Uuid::new_v4(), 1, "Nul\u{0}Byte");
    let good = Uuid::new_v4();
    env.publish_to_user_service_queue(&[poison, snapshot_event(good, 1, "Good")])
        .await
        .unwrap();
    wait_for_user_version(&pool, good, 1, SETTLE).await;

    let started = Instant::now();
    poll_until(
        SETTLE,
        "the poison message in the dead-letter queue",
        || async {
            (env.queue_depth("user-service.user-events.dlq").await.ok()? == 1).then_some(())
        },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "both retry delays were waited"
    );
    let sync = sync_counters(&users).await;
    assert_eq!(
        (sync["retried"].as_u64(), sync["deadLettered"].as_u64()),
        (Some(2), Some(1)),
        "{sync}"
    );

    let dlq = dlq_messages(&env).await;
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0]["x-error-reason"], "retries-exhausted");
    assert_eq!(dlq[0]["x-retry-count"], "2");
    assert_eq!(dlq[0]["x-original-routing-key"], "user-service.user-events");
    assert!(
        dlq[0]["x-error-detail"]
            .as_str()
            .unwrap()
            .contains("failed 3 times"),
        "{}",
        dlq[0]
    );
    for retry in [
        "user-service.user-events.retry.200ms",
        "user-service.user-events.retry.600ms",
    ] {
        assert_eq!(env.queue_depth(retry).await.unwrap(), 0);
    }
}

/// The headers of every message in the dead-letter queue (read and put back).
async fn dlq_messages(env: &TestEnv) -> Vec<serde_json::Value> {
    use lapin::options::BasicGetOptions;
    let conn = platform::amqp::connect(&env.amqp_url, "dlq reader")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(
            "user-service.user-events.dlq",
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
    {
        let headers = m.delivery.properties.headers().clone().unwrap_or_default();
        let mut h = serde_json::Map::new();
        for (k, v) in headers.inner() {
            let v = match v {
                lapin::types::AMQPValue::LongString(s) => s.to_string(),
                lapin::types::AMQPValue::LongLongInt(n) => n.to_string(),
                other => format!("{other:?}"),
            };
            h.insert(k.to_string(), json!(v));
        }
        out.push(serde_json::Value::Object(h));
    }
    conn.close(200, "done").await.ok();
    out
}

#[tokio::test]
async fn while_user_db_is_unreachable_events_wait_without_spending_their_retry_budget() {
    let env = TestEnv::new().await;
    let proxy = TcpProxy::start(postgres_addr()).await.unwrap();
    let mut config = env.user_config();
    config.database_url = via(&proxy, &env.user_db_url);
    let users = env.start_users_with(config).await;
    let pool = env.user_pool().await; // direct, for the test's own reads

    proxy.cut();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let bodies: Vec<Vec<u8>> = ids
        .iter()
        .map(|&id| snapshot_event(id, 1, "Waiting"))
        .collect();
    env.publish_to_user_service_queue(&bodies).await.unwrap();
    poll_until(SETTLE, "readiness to name user_db", || async {
        let (s, b) = get(&format!("{}/health/ready", users.url()), None).await;
        (s == 503 && b["unavailable"] == json!(["user_db"])).then_some(())
    })
    .await;
    // The consumer holds the messages (none ready in the queue) and has not given up on any.
    poll_until(SETTLE, "the consumer to hold the messages", || async {
        (env.queue_depth("user-service.user-events").await.ok()? == 0).then_some(())
    })
    .await;
    let sync = sync_counters(&users).await;
    assert_eq!(
        (sync["retried"].as_u64(), sync["deadLettered"].as_u64()),
        (Some(0), Some(0)),
        "{sync}"
    );

    proxy.restore();
    for id in &ids {
        wait_for_user_version(&pool, *id, 1, Duration::from_secs(30)).await;
    }
    let sync = sync_counters(&users).await;
    assert_eq!(
        (sync["retried"].as_u64(), sync["deadLettered"].as_u64()),
        (Some(0), Some(0)),
        "{sync}"
    );
    assert_eq!(
        env.queue_depth("user-service.user-events.dlq")
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn requests_that_need_a_database_that_is_down_answer_503_json_within_the_timeout() {
    let env = TestEnv::new().await;
    let (auth_proxy, user_proxy) = (
        TcpProxy::start(postgres_addr()).await.unwrap(),
        TcpProxy::start(postgres_addr()).await.unwrap(),
    );
    let mut auth_config = env.auth_config();
    auth_config.database_url = via(&auth_proxy, &env.auth_db_url);
    let mut user_config = env.user_config();
    user_config.database_url = via(&user_proxy, &env.user_db_url);
    let auth = env.start_auth_with(auth_config).await;
    let users = env.start_users_with(user_config).await;
    let token = env.admin_token(&auth.url()).await;

    auth_proxy.cut();
    user_proxy.cut();
    let started = Instant::now();
    let (s, b) = post(
        &format!("{}/api/v1/auth/register", auth.url()),
        None,
        &json!({"email": "late@clinic.test",
        "password": "long-enough-pw", "firstName": "L", "lastName": "Ate", "role": "nurse"}),
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
            &format!("{}/api/v1/auth/register", auth.url()),
            None,
            &json!({"email": "back@clinic.test",
            "password": "long-enough-pw", "firstName": "B", "lastName": "Ack", "role": "nurse"}),
        )
        .await;
        (s == 201).then_some(())
    })
    .await;
    assert_in_sync(&env).await;
}

#[tokio::test]
async fn relay_and_consumer_survive_closed_broker_connections_and_terminated_backends() {
    let env = TestEnv::new().await;
    let _auth = env.start_auth().await;
    let _users = env.start_users().await;
    let auth = env.auth_pool().await;
    let user_db = test_support::pg_server();
    let user_db_name = env.user_db_url.rsplit('/').next().unwrap().to_owned();
    let admin = sqlx::PgPool::connect(&format!("{user_db}/postgres"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let mgmt = test_support::management_url();

    let mut last = Uuid::nil();
    for round in 0..3 {
        for i in 0..20 {
            last = env
                .create_user(&auth, &format!("r{round}-{i}@clinic.test"), Role::Nurse)
                .await;
        }
        // Close every connection of this test's vhost (relay, consumer), like
        // `rabbitmqctl close_all_connections` but for this vhost only.
        let conns: Vec<serde_json::Value> = http
            .get(format!("{mgmt}/api/vhosts/{}/connections", env.vhost))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for c in conns {
            let name = c["name"].as_str().unwrap().to_owned();
            http.delete(format!("{mgmt}/api/connections/{}", urlencode(&name)))
                .basic_auth("guest", Some("guest"))
                .send()
                .await
                .unwrap();
        }
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
            .bind(&user_db_name)
            .execute(&admin)
            .await
            .unwrap();
    }
    wait_for_user_version(&env.user_pool().await, last, 1, Duration::from_secs(30)).await;
    assert_eq!(count(&auth, "SELECT count(*) FROM users").await, 60);
    assert_in_sync(&env).await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn events_no_queue_would_take_are_kept_in_the_unrouted_queue() {
    let env = TestEnv::new().await;
    let _auth = env.start_auth().await; // its relay declares the topology
    let auth = env.auth_pool().await;
    env.create_user(&auth, "first@clinic.test", Role::Doctor)
        .await;
    poll_until(SETTLE, "the first event published", || async {
        (count(
            &auth,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    // Someone deletes the consumer's queue: nothing is bound to user.# any more.
    let conn = platform::amqp::connect(&env.amqp_url, "queue deleter")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete("user-service.user-events", Default::default())
        .await
        .unwrap();
    env.create_user(&auth, "orphan@clinic.test", Role::Doctor)
        .await;
    poll_until(
        SETTLE,
        "the orphan event in user.events.unrouted",
        || async { (env.queue_depth("user.events.unrouted").await.ok()? == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        count(
            &auth,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        .await,
        0
    );

    // The user-service re-declares its queue on start; `portal dlq requeue` re-publishes the
    // kept event to the exchange, and the directory ends complete.
    let users_svc = env.start_users().await;
    poll_until(
        SETTLE,
        "the user-service connected (its queue re-declared)",
        || async {
            let (s, _) = get(&format!("{}/health/ready", users_svc.url()), None).await;
            (s == 200).then_some(())
        },
    )
    .await;
    let out = crate::cli::portal_output(
        &env,
        &["dlq", "--queue", "user.events.unrouted", "requeue", "--all"],
    )
    .await;
    assert_eq!(out.0, 0, "{}", out.1);
    assert!(out.1.contains("requeued 1 of 1"), "{}", out.1);
    // The first user's event went down with the deleted queue: verify names exactly that user
    // (repairing it is `portal reconcile`'s job).
    let user_db = env.user_pool().await;
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
    let report = ops::verify::compare(&auth, &user_db, 5).await.unwrap();
    assert_eq!(
        (report.missing, report.total_differences()),
        (1, 1),
        "{}",
        report.summary()
    );
}

#[tokio::test]
async fn portal_dlq_lists_shows_requeues_and_purges() {
    let env = TestEnv::new().await;
    let _users = env.start_users().await;
    let pool = env.user_pool().await;
    let fixable = Uuid::new_v4();
    let mut bad_version =
        serde_json::from_slice::<serde_json::Value>(&snapshot_event(fixable, 1, "Fixable"))
            .unwrap();
    bad_version["version"] = json!("2.0");
    env.publish_to_user_service_queue(&[
        b"not json".to_vec(),
        serde_json::to_vec(&bad_version).unwrap(),
        b"\xff\xfe".to_vec(),
    ])
    .await
    .unwrap();
    poll_until(SETTLE, "three dead letters", || async {
        (env.queue_depth("user-service.user-events.dlq").await.ok()? == 3).then_some(())
    })
    .await;

    let (code, out) = crate::cli::portal_output(&env, &["dlq", "list"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("not-json") && out.contains("unsupported-version") && out.contains("not-utf8"),
        "{out}"
    );
    assert!(
        out.contains("3 messages in user-service.user-events.dlq"),
        "{out}"
    );
    let (code, out) = crate::cli::portal_output(&env, &["dlq", "show", "2"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("x-error-reason")
            && out.contains("unsupported-version")
            && out.contains("\"Fixable\""),
        "{out}"
    );
    assert_eq!(
        env.queue_depth("user-service.user-events.dlq")
            .await
            .unwrap(),
        3,
        "looking loses nothing"
    );

    // Requeued as it is, the 2.0 message fails again and comes back with its reason.
    let (code, out) = crate::cli::portal_output(&env, &["dlq", "requeue", "2"]).await;
    assert_eq!(code, 0, "{out}");
    poll_until(
        SETTLE,
        "the requeued message back in the dead-letter queue",
        || async {
            let (_, out) = crate::cli::portal_output(&env, &["dlq", "list"]).await;
            out.contains("3 messages").then_some(())
        },
    )
    .await;
    let (code, out) = crate::cli::portal_output(&env, &["dlq", "purge"]).await;
    assert_eq!(code, 1, "purge without --yes refuses: {out}");
    let (code, out) = crate::cli::portal_output(&env, &["dlq", "purge", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("purged 3"), "{out}");
    assert_eq!(
        env.queue_depth("user-service.user-events.dlq")
            .await
            .unwrap(),
        0
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM users").await, 0);
}
