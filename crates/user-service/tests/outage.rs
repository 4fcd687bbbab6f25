//! While `user_db` is unreachable the consumer holds its messages and waits, without spending
//! any message's retry budget and without dead-lettering anything; readiness names `user_db`;
//! when the database is back every event is applied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandbox::events::user_event;
use sandbox::http::get;
use sandbox::proxy::TcpProxy;
use sandbox::users;
use sandbox::{poll_until, wait_for_user_version, Sandbox, SETTLE};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

#[tokio::test]
async fn while_user_db_is_unreachable_events_wait_without_spending_their_retry_budget() {
    let sb = Sandbox::for_test().await;
    let pool = users::pool(&sb).await; // direct, for the test's own reads
    let (proxy, via_proxy) = TcpProxy::in_front_of(&sb.database_url("user"))
        .await
        .unwrap();
    let mut config = users::config(&sb);
    config.database_url = via_proxy;
    let users = users::start(config).await;

    proxy.cut();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    let events: Vec<_> = ids
        .iter()
        .map(|&id| user_event(id, Some(1), &format!("{id}@clinic.test"), "doctor", true))
        .collect();
    users::publish_events(&sb, &events).await;
    poll_until(SETTLE, "readiness to name user_db", || async {
        let (s, b) = get(&format!("{}/health/ready", users.url()), None).await;
        (s == 503 && b["unavailable"] == json!(["user_db"])).then_some(())
    })
    .await;
    // The consumer holds the messages (none ready in the queue) and has not given up on any.
    poll_until(SETTLE, "the consumer to hold the messages", || async {
        (users::depth(&sb, &users::queues().main).await == 0).then_some(())
    })
    .await;
    let sync = users::sync_counters(&users).await;
    assert_eq!(
        (sync["retried"].as_u64(), sync["deadLettered"].as_u64()),
        (Some(0), Some(0)),
        "{sync}"
    );

    proxy.restore();
    for id in &ids {
        wait_for_user_version(&pool, *id, 1, Duration::from_secs(30)).await;
    }
    let sync = users::sync_counters(&users).await;
    assert_eq!(
        (sync["retried"].as_u64(), sync["deadLettered"].as_u64()),
        (Some(0), Some(0)),
        "{sync}"
    );
    assert_eq!(users::depth(&sb, &users::queues().dead_letter).await, 0);
}
