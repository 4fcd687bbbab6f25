//! Only trusted events are applied: a message's AMQP `user_id` names the broker user that
//! published it (RabbitMQ refuses any other name), and the consumer applies a message only from
//! the system's own publishers, itself, or a user listed in `TRUSTED_PUBLISHERS`; anything else
//! goes to the dead-letter queue unread, as `untrusted-publisher`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lapin::options::ConfirmSelectOptions;
use platform::amqp::{self, Outgoing};
use sandbox::events::{body, user_event};
use sandbox::users;
use sandbox::{poll_until, wait_for_user_version, Sandbox, SETTLE};
use uuid::Uuid;

/// Publishes `event` to the user-service's queue over `url`, named as `user_id` (or none).
async fn publish_as(
    url: &str,
    user_id: Option<&str>,
    event: &serde_json::Value,
) -> anyhow::Result<()> {
    let conn = amqp::connect(url, "trust test").await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let bytes = body(event);
    let properties = match user_id {
        Some(u) => amqp::persistent(u),
        None => lapin::BasicProperties::default().with_delivery_mode(2),
    };
    let sent = amqp::publish_confirmed(
        &ch,
        vec![Outgoing {
            exchange: "",
            routing_key: &users::queues().main,
            body: &bytes,
            properties,
        }],
    )
    .await
    .require_all();
    conn.close(200, "done").await.ok();
    sent.map(drop).map_err(Into::into)
}

#[tokio::test]
async fn an_untrusted_publishers_events_are_dead_lettered_unread_and_a_listed_one_is_applied() {
    let sb = Sandbox::for_test().await;
    let pool = users::pool(&sb).await;
    platform::amqp::ensure_topology(&sb.amqp_url, &[users::queues()])
        .await
        .unwrap();
    let (stranger, stranger_url) = sb.extra_broker_user("stranger").await.unwrap();
    let (legacy, legacy_url) = sb.extra_broker_user("legacy").await.unwrap();
    let mut config = users::config(&sb);
    config.consumer.trusted_publishers = vec![legacy.clone()];
    let _users = users::start(config).await;

    // A broker user that may publish but is no trusted publisher, and a message naming no one.
    let (forged, unnamed, listed) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let event = |id| user_event(id, Some(1), &format!("{id}@clinic.test"), "admin", true);
    publish_as(&stranger_url, Some(&stranger), &event(forged))
        .await
        .unwrap();
    publish_as(&sb.amqp_url, None, &event(unnamed))
        .await
        .unwrap();
    // A user listed in TRUSTED_PUBLISHERS, as a legacy producer during a migration.
    publish_as(&legacy_url, Some(&legacy), &event(listed))
        .await
        .unwrap();
    wait_for_user_version(&pool, listed, 1, SETTLE).await;

    let dead = poll_until(SETTLE, "two dead letters", || async {
        let dead = users::dead_letters(&sb).await;
        (dead.len() == 2).then_some(dead)
    })
    .await;
    let header = |h: &lapin::types::FieldTable, key: &str| amqp::header_text(h, key);
    for h in &dead {
        assert_eq!(
            header(h, "x-error-reason").as_deref(),
            Some("untrusted-publisher")
        );
    }
    assert_eq!(
        header(&dead[0], "x-original-user-id"),
        Some(stranger.clone())
    );
    assert!(
        header(&dead[0], "x-error-detail")
            .unwrap()
            .contains(&stranger),
        "the detail names who published it"
    );
    assert_eq!(
        header(&dead[1], "x-original-user-id"),
        None,
        "it named no one"
    );
    let count = |id: Uuid| {
        let pool = pool.clone();
        async move {
            sandbox::db::count(
                &pool,
                &format!("SELECT count(*) FROM users WHERE id = '{id}'"),
            )
            .await
        }
    };
    assert_eq!(count(forged).await, 0, "an untrusted event changes nothing");
    assert_eq!(count(unnamed).await, 0);
}

#[tokio::test]
async fn the_broker_refuses_a_message_that_names_another_publisher() {
    let sb = Sandbox::for_test().await;
    platform::amqp::ensure_topology(&sb.amqp_url, &[users::queues()])
        .await
        .unwrap();
    let (stranger, stranger_url) = sb.extra_broker_user("stranger").await.unwrap();
    let event = user_event(Uuid::new_v4(), Some(1), "x@clinic.test", "doctor", true);
    // Claiming to be the outbox relay is what a forger would do; RabbitMQ checks the claim.
    let claimed = publish_as(&stranger_url, Some(contract::wire::RELAY_USER), &event).await;
    assert!(
        claimed.is_err(),
        "the broker took a message naming another user"
    );
    assert!(publish_as(&stranger_url, Some(&stranger), &event)
        .await
        .is_ok());
}
