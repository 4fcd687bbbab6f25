//! The appointment-service in the whole system: a doctor created through the gateway becomes
//! bookable, a deactivation through the gateway flags their appointments, a fresh service
//! learns a thousand existing users from a backfill before it reports ready, and a service
//! killed with SIGKILL while doctors change loses nothing.

use api_client::ApiClient;
use auth_service::store::{self, NewUser, UserChange};
use contract::api::{AppointmentStatus, CreateUserRequest, NewAppointment};
use contract::topology::{ConsumerQueues, APPOINTMENT_SERVICE};
use contract::Role;
use ops::verify::{compare, Options};
use sandbox::auth::all_published;
use sandbox::db::count;
use sandbox::process::{Process, Spec};
use sandbox::{appointments, auth, users, System};
use sandbox::{poll_until, Running, Sandbox, SETTLE};
use sqlx::PgPool;
use std::time::Instant;
use uuid::Uuid;

/// Sends the whole (so far empty or not) history to the appointment-service's queue, as
/// `portal consumer add` and `portal up` do.
async fn backfill(sb: &Sandbox, auth: &PgPool) -> u64 {
    let queue = ConsumerQueues::for_consumer(APPOINTMENT_SERVICE).main;
    ops::replay::backfill(auth, &sb.amqp_url, &queue, |_| {})
        .await
        .expect("backfill")
        .events
}

/// Waits until `auth_db` and the copy on `pool` are equal by `portal verify`'s comparison.
async fn copy_in_sync(auth: &PgPool, pool: &PgPool, copy: &ops::verify::CopySpec) {
    poll_until(SETTLE, "the copy equal to auth_db", || async {
        compare(auth, copy, pool, Options::listing(5))
            .await
            .ok()?
            .is_in_sync()
            .then_some(())
    })
    .await;
}

fn new_appointment(doctor: Uuid, days: i64) -> NewAppointment {
    NewAppointment {
        patient_name: "Rudo Mhlanga".into(),
        doctor_id: doctor.to_string(),
        starts_at: (chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339(),
        duration_minutes: 30,
        reason: Some("review".into()),
    }
}

#[tokio::test]
async fn a_doctor_created_through_the_gateway_is_bookable_and_flagged_once_deactivated() {
    let sb = Sandbox::for_test().await;
    // The appointment-service backfilled and ready before the doctor exists.
    let sys = System::builder(&sb)
        .users()
        .backfilled()
        .gateway()
        .start()
        .await;
    let gateway = sys.gateway();

    let admin = ApiClient::new(&gateway.url())
        .unwrap()
        .authenticated(sys.admin_token().await);
    let created = admin
        .create_user(&CreateUserRequest {
            email: "rumbi.chikore@clinic.test".into(),
            first_name: "Rumbidzai".into(),
            last_name: "Chikore".into(),
            role: Role::Doctor.as_str().into(),
            phone_number: None,
        })
        .await
        .unwrap();
    let doctor = created.user.user_id.0;
    let asked = Instant::now();
    let booked = poll_until(SETTLE, "the new doctor bookable", || async {
        admin.book(&new_appointment(doctor, 2)).await.ok()
    })
    .await;
    eprintln!(
        "bookable {:?} after the doctor was created",
        asked.elapsed()
    );
    assert_eq!(booked.doctor_name, "Rumbidzai Chikore");
    let listed = admin
        .appointments(&[("doctorId", doctor.to_string())])
        .await
        .unwrap();
    assert_eq!(listed.total, 1);
    assert_eq!(listed.items[0], booked);

    admin.deactivate(doctor).await.unwrap();
    let asked = Instant::now();
    poll_until(SETTLE, "the appointment flagged", || async {
        let now = admin.appointment(booked.id).await.ok()?;
        (now.status == AppointmentStatus::NeedsReassignment).then_some(())
    })
    .await;
    eprintln!("flagged {:?} after the deactivation", asked.elapsed());
    let refused = admin.book(&new_appointment(doctor, 3)).await.unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(422), "{refused}");
    assert!(refused.to_string().contains("doctorId"), "{refused}");
}

