//! The sync admin API on its own, called directly (not through the gateway) against the real
//! PostgreSQL and RabbitMQ: the figures it reports are the ones the test arranged (an outbox
//! backlog while no relay runs, a dead letter the user-service's consumer set aside, a queue
//! that does not exist); only an admin who is still an active admin in `auth_db` gets them, and
//! everyone else gets a JSON error naming the problem while nothing moves; dead letters are
//! listed in place and requeued to their consumer, except an untrusted publisher's, which are
//! kept back by every requeue and only discarded (logged); verify runs in the background from nothing
//! compared to every user, and finds a copy changed behind the system's back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::sync_status::{
    ConsumerFigures, DeadLetters, Discarded, ErasurePurge, Requeued, SyncStatus, VerifyRun,
    VerifyState,
};
use contract::topology::{APPOINTMENT_SERVICE, USER_SERVICE};
use contract::Role;
use sandbox::http::{self, assert_json_error, Method};
use sandbox::{appointments, auth, poll_until, users, Sandbox, System, SETTLE, TEST_PASSWORD};
use std::cell::RefCell;
use uuid::Uuid;

/// `path` on the sync admin API itself.
fn url(sys: &System, path: &str) -> String {
    format!("{}{path}", sys.sync_admin().url())
}

/// `GET /api/v1/admin/sync` as `token`, which must answer 200 with a [`SyncStatus`].
async fn status(sys: &System, token: &str) -> SyncStatus {
    let (code, body) = http::get(&url(sys, "/api/v1/admin/sync"), Some(token)).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The figures of `consumer` in `status`.
fn figures<'s>(status: &'s SyncStatus, consumer: &str) -> &'s ConsumerFigures {
    status
        .consumers
        .as_ref()
        .unwrap_or_else(|| panic!("no queue figures: {:?}", status.unavailable))
        .iter()
        .find(|c| c.consumer == consumer)
        .unwrap_or_else(|| panic!("no figures of {consumer} in {status:?}"))
}

/// The user-service's dead-letter queue, as its path segment.
fn user_dlq() -> String {
    users::queues().dead_letter
}

/// The sync admin API with `bodies` waiting in the user-service's dead-letter queue, and no
/// relay and no consumer: nothing reaches the main queue but a requeue, and nothing takes a
/// requeued message from it.
async fn with_dead_letters(sb: &Sandbox, bodies: &[Vec<u8>]) -> System {
    let sys = System::builder(sb)
        .auth_with(|c| c.run_relay = false)
        .sync_admin()
        .start()
        .await;
    platform::amqp::ensure_topology(&sb.amqp_url, &[users::queues()])
        .await
        .unwrap();
    // Registered, as the setup registers it, though it does not run here.
    auth_service::consumers::register(
        &sys.auth_db,
        contract::topology::USER_SERVICE,
        true,
        &platform::amqp::broker_user(&sb.amqp_url),
    )
    .await
    .unwrap();
    sandbox::amqp::publish_to_queue(&sb.amqp_url, &user_dlq(), bodies)
        .await
        .unwrap();
    sys
}

/// Every route of the API, as (method, path), with the user-service's dead-letter queue.
fn routes() -> Vec<(Method, String)> {
    let dlq = user_dlq();
    vec![
        (Method::GET, "/api/v1/admin/sync".to_owned()),
        (Method::POST, "/api/v1/admin/sync/verify".to_owned()),
        (
            Method::GET,
            format!("/api/v1/admin/sync/dead-letters/{dlq}"),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/sync/dead-letters/{dlq}/requeue"),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/sync/dead-letters/{dlq}/discard"),
        ),
        (
            Method::POST,
            format!("/api/v1/admin/sync/erasures/{}/purge", Uuid::nil()),
        ),
    ]
}

/// A new user with `role` written through the store and logged in at the auth-service.
async fn token_of(sys: &System, role: Role) -> (Uuid, String) {
    let email = format!("{}-{}@clinic.test", role.as_str(), Uuid::new_v4().simple());
    let id = auth::create_user(&sys.auth_db, &email, role).await;
    (
        id,
        auth::login(&sys.auth.url(), &email, TEST_PASSWORD).await,
    )
}

