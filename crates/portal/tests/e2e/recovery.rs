//! The recovery toolbox, through the `portal` binary: drift injected four ways is found by
//! `verify` and repaired by `reconcile`; `replay` rebuilds an empty `user_db`; `consumer add`
//! backfills a late consumer; `events` and the API show each user's audit trail.

use crate::cli::portal_output;
use auth_service::store::{self, UserChange};
use contract::Role;
use sandbox::auth::all_published;
use sandbox::db::count;
use sandbox::http::get;
use sandbox::users::eventually_in_sync;
use sandbox::{auth, users, System};
use sandbox::{poll_until, Sandbox, SETTLE};
use sqlx::PgPool;
use uuid::Uuid;

async fn change_role(pool: &PgPool, id: Uuid, role: Role) {
    let mut tx = pool.begin().await.unwrap();
    store::change_user(&mut tx, id, UserChange::SetRole(role))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn verify_exit(sb: &Sandbox) -> (i32, String) {
    portal_output(sb, &["verify"]).await
}

async fn reconcile_and_resync(sb: &Sandbox, auth: &PgPool, users: &PgPool, expect: &str) {
    let (code, out) = portal_output(sb, &["reconcile", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(expect), "expected {expect:?} in: {out}");
    eventually_in_sync(auth, users).await;
    assert_eq!(verify_exit(sb).await.0, 0);
}

#[tokio::test]
async fn drift_injected_four_ways_is_found_by_verify_and_repaired_by_reconcile() {
    let sb = Sandbox::for_test().await;
    let mut sys = System::builder(&sb).users().appointments().start().await;
    let (auth, users) = (sys.auth_db.clone(), sys.user_db().clone());
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(auth::create_user(&auth, &format!("staff{i}@clinic.test"), Role::Doctor).await);
    }
    eventually_in_sync(&auth, &users).await;

    // 1. Rows deleted from user_db behind the system's back.
    sqlx::query("DELETE FROM users WHERE id = ANY($1)")
        .bind(&ids[..3])
        .execute(&users)
        .await
        .unwrap();
    let (code, out) = verify_exit(&sb).await;
    assert_eq!(code, 1, "{out}");
    // A dry run reports and changes nothing.
    let outbox_before = count(&auth, "SELECT count(*) FROM event_store").await;
    let (code, out) = portal_output(&sb, &["reconcile", "--dry-run"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dry run: checked 12, missing 3, stale 0, mismatched 0, extra 0, repaired 0"),
        "{out}"
    );
    assert_eq!(
        count(&auth, "SELECT count(*) FROM event_store").await,
        outbox_before
    );
    assert_eq!(count(&users, "SELECT count(*) FROM users").await, 9);
    // Without --yes and without a terminal, nothing is repaired either.
    let (code, out) = portal_output(&sb, &["reconcile"]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        count(&auth, "SELECT count(*) FROM event_store").await,
        outbox_before
    );
    reconcile_and_resync(
        &sb,
        &auth,
        &users,
        "missing 3, stale 0, mismatched 0, extra 0, repaired 3",
    )
    .await;

    // 2. A field altered in user_db (same version): only a repair at an equal version fixes it.
    sqlx::query("UPDATE users SET role = 'nurse', last_name = 'Tampered' WHERE id = $1")
        .bind(ids[4])
        .execute(&users)
        .await
        .unwrap();
    assert_eq!(verify_exit(&sb).await.0, 1);
    reconcile_and_resync(&sb, &auth, &users, "mismatched 1, extra 0, repaired 1").await;

    // 3. The consumer's queue purged while events were in it.
    sys.users.take().unwrap().stop().await.unwrap();
    for id in &ids[..4] {
        change_role(&auth, *id, Role::Consultant).await;
    }
    poll_until(SETTLE, "the events waiting in the queue", || async {
        (users::depth(&sb, "user-service.user-events").await >= 4).then_some(())
    })
    .await;
    let conn = platform::amqp::connect(&sb.amqp_url, "drift")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_purge("user-service.user-events", Default::default())
        .await
        .unwrap();
    let (code, out) = verify_exit(&sb).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stale"), "{out}");
    // While the consumer is down the repairs are written but not applied: reconcile says so and
    // fails rather than count them repaired.
    let (code, out) = portal_output(&sb, &["reconcile", "--yes", "--wait", "1s"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("stale 4, mismatched 0, extra 0, repaired 0, not yet applied 4"),
        "{out}"
    );
    assert!(
        out.contains("4 repairs written to the outbox were not applied within 1s"),
        "{out}"
    );
    assert_eq!(verify_exit(&sb).await.0, 1, "still reported");
    // They apply once it is back.
    sys.users = Some(users::start_ready(users::config(&sb)).await);
    eventually_in_sync(&auth, &users).await;
    assert_eq!(verify_exit(&sb).await.0, 0);

    // 4. The consumer's queue deleted and re-created: what was published meanwhile went to
    // user.events.unrouted, not to the consumer.
    sys.users.take().unwrap().stop().await.unwrap();
    ch.queue_delete("user-service.user-events", Default::default())
        .await
        .unwrap();
    for id in &ids[4..7] {
        change_role(&auth, *id, Role::Pharmacist).await;
    }
    all_published(&auth).await; // while the queue was gone
    let _users = users::start_ready(users::config(&sb)).await; // re-creates its queue
    assert_eq!(verify_exit(&sb).await.0, 1);
    reconcile_and_resync(&sb, &auth, &users, "stale 3").await;

    // Users only in user_db are reported, and removed only when asked.
    sqlx::query("INSERT INTO users (id, email, first_name, last_name, role, is_active, must_change_password, created_at, user_version, event_timestamp) \
                 VALUES ($1, 'ghost@clinic.test', 'G', 'Host', 'doctor', true, false, now(), 1, now())")
        .bind(Uuid::new_v4()).execute(&users).await.unwrap();
    let (code, out) = portal_output(&sb, &["reconcile", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("extra 1, repaired 0"), "{out}");
    assert_eq!(
        verify_exit(&sb).await.0,
        1,
        "the extra user is still reported"
    );
    let (code, out) = portal_output(&sb, &["reconcile", "--yes", "--delete-extra"]).await;
    assert!(code == 0 && out.contains("removed 1"), "{out}");
    assert_eq!(verify_exit(&sb).await.0, 0);
    conn.close(200, "done").await.ok();
}

#[tokio::test]
async fn a_fresh_empty_user_db_rebuilt_by_replay_equals_auth_db() {
    let sb = Sandbox::for_test().await;
    let mut sys = System::builder(&sb).users().start().await;
    let (auth, old_user_db) = (sys.auth_db.clone(), sys.user_db().clone());
    for i in 0..15 {
        let id = auth::create_user(&auth, &format!("replay{i}@clinic.test"), Role::Nurse).await;
        if i % 3 == 0 {
            change_role(&auth, id, Role::Doctor).await;
        }
    }
    eventually_in_sync(&auth, &old_user_db).await;
    old_user_db.close().await;

    sys.users.take().unwrap().stop().await.unwrap();
    sb.recreate_database("user").await.unwrap(); // dropped, and empty again
    let _users = users::start(users::config(&sb)).await; // migrates it
    let users = users::pool(&sb).await;
    assert_eq!(count(&users, "SELECT count(*) FROM users").await, 0);

    let (code, out) = portal_output(
        &sb,
        &["replay", "--to", "user-service.user-events", "--dry-run"],
    )
    .await;
    assert!(
        code == 0 && out.contains("dry run: 20 events would be sent"),
        "{out}"
    );
    let (code, out) = portal_output(&sb, &["replay", "--to", "user-service.user-events"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sent 20 events"), "{out}");
    eventually_in_sync(&auth, &users).await;
    // Twice is harmless.
    let (code, _) = portal_output(
        &sb,
        &[
            "replay",
            "--to",
            "user-service.user-events",
            "--type",
            "user.role.changed",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let (code, out) = portal_output(&sb, &["replay", "--to", "no-such.user-events"]).await;
    assert!(code == 1 && out.contains("no queue"), "{out}");
    eventually_in_sync(&auth, &users).await;
}

/// The AMQP `type` of the last message ready in `queue` (all are read and put back).
async fn last_message_type(sb: &Sandbox, queue: &str) -> Option<String> {
    let conn = platform::amqp::connect(&sb.amqp_url, "test reader")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut last = None;
    while let Some(m) = ch.basic_get(queue, Default::default()).await.unwrap() {
        last = Some(m.delivery.properties.kind().as_ref().map(|k| k.to_string()));
    }
    conn.close(200, "done").await.ok();
    last.flatten()
}

#[tokio::test]
async fn a_consumer_added_late_receives_the_whole_history_then_live_events() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).start().await;
    let auth = sys.auth_db.clone();
    for i in 0..5 {
        let id = auth::create_user(&auth, &format!("hist{i}@clinic.test"), Role::Doctor).await;
        change_role(&auth, id, Role::Nurse).await;
    }
    all_published(&auth).await; // the history
    let (code, out) = portal_output(&sb, &["consumer", "add", "audit"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("backfilled: sent 10 events"), "{out}");
    assert!(out.contains("then the end-of-history mark"), "{out}");
    // The 10 stored events, then the end-of-history mark.
    assert_eq!(users::depth(&sb, "audit.user-events").await, 11);
    let mark = last_message_type(&sb, "audit.user-events").await;
    assert_eq!(mark.as_deref(), Some(contract::wire::HISTORY_COMPLETE_TYPE));
    auth::create_user(&auth, "live@clinic.test", Role::Doctor).await;
    poll_until(SETTLE, "the live event in audit.user-events", || async {
        (users::depth(&sb, "audit.user-events").await == 12).then_some(())
    })
    .await;
    let (code, out) = portal_output(&sb, &["consumer", "add", "Bad Name"]).await;
    assert_eq!(code, 1, "{out}");
}

/// Under EVENT_RETENTION_DAYS the history of users who have not changed since is gone with its
/// months: a late consumer's backfill sends what is left and a snapshot of each such user's
/// current record, so it still learns every user.
#[tokio::test]
async fn a_consumer_added_after_old_months_expired_still_receives_every_user() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).start().await;
    let auth = sys.auth_db.clone();
    let mut old = Vec::new();
    for i in 0..3 {
        old.push(auth::create_user(&auth, &format!("old{i}@clinic.test"), Role::Doctor).await);
    }
    // Their events belong to a month four months back (as if written then), which a retention
    // of 60 days expires: maintenance makes its partition, moves them in, and drops it.
    sqlx::query(
        "UPDATE event_store SET created_at = now() - interval '120 days' WHERE user_id = ANY($1)",
    )
    .bind(&old)
    .execute(&auth)
    .await
    .unwrap();
    let done = auth_service::retention::maintain(
        &auth,
        Some(std::time::Duration::from_secs(60 * 86_400)),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(done.dropped.len(), 1, "{done:?}");
    let recent = auth::create_user(&auth, "recent@clinic.test", Role::Doctor).await;
    change_role(&auth, recent, Role::Nurse).await;
    all_published(&auth).await;
    assert_eq!(count(&auth, "SELECT count(*) FROM event_store").await, 2);

    let (code, out) = portal_output(&sb, &["consumer", "add", "audit"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("sent 2 events")
            && out.contains("and 3 snapshots of users whose events expired"),
        "{out}"
    );
    // The 2 stored events, the 3 snapshots, the end-of-history mark (counting 4 users).
    assert_eq!(users::depth(&sb, "audit.user-events").await, 6);
    let mark = last_message_type(&sb, "audit.user-events").await;
    assert_eq!(mark.as_deref(), Some(contract::wire::HISTORY_COMPLETE_TYPE));
}

#[tokio::test]
async fn each_user_has_an_audit_trail_oldest_first() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().gateway().start().await;
    let (gw, auth) = (sys.gateway().url(), sys.auth_db.clone());
    let token = sys.admin_token().await;
    let id = auth::create_user(&auth, "trail@clinic.test", Role::Doctor).await;
    change_role(&auth, id, Role::Consultant).await;
    change_role(&auth, id, Role::Nurse).await;

    let (s, trail) = get(
        &format!("{gw}/api/v1/auth/admin/users/{id}/events"),
        Some(&token),
    )
    .await;
    assert_eq!(s, 200, "{trail}");
    let kinds: Vec<(String, i64)> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["eventType"].as_str().unwrap().to_owned(),
                e["userVersion"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("user.created".to_owned(), 1),
            ("user.role.changed".to_owned(), 2),
            ("user.role.changed".to_owned(), 3)
        ]
    );
    let (s, only) = get(
        &format!("{gw}/api/v1/auth/admin/users/{id}/events?type=user.created"),
        Some(&token),
    )
    .await;
    assert_eq!((s, only["total"].as_i64()), (200, Some(1)));
    let (s, _) = get(
        &format!("{gw}/api/v1/auth/admin/users/{id}/events?type=user.exploded"),
        Some(&token),
    )
    .await;
    assert_eq!(s, 422);

    auth::create_user(&auth, "auditor@clinic.test", Role::Admin).await;
    let (code, out) = crate::cli::portal_cli(
        &sb,
        &["events", "--user", "trail@clinic.test"],
        &gw,
        "auditor@clinic.test",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("role doctor -> consultant")
            && out.contains("role consultant -> nurse")
            && out.contains("3 events"),
        "{out}"
    );
}

/// A copy holding a version `auth_db` never wrote (forged, or restored from a corrupt backup)
/// would pin the row forever under the ordinary rule; `verify` reports it as ahead, and
/// `reconcile` repairs it by moving `auth_db`'s version past it (the version fence).
#[tokio::test]
async fn a_copy_forged_ahead_of_auth_db_is_reported_and_really_repaired() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().appointments().start().await;
    let (auth, users) = (sys.auth_db.clone(), sys.user_db().clone());
    let forged = auth::create_user(&auth, "forged@clinic.test", Role::Doctor).await;
    let untouched = auth::create_user(&auth, "fine@clinic.test", Role::Nurse).await;
    eventually_in_sync(&auth, &users).await;

    sqlx::query("UPDATE users SET user_version = 9000000000, role = 'admin' WHERE id = $1")
        .bind(forged)
        .execute(&users)
        .await
        .unwrap();
    let (code, out) = verify_exit(&sb).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("ahead    {forged}")), "{out}");
    reconcile_and_resync(&sb, &auth, &users, "mismatched 1, extra 0, repaired 1").await;
    let version = |pool: PgPool, id: Uuid| async move {
        sqlx::query_scalar::<_, i64>("SELECT user_version FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(version(auth.clone(), forged).await, 9_000_000_001, "fenced");
    assert_eq!(version(users.clone(), forged).await, 9_000_000_001);
    assert_eq!(
        version(auth.clone(), untouched).await,
        1,
        "only the forged user moved"
    );
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE id = $1")
        .bind(forged)
        .fetch_one(&users)
        .await
        .unwrap();
    assert_eq!(role, "doctor");

    // Later changes follow the fence and apply as usual.
    change_role(&auth, forged, Role::Consultant).await;
    eventually_in_sync(&auth, &users).await;
    assert_eq!(version(users, forged).await, 9_000_000_002);
}
