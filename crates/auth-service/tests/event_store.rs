//! The event store (the outbox read as history): a reader paging from a cursor never skips an
//! event whose transaction took a lower sequence but committed later, and retention removes only
//! events that were published.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auth_service::event_store::{self, Cursor, EventFilter};
use auth_service::store::{self, NewUser};
use contract::Role;
use sandbox::auth;
use sandbox::{poll_until, Sandbox, SETTLE};
use uuid::Uuid;

#[tokio::test]
async fn reading_the_store_from_a_cursor_never_skips_an_event_that_commits_late() {
    let sb = Sandbox::for_test().await;
    let auth = auth::pool(&sb).await;
    // Transaction A writes first (lower sequence) but commits last.
    let mut late = auth.begin().await.unwrap();
    let a = uncommitted_user(&mut late, "late@clinic.test").await;
    let b = auth::create_user(&auth, "early@clinic.test", Role::Doctor).await;

    // A reader paging by sequence alone would now read B (seq 2), move its cursor past 2, and
    // never see A (seq 1) once A commits. This reader stops at the running transaction.
    let filter = EventFilter::default();
    let first = event_store::read_page(&auth, &filter, Cursor::START, 100)
        .await
        .unwrap();
    assert!(
        first.is_empty(),
        "nothing past the still-running transaction is read yet: {first:?}"
    );
    late.commit().await.unwrap();
    // The horizon is cluster-wide: transactions of tests running beside this one can hold it
    // back a moment longer.
    let second = poll_until(SETTLE, "both events readable", || async {
        let events = event_store::read_page(&auth, &filter, Cursor::START, 100)
            .await
            .ok()?;
        (events.len() == 2).then_some(events)
    })
    .await;
    let read: Vec<(i64, Uuid)> = second.iter().map(|e| (e.seq, e.user_id)).collect();
    assert_eq!(
        read.iter().map(|(_, u)| *u).collect::<Vec<_>>(),
        [a, b],
        "both read: {read:?}"
    );
    assert!(
        read[0].0 < read[1].0,
        "the late-committing event had the lower sequence"
    );
    let after = event_store::read_page(&auth, &filter, Cursor::after(&second[1]), 100)
        .await
        .unwrap();
    assert!(after.is_empty());
}

/// Writes a user and its event in an open transaction (not committed).
async fn uncommitted_user(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, email: &str) -> Uuid {
    let new = NewUser::staff(email, "Late", "Commit", Role::Nurse, "x".into()).unwrap();
    store::create_user(tx, new).await.unwrap().id
}

#[tokio::test]
async fn retention_prunes_only_published_events() {
    let sb = Sandbox::for_test().await;
    let auth = auth::pool(&sb).await;
    auth::create_user(&auth, "kept@clinic.test", Role::Doctor).await;
    auth::create_user(&auth, "published@clinic.test", Role::Doctor).await;
    sqlx::query("UPDATE outbox SET published_at = now() WHERE body::jsonb #>> '{payload,email}' = 'published@clinic.test'")
        .execute(&auth).await.unwrap();
    let removed = event_store::prune(&auth, chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(auth::unpublished(&auth).await, 1);
}