/// Four events written while no relay runs are the backlog, with the oldest one's time; a body
/// the user-service's consumer cannot read is its one dead letter, its queue is empty with the
/// consumer attached; the appointment-service's queues, never declared, are named as
/// unreadable while the rest is answered. Once a relay runs, the backlog is gone.
#[tokio::test]
async fn an_admin_reads_the_backlog_queues_and_dead_letters_as_the_test_arranged_them() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .auth_with(|c| c.run_relay = false)
        .users()
        .sync_admin()
        .start()
        .await;
    // Registered, as the setup registers it, though it does not run here.
    auth_service::consumers::register(
        &sys.auth_db,
        APPOINTMENT_SERVICE,
        true,
        &platform::amqp::broker_user(&sb.amqp_url),
    )
    .await
    .unwrap();
    let token = sys.admin_token().await;
    for role in [Role::Doctor, Role::Nurse, Role::Pharmacist] {
        auth::create_user(
            &sys.auth_db,
            &format!("{}@clinic.test", role.as_str()),
            role,
        )
        .await;
    }
    // The admin and three staff: four events, none published.
    assert_eq!(auth::unpublished(&sys.auth_db).await, 4);
    let oldest: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT min(created_at) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&sys.auth_db)
            .await
            .unwrap();
    users::publish(&sb, &[b"{ this is not json".to_vec()]).await;

    let arranged = poll_until(SETTLE, "the dead letter in the figures", || async {
        let status = status(&sys, &token).await;
        let user_service = figures(&status, USER_SERVICE);
        (user_service.dead_letter.messages == Some(1) && user_service.queue.consumers == Some(1))
            .then_some(status)
    })
    .await;
    assert!(
        arranged.unavailable.is_empty(),
        "{:?}",
        arranged.unavailable
    );
    let outbox = arranged.outbox.as_ref().expect("the outbox figures");
    assert_eq!(outbox.unpublished, 4);
    let reported = outbox
        .oldest_unpublished_at
        .expect("the oldest event's time")
        .as_datetime();
    assert!(
        (reported - oldest).num_milliseconds().abs() <= 1,
        "oldest unpublished at {reported}, auth_db says {oldest}"
    );
    let age = outbox.oldest_unpublished_age_seconds.expect("its age");
    assert!(age >= 0.0, "{age}");
    assert!(
        arranged.at.as_datetime() >= reported,
        "read before the event was written?"
    );

    let user_service = figures(&arranged, USER_SERVICE);
    assert_eq!(user_service.queue.name, users::queues().main);
    assert_eq!(user_service.queue.messages, Some(0));
    assert_eq!(user_service.queue.problem, None);
    assert_eq!(user_service.retrying, 0);
    assert_eq!(user_service.dead_letter.name, user_dlq());
    assert_eq!(user_service.dead_letter.consumers, Some(0));

    // Nothing declared the appointment-service's queues: named, not zero.
    let appointment = figures(&arranged, APPOINTMENT_SERVICE);
    assert_eq!(appointment.queue.name, appointments::queues().main);
    assert_eq!(appointment.queue.messages, None);
    let problem = appointment.queue.problem.as_deref().expect("a problem");
    assert!(problem.contains("NOT_FOUND"), "{problem}");
    assert_eq!(appointment.dead_letter.messages, None);
    assert!(arranged.verify.is_none(), "no verify has run");

    // A relay: the backlog goes, the events reach the user-service.
    let _relay = auth::start(auth::config(&sb)).await;
    let after = poll_until(SETTLE, "an empty backlog", || async {
        let status = status(&sys, &token).await;
        (status.outbox.as_ref()?.unpublished == 0).then_some(status)
    })
    .await;
    let outbox = after.outbox.unwrap();
    assert_eq!(outbox.oldest_unpublished_at, None);
    assert_eq!(outbox.oldest_unpublished_age_seconds, None);
    sys.eventually_in_sync().await;
    assert_eq!(
        figures(&status(&sys, &token).await, USER_SERVICE)
            .dead_letter
            .messages,
        Some(1),
        "the dead letter stays"
    );
}

