//! The consumer's one rule: events published straight to its queue, in any order and any number
//! of times, leave `user_db` at the newest snapshot, by `userVersion`, or by timestamp for the
//! portal's original producer, which sends none. A late or repeated event changes nothing and
//! is counted as stale.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandbox::events::user_event;
use sandbox::http::get;
use sandbox::users;
use sandbox::{wait_for_user_version, Sandbox, SETTLE};
use serde_json::json;
use uuid::Uuid;

async fn row(pool: &sqlx::PgPool, id: Uuid) -> Option<(Option<i64>, String, String, bool)> {
    sqlx::query_as("SELECT user_version, email, role, is_active FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_duplicate_or_an_older_version_after_a_newer_one_changes_nothing() {
    let sb = Sandbox::for_test().await;
    let users = users::start(users::config(&sb)).await;
    let pool = users::pool(&sb).await;
    let user = Uuid::new_v4();
    let v2 = user_event(user, Some(2), "v2@clinic.test", "consultant", false);

    users::publish_events(&sb, std::slice::from_ref(&v2)).await;
    wait_for_user_version(&pool, user, 2, SETTLE).await;
    // Redelivered newest, then a late older snapshot, then a marker that proves both were read.
    users::publish_events(&sb, &[v2]).await;
    users::publish_events(
        &sb,
        &[user_event(user, Some(1), "v1@clinic.test", "doctor", true)],
    )
    .await;
    let marker = Uuid::new_v4();
    users::publish_events(
        &sb,
        &[user_event(
            marker,
            Some(1),
            "marker@clinic.test",
            "nurse",
            true,
        )],
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
    let sb = Sandbox::for_test().await;
    let pool = users::pool(&sb).await;
    let (consumer, _) = users::consumer(&sb, &pool);
    let user = Uuid::new_v4();
    let mut newer = user_event(user, None, "newer@clinic.test", "doctor", true);
    newer["timestamp"] = json!("2026-02-07T10:00:05.000Z");
    let mut older = user_event(user, None, "older@clinic.test", "nurse", true);
    older["timestamp"] = json!("2026-02-07T10:00:01.000Z");
    // The exact body of the portal's original producer: no userVersion, no updatedAt.
    newer["eventType"] = json!("user.created");
    // One batch each, so the older one meets the stored newer one in user_db.
    let marker = Uuid::new_v4();
    for event in [
        newer,
        older,
        user_event(marker, Some(1), "marker@clinic.test", "nurse", true),
    ] {
        users::publish_events(&sb, &[event]).await;
        assert_eq!(consumer.process_ready().await.unwrap(), 1);
    }
    wait_for_user_version(&pool, marker, 1, SETTLE).await;
    assert_eq!(
        row(&pool, user).await,
        Some((None, "newer@clinic.test".into(), "doctor".into(), true))
    );
}

/// `event` as the tombstone of an erased person (contract 1.1): placeholders, `erasedAt`.
fn erased(user: Uuid, version: i64) -> serde_json::Value {
    let mut e = user_event(
        user,
        Some(version),
        &format!("erased-{user}@erased.invalid"),
        "doctor",
        false,
    );
    e["eventType"] = json!("user.erased");
    e["version"] = json!("1.1");
    e["payload"]["firstName"] = json!("Erased");
    e["payload"]["lastName"] = json!("User");
    e["payload"]["erasedAt"] = json!("2026-12-01T10:00:00.000Z");
    e
}

#[tokio::test]
async fn an_erasure_is_final_whatever_arrives_before_or_after_it() {
    let sb = Sandbox::for_test().await;
    let service = users::start(users::config(&sb)).await;
    let pool = users::pool(&sb).await;
    let (known, unknown) = (Uuid::new_v4(), Uuid::new_v4());
    let mut v3 = user_event(known, Some(3), "real.person@clinic.test", "doctor", false);
    v3["payload"]["phoneNumber"] = json!("+263 77 123 4567");
    users::publish_events(&sb, &[v3]).await;
    wait_for_user_version(&pool, known, 3, SETTLE).await;

    // Erased at 4; then a late 2 and even a (forged or buggy) 9 with personal data.
    users::publish_events(&sb, &[erased(known, 4)]).await;
    wait_for_user_version(&pool, known, 4, SETTLE).await;
    // The tombstone of someone this copy never held arrives before their older events.
    users::publish_events(&sb, &[erased(unknown, 5)]).await;
    users::publish_events(
        &sb,
        &[
            user_event(known, Some(2), "real.person@clinic.test", "doctor", true),
            user_event(known, Some(9), "real.person@clinic.test", "doctor", true),
            user_event(unknown, Some(1), "other.person@clinic.test", "nurse", true),
        ],
    )
    .await;
    let marker = Uuid::new_v4();
    users::publish_events(
        &sb,
        &[user_event(
            marker,
            Some(1),
            "marker@clinic.test",
            "nurse",
            true,
        )],
    )
    .await;
    wait_for_user_version(&pool, marker, 1, SETTLE).await;

    for (user, version) in [(known, 4), (unknown, 5)] {
        let (email, first, phone, active, stored, erased): (
            String,
            String,
            Option<String>,
            bool,
            i64,
            bool,
        ) = sqlx::query_as(
            "SELECT email, first_name, phone_number, is_active, user_version, \
                 erased_at IS NOT NULL FROM users WHERE id = $1",
        )
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            (email, first.as_str(), phone, active, stored, erased),
            (
                format!("erased-{user}@erased.invalid"),
                "Erased",
                None,
                false,
                version,
                true
            )
        );
    }
    // And the directory does not show them.
    let (status, _) = get(
        &format!("{}/api/v1/users/{known}", service.url()),
        Some(&users::token(&sb, contract::Role::Nurse)),
    )
    .await;
    assert_eq!(status, 404);
}
