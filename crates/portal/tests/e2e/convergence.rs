//! Convergence under any delivery order: duplicated and shuffled events (to both services built
//! on the shared consumer), competing consumers, and a late event that must not undo a newer
//! one. Every scenario ends with the comparison `portal verify` uses reporting no difference.

use auth_service::store::{self, ProfileChange, UserChange};
use contract::{Email, PersonName, Role};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sandbox::users::eventually_in_sync;
use sandbox::{appointments, auth, users, System, SystemBuilder};
use sandbox::{poll_until, Sandbox, SETTLE};
use sqlx::PgPool;
use uuid::Uuid;

/// One admin operation of the generated histories.
#[derive(Debug, Clone)]
enum Op {
    Rename(u8),
    Email(u8),
    Phone(Option<u8>),
    Activate,
    Deactivate,
    SetRole(Role),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u8>().prop_map(Op::Rename),
        (0u8..40).prop_map(Op::Email),
        proptest::option::of(any::<u8>()).prop_map(Op::Phone),
        Just(Op::Activate),
        Just(Op::Deactivate),
        proptest::sample::select(Role::ALL.to_vec()).prop_map(Op::SetRole),
    ]
}

/// Performs `op` on `user` through the auth-service's store, like the admin API does. Refusals
/// (an email taken by another user, the last admin) are part of the history too.
async fn perform(pool: &PgPool, user: Uuid, op: &Op) {
    let change = match op {
        Op::Rename(n) => UserChange::Profile(ProfileChange {
            first_name: Some(PersonName::parse("firstName", &format!("Name{n}")).unwrap()),
            ..Default::default()
        }),
        Op::Email(n) => UserChange::Profile(ProfileChange {
            email: Some(Email::parse(&format!("person{n}@clinic.test")).unwrap()),
            ..Default::default()
        }),
        Op::Phone(p) => UserChange::Profile(ProfileChange {
            phone_number: Some(
                p.map(|p| contract::PhoneNumber::parse(&format!("+263 77 000 {p:04}")).unwrap()),
            ),
            ..Default::default()
        }),
        Op::Activate => UserChange::Activate,
        Op::Deactivate => UserChange::Deactivate,
        Op::SetRole(r) => UserChange::SetRole(*r),
    };
    let mut tx = pool.begin().await.unwrap();
    match store::change_user(&mut tx, user, change).await {
        Ok(_) => tx.commit().await.unwrap(),
        Err(store::StoreError::DuplicateEmail | store::StoreError::LastActiveAdmin) => {}
        Err(e) => panic!("unexpected store error: {e}"),
    }
}

/// The outbox bodies in sequence order, as the relay would publish them.
async fn outbox_bodies(pool: &PgPool) -> Vec<Vec<u8>> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT body::text FROM event_store ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter().map(String::into_bytes).collect()
}

/// An auth-service without its relay (the test is the only publisher, in its own order) and a
/// user-service.
fn without_relay(sb: &Sandbox) -> SystemBuilder<'_> {
    System::builder(sb)
        .auth_with(|config| config.run_relay = false)
        .users()
}

/// Runs one generated history: `users` users, `ops` changes, delivered duplicated and shuffled
/// to both consumers of the shared consumer library (the user-service's `users`, the
/// appointment-service's `clinicians`), each in its own order.
async fn history_converges(users: usize, ops: Vec<(usize, Op)>, delivery_seed: u64) {
    let sb = Sandbox::for_test().await;
    let sys = without_relay(&sb).appointments().start().await;
    let (auth, user_db) = (sys.auth_db.clone(), sys.user_db().clone());
    let appointment_db = sys.appointment_db().clone();

    let mut ids = Vec::new();
    for i in 0..users {
        let role = Role::ALL[i % Role::ALL.len()];
        ids.push(auth::create_user(&auth, &format!("user{i}@clinic.test"), role).await);
    }
    for (who, op) in &ops {
        perform(&auth, ids[who % ids.len()], op).await;
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(delivery_seed);
    let bodies = outbox_bodies(&auth).await;
    let mut shuffled = || {
        let mut deliveries = Vec::new();
        for body in &bodies {
            let copies = rng.gen_range(1..=3);
            deliveries.extend(std::iter::repeat_n(body.clone(), copies));
        }
        deliveries.shuffle(&mut rng);
        deliveries
    };
    users::publish(&sb, &shuffled()).await;
    appointments::publish(&sb, &shuffled()).await;

    eventually_in_sync(&auth, &user_db).await;
    let report = sandbox::users::compare(&auth, &user_db).await.unwrap();
    assert_eq!(report.checked, users as u64);
    poll_until(SETTLE, "clinicians equal to auth_db", || async {
        ops::verify::compare(
            &auth,
            &ops::verify::APPOINTMENT_SERVICE,
            &appointment_db,
            ops::verify::Options::listing(5),
        )
        .await
        .ok()?
        .is_in_sync()
        .then_some(())
    })
    .await;
}

proptest! {
    // `PROPTEST_CASES` sets the long form; CI runs 12 histories.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_history_delivered_duplicated_and_shuffled_ends_with_user_db_equal_to_auth_db(
        users in 5usize..=36,
        ops in proptest::collection::vec((0usize..36, op()), 20..160),
        delivery_seed in any::<u64>(),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(history_converges(users, ops, delivery_seed));
    }
}