/// Every route answers a missing or unverifiable token 401 and a nurse's token 403, each as a
/// JSON error saying what is wrong; and what they asked for did not happen: no verify started,
/// the dead letter still where it was.
#[tokio::test]
async fn without_a_token_401_and_as_a_non_admin_403_as_json_errors_and_nothing_moves() {
    let sb = Sandbox::for_test().await;
    let sys = with_dead_letters(&sb, &[b"set aside".to_vec()]).await;
    let (_, nurse) = token_of(&sys, Role::Nurse).await;

    for (method, path) in routes() {
        let target = url(&sys, &path);
        let (code, body) = http::send(method.clone(), &target, None, None).await;
        assert_json_error(code, &body, 401);
        assert_eq!(body["error"], "unauthorized", "{method} {path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("bearer token"),
            "{method} {path}: {body}"
        );

        let (code, body) = http::send(method.clone(), &target, Some("not.a.token"), None).await;
        assert_json_error(code, &body, 401);
        assert!(
            body["message"].as_str().unwrap().contains("token"),
            "{method} {path}: {body}"
        );

        let (code, body) = http::send(method.clone(), &target, Some(&nurse), None).await;
        assert_json_error(code, &body, 403);
        assert_eq!(body["error"], "forbidden", "{method} {path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("admin"),
            "{method} {path}: {body}"
        );
    }

    assert_eq!(
        users::depth(&sb, &user_dlq()).await,
        1,
        "the dead letter moved"
    );
    assert_eq!(users::depth(&sb, &users::queues().main).await, 0);
    let token = sys.admin_token().await;
    assert!(
        status(&sys, &token).await.verify.is_none(),
        "a refused caller started a verify"
    );
}

/// An admin's token outlives a deactivation or a demotion by its lifetime: the API asks
/// `auth_db` on every request. The same token that read the figures is refused once the
/// account is inactive (401) or no longer an admin (403) there, and a token of a user
/// `auth_db` does not hold is refused as deactivated.
#[tokio::test]
async fn an_admin_deactivated_or_demoted_in_auth_db_is_refused_while_the_token_still_says_admin() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).sync_admin().start().await;
    let (deactivated, deactivated_token) = token_of(&sys, Role::Admin).await;
    let (demoted, demoted_token) = token_of(&sys, Role::Admin).await;
    for token in [&deactivated_token, &demoted_token] {
        status(&sys, token).await;
    }

    let set = |sql: &'static str, id: Uuid| {
        let pool = sys.auth_db.clone();
        async move {
            let done = sqlx::query(sql).bind(id).execute(&pool).await.unwrap();
            assert_eq!(done.rows_affected(), 1);
        }
    };
    set(
        "UPDATE users SET is_active = false WHERE id = $1",
        deactivated,
    )
    .await;
    set("UPDATE users SET role = 'nurse' WHERE id = $1", demoted).await;
    let stranger = users::token_for(&sb, Uuid::new_v4(), Role::Admin);

    for (method, path) in routes() {
        let target = url(&sys, &path);
        for token in [&deactivated_token, &stranger] {
            let (code, body) = http::send(method.clone(), &target, Some(token), None).await;
            assert_json_error(code, &body, 401);
            assert_eq!(
                body["message"], "this account is deactivated",
                "{method} {path}"
            );
        }
        let (code, body) = http::send(method.clone(), &target, Some(&demoted_token), None).await;
        assert_json_error(code, &body, 403);
        assert!(
            body["message"].as_str().unwrap().contains("admin"),
            "{method} {path}: {body}"
        );
    }
    let token = sys.admin_token().await;
    assert!(status(&sys, &token).await.verify.is_none());
}

