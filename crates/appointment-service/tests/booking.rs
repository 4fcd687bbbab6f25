//! Booking against the service's own copy of the clinicians, fed by events published straight
//! to its queue: who is bookable, the field named by every refusal, the overlap rule under
//! concurrency, what each role may see and do (and what APPOINTMENTS_VISIBLE_TO adds), and what
//! a deactivation does to future appointments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use sandbox::appointments::{self, booking, clinician_event, token_for};
use sandbox::http::{assert_json_error, get, post};
use sandbox::{poll_until, Running, Sandbox, SETTLE};
use serde_json::{json, Value};
use uuid::Uuid;

/// A ready service holding two active doctors, an inactive doctor and a nurse.
struct Clinic {
    sb: Sandbox,
    service: Running,
    pool: sqlx::PgPool,
    doctor: Uuid,
    colleague: Uuid,
    inactive: Uuid,
    nurse: Uuid,
}

impl Clinic {
    async fn open() -> Self {
        Self::open_with(|_| {}).await
    }

    /// [`Clinic::open`] with the service's configuration adjusted by `tune`.
    async fn open_with(tune: impl FnOnce(&mut appointment_service::Config)) -> Self {
        let sb = Sandbox::for_test().await;
        let mut config = appointments::config(&sb);
        tune(&mut config);
        let service = appointments::start(config).await;
        let pool = appointments::pool(&sb).await;
        let (doctor, colleague, inactive, nurse) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        appointments::publish_events(
            &sb,
            &[
                clinician_event(doctor, 1, "Moyo", "doctor", true),
                clinician_event(colleague, 1, "Dube", "doctor", true),
                clinician_event(inactive, 1, "Sibanda", "doctor", false),
                clinician_event(nurse, 1, "Banda", "nurse", true),
            ],
        )
        .await;
        appointments::mark_history_complete(&sb, 4).await;
        appointments::wait_ready(&service).await;
        Self {
            sb,
            service,
            pool,
            doctor,
            colleague,
            inactive,
            nurse,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/appointments{path}", self.service.url())
    }

    fn token(&self, id: Uuid, role: Role) -> String {
        token_for(&self.sb, id, role)
    }

    fn nurse_token(&self) -> String {
        self.token(self.nurse, Role::Nurse)
    }

    async fn book(&self, token: &str, body: &Value) -> (u16, Value) {
        post(&self.url(""), Some(token), body).await
    }
}

#[tokio::test]
async fn a_booking_names_the_field_at_fault_and_succeeds_for_an_active_doctor() {
    let c = Clinic::open().await;
    let nurse = c.nurse_token();
    let soon = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let cases = [
        (booking(Uuid::new_v4(), 24, 30), "doctorId"),
        (booking(c.inactive, 24, 30), "doctorId"),
        (booking(c.nurse, 24, 30), "doctorId"),
        (booking(c.doctor, -1, 30), "startsAt"),
        (booking(c.doctor, 24, 4), "durationMinutes"),
        (booking(c.doctor, 24, 481), "durationMinutes"),
        (
            json!({"patientName": " ", "doctorId": c.doctor, "startsAt": "2099-01-01T09:00:00Z", "durationMinutes": 30}),
            "patientName",
        ),
        (
            json!({"patientName": "A", "doctorId": "nope", "startsAt": "2099-01-01T09:00:00Z", "durationMinutes": 30}),
            "doctorId",
        ),
        (
            json!({"patientName": "A", "doctorId": c.doctor, "startsAt": "tomorrow", "durationMinutes": 30}),
            "startsAt",
        ),
        (
            json!({"patientName": "A", "doctorId": c.doctor, "startsAt": "9999-12-31T23:59:00Z", "durationMinutes": 480}),
            "startsAt",
        ),
        (
            json!({"patientName": "a\u{0}b", "doctorId": c.doctor, "startsAt": soon, "durationMinutes": 30}),
            "patientName",
        ),
        (
            json!({"patientName": "A", "doctorId": c.doctor, "startsAt": soon, "durationMinutes": 30, "reason": "x\u{0}"}),
            "reason",
        ),
    ];
    for (body, field) in cases {
        let (status, answer) = c.book(&nurse, &body).await;
        assert_json_error(status, &answer, 422);
        assert_eq!(answer["field"], field, "{body} → {answer}");
    }
    let mut fraction = booking(c.doctor, 24, 30);
    fraction["durationMinutes"] = json!(30.5);
    let (status, answer) = c.book(&nurse, &fraction).await;
    assert_json_error(status, &answer, 422);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("durationMinutes"),
        "{answer}"
    );
    let mut whole = booking(c.doctor, 24, 30);
    whole["durationMinutes"] = json!(30.0); // JSON Schema's integer: 30.0 is one
    let (status, made) = c.book(&nurse, &whole).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["status"], "booked");
    assert_eq!(made["doctorName"], "Farai Moyo");
    assert_eq!(made["durationMinutes"], 30);
    assert_eq!(made["createdBy"], json!(c.nurse));
    let (status, shown) = get(
        &c.url(&format!("/{}", made["id"].as_str().unwrap())),
        Some(&nurse),
    )
    .await;
    assert_eq!((status, &shown), (200, &made));
    assert_eq!(
        sandbox::db::count(&c.pool, "SELECT count(*) FROM appointments").await,
        1,
        "refused bookings wrote nothing"
    );
}