#[tokio::test]
async fn a_late_role_change_does_not_undo_a_newer_deactivation() {
    let sb = Sandbox::for_test().await;
    let sys = without_relay(&sb).start().await;
    let (auth, user_db) = (sys.auth_db.clone(), sys.user_db().clone());
    let id = auth::create_user(&auth, "late@clinic.test", Role::Doctor).await;
    perform(&auth, id, &Op::SetRole(Role::Consultant)).await; // v2
    perform(&auth, id, &Op::SetRole(Role::Nurse)).await; // v3
    perform(&auth, id, &Op::Deactivate).await; // v4
    let bodies = outbox_bodies(&auth).await;
    assert_eq!(bodies.len(), 4);

    // created, deactivated, then the two role changes late.
    let late = [
        bodies[0].clone(),
        bodies[3].clone(),
        bodies[1].clone(),
        bodies[2].clone(),
    ];
    users::publish(&sb, &late).await;
    let marker = Uuid::new_v4();
    let marker_event =
        sandbox::events::user_event(marker, Some(1), "marker@clinic.test", "nurse", true);
    users::publish_events(&sb, &[marker_event]).await;
    sandbox::wait_for_user_version(&user_db, marker, 1, SETTLE).await;

    let (role, active, version): (String, bool, i64) =
        sqlx::query_as("SELECT role, is_active, user_version FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&user_db)
            .await
            .unwrap();
    assert_eq!((role.as_str(), active, version), ("nurse", false, 4));
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(marker)
        .execute(&user_db)
        .await
        .unwrap();
    users::assert_in_sync(&auth, &user_db).await;
}

#[tokio::test]
async fn two_user_services_on_one_queue_converge_during_a_burst_of_changes() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).start().await;
    let mut config = users::config(&sb);
    config.consumer.prefetch = 20; // small windows so the broker spreads the burst over both
                                   // Both consumers connected before the burst.
    let one = users::start_ready(config.clone()).await;
    let two = users::start_ready(config).await;
    let (auth, user_db) = (sys.auth_db.clone(), users::pool(&sb).await);
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(auth::create_user(&auth, &format!("burst{i}@clinic.test"), Role::Doctor).await);
    }
    let ops = [
        Op::SetRole(Role::Nurse),
        Op::Rename(1),
        Op::Deactivate,
        Op::Phone(Some(7)),
        Op::Activate,
        Op::SetRole(Role::Consultant),
        Op::Rename(2),
        Op::Deactivate,
    ];
    let tasks = ids.iter().map(|&id| {
        let auth = auth.clone();
        let ops = ops.clone();
        tokio::spawn(async move {
            for op in &ops {
                perform(&auth, id, op).await;
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.unwrap();
    }
    assert_eq!(
        sandbox::db::count(&auth, "SELECT count(*) FROM event_store").await,
        40 * 9
    );
    eventually_in_sync(&auth, &user_db).await;

    let mut received = Vec::new();
    for instance in [&one, &two] {
        let sync = users::sync_counters(instance).await;
        received.push(sync["applied"].as_u64().unwrap() + sync["ignoredStale"].as_u64().unwrap());
    }
    assert!(
        received.iter().all(|&n| n > 0),
        "both instances consumed part of the burst: {received:?}"
    );
}