/// Two bodies the user-service can never apply are listed with their reasons, in order, and
/// still there after being listed; the limit is checked and an unknown queue named; a requeue
/// sends both back to the consumer, which sets them aside again (its counter says so) with the
/// time they first failed kept.
#[tokio::test]
async fn dead_letters_are_listed_with_their_reasons_and_requeued_back_to_their_consumer() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().sync_admin().start().await;
    let token = sys.admin_token().await;
    users::publish(
        &sb,
        &[b"{ this is not json".to_vec(), vec![0xff, 0xfe, 0x00]],
    )
    .await;
    let dlq = user_dlq();
    let list_url = url(&sys, &format!("/api/v1/admin/sync/dead-letters/{dlq}"));
    let list = |query: &'static str| {
        let (list_url, token) = (list_url.clone(), token.clone());
        async move { http::get(&format!("{list_url}{query}"), Some(&token)).await }
    };
    let listed: DeadLetters = poll_until(SETTLE, "two dead letters", || async {
        let (code, body) = list("").await;
        assert_eq!(code, 200, "{body}");
        let listed: DeadLetters = serde_json::from_value(body).unwrap();
        (listed.messages == 2).then_some(listed)
    })
    .await;
    assert_eq!(listed.queue, dlq);
    let reasons: Vec<&str> = listed.first.iter().map(|m| m.reason.as_str()).collect();
    assert_eq!(reasons, ["not-json", "not-utf8"]);
    assert_eq!(
        listed.first.iter().map(|m| m.position).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        listed.first.iter().map(|m| m.bytes).collect::<Vec<_>>(),
        [18, 3]
    );
    for m in &listed.first {
        assert_eq!(m.routing_key, users::queues().main, "{m:?}");
        assert_ne!(m.detail, "-", "{m:?}");
        assert_ne!(m.first_failure, "-", "{m:?}");
    }

    // Listing takes nothing away.
    let (_, again) = list("").await;
    assert_eq!(
        serde_json::from_value::<DeadLetters>(again).unwrap(),
        listed
    );

    for query in ["?limit=0", "?limit=101", "?limit=ten", "?lmit=5"] {
        let (code, body) = list(query).await;
        assert_json_error(code, &body, 400);
    }
    let (code, body) = list("?limit=0").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("between 1 and 100"),
        "{code} {body}"
    );
    for queue in [users::queues().main.as_str(), "nothing.dlq"] {
        for (method, path) in [
            (
                Method::GET,
                format!("/api/v1/admin/sync/dead-letters/{queue}"),
            ),
            (
                Method::POST,
                format!("/api/v1/admin/sync/dead-letters/{queue}/requeue"),
            ),
            (
                Method::POST,
                format!("/api/v1/admin/sync/dead-letters/{queue}/discard"),
            ),
        ] {
            let (code, body) = http::send(method, &url(&sys, &path), Some(&token), None).await;
            assert_json_error(code, &body, 404);
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains(queue) && message.contains(&dlq),
                "names the queue asked for and those there are: {message}"
            );
        }
    }
    assert_eq!(users::sync_counters(sys.users()).await["deadLettered"], 2);

    let (code, body) = http::send(
        Method::POST,
        &url(
            &sys,
            &format!("/api/v1/admin/sync/dead-letters/{dlq}/requeue"),
        ),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let requeued: Requeued = serde_json::from_value(body).unwrap();
    assert_eq!(
        requeued,
        Requeued {
            queue: dlq.clone(),
            requeued: 2,
            of: 2,
            kept_back: 0,
        }
    );
    // Back with the consumer, which sets both aside again: still unreadable.
    poll_until(SETTLE, "both dead-lettered a second time", || async {
        (users::sync_counters(sys.users()).await["deadLettered"] == 4).then_some(())
    })
    .await;
    let relisted: DeadLetters = poll_until(SETTLE, "two dead letters again", || async {
        let (_, body) = list("").await;
        let listed: DeadLetters = serde_json::from_value(body).ok()?;
        (listed.messages == 2).then_some(listed)
    })
    .await;
    for (before, after) in listed.first.iter().zip(&relisted.first) {
        assert_eq!(after.reason, before.reason);
        assert_eq!(
            after.first_failure, before.first_failure,
            "first failure kept"
        );
    }
}

/// The dead letters of the user-service as the API lists them, once it holds `n`.
async fn listed_once(sys: &System, token: &str, n: u32) -> DeadLetters {
    let list_url = url(
        sys,
        &format!("/api/v1/admin/sync/dead-letters/{}", user_dlq()),
    );
    poll_until(SETTLE, &format!("{n} dead letters"), || async {
        let (code, body) = http::get(&list_url, Some(token)).await;
        assert_eq!(code, 200, "{body}");
        let listed: DeadLetters = serde_json::from_value(body).unwrap();
        (listed.messages == n).then_some(listed)
    })
    .await
}

