//! The offboarding saga across the whole system: receipts from both consumers, every future
//! appointment of the leaving doctor reassigned (a doctor free) or cancelled (none free) with one
//! event each naming the patient, a stopped consumer that makes the saga send again, stall
//! visibly and complete once it returns, cancellation that reactivates and clears the flags,
//! two requests making one saga, and a receipt from the wrong broker user ignored.

use contract::control::{Receipt, ReceiptEntry, RECEIPT_TYPE};
use contract::topology::{self, ControlQueue};
use contract::{Role, Timestamp, UserId};
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use sandbox::http::{get, post};
use sandbox::{appointments, poll_until, Sandbox, System, SETTLE};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// Short waits, so a test sees re-sends and a stall within seconds.
fn quick(config: &mut auth_service::Config) {
    config.offboarding.timeout = Duration::from_millis(400);
    config.offboarding.resends = 2;
    config.offboarding.stalled_every = Duration::from_millis(500);
    config.offboarding.poll = Duration::from_millis(50);
}

/// Books `doctor` for `patient` `days` from now at 10:00 UTC for 30 minutes, as a nurse.
pub(crate) async fn book(
    sb: &Sandbox,
    sys: &System,
    doctor: Uuid,
    patient: &str,
    days: i64,
) -> Uuid {
    let nurse = appointments::token_for(sb, Uuid::now_v7(), Role::Nurse);
    let day = (chrono::Utc::now() + chrono::Duration::days(days)).date_naive();
    let starts = day.and_hms_opt(10, 0, 0).unwrap().and_utc();
    let (status, body) = post(
        &format!("{}/api/v1/appointments", sys.appointments().url()),
        Some(&nurse),
        &json!({
            "patientName": patient, "doctorId": doctor, "startsAt": starts.to_rfc3339(),
            "durationMinutes": 30, "reason": "review",
        }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

async fn offboard(sys: &System, token: &str, user: Uuid, policy: &str) -> (u16, Value) {
    post(
        &format!(
            "{}/api/v1/auth/admin/users/{user}/offboarding",
            sys.auth.url()
        ),
        Some(token),
        &json!({"reason": "left the clinic", "policy": policy}),
    )
    .await
}

/// Polls the saga until `done` holds for it; returns it.
async fn saga_until(
    sys: &System,
    token: &str,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    poll_until(SETTLE, what, || async {
        let (status, body) = get(
            &format!("{}/api/v1/auth/admin/offboardings/{id}", sys.auth.url()),
            Some(token),
        )
        .await;
        (status == 200 && done(&body)).then_some(body)
    })
    .await
}

fn steps(saga: &Value) -> Vec<String> {
    saga["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap().to_owned())
        .collect()
}

/// A queue of the test's own bound to every appointment event, declared before anything moves.
async fn appointment_events(sb: &Sandbox) -> (lapin::Connection, lapin::Channel, String) {
    let conn = platform::amqp::connect(&sb.amqp_url, "test listener")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    platform::amqp::declare(&ch, &topology::control_declarations())
        .await
        .unwrap();
    let queue = format!("test.appointment-events.{}", Uuid::now_v7());
    ch.queue_declare(
        &queue,
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        &queue,
        topology::APPOINTMENT_EXCHANGE,
        "appointment.#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    (conn, ch, queue)
}

/// Takes `n` messages from `queue` (failing after the settle time), then checks none follows
/// for a moment.
async fn take(ch: &lapin::Channel, queue: &str, n: usize) -> Vec<Value> {
    let mut consumer = ch
        .basic_consume(
            queue,
            "test",
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let delivery = tokio::time::timeout(SETTLE, consumer.next())
            .await
            .expect("an appointment event in time")
            .unwrap()
            .unwrap();
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        out.push(serde_json::from_slice(&delivery.data).unwrap());
    }
    let extra = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(extra.is_err(), "more appointment events than appointments");
    out
}

#[tokio::test]
async fn an_offboarding_gets_both_receipts_and_reassigns_where_a_doctor_is_free_else_cancels() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .auth_with(quick)
        .users()
        .account("leaving.doctor@clinic.test", Role::Doctor)
        .account("staying.doctor@clinic.test", Role::Doctor)
        .backfilled()
        .start()
        .await;
    let (leaving, staying) = (sys.accounts[0], sys.accounts[1]);
    let (_conn, ch, events) = appointment_events(&sb).await;
    let movable = book(&sb, &sys, leaving, "Tendai Moyo", 2).await;
    let stuck = book(&sb, &sys, leaving, "Rudo Banda", 3).await;
    // The staying doctor is busy at the second slot: nobody can take it.
    book(&sb, &sys, staying, "Farai Dube", 3).await;
    let token = sys.admin_token().await;

    let asked = std::time::Instant::now();
    let (status, started) = offboard(&sys, &token, leaving, "reassign").await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let saga = saga_until(&sys, &token, &id, "the offboarding finished", |s| {
        s["finishedAt"].is_string()
    })
    .await;
    println!(
        "offboarding finished in {:.2}s: {}",
        asked.elapsed().as_secs_f64(),
        serde_json::to_string_pretty(&saga["steps"]).unwrap()
    );
    assert_eq!(saga["state"], "needs-attention", "{saga}");
    let receipts = saga["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 2, "{saga}");
    assert!(receipts.iter().all(|r| r["current"] == true), "{saga}");
    let st = steps(&saga);
    for expected in [
        "started",
        "deactivated",
        "receipt",
        "command-sent",
        "resolved",
    ] {
        assert!(st.iter().any(|s| s == expected), "{expected} in {st:?}");
    }
    let outcome = saga["appointments"].as_array().unwrap();
    let of = |id: Uuid| {
        outcome
            .iter()
            .find(|a| a["appointmentId"] == id.to_string())
            .unwrap_or_else(|| panic!("{id} in {saga}"))
    };
    assert_eq!(of(movable)["resolution"], "reassigned");
    assert_eq!(of(movable)["doctorId"], staying.to_string());
    assert_eq!(of(stuck)["resolution"], "cancelled-no-doctor-free");
    assert_eq!(of(stuck)["patientName"], "Rudo Banda");

    // The appointments as the appointment-service holds them.
    let rows: Vec<(Uuid, Uuid, String, i64)> = sqlx::query_as(
        "SELECT id, doctor_id, status, version FROM appointments WHERE id = ANY($1)",
    )
    .bind(vec![movable, stuck])
    .fetch_all(sys.appointment_db())
    .await
    .unwrap();
    for (id, doctor, status, _) in &rows {
        match *id == movable {
            true => assert_eq!((doctor, status.as_str()), (&staying, "booked")),
            false => assert_eq!(status, "cancelled"),
        }
    }
    // One event per appointment, each naming the patient, no (appointment, version) twice.
    let published = take(&ch, &events, 2).await;
    let mut seen = HashSet::new();
    for event in &published {
        let p = &event["payload"];
        assert!(seen.insert((
            p["appointmentId"].to_string(),
            p["appointmentVersion"].to_string()
        )));
        assert!(p["patientName"].is_string(), "{event}");
        assert_eq!(p["offboardingId"], id.as_str());
    }
    let types: HashSet<_> = published
        .iter()
        .map(|e| e["eventType"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        HashSet::from([
            "appointment.reassigned".into(),
            "appointment.cancelled".into()
        ])
    );

    // Propagation shows the deactivation confirmed by both.
    let (status, propagation) = get(
        &format!(
            "{}/api/v1/auth/admin/users/{leaving}/propagation",
            sys.auth.url()
        ),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200, "{propagation}");
    assert_eq!(propagation["isActive"], false);
    assert!(propagation["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["current"] == true && c["delaySeconds"].is_number()));
}

#[tokio::test]
async fn two_requests_at_once_make_one_saga_and_the_cancel_policy_completes_it() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .auth_with(quick)
        .users()
        .account("leaving.doctor@clinic.test", Role::Doctor)
        .backfilled()
        .start()
        .await;
    let leaving = sys.accounts[0];
    let booked = book(&sb, &sys, leaving, "Chipo Ncube", 2).await;
    let token = sys.admin_token().await;

    let (a, b) = tokio::join!(
        offboard(&sys, &token, leaving, "cancel"),
        offboard(&sys, &token, leaving, "cancel")
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 202], "{} {}", a.1, b.1);
    assert_eq!(a.1["id"], b.1["id"]);
    let sagas: i64 = sqlx::query_scalar("SELECT count(*) FROM offboardings")
        .fetch_one(&sys.auth_db)
        .await
        .unwrap();
    assert_eq!(sagas, 1);

    let id = a.1["id"].as_str().unwrap();
    let saga = saga_until(&sys, &token, id, "the offboarding completed", |s| {
        s["state"] == "completed"
    })
    .await;
    assert_eq!(saga["appointments"][0]["appointmentId"], booked.to_string());
    assert_eq!(saga["appointments"][0]["resolution"], "cancelled");
    // Finished, it cannot be cancelled; a new request starts a new one.
    let (status, body) = post(
        &format!(
            "{}/api/v1/auth/admin/offboardings/{id}/cancel",
            sys.auth.url()
        ),
        Some(&token),
        &json!({}),
    )
    .await;
    sandbox::http::assert_json_error(status, &body, 409);
}

#[tokio::test]
async fn a_stopped_consumer_makes_the_saga_send_again_then_stall_and_it_completes_on_return() {
    let sb = Sandbox::for_test().await;
    let mut sys = System::builder(&sb)
        .auth_with(quick)
        .users()
        .account("leaving.doctor@clinic.test", Role::Doctor)
        .backfilled()
        .start()
        .await;
    let leaving = sys.accounts[0];
    book(&sb, &sys, leaving, "Nyasha Phiri", 2).await;
    let token = sys.admin_token().await;
    sys.appointments.take().unwrap().stop().await.unwrap();

    let (status, started) = offboard(&sys, &token, leaving, "cancel").await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let stalled = saga_until(&sys, &token, &id, "the offboarding stalled", |s| {
        s["stalledReason"].is_string()
    })
    .await;
    assert_eq!(stalled["state"], "awaiting-receipts");
    assert!(
        stalled["stalledReason"]
            .as_str()
            .unwrap()
            .contains("appointment-service"),
        "{stalled}"
    );
    let st = steps(&stalled);
    assert_eq!(st.iter().filter(|s| *s == "resent").count(), 2, "{st:?}");
    assert!(st.iter().any(|s| s == "stalled"), "{st:?}");
    // Visible in the list of stalled ones and as a metric.
    let (_, list) = get(
        &format!(
            "{}/api/v1/auth/admin/offboardings?status=stalled",
            sys.auth.url()
        ),
        Some(&token),
    )
    .await;
    assert_eq!(list["items"][0]["id"], id.as_str(), "{list}");

    let _back = appointments::start_connected(appointments::config(&sb)).await;
    let done = saga_until(&sys, &token, &id, "the offboarding completed", |s| {
        s["state"] == "completed"
    })
    .await;
    assert!(done["stalledReason"].is_null(), "{done}");
    assert_eq!(done["appointments"][0]["resolution"], "cancelled");
}

#[tokio::test]
async fn cancelling_before_any_appointment_changed_reactivates_the_doctor_and_clears_the_flags() {
    let sb = Sandbox::for_test().await;
    let mut sys = System::builder(&sb)
        .auth_with(quick)
        .users()
        .account("leaving.doctor@clinic.test", Role::Doctor)
        .backfilled()
        .start()
        .await;
    let leaving = sys.accounts[0];
    let booked = book(&sb, &sys, leaving, "Tawanda Sibanda", 2).await;
    let token = sys.admin_token().await;
    // The user-service never confirms: the saga waits for it, and the command is never sent.
    sys.users.take().unwrap().stop().await.unwrap();

    let (_, started) = offboard(&sys, &token, leaving, "reassign").await;
    let id = started["id"].as_str().unwrap().to_owned();
    let status_of = || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM appointments WHERE id = $1")
            .bind(booked)
            .fetch_one(sys.appointment_db())
            .await
            .unwrap()
    };
    poll_until(SETTLE, "the appointment flagged", || async {
        (status_of().await == "needs_reassignment").then_some(())
    })
    .await;

    let (status, cancelled) = post(
        &format!(
            "{}/api/v1/auth/admin/offboardings/{id}/cancel",
            sys.auth.url()
        ),
        Some(&token),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["state"], "cancelled");
    let (active, version): (bool, i64) =
        sqlx::query_as("SELECT is_active, user_version FROM users WHERE id = $1")
            .bind(leaving)
            .fetch_one(&sys.auth_db)
            .await
            .unwrap();
    assert!(active);
    assert_eq!(version, started["targetVersion"].as_i64().unwrap() + 1);
    poll_until(SETTLE, "the flag cleared", || async {
        (status_of().await == "booked").then_some(())
    })
    .await;
    let (status, body) = post(
        &format!(
            "{}/api/v1/auth/admin/offboardings/{id}/cancel",
            sys.auth.url()
        ),
        Some(&token),
        &json!({}),
    )
    .await;
    sandbox::http::assert_json_error(status, &body, 409);
}

#[tokio::test]
async fn a_receipt_published_by_another_broker_user_is_ignored() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .users()
        .account("someone@clinic.test", Role::Nurse)
        .start()
        .await;
    let user = sys.accounts[0];
    let recorded = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT user_version FROM consumer_versions WHERE consumer = 'user-service' \
             AND user_id = $1",
        )
        .bind(user)
        .fetch_optional(&sys.auth_db)
        .await
        .unwrap()
    };
    // The user-service's own receipt of the account first.
    poll_until(SETTLE, "the user-service's receipt", || async {
        (recorded().await == Some(1)).then_some(())
    })
    .await;
    let (intruder, url) = sb.extra_broker_user("intruder").await.unwrap();
    let forged = Receipt {
        consumer: topology::USER_SERVICE.into(),
        applied_at: Timestamp::now(),
        users: vec![ReceiptEntry {
            user_id: UserId(user),
            user_version: 999,
            changed_at: Timestamp::now(),
        }],
    };
    let properties = platform::amqp::message_properties(
        &Uuid::now_v7().to_string(),
        RECEIPT_TYPE,
        topology::USER_SERVICE,
        &intruder,
    );
    let conn = platform::amqp::connect(&url, "intruder").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    platform::amqp::publish_confirmed(
        &ch,
        vec![platform::amqp::Outgoing {
            exchange: topology::CONTROL_EXCHANGE,
            routing_key: &topology::receipt_key(topology::USER_SERVICE),
            body: &serde_json::to_vec(&forged).unwrap(),
            properties,
        }],
    )
    .await
    .require_all()
    .unwrap();
    // Set aside into the control queue's dead letters, never recorded.
    let dlq = ControlQueue::of(topology::AUTH_SERVICE).dead_letter;
    poll_until(SETTLE, "the forged receipt set aside", || async {
        (platform::amqp::ready_messages(&sb.amqp_url, &dlq)
            .await
            .ok()?
            == 1)
            .then_some(())
    })
    .await;
    assert_eq!(recorded().await, Some(1));
}

#[tokio::test]
async fn portal_offboard_prints_the_steps_and_exits_0_when_completed_1_when_stalled() {
    let sb = Sandbox::for_test().await;
    let mut sys = System::builder(&sb)
        .auth_with(quick)
        .users()
        .account("cli.leaving@clinic.test", Role::Doctor)
        .account("cli.stalling@clinic.test", Role::Doctor)
        .backfilled()
        .gateway()
        .start()
        .await;
    book(&sb, &sys, sys.accounts[0], "Kudzai Mutasa", 2).await;
    sandbox::auth::create_user(&sys.auth_db, "cli.admin@clinic.test", Role::Admin).await;
    let gateway = sys.gateway().url();
    let offboard = |email: &'static str| {
        let gateway = gateway.clone();
        let sb = &sb;
        async move {
            crate::cli::portal_cli(
                sb,
                &[
                    "offboard",
                    email,
                    "--policy",
                    "cancel",
                    "--reason",
                    "moved away",
                    "--wait",
                ],
                &gateway,
                "cli.admin@clinic.test",
            )
            .await
        }
    };
    let (code, out) = offboard("cli.leaving@clinic.test").await;
    assert_eq!(code, 0, "{out}");
    for expected in [
        "deactivated",
        "receipt",
        "user-service",
        "appointment-service",
        "command-sent",
        "Kudzai Mutasa",
        "state: completed",
    ] {
        assert!(out.contains(expected), "{expected} in {out}");
    }

    sys.appointments.take().unwrap().stop().await.unwrap();
    let (code, out) = offboard("cli.stalling@clinic.test").await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stalled"), "{out}");
    assert!(out.contains("appointment-service"), "{out}");
}

#[tokio::test]
async fn a_deactivation_a_required_consumer_has_not_confirmed_in_time_shows_in_the_alerts_metric() {
    let sb = Sandbox::for_test().await;
    let mut sys = System::builder(&sb)
        .auth_with(|c| c.receipt_alert_after = Duration::from_secs(1))
        .users()
        .account("leaves.quietly@clinic.test", Role::Nurse)
        .backfilled()
        .start()
        .await;
    let user = sys.accounts[0];
    sys.users.take().unwrap().stop().await.unwrap();
    let token = sys.admin_token().await;
    let (status, body) = post(
        &format!(
            "{}/api/v1/auth/admin/users/{user}/deactivate",
            sys.auth.url()
        ),
        Some(&token),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let scrape = || async {
        reqwest::get(format!("{}/metrics", sys.auth.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let line = |text: &str, consumer: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("portal_unconfirmed_deactivations")
                    && l.contains(&format!("consumer=\"{consumer}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_owned())
    };
    // The appointment-service confirms; the stopped user-service does not, and after a second
    // the deactivation counts against it.
    let text = poll_until(SETTLE, "the unconfirmed deactivation counted", || async {
        let text = scrape().await;
        (line(&text, "user-service").as_deref() == Some("1")).then_some(text)
    })
    .await;
    assert_eq!(
        line(&text, "appointment-service").as_deref(),
        Some("0"),
        "{text}"
    );
}