#[tokio::test]
async fn of_two_concurrent_bookings_of_one_slot_exactly_one_wins() {
    let c = Clinic::open().await;
    let nurse = c.nurse_token();
    let admin = c.token(Uuid::new_v4(), Role::Admin);
    for hour in 0..10 {
        // Same doctor, overlapping times (the second starts 10 minutes into the first).
        let first = booking(c.doctor, 48 + hour, 30);
        let mut second = first.clone();
        let start =
            chrono::DateTime::parse_from_rfc3339(first["startsAt"].as_str().unwrap()).unwrap();
        second["startsAt"] = json!((start + chrono::Duration::minutes(10)).to_rfc3339());
        let (a, b) = tokio::join!(c.book(&nurse, &first), c.book(&admin, &second));
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "{a:?} {b:?}");
        let loser = if a.0 == 409 { &a.1 } else { &b.1 };
        assert_json_error(409, loser, 409);
    }
    // Back to back is not an overlap; another doctor at the same time is not either.
    let first = booking(c.doctor, 30, 30);
    let start = chrono::DateTime::parse_from_rfc3339(first["startsAt"].as_str().unwrap()).unwrap();
    let mut next = first.clone();
    next["startsAt"] = json!((start + chrono::Duration::minutes(30)).to_rfc3339());
    let mut other = first.clone();
    other["doctorId"] = json!(c.colleague);
    for body in [first, next, other] {
        assert_eq!(c.book(&nurse, &body).await.0, 201, "{body}");
    }
}

