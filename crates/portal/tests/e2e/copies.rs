//! Every consumer's copy under `portal verify` and `portal reconcile`: drift in the
//! appointment-service's `clinicians` alone is reported under that service while the
//! user-service's copy stays in sync, and one repair per user, through the exchange, fixes it.

use crate::cli::portal_output;
use contract::Role;
use ops::verify::{self, APPOINTMENT_SERVICE};
use sandbox::db::count;
use sandbox::users::eventually_in_sync;
use sandbox::{auth, System};
use sandbox::{poll_until, Sandbox, SETTLE};
use sqlx::PgPool;
use uuid::Uuid;

async fn clinicians_in_sync(auth: &PgPool, appointment_db: &PgPool) {
    poll_until(SETTLE, "appointment_db to equal auth_db", || async {
        verify::compare(
            auth,
            &APPOINTMENT_SERVICE,
            appointment_db,
            verify::Options::listing(5),
        )
        .await
        .ok()?
        .is_in_sync()
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn drift_in_clinicians_only_is_reported_under_its_service_and_repaired() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().appointments().start().await;
    let (auth, users) = (sys.auth_db.clone(), sys.user_db().clone());
    let appointment_db = sys.appointment_db().clone();
    let mut ids = Vec::new();
    for (i, role) in [Role::Doctor, Role::Doctor, Role::Nurse, Role::Doctor]
        .into_iter()
        .enumerate()
    {
        ids.push(auth::create_user(&auth, &format!("clin{i}@clinic.test"), role).await);
    }
    eventually_in_sync(&auth, &users).await;
    clinicians_in_sync(&auth, &appointment_db).await;
    let (code, out) = portal_output(&sb, &["verify"]).await;
    assert_eq!(code, 0, "{out}");

    // Behind the system's back, in appointment_db only: a clinician gone, another demoted.
    sqlx::query("DELETE FROM clinicians WHERE id = $1")
        .bind(ids[0])
        .execute(&appointment_db)
        .await
        .unwrap();
    sqlx::query("UPDATE clinicians SET role = 'nurse' WHERE id = $1")
        .bind(ids[1])
        .execute(&appointment_db)
        .await
        .unwrap();
    let (code, out) = portal_output(&sb, &["verify"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("user-service (user_db): in sync: 4 users"),
        "{out}"
    );
    assert!(
        out.contains(
            "appointment-service (appointment_db): out of sync: 2 differences among 4 users \
             (missing 1, stale 0, mismatched 1, extra 0)"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "missing  {} clin0@clinic.test: in auth_db, not in appointment_db",
            ids[0]
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            r#"mismatch {} clin1@clinic.test: role is "nurse" in appointment_db, "doctor" in auth_db"#,
            ids[1]
        )),
        "{out}"
    );
    assert!(
        out.contains("out of sync: appointment_db differs from auth_db"),
        "{out}"
    );

    let snapshots = |auth: PgPool| async move {
        count(
            &auth,
            "SELECT count(*) FROM event_store WHERE event_type = 'user.snapshot'",
        )
        .await
    };
    let (code, out) = portal_output(&sb, &["reconcile", "--dry-run"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "user-service: dry run: checked 4, missing 0, stale 0, mismatched 0, extra 0, \
             repaired 0\nappointment-service: dry run: checked 4, missing 1, stale 0, \
             mismatched 1, extra 0, repaired 0"
        ),
        "{out}"
    );
    assert_eq!(snapshots(auth.clone()).await, 0, "a dry run writes nothing");

    let (code, out) = portal_output(&sb, &["reconcile", "--yes"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "user-service: checked 4, missing 0, stale 0, mismatched 0, extra 0, repaired 0\n\
             appointment-service: checked 4, missing 1, stale 0, mismatched 1, extra 0, \
             repaired 2"
        ),
        "{out}"
    );
    assert_eq!(snapshots(auth.clone()).await, 2, "one repair per user");
    let (code, out) = portal_output(&sb, &["verify"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.trim(),
        "user-service (user_db): in sync: 4 users\n\
         appointment-service (appointment_db): in sync: 4 users"
    );

    // A clinician only in appointment_db is named, and deleted from there only when asked.
    let ghost = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO clinicians (id, first_name, last_name, role, is_active, user_version, \
         event_timestamp) VALUES ($1, 'Gail', 'Host', 'doctor', true, 1, now())",
    )
    .bind(ghost)
    .execute(&appointment_db)
    .await
    .unwrap();
    let (code, out) = portal_output(&sb, &["verify"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "extra    {ghost} Gail Host: in appointment_db, not in auth_db"
        )),
        "{out}"
    );
    let (code, out) = portal_output(&sb, &["reconcile", "--yes", "--delete-extra"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("appointment-service: checked 4, missing 0, stale 0, mismatched 0, extra 1, repaired 0, removed 1"),
        "{out}"
    );
    assert_eq!(snapshots(auth.clone()).await, 2, "nothing to repair");
    assert_eq!(portal_output(&sb, &["verify"]).await.0, 0);
}
