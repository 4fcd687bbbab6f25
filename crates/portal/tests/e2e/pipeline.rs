//! A user written in the auth-service reaches the user-service through the outbox, the relay and
//! RabbitMQ, whatever was down when it was written.

use crate::{count, get, post, SETTLE};
use contract::Role;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::json;
use std::time::{Duration, Instant};
use test_support::proxy::TcpProxy;
use test_support::{poll_until, wait_for_user_version, TestEnv};

#[tokio::test]
async fn register_admin_create_and_seed_each_emit_one_user_created_that_is_applied() {
    let env = TestEnv::new().await;
    let sys = env.start_system().await;
    let token = env.admin_token(&sys.gateway.url()).await;
    let gw = sys.gateway.url();

    let (status, _) = post(
        &format!("{gw}/api/v1/auth/register"),
        None,
        &json!({"email": "self@clinic.test", "password": "long-enough-pw", "firstName": "Self",
                "lastName": "Registered", "role": "nurse"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &format!("{gw}/api/v1/auth/admin/users"),
        Some(&token),
        &json!({"email": "made@clinic.test", "firstName": "Made", "lastName": "ByAdmin", "role": "doctor"}),
    )
    .await;
    assert_eq!(status, 201);
    let auth = env.auth_pool().await;
    let options = auth_service::seed::SeedOptions {
        admin_email: contract::Email::parse("seed-admin@clinic.test").unwrap(),
        admin_password: None,
        staff_password: None,
    };
    let report = auth_service::seed::seed(&auth, &options).await.unwrap();
    assert_eq!(report.created.len(), 10);

    // 1 test admin + 1 registered + 1 admin-created + 10 seeded, each with exactly one event.
    assert_eq!(count(&auth, "SELECT count(*) FROM users").await, 13);
    assert_eq!(
        count(
            &auth,
            "SELECT count(*) FROM outbox WHERE event_type = 'user.created'"
        )
        .await,
        13
    );
    assert_eq!(
        count(&auth, "SELECT count(*) FROM (SELECT user_id FROM outbox GROUP BY user_id HAVING count(*) <> 1) x").await,
        0
    );
    let users = env.user_pool().await;
    poll_until(SETTLE, "13 users in user_db", || async {
        (count(&users, "SELECT count(*) FROM users").await == 13).then_some(())
    })
    .await;
    let report = ops::verify::compare(&auth, &users, 10).await.unwrap();
    assert!(report.is_in_sync(), "{}", report.summary());
    assert_eq!(report.checked, 13);
}

#[tokio::test]
async fn the_published_envelope_matches_the_contract_field_by_field() {
    let env = TestEnv::new().await;
    let auth = env.start_auth().await;
    // Declare the topology, then a queue of the test's own bound like any other subscriber.
    let conn = platform::amqp::connect(&env.amqp_url, "contract-test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    platform::amqp::declare_topology(&ch, &[]).await.unwrap();
    let q = ch
        .queue_declare(
            "",
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().as_str(),
        "user.events",
        "user.#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let (status, created) = post(
        &format!("{}/api/v1/auth/register", auth.url()),
        None,
        &json!({"email": "Contract@Clinic.Test", "password": "long-enough-pw", "firstName": "Rudo",
                "lastName": "Moyo", "role": "doctor", "phoneNumber": "+263 77 123 4567"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");

    let delivery = poll_until(SETTLE, "the event on the test's queue", || async {
        ch.basic_get(q.name().as_str(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
    })
    .await;
    assert_eq!(delivery.routing_key.as_str(), "user.created");
    assert_eq!(delivery.exchange.as_str(), "user.events");
    let props = &delivery.properties;
    assert_eq!(*props.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        props.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );

    let body: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
    let mut keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "eventId",
            "eventType",
            "payload",
            "source",
            "timestamp",
            "version"
        ]
    );
    assert_eq!(body["eventType"], "user.created");
    assert_eq!(body["source"], "auth-service");
    assert_eq!(body["version"], "1.0");
    assert_eq!(
        props.message_id().as_ref().map(|m| m.to_string()),
        body["eventId"].as_str().map(str::to_owned)
    );
    assert!(uuid::Uuid::parse_str(body["eventId"].as_str().unwrap()).is_ok());
    let is_contract_time = |v: &serde_json::Value| {
        let s = v.as_str().unwrap_or_default();
        s.len() == 24
            && s.ends_with('Z')
            && &s[19..20] == "."
            && chrono::DateTime::parse_from_rfc3339(s).is_ok()
    };
    assert!(
        is_contract_time(&body["timestamp"]),
        "{}",
        body["timestamp"]
    );

    let p = &body["payload"];
    let mut keys: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "createdAt",
            "email",
            "firstName",
            "isActive",
            "lastName",
            "mustChangePassword",
            "phoneNumber",
            "role",
            "updatedAt",
            "userId",
            "userVersion"
        ]
    );
    assert_eq!(p["userId"], created["userId"]);
    assert_eq!(p["email"], "contract@clinic.test");
    assert_eq!(p["firstName"], "Rudo");
    assert_eq!(p["lastName"], "Moyo");
    assert_eq!(p["role"], "doctor");
    assert_eq!(p["phoneNumber"], "+263 77 123 4567");
    assert_eq!(
        p["isActive"], false,
        "self-registered accounts start inactive"
    );
    assert_eq!(p["mustChangePassword"], false);
    assert_eq!(p["userVersion"], 1);
    assert!(is_contract_time(&p["createdAt"]));
    conn.close(200, "done").await.ok();
}

#[tokio::test]
async fn a_user_created_while_the_user_service_is_stopped_appears_after_it_starts() {
    let env = TestEnv::new().await;
    let _auth = env.start_auth().await;
    let auth_pool = env.auth_pool().await;
    let id = env
        .create_user(&auth_pool, "offline@clinic.test", Role::Doctor)
        .await;
    poll_until(SETTLE, "the event published to the queue", || async {
        (count(
            &auth_pool,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    assert_eq!(
        env.queue_depth("user-service.user-events").await.unwrap(),
        1
    );

    let _users = env.start_users().await;
    wait_for_user_version(&env.user_pool().await, id, 1, SETTLE).await;
}

#[tokio::test]
async fn a_user_created_while_rabbitmq_is_unreachable_appears_when_it_is_back() {
    let env = TestEnv::new().await;
    let broker: std::net::SocketAddr = test_support::amqp_host().parse().unwrap();
    let proxy = TcpProxy::start(broker).await.unwrap();
    let mut config = env.auth_config();
    config.amqp_url = format!("amqp://guest:guest@{}/{}", proxy.addr, env.vhost);
    let auth = env.start_auth_with(config).await;
    let _users = env.start_users().await;
    let (auth_pool, user_pool) = (env.auth_pool().await, env.user_pool().await);

    let before = env
        .create_user(&auth_pool, "before@clinic.test", Role::Doctor)
        .await;
    wait_for_user_version(&user_pool, before, 1, SETTLE).await;

    proxy.cut();
    poll_until(
        SETTLE,
        "the auth-service to report the broker down",
        || async {
            let (status, body) = get(&format!("{}/health/ready", auth.url()), None).await;
            (status == 503 && body["unavailable"] == json!(["rabbitmq"])).then_some(())
        },
    )
    .await;
    let during = env
        .create_user(&auth_pool, "during@clinic.test", Role::Nurse)
        .await;
    let unpublished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE user_id = $1 AND published_at IS NULL",
    )
    .bind(during)
    .fetch_one(&auth_pool)
    .await
    .unwrap();
    assert_eq!(
        unpublished, 1,
        "the outbox holds the event while the broker is away"
    );

    proxy.restore();
    wait_for_user_version(&user_pool, during, 1, Duration::from_secs(30)).await;
    let report = ops::verify::compare(&auth_pool, &user_pool, 10)
        .await
        .unwrap();
    assert!(report.is_in_sync(), "{}", report.summary());
}

#[tokio::test]
async fn after_seeding_six_doctors_are_listed_and_a_new_one_appears_within_a_second() {
    let env = TestEnv::new().await;
    let sys = env.start_system().await;
    let gw = sys.gateway.url();
    let auth_pool = env.auth_pool().await;
    let options = auth_service::seed::SeedOptions {
        admin_email: contract::Email::parse("admin@clinic.test").unwrap(),
        admin_password: Some("seed-admin-password".into()),
        staff_password: None,
    };
    auth_service::seed::seed(&auth_pool, &options)
        .await
        .unwrap();
    let token = env
        .login(&gw, "admin@clinic.test", "seed-admin-password")
        .await;
    let doctors = format!("{gw}/api/v1/users?role=doctor&isActive=true&limit=50&offset=0");
    let page = poll_until(SETTLE, "6 seeded doctors in the directory", || async {
        let (status, page) = get(&doctors, Some(&token)).await;
        (status == 200 && page["total"] == 6).then_some(page)
    })
    .await;
    let last_names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["lastName"].as_str().unwrap())
        .collect();
    let mut sorted = last_names.clone();
    sorted.sort();
    assert_eq!(last_names, sorted, "sorted by last name");

    let (status, created) = post(
        &format!("{gw}/api/v1/auth/admin/users"),
        Some(&token),
        &json!({"email": "new.doctor@clinic.test", "firstName": "New", "lastName": "Doctor", "role": "doctor",
                "phoneNumber": "+263 77 000 0000"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let created_at = Instant::now();
    let id = created["user"]["userId"].clone();
    poll_until(
        Duration::from_secs(1),
        "the new doctor listed within a second",
        || async {
            let (_, page) = get(&doctors, Some(&token)).await;
            page["items"]
                .as_array()?
                .iter()
                .any(|u| u["userId"] == id)
                .then_some(())
        },
    )
    .await;
    println!(
        "new doctor listed {} ms after the 201",
        created_at.elapsed().as_millis()
    );
    let (status, one) = get(
        &format!("{gw}/api/v1/users/{}", id.as_str().unwrap()),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(one["email"], "new.doctor@clinic.test");
    assert_eq!(one["mustChangePassword"], true);
}