#[tokio::test]
async fn doctors_see_and_cancel_their_own_nurses_manage_all_pharmacists_see_none() {
    let c = Clinic::open().await;
    let nurse = c.nurse_token();
    let doctor = c.token(c.doctor, Role::Doctor);
    let pharmacist = c.token(Uuid::new_v4(), Role::Pharmacist);
    let mine = c.book(&doctor, &booking(c.doctor, 24, 20)).await;
    assert_eq!(mine.0, 201, "a doctor books with themselves");
    let (status, refused) = c.book(&doctor, &booking(c.colleague, 24, 20)).await;
    assert_json_error(status, &refused, 403);
    let theirs = c.book(&nurse, &booking(c.colleague, 26, 20)).await;
    assert_eq!(theirs.0, 201);
    let (status, refused) = c.book(&pharmacist, &booking(c.doctor, 30, 20)).await;
    assert_json_error(status, &refused, 403);

    let (_, list) = get(&c.url(""), Some(&doctor)).await;
    assert_eq!(list["total"], 1, "a doctor sees their own: {list}");
    assert_eq!(list["items"][0]["id"], mine.1["id"]);
    let other_id = theirs.1["id"].as_str().unwrap();
    assert_eq!(
        get(&c.url(&format!("/{other_id}")), Some(&doctor)).await.0,
        404
    );
    let (status, _) = get(&c.url(&format!("?doctorId={}", c.colleague)), Some(&doctor)).await;
    assert_eq!(status, 403);
    let (_, list) = get(&c.url(""), Some(&nurse)).await;
    assert_eq!(list["total"], 2, "a nurse sees every one: {list}");
    // A pharmacist sees none, listed or shown, whatever they ask for (the clinic has not let
    // them: APPOINTMENTS_VISIBLE_TO is empty by default).
    for url in [
        c.url(""),
        c.url(&format!("?doctorId={}", c.doctor)),
        c.url("?status=maybe"),
        c.url(&format!("/{other_id}")),
        c.url(&format!("/{}", Uuid::new_v4())),
    ] {
        let (status, refused) = get(&url, Some(&pharmacist)).await;
        assert_json_error(status, &refused, 403);
        assert_eq!(
            refused["message"],
            "a pharmacist does not see appointments at this clinic: doctors see their own, \
             nurses and admins all of them",
            "{url}"
        );
    }
    let (_, filtered) = get(
        &c.url(&format!("?doctorId={}&status=booked&limit=1", c.colleague)),
        Some(&nurse),
    )
    .await;
    assert_eq!(
        (
            filtered["total"].clone(),
            filtered["items"].as_array().unwrap().len()
        ),
        (json!(1), 1)
    );
    let (status, bad) = get(&c.url("?status=maybe"), Some(&nurse)).await;
    assert_json_error(status, &bad, 422);
    assert_eq!(bad["field"], "status");

    let cancel = |id: &str| c.url(&format!("/{id}/cancel"));
    assert_eq!(
        post(&cancel(other_id), Some(&doctor), &json!({})).await.0,
        404
    );
    assert_eq!(
        post(&cancel(other_id), Some(&pharmacist), &json!({}))
            .await
            .0,
        403
    );
    let mine_id = mine.1["id"].as_str().unwrap();
    let (status, cancelled) = post(&cancel(mine_id), Some(&doctor), &json!({})).await;
    assert_eq!(
        (status, cancelled["status"].clone()),
        (200, json!("cancelled"))
    );
    assert_eq!(
        post(&cancel(mine_id), Some(&nurse), &json!({})).await.0,
        409
    );
    // The cancelled slot is free again.
    assert_eq!(c.book(&nurse, &booking(c.doctor, 24, 20)).await.0, 201);
    // A consultant sees none and changes nothing; an admin sees and manages anyone's.
    let consultant = c.token(Uuid::new_v4(), Role::Consultant);
    for url in [c.url(""), c.url(&format!("/{other_id}"))] {
        let (status, refused) = get(&url, Some(&consultant)).await;
        assert_json_error(status, &refused, 403);
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .starts_with("a consultant does not see appointments"),
            "{refused}"
        );
    }
    assert_eq!(c.book(&consultant, &booking(c.doctor, 40, 20)).await.0, 403);
    assert_eq!(
        post(&cancel(other_id), Some(&consultant), &json!({}))
            .await
            .0,
        403
    );
    let admin = c.token(Uuid::new_v4(), Role::Admin);
    assert_eq!(get(&c.url(""), Some(&admin)).await.1["total"], 3);
    let (status, cancelled) = post(&cancel(other_id), Some(&admin), &json!({})).await;
    assert_eq!(
        (status, cancelled["status"].clone()),
        (200, json!("cancelled"))
    );
    assert_eq!(
        get(&c.url(""), None).await.0,
        401,
        "no token, no appointments"
    );
}

/// APPOINTMENTS_VISIBLE_TO=pharmacist: pharmacists read every appointment, listed and shown,
/// and still book, cancel and reassign nothing; consultants, not named, still see none; a
/// doctor still sees their own only.
#[tokio::test]
async fn a_clinic_may_let_pharmacists_read_every_appointment_and_nothing_more() {
    let c = Clinic::open_with(|config| config.visible_to = vec![Role::Pharmacist]).await;
    let nurse = c.nurse_token();
    let pharmacist = c.token(Uuid::new_v4(), Role::Pharmacist);
    let consultant = c.token(Uuid::new_v4(), Role::Consultant);
    let doctor = c.token(c.doctor, Role::Doctor);
    let mine = c.book(&nurse, &booking(c.doctor, 24, 20)).await.1;
    let theirs = c.book(&nurse, &booking(c.colleague, 24, 20)).await.1;
    let theirs_id = theirs["id"].as_str().unwrap();

    let (status, list) = get(&c.url(""), Some(&pharmacist)).await;
    assert_eq!((status, list["total"].clone()), (200, json!(2)), "{list}");
    let (status, filtered) = get(
        &c.url(&format!("?doctorId={}", c.colleague)),
        Some(&pharmacist),
    )
    .await;
    assert_eq!(
        (status, filtered["total"].clone()),
        (200, json!(1)),
        "{filtered}"
    );
    let (status, shown) = get(&c.url(&format!("/{theirs_id}")), Some(&pharmacist)).await;
    assert_eq!((status, &shown), (200, &theirs));

    let (status, refused) = c.book(&pharmacist, &booking(c.doctor, 30, 20)).await;
    assert_json_error(status, &refused, 403);
    for action in ["cancel", "reassign"] {
        let (status, refused) = post(
            &c.url(&format!("/{theirs_id}/{action}")),
            Some(&pharmacist),
            &json!({"doctorId": c.doctor}),
        )
        .await;
        assert_json_error(status, &refused, 403);
    }
    assert_eq!(
        get(&c.url(&format!("/{theirs_id}")), Some(&pharmacist))
            .await
            .1["status"],
        "booked",
        "nothing changed"
    );

    let (status, refused) = get(&c.url(""), Some(&consultant)).await;
    assert_json_error(status, &refused, 403);
    let (_, own) = get(&c.url(""), Some(&doctor)).await;
    assert_eq!(own["total"], 1, "{own}");
    assert_eq!(own["items"][0]["id"], mine["id"]);
    assert_eq!(
        get(&c.url(&format!("/{theirs_id}")), Some(&doctor)).await.0,
        404
    );
}