#[tokio::test]
async fn a_fresh_service_started_after_a_thousand_users_knows_every_doctor_before_it_is_ready() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).start().await;
    let auth = sys.auth_db.clone();
    let hash = auth_service::password::hash(sandbox::TEST_PASSWORD.into())
        .await
        .unwrap();
    let staff: Vec<NewUser> = (0..1000)
        .map(|i| {
            let role = Role::ALL[i % Role::ALL.len()];
            NewUser::staff(
                &format!("staff{i}@clinic.test"),
                "Staff",
                &format!("Member{i}"),
                role,
                hash.clone(),
            )
            .unwrap()
        })
        .collect();
    let mut tx = auth.begin().await.unwrap();
    auth_service::bulk::create_users(&mut tx, staff)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Some doctors change before the service exists, so the history is more than creations.
    let doctors: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE role = 'doctor' ORDER BY id LIMIT 20")
            .fetch_all(&auth)
            .await
            .unwrap();
    for id in &doctors[..10] {
        let mut tx = auth.begin().await.unwrap();
        store::change_user(&mut tx, *id, UserChange::Deactivate)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    all_published(&auth).await;

    let service = appointments::start_connected(appointments::config(&sb)).await;
    let pool = appointments::pool(&sb).await;
    let url = format!("{}/health/ready", service.url());
    let (status, ready) = sandbox::http::get(&url, None).await;
    assert_eq!(status, 503, "not ready before the backfill: {ready}");
    let sent = backfill(&sb, &auth).await;
    assert_eq!(sent, 1010);
    poll_until(SETTLE, "ready after the backfill", || async {
        (sandbox::http::get(&url, None).await.0 == 200).then_some(())
    })
    .await;
    // Ready means complete: read at once, with no further wait.
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM clinicians WHERE role = 'doctor' AND is_active"
        )
        .await,
        count(
            &auth,
            "SELECT count(*) FROM users WHERE role = 'doctor' AND is_active"
        )
        .await,
    );
    let report = compare(
        &auth,
        &ops::verify::APPOINTMENT_SERVICE,
        &pool,
        Options::listing(5),
    )
    .await
    .unwrap();
    assert!(report.is_in_sync(), "{}", report.summary());
    assert_eq!(report.checked, 1000);
}

/// `portal appointment-service` as a child process on the sandbox, once its consumer holds its
/// broker connection (its queue declared and bound: every event written from now on reaches it).
async fn appointment_process(sb: &Sandbox, auth: &Running) -> Process {
    let spec = Spec::on(sb, "appointment-service", &["appointment-service"])
        .env("AUTH_SERVICE_URL", auth.url())
        .env("RUST_LOG", "warn")
        .http("APPOINTMENT_ADDR");
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_portal"));
    let process = Process::start(exe, &spec, &sb.dir).await.unwrap();
    let ready = format!("{}/health/ready", process.url().unwrap());
    poll_until(
        SETTLE,
        "the appointment-service's consumer connected",
        || async {
            let (_, body) = sandbox::http::get(&ready, None).await;
            (body["checks"]["broker"] == true).then_some(())
        },
    )
    .await;
    process
}

#[tokio::test]
async fn an_appointment_service_killed_with_sigkill_while_doctors_change_loses_nothing() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().start().await;
    let (auth, user_db) = (sys.auth_db.clone(), sys.user_db().clone());
    let pool = appointments::pool(&sb).await;
    let mut child = appointment_process(&sb, &sys.auth).await;
    let first = auth::create_user(&auth, "first-doctor@clinic.test", Role::Doctor).await;
    appointments::wait_for_clinician(&pool, first, 1).await;

    let mut doctors = vec![first];
    for i in 0..20 {
        doctors
            .push(auth::create_user(&auth, &format!("doctor{i}@clinic.test"), Role::Doctor).await);
    }
    let (writer, changed) = (auth.clone(), doctors.clone());
    let change = move |round: usize| {
        let auth = writer.clone();
        let doctors = changed.clone();
        async move {
            for (i, id) in doctors.iter().enumerate() {
                let change = match (round + i) % 3 {
                    0 => UserChange::Deactivate,
                    1 => UserChange::SetRole(Role::Consultant),
                    _ => UserChange::Activate,
                };
                let mut tx = auth.begin().await.unwrap();
                match store::change_user(&mut tx, *id, change).await {
                    Ok(_) => tx.commit().await.unwrap(),
                    Err(e) => panic!("change {id}: {e}"),
                }
            }
        }
    };
    // Doctors keep changing, round after round, until after the kill.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changing = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || round < 2 {
                change(round).await;
                round += 1;
            }
            round
        }
    });
    poll_until(SETTLE, "some changes applied", || async {
        (count(
            &pool,
            "SELECT count(*) FROM clinicians WHERE user_version > 1",
        )
        .await
            > 0)
        .then_some(())
    })
    .await;
    child.kill().await.unwrap(); // kill -9: no clean shutdown, a batch may be half done
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = changing.await.unwrap();
    eprintln!("{rounds} rounds of 21 changes, the service killed during them");
    all_published(&auth).await;

    let _restarted = appointment_process(&sb, &sys.auth).await;
    copy_in_sync(&auth, &pool, &ops::verify::APPOINTMENT_SERVICE).await;
    users::eventually_in_sync(&auth, &user_db).await;
}
