//! Only trusted events are applied: a message's AMQP `user_id` names the broker user that
//! published it (RabbitMQ refuses any other name), and the consumer applies a message only from
//! the system's own publishers, itself, or a user listed in `TRUSTED_PUBLISHERS`; anything else
//! goes to the dead-letter queue unread, as `untrusted-publisher`. Sent back by a trusted
//! publisher (an operator's requeue), such a message is judged by who first published it and
//! set aside again; the operator's tools never send it back, and only a logged discard removes
//! it. A consumer whose URL names no broker user does not start: its user is trusted, so it is
//! never guessed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lapin::options::{BasicAckOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use ops::dlq::{self, Discard};
use platform::amqp::{self, Outgoing};
use sandbox::events::{body, user_event};
use sandbox::users;
use sandbox::{poll_until, wait_for_user_version, Sandbox, SETTLE};
use serde_json::json;
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

/// The header `key` of each message in the user-service's dead-letter queue, oldest first.
async fn dead_letter_header(sb: &Sandbox, key: &str) -> Vec<Option<String>> {
    users::dead_letters(sb)
        .await
        .iter()
        .map(|h| amqp::header_text(h, key))
        .collect()
}

/// A forged event whose publisher claims in `x-original-user-id` to pass on the relay's is
/// dead-lettered naming its real publisher. Sent back by the operator (a trusted publisher, as
/// every requeue did before the operator's tools kept such letters back) it is set aside again,
/// judged by its first publisher. The operator's requeue keeps it back, and only a discard
/// removes it, logged with who did it. The user it would create never appears.
#[tokio::test]
async fn a_forged_event_sent_back_by_a_trusted_publisher_stays_untrusted_and_is_only_discarded() {
    let (logs, _capturing) = sandbox::logs::Captured::start();
    let sb = Sandbox::for_test().await;
    let pool = users::pool(&sb).await;
    let queues = users::queues();
    amqp::ensure_topology(&sb.amqp_url, std::slice::from_ref(&queues))
        .await
        .unwrap();
    let (stranger, stranger_url) = sb.extra_broker_user("stranger").await.unwrap();
    let _users = users::start(users::config(&sb)).await;

    let forged = Uuid::new_v4();
    let mut event = user_event(forged, Some(1), "forged@clinic.test", "admin", true);
    event["eventType"] = json!("user.created");
    let mut claim = FieldTable::default();
    claim.insert(
        "x-original-user-id".into(),
        amqp::text(contract::wire::RELAY_USER),
    );
    sandbox::amqp::publish_one(
        &stranger_url,
        &queues.main,
        &body(&event),
        amqp::persistent(&stranger).with_headers(claim),
    )
    .await
    .unwrap();
    poll_until(SETTLE, "the forged event dead-lettered", || async {
        (users::depth(&sb, &queues.dead_letter).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        dead_letter_header(&sb, "x-original-user-id").await,
        [Some(stranger.clone())],
        "the claim of an untrusted publisher is replaced by its own name"
    );

    // The requeue as it was: the copy published under the operator's user (trusted: on this
    // machine every part is the sandbox's user) with the letter's headers.
    let conn = amqp::connect(&sb.amqp_url, "old requeue").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let letter = ch
        .basic_get(&queues.dead_letter, Default::default())
        .await
        .unwrap()
        .expect("the dead letter");
    let operator = amqp::broker_user(&sb.amqp_url);
    let properties = letter
        .delivery
        .properties
        .clone()
        .with_user_id(operator.as_str().into());
    amqp::publish_confirmed(
        &ch,
        vec![Outgoing {
            exchange: "",
            routing_key: &queues.main,
            body: &letter.delivery.data,
            properties,
        }],
    )
    .await
    .require_all()
    .unwrap();
    letter
        .delivery
        .acker
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    conn.close(200, "done").await.ok();
    let detail = poll_until(SETTLE, "the sent-back forgery set aside again", || async {
        let details = dead_letter_header(&sb, "x-error-detail").await;
        match details.as_slice() {
            [Some(d)] if d.contains("first published by") => Some(d.clone()),
            _ => None,
        }
    })
    .await;
    assert!(
        detail.contains(&operator) && detail.contains(&stranger),
        "{detail}"
    );
    assert_eq!(
        dead_letter_header(&sb, "x-error-reason").await,
        [Some("untrusted-publisher".to_owned())]
    );
    let applied = || async {
        sandbox::db::count(
            &pool,
            &format!("SELECT count(*) FROM users WHERE id = '{forged}'"),
        )
        .await
    };
    assert_eq!(applied().await, 0, "the forgery changed nothing");

    // `portal dlq requeue --all` keeps it back; `portal dlq discard --untrusted` removes it.
    let opened = dlq::open(&sb.amqp_url, &queues.dead_letter, "test", &[])
        .await
        .unwrap();
    let done = dlq::requeue_all(&opened, "the test's operator")
        .await
        .unwrap();
    opened.close().await;
    assert_eq!(done.requeued, 0);
    assert_eq!(done.kept_back.len(), 1, "{done:?}");
    assert_eq!(done.kept_back[0].why.publisher(), Some(stranger.as_str()));
    assert_eq!(users::depth(&sb, &queues.dead_letter).await, 1, "kept back");
    assert_eq!(
        users::depth(&sb, &queues.main).await,
        0,
        "nothing sent back"
    );
    let opened = dlq::open(&sb.amqp_url, &queues.dead_letter, "test", &[])
        .await
        .unwrap();
    let gone = dlq::discard(&opened, Discard::Untrusted, "the test's operator").await;
    opened.close().await;
    let gone = gone.unwrap();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert_eq!(users::depth(&sb, &queues.dead_letter).await, 0);
    assert_eq!(applied().await, 0);
    for (event, extra) in [
        ("untrusted_dead_letters_kept_back", stranger.as_str()),
        ("dead_letters_discarded", stranger.as_str()),
    ] {
        let lines = logs.lines_with(&[event, "security", "the test's operator", extra]);
        assert_eq!(lines.len(), 1, "one {event} line: {lines:?}");
        assert!(lines[0].contains(&queues.dead_letter), "{}", lines[0]);
    }
}

/// A consumer trusts its own broker user, so that user is never guessed: a URL that names none
/// (which would log in as `guest`) is a configuration error before anything starts.
#[tokio::test]
async fn a_consumer_whose_url_names_no_broker_user_does_not_start() {
    let sb = Sandbox::for_test().await;
    let mut config = users::config(&sb);
    config.amqp_url = "amqp://127.0.0.1:5672/%2f".to_owned();
    let Err(e) = user_service::Application::build(config).await else {
        panic!("a consumer started without a broker user");
    };
    assert!(
        e.chain().any(|c| c.is::<platform::amqp::NoBrokerUser>()),
        "{e:#}"
    );
    assert!(format!("{e:#}").contains("names no broker user"), "{e:#}");
}
