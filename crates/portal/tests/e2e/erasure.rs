//! Erasure across the whole system (issue 30): a clinician with unmistakable name, email and
//! phone, changed a few times, booked, offboarded and erased with `portal users erase` — then no
//! database dump and no queue holds any of it, `portal erasure verify` exits 0, their
//! appointments are still listed under "former clinician", a consumer added afterwards is
//! backfilled with tombstones only, and a late `user.updated` from before the erasure changes
//! nothing.

use crate::cli::{portal_cli, portal_output};
use crate::offboarding::book;
use contract::api::{CreateUserRequest, UpdateUserRequest};
use contract::{Role, UserId};
use lapin::options::BasicGetOptions;
use sandbox::http::{get, post};
use sandbox::{appointments, auth, poll_until, ApiClient, Sandbox, System, SETTLE, TEST_PASSWORD};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const EMAIL: &str = "zebulonia.quixwortham@erasure.test";
/// Their email before a change: texts written then must lose it too.
const OLD_EMAIL: &str = "z.quixwortham@erasure.test";
const FIRST: &str = "Zebulonia";
const LAST: &str = "Quixwortham";
const PHONES: [&str; 2] = ["+44 7700 900481", "+44 7700 900482"];

/// Every form in which the person's data could be written down.
fn traces() -> Vec<String> {
    let mut t = vec![
        EMAIL.to_owned(),
        OLD_EMAIL.to_owned(),
        FIRST.to_owned(),
        LAST.to_owned(),
    ];
    for phone in PHONES {
        t.push(phone.to_owned());
        t.push(phone.chars().filter(char::is_ascii_digit).collect());
    }
    t
}

/// The traces of the person in `text` (case-insensitive).
fn found_in(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    traces()
        .into_iter()
        .filter(|t| lower.contains(&t.to_lowercase()))
        .collect()
}

