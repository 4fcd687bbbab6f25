//! Messages the consumer cannot apply never block the queue: one that can never succeed (not
//! UTF-8, not JSON, unknown type or version, invalid payload) goes straight to the dead-letter
//! queue with its reason in headers; one that `user_db` refuses is retried with growing delays,
//! then dead-lettered as `retries-exhausted`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lapin::types::AMQPValue;
use platform::amqp::header_text;
use sandbox::events::{body, user_event};
use sandbox::users;
use sandbox::{poll_until, wait_for_user_version, Sandbox, SETTLE};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

#[tokio::test]
async fn bad_messages_are_dead_lettered_with_their_reason_and_block_nothing() {
    let sb = Sandbox::for_test().await;
    let pool = users::pool(&sb).await;
    let (consumer, _) = users::consumer(&sb, &pool);
    let good = Uuid::new_v4();
    let mut unknown_type = user_event(Uuid::new_v4(), Some(1), "x@clinic.test", "doctor", true);
    unknown_type["eventType"] = json!("user.teleported");
    let mut bad_role = user_event(Uuid::new_v4(), Some(1), "y@clinic.test", "wizard", true);
    bad_role["version"] = json!("1.0");
    let mut major_two = user_event(Uuid::new_v4(), Some(1), "z@clinic.test", "doctor", true);
    major_two["version"] = json!("2.0");

    users::publish(
        &sb,
        &[
            b"{this is not json".to_vec(),
            vec![0xff, 0xfe, 0x00],
            body(&unknown_type),
            body(&bad_role),
            body(&major_two),
            body(&user_event(
                good,
                Some(1),
                "good@clinic.test",
                "doctor",
                true,
            )),
        ],
    )
    .await;
    assert_eq!(consumer.process_ready().await.unwrap(), 6, "one batch");
    wait_for_user_version(&pool, good, 1, SETTLE).await;

    let mut reasons = Vec::new();
    for headers in users::dead_letters(&sb).await {
        let text = |k: &str| match headers.inner().get(k) {
            Some(AMQPValue::LongString(s)) => s.to_string(),
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
    assert_eq!(
        sandbox::db::count(&pool, "SELECT count(*) FROM users").await,
        1
    );
    assert_eq!(
        users::depth(&sb, &users::queues().main).await,
        0,
        "the main queue drained"
    );
}

#[tokio::test]
async fn a_message_user_db_refuses_is_retried_with_growing_delay_then_dead_lettered() {
    let sb = Sandbox::for_test().await;
    let mut config = users::config(&sb);
    config.consumer.retry_delays = vec![Duration::from_millis(200), Duration::from_millis(600)];
    let users = users::start(config).await;
    let pool = users::pool(&sb).await;
    // A valid event that user_db refuses for a reason of its own data: a constraint this copy
    // has and the event does not meet.
    sqlx::query("ALTER TABLE users ADD CONSTRAINT no_poison CHECK (last_name <> 'Poison')")
        .execute(&pool)
        .await
        .unwrap();
    let mut poison = user_event(
        Uuid::new_v4(),
        Some(1),
        "poison@clinic.test",
        "doctor",
        true,
    );
    poison["payload"]["lastName"] = json!("Poison");
    let good = Uuid::new_v4();
    users::publish_events(
        &sb,
        &[
            poison,
            user_event(good, Some(1), "good@clinic.test", "doctor", true),
        ],
    )
    .await;
    wait_for_user_version(&pool, good, 1, SETTLE).await;

    let started = Instant::now();
    let dlq = users::queues().dead_letter;
    poll_until(
        SETTLE,
        "the poison message in the dead-letter queue",
        || async { (users::depth(&sb, &dlq).await == 1).then_some(()) },
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "both retry delays were waited"
    );
    let sync = users::sync_counters(&users).await;
    assert_eq!(
        (sync["retried"].as_u64(), sync["deadLettered"].as_u64()),
        (Some(2), Some(1)),
        "{sync}"
    );

    let dead = users::dead_letters(&sb).await;
    assert_eq!(dead.len(), 1);
    let h = |k: &str| header_text(&dead[0], k).unwrap_or_default();
    assert_eq!(h("x-error-reason"), "retries-exhausted");
    assert_eq!(h("x-retry-count"), "2");
    assert_eq!(h("x-original-routing-key"), "user-service.user-events");
    assert!(
        h("x-error-detail").contains("failed 3 times"),
        "{:?}",
        dead[0]
    );
    for retry in [
        "user-service.user-events.retry.200ms",
        "user-service.user-events.retry.600ms",
    ] {
        assert_eq!(users::depth(&sb, retry).await, 0);
    }
}
