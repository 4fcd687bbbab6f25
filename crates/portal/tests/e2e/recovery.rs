//! The recovery toolbox: drift injected four ways is found by `verify` and repaired by
//! `reconcile`; `replay` rebuilds an empty `user_db`; `consumer add` backfills a late consumer;
//! the event store never skips a late-committing event and shows each user's audit trail.

use crate::cli::portal_output;
use crate::{count, get, SETTLE};
use auth_service::event_store::{self, Cursor, EventFilter};
use auth_service::store::{self, UserChange};
use contract::Role;
use sqlx::PgPool;
use test_support::{poll_until, TestEnv};
use uuid::Uuid;

async fn change_role(pool: &PgPool, id: Uuid, role: Role) {
    let mut tx = pool.begin().await.unwrap();
    store::change_user(&mut tx, id, UserChange::SetRole(role))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Starts a user-service and waits until its consumer is connected (its queue declared).
async fn start_ready_users(env: &TestEnv) -> test_support::Running {
    let users = env.start_users().await;
    poll_until(SETTLE, "the user-service ready", || async {
        (get(&format!("{}/health/ready", users.url()), None).await.0 == 200).then_some(())
    })
    .await;
    users
}

async fn verify_exit(env: &TestEnv) -> (i32, String) {
    portal_output(env, &["verify"]).await
}

async fn reconcile_and_resync(env: &TestEnv, auth: &PgPool, users: &PgPool, expect: &str) {
    let (code, out) = portal_output(env, &["reconcile", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(expect), "expected {expect:?} in: {out}");
    crate::eventually_in_sync(auth, users).await;
    assert_eq!(verify_exit(env).await.0, 0);
}

#[tokio::test]
async fn drift_injected_four_ways_is_found_by_verify_and_repaired_by_reconcile() {
    let env = TestEnv::new().await;
    let _auth = env.start_auth().await;
    let mut users_svc = Some(env.start_users().await);
    let (auth, users) = (env.auth_pool().await, env.user_pool().await);
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            env.create_user(&auth, &format!("staff{i}@clinic.test"), Role::Doctor)
                .await,
        );
    }
    crate::eventually_in_sync(&auth, &users).await;

    // 1. Rows deleted from user_db behind the system's back.
    sqlx::query("DELETE FROM users WHERE id = ANY($1)")
        .bind(&ids[..3])
        .execute(&users)
        .await
        .unwrap();
    let (code, out) = verify_exit(&env).await;
    assert_eq!(code, 1, "{out}");
    // A dry run reports and changes nothing.
    let outbox_before = count(&auth, "SELECT count(*) FROM outbox").await;
    let (code, out) = portal_output(&env, &["reconcile", "--dry-run"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("dry run: checked 12, missing 3, stale 0, mismatched 0, extra 0, repaired 0"),
        "{out}"
    );
    assert_eq!(
        count(&auth, "SELECT count(*) FROM outbox").await,
        outbox_before
    );
    assert_eq!(count(&users, "SELECT count(*) FROM users").await, 9);
    // Without --yes and without a terminal, nothing is repaired either.
    let (code, out) = portal_output(&env, &["reconcile"]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        count(&auth, "SELECT count(*) FROM outbox").await,
        outbox_before
    );
    reconcile_and_resync(
        &env,
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
    assert_eq!(verify_exit(&env).await.0, 1);
    reconcile_and_resync(&env, &auth, &users, "mismatched 1, extra 0, repaired 1").await;

    // 3. The consumer's queue purged while events were in it.
    users_svc.take().unwrap().stop().await.unwrap();
    for id in &ids[..4] {
        change_role(&auth, *id, Role::Consultant).await;
    }
    poll_until(SETTLE, "the events waiting in the queue", || async {
        (env.queue_depth("user-service.user-events").await.ok()? >= 4).then_some(())
    })
    .await;
    let conn = platform::amqp::connect(&env.amqp_url, "drift")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_purge("user-service.user-events", Default::default())
        .await
        .unwrap();
    users_svc = Some(start_ready_users(&env).await);
    let (code, out) = verify_exit(&env).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stale"), "{out}");
    reconcile_and_resync(&env, &auth, &users, "stale 4").await;

    // 4. The consumer's queue deleted and re-created: what was published meanwhile went to
    // user.events.unrouted, not to the consumer.
    users_svc.take().unwrap().stop().await.unwrap();
    ch.queue_delete("user-service.user-events", Default::default())
        .await
        .unwrap();
    for id in &ids[4..7] {
        change_role(&auth, *id, Role::Pharmacist).await;
    }
    poll_until(
        SETTLE,
        "events published while the queue was gone",
        || async {
            (count(
                &auth,
                "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            )
            .await
                == 0)
                .then_some(())
        },
    )
    .await;
    let _users_svc = start_ready_users(&env).await; // re-creates its queue
    assert_eq!(verify_exit(&env).await.0, 1);
    reconcile_and_resync(&env, &auth, &users, "stale 3").await;

    // Users only in user_db are reported, and removed only when asked.
    sqlx::query("INSERT INTO users (id, email, first_name, last_name, role, is_active, must_change_password, created_at, user_version, event_timestamp) \
                 VALUES ($1, 'ghost@clinic.test', 'G', 'Host', 'doctor', true, false, now(), 1, now())")
        .bind(Uuid::new_v4()).execute(&users).await.unwrap();
    let (code, out) = portal_output(&env, &["reconcile", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("extra 1, repaired 0"), "{out}");
    assert_eq!(
        verify_exit(&env).await.0,
        1,
        "the extra user is still reported"
    );
    let (code, out) = portal_output(&env, &["reconcile", "--yes", "--delete-extra"]).await;
    assert!(code == 0 && out.contains("removed 1"), "{out}");
    assert_eq!(verify_exit(&env).await.0, 0);
    conn.close(200, "done").await.ok();
}

#[tokio::test]
async fn a_fresh_empty_user_db_rebuilt_by_replay_equals_auth_db() {
    let env = TestEnv::new().await;
    let _auth = env.start_auth().await;
    let users_svc = env.start_users().await;
    let auth = env.auth_pool().await;
    for i in 0..15 {
        let id = env
            .create_user(&auth, &format!("replay{i}@clinic.test"), Role::Nurse)
            .await;
        if i % 3 == 0 {
            change_role(&auth, id, Role::Doctor).await;
        }
    }
    crate::eventually_in_sync(&auth, &env.user_pool().await).await;

    users_svc.stop().await.unwrap();
    let db = env.user_db_url.rsplit('/').next().unwrap().to_owned();
    let admin = PgPool::connect(&format!("{}/postgres", test_support::pg_server()))
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
    let _users_svc = env.start_users().await; // creates an empty user_db
    let users = env.user_pool().await;
    assert_eq!(count(&users, "SELECT count(*) FROM users").await, 0);

    let (code, out) = portal_output(
        &env,
        &["replay", "--to", "user-service.user-events", "--dry-run"],
    )
    .await;
    assert!(
        code == 0 && out.contains("dry run: 20 events would be sent"),
        "{out}"
    );
    let (code, out) = portal_output(&env, &["replay", "--to", "user-service.user-events"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sent 20 events"), "{out}");
    crate::eventually_in_sync(&auth, &users).await;
    // Twice is harmless.
    let (code, _) = portal_output(
        &env,
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
    let (code, out) = portal_output(&env, &["replay", "--to", "no-such.user-events"]).await;
    assert!(code == 1 && out.contains("no queue"), "{out}");
    crate::eventually_in_sync(&auth, &users).await;
}

#[tokio::test]
async fn a_consumer_added_late_receives_the_whole_history_then_live_events() {
    let env = TestEnv::new().await;
    let _auth = env.start_auth().await;
    let auth = env.auth_pool().await;
    for i in 0..5 {
        let id = env
            .create_user(&auth, &format!("hist{i}@clinic.test"), Role::Doctor)
            .await;
        change_role(&auth, id, Role::Nurse).await;
    }
    poll_until(SETTLE, "history published", || async {
        (count(
            &auth,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
        )
        .await
            == 0)
            .then_some(())
    })
    .await;
    let (code, out) = portal_output(&env, &["consumer", "add", "audit"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("backfilled: sent 10 events"), "{out}");
    assert_eq!(env.queue_depth("audit.user-events").await.unwrap(), 10);
    env.create_user(&auth, "live@clinic.test", Role::Doctor)
        .await;
    poll_until(SETTLE, "the live event in audit.user-events", || async {
        (env.queue_depth("audit.user-events").await.ok()? == 11).then_some(())
    })
    .await;
    let (code, out) = portal_output(&env, &["consumer", "add", "Bad Name"]).await;
    assert_eq!(code, 1, "{out}");
}

#[tokio::test]
async fn reading_the_store_from_a_cursor_never_skips_an_event_that_commits_late() {
    let env = TestEnv::new().await;
    let auth = env.auth_pool().await;
    // Transaction A writes first (lower sequence) but commits last.
    let mut late = auth.begin().await.unwrap();
    let a = env_user(&mut late, "late@clinic.test").await;
    let b = env
        .create_user(&auth, "early@clinic.test", Role::Doctor)
        .await;

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
async fn env_user(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, email: &str) -> Uuid {
    let new = store::NewUser {
        email: contract::Email::parse(email).unwrap(),
        password_hash: "x".into(),
        first_name: contract::PersonName::parse("firstName", "Late").unwrap(),
        last_name: contract::PersonName::parse("lastName", "Commit").unwrap(),
        role: Role::Nurse,
        phone_number: None,
        is_active: true,
        must_change_password: false,
    };
    store::create_user(tx, new).await.unwrap().id
}

#[tokio::test]
async fn each_user_has_an_audit_trail_oldest_first() {
    let env = TestEnv::new().await;
    let sys = env.start_system().await;
    let gw = sys.gateway.url();
    let token = env.admin_token(&gw).await;
    let auth = env.auth_pool().await;
    let id = env
        .create_user(&auth, "trail@clinic.test", Role::Doctor)
        .await;
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

    env.create_user(&auth, "auditor@clinic.test", Role::Admin)
        .await;
    let (code, out) = crate::cli::portal_cli(
        &env,
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

#[tokio::test]
async fn retention_prunes_only_published_events() {
    let env = TestEnv::new().await;
    let auth = env.auth_pool().await;
    env.create_user(&auth, "kept@clinic.test", Role::Doctor)
        .await;
    env.create_user(&auth, "published@clinic.test", Role::Doctor)
        .await;
    sqlx::query("UPDATE outbox SET published_at = now() WHERE body::jsonb #>> '{payload,email}' = 'published@clinic.test'")
        .execute(&auth).await.unwrap();
    let removed = event_store::prune(&auth, chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(
        count(
            &auth,
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        .await,
        1
    );
}
