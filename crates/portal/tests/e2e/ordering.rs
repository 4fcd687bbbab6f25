//! The consumer's one rule, seen from outside: events published straight to its queue, in any
//! order and any number of times, leave `user_db` at the newest snapshot; bad messages go to the
//! dead-letter queue with their reason and block nothing.

use crate::{get, SETTLE};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel};
use serde_json::{json, Value};
use test_support::{poll_until, wait_for_user_version, TestEnv};
use uuid::Uuid;

const QUEUE: &str = "user-service.user-events";

fn event(user: Uuid, version: Option<i64>, email: &str, role: &str, active: bool) -> Value {
    let mut payload = json!({
        "userId": user, "email": email, "firstName": "Farai", "lastName": "Ncube", "role": role,
        "phoneNumber": null, "isActive": active, "mustChangePassword": false,
        "createdAt": "2026-02-07T10:00:00.000Z",
    });
    if let Some(v) = version {
        payload["userVersion"] = json!(v);
    }
    json!({
        "eventId": Uuid::new_v4(), "eventType": "user.updated", "timestamp": "2026-02-07T10:00:00.000Z",
        "source": "auth-service", "version": "1.0", "payload": payload,
    })
}

async fn channel(env: &TestEnv) -> (lapin::Connection, Channel) {
    let conn = platform::amqp::connect(&env.amqp_url, "ordering-test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    platform::amqp::declare_topology(
        &ch,
        &[contract::topology::ConsumerQueues::for_consumer(
            "user-service",
        )],
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

async fn publish_raw(ch: &Channel, body: &[u8]) {
    ch.basic_publish(
        "",
        QUEUE,
        BasicPublishOptions::default(),
        body,
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

async fn publish(ch: &Channel, event: &Value) {
    publish_raw(ch, &serde_json::to_vec(event).unwrap()).await;
}

async fn row(pool: &sqlx::PgPool, id: Uuid) -> Option<(Option<i64>, String, String, bool)> {
    sqlx::query_as("SELECT user_version, email, role, is_active FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_duplicate_or_an_older_version_after_a_newer_one_changes_nothing() {
    let env = TestEnv::new().await;
    let users = env.start_users().await;
    let pool = env.user_pool().await;
    let (_conn, ch) = channel(&env).await;
    let user = Uuid::new_v4();

    publish(
        &ch,
        &event(user, Some(2), "v2@clinic.test", "consultant", false),
    )
    .await;
    wait_for_user_version(&pool, user, 2, SETTLE).await;
    // Redelivered newest, then a late older snapshot, then a marker that proves both were read.
    publish(
        &ch,
        &event(user, Some(2), "v2@clinic.test", "consultant", false),
    )
    .await;
    publish(&ch, &event(user, Some(1), "v1@clinic.test", "doctor", true)).await;
    let marker = Uuid::new_v4();
    publish(
        &ch,
        &event(marker, Some(1), "marker@clinic.test", "nurse", true),
    )
    .await;
    wait_for_user_version(&pool, marker, 1, SETTLE).await;

    assert_eq!(
        row(&pool, user).await,
        Some((Some(2), "v2@clinic.test".into(), "consultant".into(), false)),
        "the late version 1 neither reactivated nor re-roled the user"
    );
    let (_, ready) = get(&format!("{}/health/ready", users.url()), None).await;
    assert_eq!(ready["sync"]["applied"], 2, "{ready}");
    assert_eq!(ready["sync"]["ignoredStale"], 2, "{ready}");
}

#[tokio::test]
async fn events_of_older_producers_without_user_version_are_ordered_by_timestamp() {
    let env = TestEnv::new().await;
    let _users = env.start_users().await;
    let pool = env.user_pool().await;
    let (_conn, ch) = channel(&env).await;
    let user = Uuid::new_v4();
    let mut newer = event(user, None, "newer@clinic.test", "doctor", true);
    newer["timestamp"] = json!("2026-02-07T10:00:05.000Z");
    let mut older = event(user, None, "older@clinic.test", "nurse", true);
    older["timestamp"] = json!("2026-02-07T10:00:01.000Z");
    // The exact body of the portal's original producer: no userVersion, no updatedAt.
    newer["eventType"] = json!("user.created");
    publish(&ch, &newer).await;
    publish(&ch, &older).await;
    let marker = Uuid::new_v4();
    publish(
        &ch,
        &event(marker, Some(1), "marker@clinic.test", "nurse", true),
    )
    .await;
    wait_for_user_version(&pool, marker, 1, SETTLE).await;
    assert_eq!(
        row(&pool, user).await,
        Some((None, "newer@clinic.test".into(), "doctor".into(), true))
    );
}

#[tokio::test]
async fn bad_messages_are_dead_lettered_with_their_reason_and_block_nothing() {
    let env = TestEnv::new().await;
    let _users = env.start_users().await;
    let pool = env.user_pool().await;
    let (_conn, ch) = channel(&env).await;
    let good = Uuid::new_v4();
    let mut unknown_type = event(Uuid::new_v4(), Some(1), "x@clinic.test", "doctor", true);
    unknown_type["eventType"] = json!("user.teleported");
    let mut bad_role = event(Uuid::new_v4(), Some(1), "y@clinic.test", "wizard", true);
    bad_role["version"] = json!("1.0");
    let mut major_two = event(Uuid::new_v4(), Some(1), "z@clinic.test", "doctor", true);
    major_two["version"] = json!("2.0");

    publish_raw(&ch, b"{this is not json").await;
    publish_raw(&ch, &[0xff, 0xfe, 0x00]).await;
    publish(&ch, &unknown_type).await;
    publish(&ch, &bad_role).await;
    publish(&ch, &major_two).await;
    publish(
        &ch,
        &event(good, Some(1), "good@clinic.test", "doctor", true),
    )
    .await;
    wait_for_user_version(&pool, good, 1, SETTLE).await;

    let mut reasons = Vec::new();
    while let Some(msg) = ch
        .basic_get(
            "user-service.user-events.dlq",
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let headers = msg.properties.headers().clone().unwrap_or_default();
        let text = |k: &str| match headers.inner().get(k) {
            Some(lapin::types::AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("header {k} missing or not a string: {other:?}"),
        };
        assert!(!text("x-error-detail").is_empty());
        assert!(!text("x-first-failure-time").is_empty());
        text("x-original-routing-key");
        reasons.push(text("x-error-reason"));
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "invalid-payload",
            "not-json",
            "not-utf8",
            "unknown-event-type",
            "unsupported-version"
        ]
    );
    let users_in_db: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users_in_db, 1);
    poll_until(SETTLE, "the main queue drained", || async {
        (env.queue_depth(QUEUE).await.ok()? == 0).then_some(())
    })
    .await;
}