/// `pg_dump` of the sandbox's database `name`: schema and every row.
async fn dump(sb: &Sandbox, name: &str) -> String {
    let out = tokio::process::Command::new("pg_dump")
        .arg("--no-owner")
        .arg(sb.database_url(name))
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .await
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every message of every queue of the sandbox's vhost, read and put back (the channel closes
/// without acking): (queue, body).
async fn every_message(sb: &Sandbox) -> Vec<(String, String)> {
    let conn = platform::amqp::connect(&sb.amqp_url, "test reader")
        .await
        .unwrap();
    let mut out = Vec::new();
    for queue in sb.management.queues(&sb.vhost).await.unwrap() {
        let ch = conn.create_channel().await.unwrap();
        while let Some(m) = ch
            .basic_get(&queue, BasicGetOptions { no_ack: false })
            .await
            .unwrap()
        {
            out.push((
                queue.clone(),
                String::from_utf8_lossy(&m.delivery.data).into_owned(),
            ));
        }
        let _ = ch.close(200, "read").await;
    }
    let _ = conn.close(200, "read").await;
    out
}

/// Waits until both copies hold `id` at `version` or later.
async fn copies_at(sys: &System, id: Uuid, version: i64, what: &str) {
    poll_until(SETTLE, what, || async {
        let user: Option<i64> = sqlx::query_scalar("SELECT user_version FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(sys.user_db())
            .await
            .unwrap()
            .flatten();
        let clinician: Option<i64> =
            sqlx::query_scalar("SELECT user_version FROM clinicians WHERE id = $1")
                .bind(id)
                .fetch_optional(sys.appointment_db())
                .await
                .unwrap()
                .flatten();
        (user >= Some(version) && clinician >= Some(version)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_erased_clinician_leaves_no_personal_data_in_any_database_or_queue() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .auth_with(|c| {
            c.offboarding.poll = Duration::from_millis(50);
        })
        .users()
        .appointments()
        .account("colleague.doctor@erasure.test", Role::Doctor)
        .backfilled()
        .start()
        .await;
    let url = sys.auth.url();
    auth::create_user(&sys.auth_db, "ops-admin@erasure.test", Role::Admin).await;
    let admin = ApiClient::new(&url)
        .unwrap()
        .logged_in("ops-admin@erasure.test", TEST_PASSWORD)
        .await
        .unwrap();

    // The person, changed a few times.
    let created = admin
        .create_user(&CreateUserRequest {
            email: OLD_EMAIL.into(),
            first_name: FIRST.into(),
            last_name: LAST.into(),
            role: "doctor".into(),
            phone_number: Some(PHONES[0].into()),
        })
        .await
        .unwrap();
    let id = created.user.user_id.0;
    // A wrong password under the old email: the login throttle keeps rows keyed by it.
    let (status, _) = post(
        &format!("{url}/api/v1/auth/login"),
        None,
        &json!({"email": OLD_EMAIL, "password": "not their password"}),
    )
    .await;
    assert_eq!(status, 401);
    admin
        .update_user(
            id,
            &UpdateUserRequest {
                email: Some(EMAIL.into()),
                phone_number: Some(Some(PHONES[1].into())),
                ..UpdateUserRequest::default()
            },
        )
        .await
        .unwrap();
    admin.set_role(id, "consultant").await.unwrap();
    let changed = admin.set_role(id, "doctor").await.unwrap();
    copies_at(
        &sys,
        id,
        changed.user_version.unwrap(),
        "the changes in both copies",
    )
    .await;

    // A backup taken now holds a user.updated of the person, to be replayed late.
    let (old_update,): (String,) = sqlx::query_as(
        "SELECT body::text FROM event_store WHERE user_id = $1 AND event_type = 'user.updated' \
         ORDER BY seq LIMIT 1",
    )
    .bind(id)
    .fetch_one(&sys.auth_db)
    .await
    .unwrap();
    assert!(
        !found_in(&old_update).is_empty(),
        "the backup holds their data"
    );

    // Two appointments with them, and a message about them a consumer could not read, waiting
    // in both dead-letter queues.
    let appointments = [
        book(&sb, &sys, id, "Patient One", 2).await,
        book(&sb, &sys, id, "Patient Two", 3).await,
    ];
    let mut unreadable: Value = serde_json::from_str(&old_update).unwrap();
    unreadable["version"] = json!("9.0");
    let user_queues = sandbox::users::queues();
    let appointment_queues = appointments::queues();
    for queue in [&user_queues.main, &appointment_queues.main] {
        sandbox::amqp::publish_to_queue(
            &sb.amqp_url,
            queue,
            &[serde_json::to_vec(&unreadable).unwrap()],
        )
        .await
        .unwrap();
    }
    poll_until(
        SETTLE,
        "the unreadable message dead-lettered twice",
        || async {
            let a = sandbox::users::depth(&sb, &user_queues.dead_letter).await;
            let b = sandbox::users::depth(&sb, &appointment_queues.dead_letter).await;
            (a == 1 && b == 1).then_some(())
        },
    )
    .await;

    // Offboarded (their appointments cancelled), then erased by the operator.
    let token = sys.admin_token().await;
    let (status, saga) = post(
        &format!("{url}/api/v1/auth/admin/users/{id}/offboarding"),
        Some(&token),
        &json!({"reason": "left the clinic", "policy": "cancel"}),
    )
    .await;
    assert_eq!(status, 202, "{saga}");
    let saga_id = saga["id"].as_str().unwrap().to_owned();
    poll_until(SETTLE, "the offboarding finished", || async {
        let (status, body) = get(
            &format!("{url}/api/v1/auth/admin/offboardings/{saga_id}"),
            Some(&token),
        )
        .await;
        (status == 200 && body["finishedAt"].is_string()).then_some(())
    })
    .await;
    let (code, out) = portal_cli(
        &sb,
        &[
            "users",
            "erase",
            EMAIL,
            "--reason",
            "erasure request, ticket 4711",
            "--yes",
        ],
        &url,
        "ops-admin@erasure.test",
    )
    .await;
    println!("portal users erase:\n{out}");
    assert_eq!(code, 0, "{out}");
    let erasure = admin.erasure_of(id).await.unwrap();
    assert!(erasure.queues_purged_at.is_some(), "{erasure:?}");
    copies_at(&sys, id, erasure.user_version, "the erasure in both copies").await;

    // The verifier finds nothing.
    let (code, out) = portal_output(&sb, &["erasure", "verify", &id.to_string()]).await;
    println!("portal erasure verify:\n{out}");
    assert_eq!(code, 0, "{out}");

    // Nor does a dump of every database, nor a read of every queue.
    for db in ["auth", "user", "appointment"] {
        let text = dump(&sb, db).await;
        assert!(found_in(&text).is_empty(), "{db}: {:?}", found_in(&text));
    }
    for (queue, body) in every_message(&sb).await {
        assert!(found_in(&body).is_empty(), "{queue}: {body}");
    }

    // The appointments stay, under the pseudonymous id, with a former clinician.
    let nurse = appointments::token_for(&sb, Uuid::now_v7(), Role::Nurse);
    for appointment in appointments {
        let (status, body) = get(
            &format!(
                "{}/api/v1/appointments/{appointment}",
                sys.appointments().url()
            ),
            Some(&nurse),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["doctorId"], id.to_string(), "{body}");
        assert_eq!(body["doctorName"], "former clinician", "{body}");
    }
    // The directory no longer knows them.
    let (status, _) = get(
        &format!("{}/api/v1/users/{id}", sys.users().url()),
        Some(&sandbox::users::token(&sb, Role::Nurse)),
    )
    .await;
    assert_eq!(status, 404);

    // A consumer added now is backfilled with tombstones only.
    let (code, out) = portal_output(&sb, &["consumer", "add", "archive", "--optional"]).await;
    assert_eq!(code, 0, "{out}");
    let backfilled: Vec<Value> = every_message(&sb)
        .await
        .into_iter()
        .filter(|(queue, _)| queue.starts_with("archive."))
        .map(|(_, body)| serde_json::from_str(&body).unwrap())
        .collect();
    let theirs: Vec<&Value> = backfilled
        .iter()
        .filter(|e| e["payload"]["userId"] == id.to_string())
        .collect();
    assert!(!theirs.is_empty(), "the backfill sends their history");
    for event in &theirs {
        assert!(event["payload"]["erasedAt"].is_string(), "{event}");
        assert!(found_in(&event.to_string()).is_empty(), "{event}");
    }

    // A late user.updated from the backup changes nothing, in either copy.
    for queue in [&user_queues.main, &appointment_queues.main] {
        sandbox::amqp::publish_to_queue(&sb.amqp_url, queue, &[old_update.clone().into_bytes()])
            .await
            .unwrap();
    }
    // A change of another user after it: once both copies have that, they had the late one.
    let colleague = sys.accounts[0];
    let marker = admin
        .update_user(
            colleague,
            &UpdateUserRequest {
                last_name: Some("Afterwards".into()),
                ..UpdateUserRequest::default()
            },
        )
        .await
        .unwrap();
    copies_at(
        &sys,
        colleague,
        marker.user_version.unwrap(),
        "the marker in both copies",
    )
    .await;
    let (email, erased, version): (String, bool, i64) = sqlx::query_as(
        "SELECT email, erased_at IS NOT NULL, user_version FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_one(sys.user_db())
    .await
    .unwrap();
    assert_eq!(
        (email.as_str(), erased, version),
        (
            contract::erasure::email(UserId(id)).as_str(),
            true,
            erasure.user_version
        )
    );
    let (first, erased): (String, bool) =
        sqlx::query_as("SELECT first_name, erased_at IS NOT NULL FROM clinicians WHERE id = $1")
            .bind(id)
            .fetch_one(sys.appointment_db())
            .await
            .unwrap();
    assert_eq!(
        (first.as_str(), erased),
        (contract::erasure::FIRST_NAME, true)
    );

    // Nothing changes an erased person again.
    let (status, body) = post(
        &format!("{url}/api/v1/auth/admin/users/{id}/activate"),
        Some(&token),
        &json!({}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn only_a_deactivated_person_can_be_erased_and_only_by_an_admin() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .account("still.here@erasure.test", Role::Nurse)
        .start()
        .await;
    let url = sys.auth.url();
    let person = sys.accounts[0];
    let token = sys.admin_token().await;
    let erase = |token: String, reason: &'static str| {
        let url = url.clone();
        async move {
            post(
                &format!("{url}/api/v1/auth/admin/users/{person}/erasure"),
                Some(&token),
                &json!({ "reason": reason }),
            )
            .await
        }
    };
    let (status, body) = erase(token.clone(), "asked").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("still active"),
        "{body}"
    );

    let nurse = auth::login(&url, "still.here@erasure.test", TEST_PASSWORD).await;
    let (status, _) = erase(nurse, "asked").await;
    assert_eq!(status, 403);

    let (status, _) = post(
        &format!("{url}/api/v1/auth/admin/users/{person}/deactivate"),
        Some(&token),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = erase(token.clone(), "").await;
    assert_eq!((status, &body["field"]), (422, &json!("reason")), "{body}");
    let (status, first) = erase(token.clone(), "asked in writing").await;
    assert_eq!(status, 200, "{first}");
    // Asked again: the same erasure, nothing done twice.
    let (status, again) = erase(token.clone(), "asked again").await;
    assert_eq!((status, &again), (200, &first));
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM event_store WHERE user_id = $1 AND event_type = 'user.erased'",
    )
    .bind(person)
    .fetch_one(&sys.auth_db)
    .await
    .unwrap();
    assert_eq!(events, 1);
}