/// A `user.created` of an admin forged by a broker user that may publish but is no trusted
/// publisher is dead-lettered as `untrusted-publisher`, beside a trusted event `user_db`
/// refused. Once the refusal is mended, the requeue `portal dlq requeue --all` runs sends the
/// trusted one back, where it is applied, and keeps the forged one back, saying why; the API's
/// requeue keeps it back too. It is still in the queue, its user never in the copy, until an
/// admin discards it through the API, which the security log records with the admin's id.
#[tokio::test]
async fn an_untrusted_publishers_dead_letter_is_kept_back_by_every_requeue_and_only_discarded() {
    let (logs, _capturing) = sandbox::logs::Captured::start();
    let sb = Sandbox::for_test().await;
    // No retries: what user_db refuses is dead-lettered at once.
    let sys = System::builder(&sb)
        .users_with(|c| c.consumer.retry_delays = Vec::new())
        .sync_admin()
        .start()
        .await;
    let (admin, token) = token_of(&sys, Role::Admin).await;
    let user_db = sys.user_db().clone();
    let (dlq, main) = (user_dlq(), users::queues().main);
    let (stranger, stranger_url) = sb.extra_broker_user("stranger").await.unwrap();
    let forged = Uuid::new_v4();
    let mut event =
        sandbox::events::user_event(forged, Some(1), "forged@clinic.test", "admin", true);
    event["eventType"] = serde_json::json!("user.created");
    sandbox::amqp::publish_one(
        &stranger_url,
        &main,
        &sandbox::events::body(&event),
        platform::amqp::persistent(&stranger),
    )
    .await
    .unwrap();
    sqlx::query("ALTER TABLE users ADD CONSTRAINT no_poison CHECK (last_name <> 'Poison')")
        .execute(&user_db)
        .await
        .unwrap();
    let mended = Uuid::new_v4();
    let mut refused =
        sandbox::events::user_event(mended, Some(1), "mended@clinic.test", "doctor", true);
    refused["payload"]["lastName"] = serde_json::json!("Poison");
    users::publish_events(&sb, &[refused]).await;

    let listed = listed_once(&sys, &token, 2).await;
    assert_eq!(listed.untrusted, 1, "{listed:?}");
    let by_reason = |reason: &str| {
        listed
            .first
            .iter()
            .find(|m| m.reason == reason)
            .unwrap_or_else(|| panic!("no {reason} in {listed:?}"))
            .clone()
    };
    // Alone in the queue once the other has gone back: first.
    let untrusted = contract::sync_status::DeadLetter {
        position: 1,
        ..by_reason("untrusted-publisher")
    };
    let why = untrusted.cannot_requeue.as_deref().unwrap_or_default();
    assert!(
        why.contains("untrusted publisher")
            && why.contains(&stranger)
            && why.contains("can only be discarded"),
        "{why}"
    );
    assert_eq!(by_reason("retries-exhausted").cannot_requeue, None);
    let in_copy = |id: Uuid| {
        let user_db = user_db.clone();
        async move {
            sandbox::db::count(
                &user_db,
                &format!("SELECT count(*) FROM users WHERE id = '{id}'"),
            )
            .await
        }
    };

    // The cause of the refusal mended, `portal dlq requeue --all`'s function, as the operator.
    sqlx::query("ALTER TABLE users DROP CONSTRAINT no_poison")
        .execute(&user_db)
        .await
        .unwrap();
    let opened = ops::dlq::open(&sb.amqp_url, &dlq, "test requeue", &[])
        .await
        .unwrap();
    let done = ops::dlq::requeue_all(&opened, "the test's operator").await;
    opened.close().await;
    let done = done.unwrap();
    assert_eq!(done.requeued, 1, "{done:?}");
    assert_eq!(done.kept_back.len(), 1, "{done:?}");
    assert_eq!(done.kept_back[0].why.publisher(), Some(stranger.as_str()));
    // Applied: the consumer has taken everything that went back.
    sandbox::wait_for_user_version(&user_db, mended, 1, SETTLE).await;
    assert_eq!(
        in_copy(forged).await,
        0,
        "the forged user is not in the copy"
    );
    let left = listed_once(&sys, &token, 1).await;
    assert_eq!(left.untrusted, 1);
    assert_eq!(
        left.first,
        std::slice::from_ref(&untrusted),
        "the same letter, in place"
    );

    // The API's requeue keeps it back as well, and says so.
    let dead_letters = |action: &str| {
        url(
            &sys,
            &format!("/api/v1/admin/sync/dead-letters/{dlq}/{action}"),
        )
    };
    let (code, body) = http::send(Method::POST, &dead_letters("requeue"), Some(&token), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_value::<Requeued>(body).unwrap(),
        Requeued {
            queue: dlq.clone(),
            requeued: 0,
            of: 1,
            kept_back: 1,
        }
    );
    assert_eq!(users::depth(&sb, &main).await, 0, "nothing went back");
    assert_eq!(listed_once(&sys, &token, 1).await.first, [untrusted]);
    assert_eq!(in_copy(forged).await, 0);
    assert_eq!(
        users::sync_counters(sys.users()).await["deadLettered"],
        2,
        "the consumer never saw it again"
    );

    // Discarded through the API: gone, and logged with who did it.
    let (code, body) = http::send(Method::POST, &dead_letters("discard"), Some(&token), None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_value::<Discarded>(body).unwrap(),
        Discarded {
            queue: dlq.clone(),
            discarded: 1,
            of: 1,
        }
    );
    assert_eq!(users::depth(&sb, &dlq).await, 0);
    assert_eq!(in_copy(forged).await, 0);
    let discarded = logs.lines_with(&["dead_letters_discarded", &admin.to_string(), &dlq]);
    assert_eq!(discarded.len(), 1, "{discarded:?}");
    assert!(discarded[0].contains(&stranger), "{}", discarded[0]);
    let kept = logs.lines_with(&["untrusted_dead_letters_kept_back", &stranger]);
    assert_eq!(kept.len(), 2, "the operator's and the API's: {kept:?}");
}