#[tokio::test]
async fn a_deactivated_doctors_future_appointments_need_reassignment_until_moved() {
    let c = Clinic::open().await;
    let nurse = c.nurse_token();
    let future = c.book(&nurse, &booking(c.doctor, 24, 30)).await.1;
    let later = c.book(&nurse, &booking(c.doctor, 72, 30)).await.1;
    // A past appointment (written directly: the API books no past) stays as it was.
    let past = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO appointments (id, patient_name, doctor_id, starts_at, ends_at, duration_minutes, created_by) \
         VALUES ($1, 'Past Patient', $2, now() - interval '2 hours', now() - interval '1 hour', 60, $2)",
    )
    .bind(past)
    .bind(c.doctor)
    .execute(&c.pool)
    .await
    .unwrap();

    appointments::publish_events(
        &c.sb,
        &[clinician_event(c.doctor, 2, "Moyo", "doctor", false)],
    )
    .await;
    appointments::wait_for_clinician(&c.pool, c.doctor, 2).await;
    let status_of = |id: Uuid| {
        let pool = c.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM appointments WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let id = |v: &Value| v["id"].as_str().unwrap().parse::<Uuid>().unwrap();
    assert_eq!(status_of(id(&future)).await, "needs_reassignment");
    assert_eq!(status_of(id(&later)).await, "needs_reassignment");
    assert_eq!(status_of(past).await, "booked");
    let (status, refused) = c.book(&nurse, &booking(c.doctor, 96, 30)).await;
    assert_json_error(status, &refused, 422);
    assert_eq!(refused["field"], "doctorId");

    let (_, flagged) = get(&c.url("?status=needs_reassignment"), Some(&nurse)).await;
    assert_eq!(flagged["total"], 2, "{flagged}");

    let reassign = |v: &Value| c.url(&format!("/{}/reassign", v["id"].as_str().unwrap()));
    // Doctors do not reassign (the colleague is an active doctor; the first one has left).
    let doctor = c.token(c.colleague, Role::Doctor);
    let to_colleague = json!({"doctorId": c.colleague});
    assert_eq!(
        post(&reassign(&future), Some(&doctor), &to_colleague)
            .await
            .0,
        403
    );
    let (status, bad) = post(
        &reassign(&future),
        Some(&nurse),
        &json!({"doctorId": c.inactive}),
    )
    .await;
    assert_json_error(status, &bad, 422);
    let (status, moved) = post(&reassign(&future), Some(&nurse), &to_colleague).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        (moved["status"].clone(), moved["doctorId"].clone()),
        (json!("booked"), json!(c.colleague))
    );

    // A role change away from doctor flags too.
    appointments::publish_events(
        &c.sb,
        &[clinician_event(c.colleague, 2, "Dube", "consultant", true)],
    )
    .await;
    appointments::wait_for_clinician(&c.pool, c.colleague, 2).await;
    assert_eq!(status_of(id(&future)).await, "needs_reassignment");

    // The first doctor active again (an offboarding cancelled): what is still flagged of theirs
    // is booked with them again; what staff moved meanwhile stays where it is.
    appointments::publish_events(
        &c.sb,
        &[clinician_event(c.doctor, 3, "Moyo", "doctor", true)],
    )
    .await;
    appointments::wait_for_clinician(&c.pool, c.doctor, 3).await;
    assert_eq!(status_of(id(&later)).await, "booked");
    assert_eq!(status_of(id(&future)).await, "needs_reassignment");
    assert_eq!(status_of(past).await, "booked");
}

