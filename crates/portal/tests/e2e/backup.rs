//! The backup and restore runbook of `docs/operations.md`, followed step by step on a system
//! under the least-privilege setup. `pg_dump -Fc` of auth_db, then of appointment_db; then
//! changes the dumps do not hold (a doctor created, phones changed, a doctor deactivated,
//! appointments booked) reach both copies. The parts stop, auth_db is restored from its dump,
//! `portal setup` re-grants what the recreated database lost, and the parts start again, the
//! gateway last. The copies are now *ahead* of auth_db: they hold versions auth_db never wrote
//! and a user it does not know. A change written at that moment gets a version the copies
//! already hold and is ignored by both; `portal verify` shows all of it, and
//! `portal reconcile --yes --delete-extra` settles all of it (moving auth_db's versions past
//! the copies'), after which the next change through the gateway reaches both copies, and the
//! appointments booked after the dump are still there.

use crate::identities::{config as setup_config, may};
use api_client::ApiClient;
use contract::api::{AppointmentStatus, CreateUserRequest, NewAppointment, UpdateUserRequest};
use contract::topology::{ConsumerQueues, APPOINTMENT_SERVICE};
use contract::Role;
use ops::setup::Credentials;
use ops::verify::{self, CopySpec};
use sandbox::db::count;
use sandbox::{appointments, auth, backup, users};
use sandbox::{poll_until, Running, Sandbox, System, SystemBuilder, SETTLE, TEST_PASSWORD};
use std::path::Path;
use std::process::Output;
use tokio::process::Command;
use uuid::Uuid;

const ADMIN: &str = "admin@clinic.test";

/// The system's parts under the identities the setup wrote into `creds`, as an install runs
/// them; the gateway is added by the caller, once staff may come in.
fn under_setup<'a>(sb: &'a Sandbox, creds: &'a Credentials) -> SystemBuilder<'a> {
    let get = move |key: &str| {
        creds
            .get(key)
            .unwrap_or_else(|| panic!("{key} in the credentials"))
            .to_owned()
    };
    let trusted = move || -> Vec<String> {
        get("TRUSTED_PUBLISHERS")
            .split(',')
            .map(str::to_owned)
            .collect()
    };
    System::builder(sb)
        .auth_with(move |config| {
            config.database_url = get("AUTH_DATABASE_URL");
            config.amqp_url = get("RELAY_AMQP_URL");
            config.managed_by_setup = true;
        })
        .users_with(move |config| {
            config.database_url = get("USER_DATABASE_URL");
            config.amqp_url = get("USER_SERVICE_AMQP_URL");
            config.managed_by_setup = true;
            config.consumer.trusted_publishers = trusted();
        })
        .appointments_with(move |config| {
            config.database_url = get("APPOINTMENT_DATABASE_URL");
            config.amqp_url = get("APPOINTMENT_SERVICE_AMQP_URL");
            config.managed_by_setup = true;
            config.consumer.trusted_publishers = trusted();
        })
}

/// The gateway in front of the system's three services.
async fn gateway(sys: &System) -> Running {
    let mut config = gateway::Config::local(&sys.auth.url(), &sys.users().url());
    config.appointments_url = Some(sys.appointments().url());
    Running::launch(gateway::Application::build(config)).await
}

/// `portal <args>` as the operator runs it on an install: the credentials file the setup
/// wrote, nothing else; exit code and stdout+stderr.
async fn portal(creds: &Path, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portal"));
    let Output {
        status,
        stdout,
        stderr,
    } = sandbox::process::isolated_async(&mut cmd)
        .env("PORTAL_CREDENTIALS", creds)
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&stderr);
    (status.code().unwrap_or(-1), out)
}