/// Looking is harmless (the API: "the first messages, left in place"): listing the first one or
/// two of three dead letters, as the web page lists the first five of however many wait,
/// leaves all three where they were, in their order.
#[tokio::test]
async fn listing_the_first_dead_letters_leaves_the_queue_in_its_order() {
    let sb = Sandbox::for_test().await;
    // Told apart by their sizes: 1, 2 and 3 bytes.
    let sys = with_dead_letters(&sb, &[b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()]).await;
    let token = sys.admin_token().await;
    let dlq = user_dlq();
    let list_url = url(&sys, &format!("/api/v1/admin/sync/dead-letters/{dlq}"));
    let sizes = |limit: usize| {
        let (list_url, token) = (list_url.clone(), token.clone());
        async move {
            let (code, body) = http::get(&format!("{list_url}?limit={limit}"), Some(&token)).await;
            assert_eq!(code, 200, "{body}");
            let listed: DeadLetters = serde_json::from_value(body).unwrap();
            assert_eq!(listed.messages, 3, "{listed:?}");
            listed.first.iter().map(|m| m.bytes).collect::<Vec<_>>()
        }
    };
    assert_eq!(sizes(10).await, [1, 2, 3]);
    assert_eq!(
        sizes(10).await,
        [1, 2, 3],
        "listing every one keeps the order"
    );
    assert_eq!(sizes(1).await, [1]);
    assert_eq!(sizes(10).await, [1, 2, 3], "after listing the first one");
    assert_eq!(sizes(2).await, [1, 2]);
    assert_eq!(sizes(10).await, [1, 2, 3], "after listing the first two");
}

