//! The outbox relay, run one step at a time (`open_channel` + `publish_batch`) and read back
//! with `basic_get`: what it publishes matches the wire contract field by field, and an event
//! no queue would take is kept in `user.events.unrouted` and still counts as published.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auth_service::relay::{open_channel, publish_batch};
use contract::topology::{EXCHANGE, UNROUTED_QUEUE};
use contract::Role;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sandbox::auth;
use sandbox::Sandbox;

/// The broker user this test publishes as (the sandbox's).
fn publisher(sb: &Sandbox) -> String {
    platform::amqp::broker_user(&sb.amqp_url)
}

/// Rows one relay step claims at most (the service's default).
const BATCH: i64 = 500;

#[tokio::test]
async fn the_published_envelope_matches_the_contract_field_by_field() {
    let sb = Sandbox::for_test().await;
    let mut config = auth::config(&sb);
    config.run_relay = false; // the test steps the relay itself
    let _auth = auth::start(config).await;
    // The relay's channel declares the topology; then a queue of the test's own, bound like
    // any other subscriber.
    let (conn, ch) = open_channel(&sb.amqp_url, true).await.unwrap();
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
        EXCHANGE,
        "user.#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    // An inactive account with every optional field, written as the store writes every user.
    let pool = auth::pool(&sb).await;
    let mut tx = pool.begin().await.unwrap();
    auth_service::store::create_user(
        &mut tx,
        auth_service::store::NewUser {
            email: contract::Email::parse("Contract@Clinic.Test").unwrap(),
            password_hash: auth_service::password::hash("long-enough-pw".to_owned())
                .await
                .unwrap(),
            first_name: contract::PersonName::parse("firstName", "Rudo").unwrap(),
            last_name: contract::PersonName::parse("lastName", "Moyo").unwrap(),
            role: contract::Role::Doctor,
            phone_number: Some(contract::PhoneNumber::parse("+263 77 123 4567").unwrap()),
            is_active: false,
            must_change_password: false,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        publish_batch(&pool, &ch, BATCH, &publisher(&sb))
            .await
            .unwrap(),
        1
    );

    let delivery = ch
        .basic_get(q.name().as_str(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the event on the test's queue");
    assert_eq!(delivery.routing_key.as_str(), "user.created");
    assert_eq!(delivery.exchange.as_str(), "user.events");
    let props = &delivery.properties;
    assert_eq!(*props.delivery_mode(), Some(2), "persistent");
    assert_eq!(
        props.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert_eq!(
        props.user_id().as_ref().map(|u| u.as_str()),
        Some(publisher(&sb).as_str()),
        "named by the broker user that published it, which the broker checked"
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
    assert_eq!(body["version"], contract::event::VERSION);
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
    let id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM users WHERE email = 'contract@clinic.test'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(p["userId"], id.to_string());
    assert_eq!(p["email"], "contract@clinic.test");
    assert_eq!(p["firstName"], "Rudo");
    assert_eq!(p["lastName"], "Moyo");
    assert_eq!(p["role"], "doctor");
    assert_eq!(p["phoneNumber"], "+263 77 123 4567");
    assert_eq!(p["isActive"], false);
    assert_eq!(p["mustChangePassword"], false);
    assert_eq!(p["userVersion"], 1);
    assert!(is_contract_time(&p["createdAt"]));
    conn.close(200, "done").await.ok();
}

#[tokio::test]
async fn events_no_queue_would_take_are_kept_in_the_unrouted_queue() {
    let sb = Sandbox::for_test().await;
    let auth = auth::pool(&sb).await;
    // One channel for both steps, as a running relay keeps it: opening it declares the
    // topology (the consumer's queue included) once.
    let (conn, ch) = open_channel(&sb.amqp_url, true).await.unwrap();
    auth::create_user(&auth, "first@clinic.test", Role::Doctor).await;
    assert_eq!(
        publish_batch(&auth, &ch, BATCH, &publisher(&sb))
            .await
            .unwrap(),
        1
    );
    assert_eq!(auth::unpublished(&auth).await, 0);
    let queue =
        contract::topology::ConsumerQueues::for_consumer(contract::topology::USER_SERVICE).main;
    assert_eq!(
        platform::amqp::ready_messages(&sb.amqp_url, &queue)
            .await
            .unwrap(),
        1,
        "the first event reached the consumer's queue"
    );

    // Someone deletes the consumer's queue: nothing is bound to user.# any more.
    ch.queue_delete(&queue, Default::default()).await.unwrap();
    auth::create_user(&auth, "orphan@clinic.test", Role::Doctor).await;
    assert_eq!(
        publish_batch(&auth, &ch, BATCH, &publisher(&sb))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        platform::amqp::ready_messages(&sb.amqp_url, UNROUTED_QUEUE)
            .await
            .unwrap(),
        1,
        "the orphan event in user.events.unrouted"
    );
    assert_eq!(auth::unpublished(&auth).await, 0);
    let kept = ch
        .basic_get(UNROUTED_QUEUE, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the kept event");
    let body: serde_json::Value = serde_json::from_slice(&kept.data).unwrap();
    assert_eq!(body["payload"]["email"], "orphan@clinic.test");
    conn.close(200, "done").await.ok();
}