#[tokio::test]
async fn before_the_history_is_complete_the_service_is_not_ready_and_books_nothing() {
    let sb = Sandbox::for_test().await;
    let service = appointments::start(appointments::config(&sb)).await;
    let pool = appointments::pool(&sb).await;
    let ready_url = format!("{}/health/ready", service.url());
    let doctor = Uuid::new_v4();
    appointments::publish_events(&sb, &[clinician_event(doctor, 1, "Moyo", "doctor", true)]).await;
    appointments::wait_for_clinician(&pool, doctor, 1).await;
    let (status, ready) = get(&ready_url, None).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["unavailable"], json!(["history"]), "{ready}");
    let nurse = token_for(&sb, Uuid::new_v4(), Role::Nurse);
    let url = format!("{}/api/v1/appointments", service.url());
    let (status, answer) = post(&url, Some(&nurse), &booking(doctor, 24, 30)).await;
    assert_json_error(status, &answer, 503);

    // The mark counts two users; one is still on its way (a retry queue, another replica):
    // not complete yet, whatever the mark's place in the queue.
    appointments::mark_history_complete(&sb, 2).await;
    poll_until(SETTLE, "the mark applied", || async {
        let (_, ready) = get(&ready_url, None).await;
        ready["message"]
            .as_str()
            .is_some_and(|m| m.contains("holds 1 of the 2 users"))
            .then_some(())
    })
    .await;
    assert_eq!(get(&ready_url, None).await.0, 503);
    assert_eq!(
        post(&url, Some(&nurse), &booking(doctor, 24, 30)).await.0,
        503
    );

    let late = Uuid::new_v4();
    appointments::publish_events(&sb, &[clinician_event(late, 1, "Dube", "nurse", true)]).await;
    appointments::wait_ready(&service).await;
    assert_eq!(
        post(&url, Some(&nurse), &booking(doctor, 24, 30)).await.0,
        201
    );
    let (_, ready) = get(&ready_url, None).await;
    assert_eq!(ready["checks"]["history"], true, "{ready}");

    // A mark whose body is not one is dead-lettered, not applied.
    appointments::publish_mark(&sb, b"{\"users\": \"many\"}").await;
    poll_until(SETTLE, "the bad mark dead-lettered", || async {
        let (_, ready) = get(&ready_url, None).await;
        (ready["sync"]["deadLettered"] == 1).then_some(())
    })
    .await;
    let (expected, _): (i64, i64) = sqlx::query_as("SELECT users, 0::int8 FROM history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(expected, 2);
}

/// Two transactions inserting overlapping appointments for one doctor, the first still open
/// when the second inserts: the exclusion constraint makes the second wait, then refuses it once
/// the first commits. Deterministic, unlike two HTTP requests that may simply run in turn.
#[tokio::test]
async fn the_database_refuses_the_second_of_two_overlapping_bookings_in_flight() {
    let c = Clinic::open().await;
    let insert = "INSERT INTO appointments (id, patient_name, doctor_id, starts_at, ends_at, \
                  duration_minutes, created_by) \
                  VALUES ($1, 'P', $2, now() + interval '1 day', \
                          now() + interval '1 day 30 minutes', 30, $2)";
    let mut first = c.pool.begin().await.unwrap();
    sqlx::query(insert)
        .bind(Uuid::new_v4())
        .bind(c.doctor)
        .execute(&mut *first)
        .await
        .unwrap();
    let pool = c.pool.clone();
    let doctor = c.doctor;
    let second = tokio::spawn(async move {
        sqlx::query(insert)
            .bind(Uuid::new_v4())
            .bind(doctor)
            .execute(&pool)
            .await
    });
    // The second waits on the first's row (a lock wait in pg_stat_activity), not a sleep.
    poll_until(SETTLE, "the second insert waiting on the first", || async {
        let waiting = sandbox::db::count(
            &c.pool,
            // This test's database only: another test's lock wait must not count.
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() \
               AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO appointments%'",
        )
        .await;
        (waiting == 1).then_some(())
    })
    .await;
    first.commit().await.unwrap();
    let refused = second.await.unwrap().unwrap_err();
    assert!(
        appointment_service::store::is_overlap(&refused),
        "{refused}"
    );
}