/// `POST /verify` answers 202 with the run started (nothing compared yet); the status follows
/// it, each copy's count only growing, to the end: both copies compared for every user of
/// `auth_db` and in sync. A row of `user_db` changed behind the system's back is then found by
/// the next run, which names the user, while the appointment-service's copy stays in sync.
#[tokio::test]
async fn verify_through_the_api_runs_from_nothing_compared_to_every_user_and_finds_a_change() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .users()
        .sync_admin()
        .account("rudo.moyo@clinic.test", Role::Doctor)
        .account("farai.ncube@clinic.test", Role::Nurse)
        .account("tendai.dube@clinic.test", Role::Pharmacist)
        .backfilled()
        .start()
        .await;
    let token = sys.admin_token().await;
    let users_in_auth = sandbox::db::count(&sys.auth_db, "SELECT count(*) FROM users").await;
    assert_eq!(users_in_auth, 4);
    sys.eventually_in_sync().await;
    poll_until(SETTLE, "appointment_db to equal auth_db", || async {
        ops::verify::compare(
            &sys.auth_db,
            &ops::verify::APPOINTMENT_SERVICE,
            sys.appointment_db(),
            ops::verify::Options::listing(1),
        )
        .await
        .ok()?
        .is_in_sync()
        .then_some(())
    })
    .await;

    let run = verify(&sys, &token, users_in_auth).await;
    for copy in &run.copies {
        assert_eq!(copy.in_sync, Some(true), "{copy:?}");
        assert_eq!(copy.checked, 4, "{copy:?}");
        assert_eq!(copy.summary.as_deref(), Some("in sync: 4 users"));
        assert!(
            copy.differences.is_empty() && copy.error.is_none(),
            "{copy:?}"
        );
    }

    let changed = sys.accounts[0];
    sqlx::query("UPDATE users SET first_name = 'Changed' WHERE id = $1")
        .bind(changed)
        .execute(sys.user_db())
        .await
        .unwrap();
    let second = verify(&sys, &token, users_in_auth).await;
    assert!(second.started_at >= run.finished_at.unwrap(), "a new run");
    let (user_copy, appointment_copy) = (&second.copies[0], &second.copies[1]);
    assert_eq!(user_copy.in_sync, Some(false), "{user_copy:?}");
    assert_eq!(user_copy.differences.len(), 1, "{user_copy:?}");
    assert!(
        user_copy.differences[0].contains("rudo.moyo@clinic.test"),
        "{user_copy:?}"
    );
    assert!(
        user_copy.differences[0].starts_with(&format!("mismatch {changed} ")),
        "{user_copy:?}"
    );
    assert_eq!(
        user_copy.summary.as_deref(),
        Some(
            "out of sync: 1 differences among 4 users (missing 0, stale 0, mismatched 1, extra 0)"
        )
    );
    assert_eq!(appointment_copy.in_sync, Some(true), "{appointment_copy:?}");
}

