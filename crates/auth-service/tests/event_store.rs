//! The event store (`event_store`, written with each outbox row): a reader paging from a cursor
//! never skips an event whose transaction took a lower sequence but committed later, and the
//! history outlives the outbox's published rows.
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

/// The history is the event store's: the outbox's published rows are removed, and the audit
/// trail still lists every event, saying it was published (with its time while the outbox kept
/// the row) or that it waits.
#[tokio::test]
async fn the_audit_trail_outlives_the_outbox_rows_and_says_what_was_published() {
    let sb = Sandbox::for_test().await;
    let auth = auth::pool(&sb).await;
    let user = auth::create_user(&auth, "trail@clinic.test", Role::Doctor).await;
    let mut tx = auth.begin().await.unwrap();
    store::change_user(&mut tx, user, store::UserChange::Deactivate)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The first event published an hour ago, the second not yet.
    sqlx::query(
        "UPDATE outbox SET published_at = now() - interval '1 hour' \
         WHERE seq = (SELECT min(seq) FROM outbox WHERE user_id = $1)",
    )
    .bind(user)
    .execute(&auth)
    .await
    .unwrap();
    let seen = published_marks(&auth, user).await;
    assert_eq!(
        seen,
        [
            ("user.created".to_owned(), true, true),
            ("user.deactivated".to_owned(), false, false)
        ]
    );

    let cleaner = auth_service::relay::Cleaner::new(
        std::sync::Arc::new(auth_service::relay::user_events()),
        auth.clone(),
        auth_service::relay::CleanupConfig::default(),
    );
    let round = cleaner
        .round(&tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        round.removed, 1,
        "the published row past a minute: {round:?}"
    );
    assert_eq!(
        auth::unpublished(&auth).await,
        1,
        "the unpublished row stays"
    );
    let seen = published_marks(&auth, user).await;
    assert_eq!(
        seen,
        [
            ("user.created".to_owned(), true, false),
            ("user.deactivated".to_owned(), false, false)
        ],
        "both events are still in the history; the removed one was published"
    );
    let bytes: Vec<(String, String)> = sqlx::query_as(
        "SELECT e.body::text, o.body::text FROM event_store e JOIN outbox o USING (seq)",
    )
    .fetch_all(&auth)
    .await
    .unwrap();
    assert!(
        bytes.iter().all(|(stored, queued)| stored == queued),
        "the store holds the exact bytes the relay publishes"
    );
}

/// Each event of `user`'s audit trail: its type, whether it was published, whether the time of
/// publishing is still known.
async fn published_marks(auth: &sqlx::PgPool, user: uuid::Uuid) -> Vec<(String, bool, bool)> {
    event_store::user_history(auth, user, None, None)
        .await
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.event.event_type.clone(),
                e.published,
                e.published_at.is_some(),
            )
        })
        .collect()
}
