//! The running relay: its wake-up off the commit path — writers notify only while the relay says
//! it sleeps (`relay_wakeup.waiting`), and a relay whose fallback poll never comes still
//! publishes every event promptly, idle (woken by a notification) and flowing (polling by
//! itself) — and its batches in flight, which keep each user's events in order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auth_service::relay::{declare_waiting, Relay, RelayConfig, NOTIFY_CHANNEL};
use auth_service::store::{change_user, UserChange};
use contract::topology::EXCHANGE;
use contract::Role;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sandbox::auth;
use sandbox::poll::{poll_until, SETTLE};
use sandbox::Sandbox;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Binds `queue` to the events like a subscriber's, once the relay has declared the exchange
/// (it does when it connects).
async fn bind_to_events(conn: &lapin::Connection, queue: &str) {
    poll_until(SETTLE, "the exchange", || async {
        let probe = conn.create_channel().await.ok()?;
        probe
            .queue_bind(
                queue,
                EXCHANGE,
                "user.#",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .ok()
    })
    .await;
}

async fn waiting(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT waiting FROM relay_wakeup")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn writers_notify_only_while_the_relay_says_it_is_waiting() {
    let sb = Sandbox::for_test().await;
    let pool = auth::pool(&sb).await;
    assert!(waiting(&pool).await, "a new database notifies, as before");
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(NOTIFY_CHANNEL).await.unwrap();

    declare_waiting(&pool, false).await.unwrap();
    assert!(!waiting(&pool).await);
    auth::create_user(&pool, "flowing@clinic.test", Role::Nurse).await;
    declare_waiting(&pool, true).await.unwrap();
    auth::create_user(&pool, "waiting@clinic.test", Role::Nurse).await;
    // A marker after both: notifications arrive in commit order, so what comes before it is
    // exactly what the two writers sent.
    sqlx::query("SELECT pg_notify($1, 'marker')")
        .bind(NOTIFY_CHANNEL)
        .execute(&pool)
        .await
        .unwrap();
    let first = listener.recv().await.unwrap();
    assert_eq!(
        first.payload(),
        "",
        "the writer of a waiting relay notifies"
    );
    let second = listener.recv().await.unwrap();
    assert_eq!(
        second.payload(),
        "marker",
        "the writer of a flowing relay must not notify"
    );
}

#[tokio::test]
async fn a_relay_without_a_fallback_poll_publishes_idle_and_flowing_events_promptly() {
    let sb = Sandbox::for_test().await;
    let pool = auth::pool(&sb).await;
    let config = RelayConfig {
        // Never in this test: every event must be found by a notification or by the relay's
        // own polling while events flow.
        poll_interval: Duration::from_secs(3600),
        ..RelayConfig::default()
    };
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(
        Relay::new(
            auth_service::relay::user_events(),
            pool.clone(),
            sb.amqp_url.clone(),
            config,
        )
        .run(shutdown.clone()),
    );

    for round in 0..3 {
        // Idle: the relay has said it sleeps, so the next writer wakes it.
        poll_until(SETTLE, "the relay waiting for notifications", || async {
            waiting(&pool).await.then_some(())
        })
        .await;
        auth::create_user(&pool, &format!("idle{round}@clinic.test"), Role::Doctor).await;
        poll_until(SETTLE, "the idle relay to publish", || async {
            (auth::unpublished(&pool).await == 0).then_some(())
        })
        .await;
        // A burst from concurrent writers: the relay polls by itself while they flow.
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for i in 0..25 {
                        let email = format!("burst{round}-{w}-{i}@clinic.test");
                        auth::create_user(&pool, &email, Role::Nurse).await;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        poll_until(SETTLE, "the flowing relay to publish the burst", || async {
            (auth::unpublished(&pool).await == 0).then_some(())
        })
        .await;
    }
    let published: i64 = sqlx::query_scalar("SELECT count(*) FROM event_store")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(published, 3 * (1 + 8 * 25));
    shutdown.cancel();
    relay.await.unwrap();
    assert!(
        waiting(&pool).await,
        "a relay that stops leaves writers notifying"
    );
}

#[tokio::test]
async fn with_small_batches_in_flight_each_users_events_arrive_in_version_order() {
    let sb = Sandbox::for_test().await;
    let pool = auth::pool(&sb).await;
    // The test's own queue, bound like any subscriber's, read back in delivery order.
    let conn = platform::amqp::connect(&sb.amqp_url, "test").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
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
    let config = RelayConfig {
        // Many small batches, several in flight: a user's next event is often in the batch
        // claimed while the one before is still awaiting its confirm.
        batch_size: 3,
        in_flight: 4,
        ..RelayConfig::default()
    };
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(
        Relay::new(
            auth_service::relay::user_events(),
            pool.clone(),
            sb.amqp_url.clone(),
            config,
        )
        .run(shutdown.clone()),
    );
    bind_to_events(&conn, q.name().as_str()).await;

    let (users, changes) = (6, 30);
    let writers: Vec<_> = (0..users)
        .map(|u| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let id =
                    auth::create_user(&pool, &format!("order{u}@clinic.test"), Role::Nurse).await;
                for i in 0..changes {
                    let change = if i % 2 == 0 {
                        UserChange::Deactivate
                    } else {
                        UserChange::Activate
                    };
                    let mut tx = pool.begin().await.unwrap();
                    change_user(&mut tx, id, change).await.unwrap();
                    tx.commit().await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }

    let expected = users * (1 + changes);
    let mut versions: HashMap<Uuid, Vec<i64>> = HashMap::new();
    let mut received = 0;
    let deadline = std::time::Instant::now() + SETTLE;
    while received < expected {
        match ch
            .basic_get(q.name().as_str(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(d) => {
                let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
                let p = &body["payload"];
                let id: Uuid = p["userId"].as_str().unwrap().parse().unwrap();
                versions
                    .entry(id)
                    .or_default()
                    .push(p["userVersion"].as_i64().unwrap());
                received += 1;
            }
            None => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{received} of {expected} events after {SETTLE:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    for (id, seen) in &versions {
        let in_order: Vec<i64> = (1..=(1 + changes as i64)).collect();
        assert_eq!(seen, &in_order, "user {id}: versions in delivery order");
    }
    shutdown.cancel();
    relay.await.unwrap();
    conn.close(200, "done").await.ok();
}

/// The relay's count of events the broker refused (nacked), from its metrics.
async fn refused(metrics: &platform::metrics::Metrics) -> u64 {
    metrics
        .render()
        .await
        .lines()
        .find(|l| l.starts_with("portal_relay_errors_total") && l.contains("kind=\"refused\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Found by hand on a three-node cluster: a relay that reconnected while a quorum queue elected
/// its leader had every publish nacked, and retried at once on the same channel, about 250
/// times a second with a log line each. Now a refusal is one outage, retried on a new
/// connection after the backoff, and the event goes out once the broker takes it.
#[tokio::test]
async fn a_broker_refusing_events_is_retried_with_backoff_on_a_new_connection() {
    let sb = Sandbox::for_test().await;
    let pool = auth::pool(&sb).await;
    let metrics = platform::metrics::Metrics::new("relay-test").unwrap();
    let relay_metrics = auth_service::relay::RelayMetrics::register(
        &metrics,
        &auth_service::relay::user_events(),
        pool.clone(),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let relay = tokio::spawn(
        Relay::new(
            auth_service::relay::user_events(),
            pool.clone(),
            sb.amqp_url.clone(),
            RelayConfig::default(),
        )
        .with_metrics(relay_metrics)
        .run(shutdown.clone()),
    );
    // A full queue that refuses more (reject-publish) bound like a subscriber: the broker
    // nacks every event routed to it.
    let conn = platform::amqp::connect(&sb.amqp_url, "test").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-max-length".into(),
        lapin::types::AMQPValue::LongLongInt(1),
    );
    args.insert(
        "x-overflow".into(),
        lapin::types::AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare("full", QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    ch.basic_publish(
        "",
        "full",
        Default::default(),
        b"the one message it holds",
        Default::default(),
    )
    .await
    .unwrap();
    bind_to_events(&conn, "full").await;

    auth::create_user(&pool, "refused@clinic.test", Role::Nurse).await;
    poll_until(SETTLE, "a first refusal", || async {
        (refused(&metrics).await >= 1).then_some(())
    })
    .await;
    let first = std::time::Instant::now();
    poll_until(SETTLE, "two more attempts", || async {
        (refused(&metrics).await >= 3).then_some(())
    })
    .await;
    // The backoff waits at least 50 ms, then 100 ms: a busy loop refuses three in a few ms.
    assert!(
        first.elapsed() >= Duration::from_millis(120),
        "retried after {:?}",
        first.elapsed()
    );
    assert_eq!(auth::unpublished(&pool).await, 1, "not marked published");

    // Room in the queue again: the next attempt is accepted and the event marked published.
    ch.queue_purge("full", Default::default()).await.unwrap();
    poll_until(SETTLE, "the event published", || async {
        (auth::unpublished(&pool).await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    relay.await.unwrap();
}