/// Waits until both copies equal auth_db by `portal verify`'s comparison.
async fn copies_in_sync(sys: &System) {
    let copies: [(&CopySpec, _); 2] = [
        (&verify::USER_SERVICE, sys.user_db()),
        (&verify::APPOINTMENT_SERVICE, sys.appointment_db()),
    ];
    poll_until(SETTLE, "both copies equal to auth_db", || async {
        for (spec, pool) in copies {
            let report = verify::compare(&sys.auth_db, spec, pool, verify::Options::listing(5))
                .await
                .ok()?;
            if !report.is_in_sync() {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// The version of user `id` in `auth_db`, `user_db` and `appointment_db`.
async fn versions(sys: &System, id: Uuid) -> [i64; 3] {
    let of = |pool, table: &str| {
        let sql = format!("SELECT user_version FROM {table} WHERE id = $1");
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap()
        }
    };
    [
        of(&sys.auth_db, "users").await,
        of(sys.user_db(), "users").await,
        of(sys.appointment_db(), "clinicians").await,
    ]
}

/// The phone number `user_db` holds for `id`.
async fn phone_in_copy(sys: &System, id: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT phone_number FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(sys.user_db())
        .await
        .unwrap()
}

fn phone(number: &str) -> UpdateUserRequest {
    UpdateUserRequest {
        phone_number: Some(Some(number.to_owned())),
        ..UpdateUserRequest::default()
    }
}

fn appointment(doctor: Uuid, days: i64) -> NewAppointment {
    NewAppointment {
        patient_name: "Chipo Dube".into(),
        doctor_id: doctor.to_string(),
        starts_at: (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339(),
        duration_minutes: 30,
        reason: Some("review".into()),
    }
}

/// An admin's API client of `url` (the gateway, or the auth-service itself).
async fn admin_at(url: &str) -> ApiClient {
    let token = auth::login(url, ADMIN, TEST_PASSWORD).await;
    ApiClient::new(url).unwrap().authenticated(token)
}

#[tokio::test]
async fn auth_db_restored_from_an_older_dump_is_settled_by_reconcile_and_new_changes_reach_the_copies(
) {
    let sb = Sandbox::for_test().await;
    let config = setup_config(&sb);
    ops::setup::run(&config).await.unwrap();
    let creds = Credentials::load(&config.credentials).unwrap();
    let get = |key: &str| creds.get(key).unwrap().to_owned();

    // --- A running system with staff and appointments -----------------------------------
    let sys = under_setup(&sb, &creds)
        .account(ADMIN, Role::Admin)
        .account("dr.one@clinic.test", Role::Doctor)
        .account("dr.two@clinic.test", Role::Doctor)
        .account("nurse.one@clinic.test", Role::Nurse)
        .account("pharm.one@clinic.test", Role::Pharmacist)
        .start()
        .await;
    let [_, dr_one, dr_two, nurse, pharmacist] = sys.accounts[..] else {
        panic!("five accounts")
    };
    // The appointment-service's history, as `portal setup` sends it to a new copy.
    let operator_auth = platform::db::lazy_pool(&get("OPERATOR_AUTH_DATABASE_URL"), 2).unwrap();
    let queue = ConsumerQueues::for_consumer(APPOINTMENT_SERVICE).main;
    ops::replay::backfill(&operator_auth, &get("OPERATOR_AMQP_URL"), &queue, |_| {})
        .await
        .unwrap();
    operator_auth.close().await;
    appointments::wait_ready(sys.appointments()).await;
    let front = gateway(&sys).await;
    let admin = admin_at(&front.url()).await;
    let kept = admin.book(&appointment(dr_one, 1)).await.unwrap();
    let of_dr_two = admin.book(&appointment(dr_two, 2)).await.unwrap();
    copies_in_sync(&sys).await;
    sys.all_published().await;

    // --- Backup: auth_db first, appointment_db last -------------------------------------
    let auth_dump = sb.dir.join("auth_db.dump");
    let appointment_dump = sb.dir.join("appointment_db.dump");
    backup::dump(&sb, "auth", &auth_dump).await.unwrap();
    backup::dump(&sb, "appointment", &appointment_dump)
        .await
        .unwrap();

    // --- What happens after the backup, and reaches both copies -------------------------
    let created = admin
        .create_user(&CreateUserRequest {
            email: "dr.new@clinic.test".into(),
            first_name: "Tafadzwa".into(),
            last_name: "Newman".into(),
            role: Role::Doctor.as_str().into(),
            phone_number: None,
        })
        .await
        .unwrap();
    let dr_new = created.user.user_id.0;
    admin
        .update_user(nurse, &phone("+263 77 100 0001"))
        .await
        .unwrap();
    admin
        .update_user(pharmacist, &phone("+263 77 100 0002"))
        .await
        .unwrap();
    admin.deactivate(dr_two).await.unwrap();
    let booked_after = admin.book(&appointment(dr_one, 3)).await.unwrap();
    let of_dr_new = poll_until(SETTLE, "the new doctor bookable", || async {
        admin.book(&appointment(dr_new, 4)).await.ok()
    })
    .await;
    copies_in_sync(&sys).await;
    assert_eq!(versions(&sys, nurse).await, [2, 2, 2]);
    poll_until(SETTLE, "dr.two's appointment flagged", || async {
        let now = admin.appointment(of_dr_two.id).await.ok()?;
        (now.status == AppointmentStatus::NeedsReassignment).then_some(())
    })
    .await;

    // --- Restore: stop the parts, auth_db from its dump, the setup, the parts again -----
    // The gateway first: no change is made while the others stop.
    front.stop().await.unwrap();
    let System {
        auth,
        users: user_service,
        appointments: appointment_service,
        auth_db,
        user_db,
        appointment_db,
        ..
    } = sys;
    auth.stop().await.unwrap();
    for part in [user_service, appointment_service].into_iter().flatten() {
        part.stop().await.unwrap();
    }
    for pool in [Some(auth_db), user_db, appointment_db]
        .into_iter()
        .flatten()
    {
        pool.close().await;
    }
    backup::restore(&sb, "auth", &auth_dump).await.unwrap();
    // Restored without the dump's owners and grants: the auth-service may not read its table
    // until the setup has granted it again (reusing every password it wrote).
    let users_table = "SELECT count(*) FROM users";
    assert!(!may(&get("AUTH_DATABASE_URL"), users_table).await);
    let again = ops::setup::run(&config).await.unwrap();
    assert!(!again.wrote_new_passwords && again.created_roles.is_empty());
    assert!(may(&get("AUTH_DATABASE_URL"), users_table).await);
    let sys = under_setup(&sb, &creds).start().await;
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'outbox'")
            .fetch_one(&sys.auth_db)
            .await
            .unwrap();
    assert_eq!(owner, config.identities.migrator, "the setup owns it again");
    assert_eq!(
        count(&sys.auth_db, users_table).await,
        5,
        "the dump's users"
    );
    assert_eq!(
        versions(&sys, nurse).await,
        [1, 2, 2],
        "the copies are ahead"
    );

    // A change written now (what the runbook's order prevents: staff are not let in before
    // reconcile) reuses version 2, which both copies already hold with other content: both
    // ignore it as stale.
    let direct = admin_at(&sys.auth.url()).await;
    direct
        .update_user(pharmacist, &phone("+263 77 200 0002"))
        .await
        .unwrap();
    for service in [sys.users(), sys.appointments()] {
        poll_until(SETTLE, "the new change ignored as stale", || async {
            (users::sync_counters(service).await["ignoredStale"] == 1).then_some(())
        })
        .await;
    }
    assert_eq!(versions(&sys, pharmacist).await, [2, 2, 2]);
    assert_eq!(
        phone_in_copy(&sys, pharmacist).await.as_deref(),
        Some("+263 77 100 0002"),
        "user_db kept the content of the version it held"
    );

    // --- verify: the copies ahead, and the user only they hold ---------------------------
    let creds_file = config.credentials.as_path();
    let (code, out) = portal(creds_file, &["verify"]).await;
    eprintln!("portal verify after the restore:\n{out}");
    assert_eq!(code, 1, "{out}");
    for expected in [
        "user-service (user_db): out of sync: 4 differences among 5 users \
         (missing 0, stale 0, mismatched 3, extra 1)"
            .to_owned(),
        format!("ahead    {nurse} nurse.one@clinic.test: user_db has version 2, auth_db only 1"),
        format!("ahead    {dr_two} dr.two@clinic.test: user_db has version 2, auth_db only 1"),
        format!(
            "mismatch {pharmacist} pharm.one@clinic.test: phoneNumber is \
             Some(\"+263 77 100 0002\") in user_db, Some(\"+263 77 200 0002\") in auth_db"
        ),
        format!("extra    {dr_new} dr.new@clinic.test: in user_db, not in auth_db"),
        "appointment-service (appointment_db): out of sync: 3 differences among 5 users \
         (missing 0, stale 0, mismatched 2, extra 1)"
            .to_owned(),
        format!(
            "ahead    {dr_two} dr.two@clinic.test: appointment_db has version 2, auth_db only 1"
        ),
        format!("extra    {dr_new} Tafadzwa Newman: in appointment_db, not in auth_db"),
    ] {
        assert!(out.contains(&expected), "expected {expected:?} in:\n{out}");
    }

    // --- reconcile: fences past the copies, repairs, removes what auth_db does not hold --
    let (code, out) = portal(creds_file, &["reconcile", "--yes", "--delete-extra"]).await;
    eprintln!("portal reconcile --yes --delete-extra:\n{out}");
    assert_eq!(code, 0, "{out}");
    for expected in [
        "user-service: checked 5, missing 0, stale 0, mismatched 3, extra 1, repaired 3, \
         removed 1",
        "appointment-service: checked 5, missing 0, stale 0, mismatched 2, extra 1, \
         repaired 2, removed 1, appointments to reassign 1",
    ] {
        assert!(out.contains(expected), "expected {expected:?} in:\n{out}");
    }
    let (code, out) = portal(creds_file, &["verify"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        versions(&sys, nurse).await,
        [3, 3, 3],
        "auth_db moved past the copies' 2"
    );
    assert_eq!(versions(&sys, dr_two).await, [3, 3, 3]);
    assert_eq!(versions(&sys, pharmacist).await, [2, 2, 2]);
    assert_eq!(
        phone_in_copy(&sys, pharmacist).await.as_deref(),
        Some("+263 77 200 0002"),
        "the repair at an equal version replaced what the copy held"
    );

    // The deactivation the restore undid, made again before staff come back (the runbook:
    // what the copies held before reconcile says what the backup lost).
    direct.deactivate(dr_two).await.unwrap();

    // --- Staff come back: a new change through the gateway reaches both copies ----------
    let front = gateway(&sys).await;
    let admin = admin_at(&front.url()).await;
    admin
        .update_user(nurse, &phone("+263 77 300 0001"))
        .await
        .unwrap();
    copies_in_sync(&sys).await;
    assert_eq!(versions(&sys, nurse).await, [4, 4, 4]);
    assert_eq!(
        phone_in_copy(&sys, nurse).await.as_deref(),
        Some("+263 77 300 0001")
    );
    assert_eq!(versions(&sys, dr_two).await, [4, 4, 4]);

    // --- The appointments: a system of record, not restored, all still there -------------
    let status = |id| {
        let admin = &admin;
        async move { admin.appointment(id).await.unwrap() }
    };
    assert_eq!(status(kept.id).await.status, AppointmentStatus::Booked);
    let after = status(booked_after.id).await;
    assert_eq!(
        (after.status, after.doctor_name.as_str()),
        (AppointmentStatus::Booked, "Test dr.one@clinic.test")
    );
    assert_eq!(
        status(of_dr_two.id).await.status,
        AppointmentStatus::NeedsReassignment
    );
    // The doctor created after the backup is gone with the restore: their appointment waits
    // for another doctor instead of for someone who cannot sign in.
    let orphan = status(of_dr_new.id).await;
    assert_eq!(
        (orphan.status, orphan.doctor_name.as_str()),
        (AppointmentStatus::NeedsReassignment, "")
    );
    let id = of_dr_new.id.to_string();
    let reassigned: contract::api::Appointment = admin
        .call(
            reqwest::Method::POST,
            &["api", "v1", "appointments", &id, "reassign"],
            &[],
            Some(&serde_json::json!({ "doctorId": dr_one })),
        )
        .await
        .unwrap();
    assert_eq!(reassigned.status, AppointmentStatus::Booked);
    let (code, out) = portal(creds_file, &["verify"]).await;
    assert_eq!(code, 0, "{out}");

    // The appointment dump itself restores, holding what was booked before it.
    backup::restore(&sb, "appointment_restored", &appointment_dump)
        .await
        .unwrap();
    let restored = platform::db::lazy_pool(&sb.database_url("appointment_restored"), 1).unwrap();
    assert_eq!(
        count(&restored, "SELECT count(*) FROM appointments").await,
        2
    );
    restored.close().await;
    front.stop().await.unwrap();
}