/// A booking in flight while the doctor's deactivation is applied: the booking holds the
/// doctor's row, the consumer waits for it, then flags the booking it could not see when it
/// started — never a booked appointment left with a doctor who has gone.
#[tokio::test]
async fn a_booking_committed_while_the_doctor_is_deactivated_is_flagged() {
    let c = Clinic::open().await;
    let mut booking_tx = c.pool.begin().await.unwrap();
    assert_eq!(
        appointment_service::store::unbookable_doctor(&mut booking_tx, c.doctor)
            .await
            .unwrap(),
        None
    );
    let starts_at = chrono::Utc::now() + chrono::Duration::days(1);
    let id = appointment_service::store::book(
        &mut booking_tx,
        &appointment_service::store::Booking {
            patient_name: "In Flight".into(),
            doctor_id: c.doctor,
            starts_at,
            duration_minutes: 30,
            reason: None,
            created_by: c.nurse,
        },
    )
    .await
    .unwrap();
    appointments::publish_events(
        &c.sb,
        &[clinician_event(c.doctor, 2, "Moyo", "doctor", false)],
    )
    .await;
    poll_until(
        SETTLE,
        "the consumer waiting for the booking's lock",
        || async {
            let waiting = sandbox::db::count(
                &c.pool,
                "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() \
               AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO clinicians%'",
            )
            .await;
            (waiting == 1).then_some(())
        },
    )
    .await;
    booking_tx.commit().await.unwrap();
    appointments::wait_for_clinician(&c.pool, c.doctor, 2).await;
    let status: String = sqlx::query_scalar("SELECT status FROM appointments WHERE id = $1")
        .bind(id)
        .fetch_one(&c.pool)
        .await
        .unwrap();
    assert_eq!(status, "needs_reassignment");
}

/// An erased doctor (contract 1.1's tombstone) keeps their appointments, shown with "former
/// clinician" and no name; the saga's result naming them forgets the name; a late event with
/// their name changes nothing.
#[tokio::test]
async fn an_erased_doctors_appointments_stay_under_a_former_clinician() {
    let clinic = Clinic::open().await;
    let (status, booked) = clinic
        .book(&clinic.nurse_token(), &booking(clinic.doctor, 30, 30))
        .await;
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().unwrap().to_owned();
    assert_eq!(booked["doctorName"], "Farai Moyo");
    // A saga's result that named them (as a doctor appointments went to).
    sqlx::query(
        "INSERT INTO command_results (command_id, appointment_id, resolution, patient_name, \
             starts_at, doctor_id, doctor_name) VALUES ($1, $2, 'reassigned', 'P', now(), $3, \
             'Farai Moyo')",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(clinic.doctor)
    .execute(&clinic.pool)
    .await
    .unwrap();

    let mut erased = clinician_event(clinic.doctor, 2, "User", "doctor", false);
    erased["eventType"] = json!("user.erased");
    erased["version"] = json!("1.1");
    erased["payload"]["firstName"] = json!("Erased");
    erased["payload"]["email"] = json!(format!("erased-{}@erased.invalid", clinic.doctor));
    erased["payload"]["erasedAt"] = json!("2026-12-01T10:00:00.000Z");
    appointments::publish_events(&clinic.sb, &[erased]).await;
    appointments::wait_for_clinician(&clinic.pool, clinic.doctor, 2).await;
    // A late snapshot with their name, after.
    appointments::publish_events(
        &clinic.sb,
        &[clinician_event(clinic.doctor, 7, "Moyo", "doctor", true)],
    )
    .await;
    let marker = Uuid::new_v4();
    appointments::publish_events(
        &clinic.sb,
        &[clinician_event(marker, 1, "Marker", "nurse", true)],
    )
    .await;
    appointments::wait_for_clinician(&clinic.pool, marker, 1).await;

    let (status, shown) = get(&clinic.url(&format!("/{id}")), Some(&clinic.nurse_token())).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["doctorId"], clinic.doctor.to_string());
    assert_eq!(shown["doctorName"], "former clinician", "{shown}");
    let (first, last, version, active): (String, String, i64, bool) = sqlx::query_as(
        "SELECT first_name, last_name, user_version, is_active FROM clinicians WHERE id = $1",
    )
    .bind(clinic.doctor)
    .fetch_one(&clinic.pool)
    .await
    .unwrap();
    assert_eq!(
        (first.as_str(), last.as_str(), version, active),
        ("Erased", "User", 2, false)
    );
    let named: i64 =
        sqlx::query_scalar("SELECT count(*) FROM command_results WHERE doctor_name LIKE '%Moyo%'")
            .fetch_one(&clinic.pool)
            .await
            .unwrap();
    assert_eq!(named, 0);
}