/// Starts a verify through the API and follows it to its end: the 202's run has compared
/// nothing; every reading after it shows counts that only grow and never pass `users`; the
/// end is `finished` with both copies done.
async fn verify(sys: &System, token: &str, users: i64) -> VerifyRun {
    let (code, body) = http::send(
        Method::POST,
        &url(sys, "/api/v1/admin/sync/verify"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let started: VerifyRun = serde_json::from_value(body).unwrap();
    assert_eq!(started.state, VerifyState::Running);
    assert_eq!(started.finished_at, None);
    let services: Vec<&str> = started.copies.iter().map(|c| c.service.as_str()).collect();
    assert_eq!(services, [USER_SERVICE, APPOINTMENT_SERVICE]);
    for copy in &started.copies {
        assert_eq!(copy.checked, 0, "{copy:?}");
        assert_eq!(copy.in_sync, None, "{copy:?}");
    }
    let seen = RefCell::new(vec![0; started.copies.len()]);
    let done = poll_until(SETTLE, "the verify run to end", || async {
        let run = status(sys, token).await.verify.expect("the run");
        assert_eq!(run.started_at, started.started_at, "the same run");
        for (copy, before) in run.copies.iter().zip(seen.borrow_mut().iter_mut()) {
            assert!(copy.checked >= *before, "went back: {run:?}");
            assert!(copy.checked <= users as u64, "past the users: {run:?}");
            *before = copy.checked;
        }
        (run.state != VerifyState::Running).then_some(run)
    })
    .await;
    assert_eq!(done.state, VerifyState::Finished, "{done:?}");
    assert_eq!(done.users, Some(users));
    assert!(done.finished_at.unwrap() >= done.started_at);
    assert_eq!(done.percent(), 100.0);
    for copy in &done.copies {
        assert_eq!(copy.checked, users as u64, "{copy:?}");
        assert!(copy.in_sync.is_some() && copy.error.is_none(), "{copy:?}");
    }
    done
}

/// `RECONCILE_INTERVAL` runs in the sync admin API (the part under the operator's identity): a
/// row of `user_db` changed behind the system's back is put right by the schedule alone, with
/// nobody running `portal reconcile`; the appointment-service's copy, whose database does not
/// exist here, does not stop it.
#[tokio::test]
async fn the_scheduled_reconcile_repairs_a_copy_changed_behind_the_systems_back() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().start().await;
    let id = auth::create_user(&sys.auth_db, "drifted@clinic.test", Role::Nurse).await;
    sys.eventually_in_sync().await;
    sqlx::query("UPDATE users SET first_name = 'Altered' WHERE id = $1")
        .bind(id)
        .execute(sys.user_db())
        .await
        .unwrap();
    let drift = sandbox::users::compare(&sys.auth_db, sys.user_db())
        .await
        .unwrap();
    assert_eq!(drift.mismatched, 1, "{}", drift.summary());

    let mut config = sync_admin::Config::local(
        &sb.database_url("auth"),
        &sb.database_url("user"),
        &sb.database_url("appointment"),
        &sb.amqp_url,
        &sb.key_dir,
    );
    config.reconcile_interval = Some(std::time::Duration::from_secs(1));
    let _scheduled = sandbox::Running::launch(sync_admin::Application::build(config)).await;
    sys.eventually_in_sync().await;
    let first_name: String = sqlx::query_scalar("SELECT first_name FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(sys.user_db())
        .await
        .unwrap();
    assert_eq!(first_name, "Test", "the copy holds auth_db's name again");
}

/// A body of a user event about `user` (what the purge reads: `payload.userId`, `erasedAt`).
fn event_about(user: Uuid, erased: bool) -> Vec<u8> {
    let mut payload = serde_json::json!({"userId": user, "email": "zebulon.quix@example.org",
        "firstName": "Zebulon", "lastName": "Quixwort"});
    if erased {
        payload = serde_json::json!({"userId": user, "email": "erased@erased.invalid",
            "firstName": "Erased", "lastName": "User", "erasedAt": "2026-01-01T00:00:00.000Z"});
    }
    serde_json::to_vec(&serde_json::json!({"eventId": Uuid::new_v4(), "payload": payload})).unwrap()
}

/// An admin purges an erased person's messages from the dead-letter queue through the API (the
/// web portal's erase button does right after the erasure): their message goes, someone else's
/// and their tombstone stay, and the time is recorded. A person not erased is 404, an id that is
/// no UUID 422, and nothing moves.
#[tokio::test]
async fn an_admin_purges_an_erased_persons_dead_letters_and_nothing_else() {
    let sb = Sandbox::for_test().await;
    let sys = with_dead_letters(&sb, &[event_about(Uuid::new_v4(), false)]).await;
    let email = format!("leaver-{}@clinic.test", Uuid::new_v4().simple());
    let person = auth::create_user(&sys.auth_db, &email, Role::Doctor).await;
    sandbox::amqp::publish_to_queue(
        &sb.amqp_url,
        &user_dlq(),
        &[event_about(person, false), event_about(person, true)],
    )
    .await
    .unwrap();
    let prints = platform::erasure::Fingerprints::new(
        "zebulon.quix@example.org",
        "Zebulon",
        "Quixwort",
        None,
    )
    .unwrap();
    sqlx::query(
        "INSERT INTO erasures (user_id, requested_by, reason, user_version, fingerprints) \
         VALUES ($1, $2, 'a test', 2, $3::jsonb)",
    )
    .bind(person)
    .bind(Uuid::new_v4())
    .bind(serde_json::to_string(&prints).unwrap())
    .execute(&sys.auth_db)
    .await
    .unwrap();
    let token = sys.admin_token().await;

    for (id, status) in [(Uuid::new_v4().to_string(), 404), ("nope".to_owned(), 422)] {
        let path = format!("/api/v1/admin/sync/erasures/{id}/purge");
        let (code, body) = http::send(Method::POST, &url(&sys, &path), Some(&token), None).await;
        assert_json_error(code, &body, status);
    }
    assert_eq!(users::depth(&sb, &user_dlq()).await, 3, "nothing moved");

    let path = format!("/api/v1/admin/sync/erasures/{person}/purge");
    let (code, body) = http::send(Method::POST, &url(&sys, &path), Some(&token), None).await;
    assert_eq!(code, 200, "{body}");
    let done: ErasurePurge = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(done.user_id, contract::UserId(person));
    assert_eq!(done.removed, 1, "{body}");
    assert!(done.failed.is_empty(), "{body}");
    assert!(done.queues_purged_at.is_some(), "{body}");
    let dlq = done.queues.iter().find(|q| q.queue == user_dlq()).unwrap();
    assert_eq!((dlq.removed, dlq.of), (1, 3), "{body}");
    poll_until(
        SETTLE,
        "the two other messages back in the queue",
        || async { (users::depth(&sb, &user_dlq()).await == 2).then_some(()) },
    )
    .await;
}
