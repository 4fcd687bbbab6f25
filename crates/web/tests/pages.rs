//! The portal's pages over HTTP, as a browser without JavaScript uses them: redirects to the
//! login and back, the session cookie, CSRF, one message for every failed login, the
//! appointment form's Doctor list (every active doctor, never an empty list when the directory
//! is down), booking with the values kept on an error, the list, logout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{seeded_doctors, Browser, Portal, ADMIN_EMAIL, ADMIN_PASSWORD};
use sandbox::http::doctor_options;

#[tokio::test]
async fn a_visitor_is_sent_to_login_and_back_to_the_page_asked_for() {
    let portal = Portal::start().await;
    let mut browser = Browser::new();
    let page = browser.get(&portal.url("/appointments/new")).await;
    assert_eq!(page.status, 303);
    assert_eq!(
        page.location.as_deref(),
        Some("/login?next=/appointments/new")
    );

    let login = browser
        .get(&portal.url("/login?next=/appointments/new"))
        .await;
    assert_eq!(login.status, 200);
    for needle in [
        r#"<label for="email">Email</label>"#,
        r#"<label for="password">Password</label>"#,
        r#"<button type="submit">Log in</button>"#,
    ] {
        assert!(login.body.contains(needle), "{needle} in {}", login.body);
    }
    let csrf = login.csrf();
    // No CSRF token: refused with a page, not processed.
    let forged = browser
        .post(
            &portal.url("/login"),
            &[("email", ADMIN_EMAIL), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(forged.status, 403);
    assert!(
        forged.body.contains("did not come from this site"),
        "{}",
        forged.body
    );
    // Wrong password and unknown email: the same one message.
    let mut messages = Vec::new();
    for (email, password) in [
        (ADMIN_EMAIL, "not the password"),
        ("nobody@clinic.co.zw", "x"),
    ] {
        let page = browser
            .post(
                &portal.url("/login"),
                &[
                    ("csrf", &csrf),
                    ("email", email),
                    ("password", password),
                    ("next", "/"),
                ],
            )
            .await;
        assert_eq!(page.status, 401);
        let start = page.body.find("role=\"alert\"").unwrap();
        messages.push(page.body[start..start + 120].to_owned());
    }
    assert_eq!(messages[0], messages[1]);

    let signed_in = browser
        .post(
            &portal.url("/login"),
            &[
                ("csrf", &csrf),
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("next", "/appointments/new"),
            ],
        )
        .await;
    assert_eq!(signed_in.status, 303);
    assert_eq!(signed_in.location.as_deref(), Some("/appointments/new"));
    let form = browser.get(&portal.url("/appointments/new")).await;
    assert_eq!(form.status, 200);
    assert_eq!(
        doctor_options(&form.body),
        seeded_doctors(&portal.auth_db).await
    );
    assert_eq!(doctor_options(&form.body).len(), 6);
    assert!(form
        .body
        .contains(r#"<label for="doctorId">Doctor</label>"#));
    // The old CSRF token died with the visitor's session.
    assert_ne!(form.csrf(), csrf);

    let home = browser.get(&portal.url("/")).await;
    assert!(home.body.contains("Signed in as"), "{}", home.body);
    assert_eq!(browser.get(&portal.url("/no/such/page")).await.status, 404);

    let logout = browser
        .post(&portal.url("/logout"), &[("csrf", &home.csrf())])
        .await;
    assert_eq!(logout.location.as_deref(), Some("/login?signed_out=1"));
    assert_eq!(browser.get(&portal.url("/")).await.status, 303);
}

#[tokio::test]
async fn booking_keeps_the_values_on_an_error_and_confirms_with_the_doctor_and_time() {
    let portal = Portal::start().await;
    let mut browser = Browser::new();
    assert_eq!(
        browser
            .log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD)
            .await
            .status,
        303
    );
    let form = browser.get(&portal.url("/appointments/new")).await;
    let doctor_id = {
        let start = form.body.find(r#"<option value=""#).unwrap();
        let rest = &form.body[start..];
        // The first option is "Choose a doctor" (empty value); take the second.
        let second = rest[1..].find(r#"<option value=""#).unwrap() + 1;
        let value = &rest[second + r#"<option value=""#.len()..];
        value[..value.find('"').unwrap()].to_owned()
    };
    let date = (chrono::Utc::now() + chrono::Duration::days(3))
        .format("%Y-%m-%d")
        .to_string();
    let missing_patient = browser
        .post(
            &portal.url("/appointments/new"),
            &[
                ("csrf", &form.csrf()),
                ("patientName", ""),
                ("doctorId", &doctor_id),
                ("date", &date),
                ("time", "09:30"),
                ("durationMinutes", "45"),
                ("reason", "Blood pressure review"),
            ],
        )
        .await;
    assert_eq!(missing_patient.status, 422);
    let body = &missing_patient.body;
    assert!(
        body.contains("Enter the patient&#39;s name.")
            || body.contains("Enter the patient's name."),
        "{body}"
    );
    assert!(
        body.contains(&format!(r#"value="{doctor_id}" selected"#)),
        "doctor kept: {body}"
    );
    assert!(body.contains(&format!(r#"value="{date}""#)), "date kept");
    assert!(body.contains(r#"value="09:30""#) && body.contains(r#"value="45""#));
    assert!(body.contains("Blood pressure review"), "reason kept");

    let booked = browser
        .post(
            &portal.url("/appointments/new"),
            &[
                ("csrf", &form.csrf()),
                ("patientName", "Rudo Mhlanga"),
                ("doctorId", &doctor_id),
                ("date", &date),
                ("time", "09:30"),
                ("durationMinutes", "45"),
                ("reason", "Blood pressure review"),
            ],
        )
        .await;
    assert_eq!(booked.status, 303, "{}", booked.body);
    let confirmation = browser
        .get(&portal.url(booked.location.as_deref().unwrap()))
        .await;
    assert!(
        confirmation.body.contains("Booked: Rudo Mhlanga with Dr "),
        "{}",
        confirmation.body
    );
    assert!(confirmation.body.contains("09:30"), "{}", confirmation.body);

    // The same doctor at an overlapping time: refused, the form kept, the reason given.
    let clash = browser
        .post(
            &portal.url("/appointments/new"),
            &[
                ("csrf", &form.csrf()),
                ("patientName", "Tapiwa Nyathi"),
                ("doctorId", &doctor_id),
                ("date", &date),
                ("time", "10:00"),
                ("durationMinutes", "30"),
                ("reason", ""),
            ],
        )
        .await;
    assert_eq!(clash.status, 422);
    assert!(
        clash.body.contains("already has an appointment"),
        "{}",
        clash.body
    );
    assert!(clash.body.contains("Tapiwa Nyathi"));

    let list = browser.get(&portal.url("/appointments")).await;
    assert!(list.body.contains("Rudo Mhlanga") && list.body.contains("<th scope=\"col\">"));
    assert!(!list.body.contains("Tapiwa Nyathi"));
}

#[tokio::test]
async fn with_the_directory_down_the_form_says_so_and_shows_no_empty_list() {
    let mut portal = Portal::start().await;
    let mut browser = Browser::new();
    browser.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    portal.stop_directory().await;
    let page = browser.get(&portal.url("/appointments/new")).await;
    assert_eq!(page.status, 503);
    assert!(
        page.body.contains("staff directory cannot be reached"),
        "{}",
        page.body
    );
    assert!(page.body.contains(r#"href="/appointments/new""#), "a retry");
    assert!(
        !page.body.contains("<select"),
        "no Doctor list at all: {}",
        page.body
    );
    assert!(!page.body.to_lowercase().contains("panicked"));
}

/// A pharmacist sees no appointments (the appointment-service's default rule) and books none:
/// the pages say so in the signed-in layout, never an error page or a 500.
#[tokio::test]
async fn a_pharmacist_sees_no_appointments_and_may_not_book() {
    let portal = Portal::start().await;
    let mut browser = Browser::new();
    let pharmacist: String =
        sqlx::query_scalar("SELECT email FROM users WHERE role = 'pharmacist'")
            .fetch_one(&portal.auth_db)
            .await
            .unwrap();
    let signed_in = browser
        .log_in(&portal, &pharmacist, common::STAFF_PASSWORD)
        .await;
    assert_eq!(signed_in.status, 303);
    assert_eq!(
        browser.get(&portal.url("/appointments/new")).await.status,
        403
    );
    for path in [
        "/appointments".to_owned(),
        format!("/appointments/{}", uuid::Uuid::new_v4()),
    ] {
        let page = browser.get(&portal.url(&path)).await;
        assert_eq!(page.status, 403, "{path}: {}", page.body);
        assert!(
            page.body.contains(
                "A pharmacist does not see appointments at this clinic: doctors see their \
                 own, nurses and admins all of them."
            ),
            "{path}: {}",
            page.body
        );
        assert!(
            page.body.contains(r#"action="/logout""#),
            "{path}: still signed in, with the usual header: {}",
            page.body
        );
    }
    let home = browser.get(&portal.url("/")).await;
    assert!(!home.body.contains("/appointments/new"), "{}", home.body);
}

/// Every login passes through the portal, so the gateway's per-address limit must count the
/// person's address, not the portal's: one address hammering the login is stopped, a colleague
/// at another address logs in as usual.
#[tokio::test]
async fn the_login_limit_counts_each_persons_address_not_the_portals() {
    let portal = Portal::start_with(|gateway| {
        gateway.auth_rate_limit = gateway::AuthRateLimit {
            per_minute: 1,
            burst: 3,
        };
    })
    .await;
    let mut guesser = Browser::at("10.20.30.40");
    let form = guesser.get(&portal.url("/login")).await;
    let csrf = form.csrf();
    for _ in 0..4 {
        let page = guesser
            .post(
                &portal.url("/login"),
                &[
                    ("csrf", &csrf),
                    ("email", ADMIN_EMAIL),
                    ("password", "guess"),
                    ("next", "/"),
                ],
            )
            .await;
        assert_eq!(
            page.status, 401,
            "one message for every cause, the limit included"
        );
    }
    let mut colleague = Browser::at("10.20.30.41");
    let signed_in = colleague.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    // The guesser is limited even with the right password now.
    let limited = guesser
        .post(
            &portal.url("/login"),
            &[
                ("csrf", &csrf),
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("next", "/"),
            ],
        )
        .await;
    assert_eq!(limited.status, 401);
}

/// The session id before a login is worth nothing after it, and a logout ends the session on
/// the server: an old cookie replayed later is just a visitor's.
#[tokio::test]
async fn a_session_id_dies_at_login_and_at_logout() {
    let portal = Portal::start().await;
    let mut browser = Browser::new();
    browser.get(&portal.url("/login")).await;
    let before = browser.cookie.clone().expect("a visitor's cookie");
    browser.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let signed_in = browser.cookie.clone().expect("the signed-in cookie");
    assert_ne!(before, signed_in);

    let mut replayed = Browser::new();
    replayed.cookie = Some(before);
    assert_eq!(
        replayed.get(&portal.url("/")).await.status,
        303,
        "planted id not signed in"
    );

    let home = browser.get(&portal.url("/")).await;
    assert_eq!(home.status, 200);
    browser
        .post(&portal.url("/logout"), &[("csrf", &home.csrf())])
        .await;
    let mut after_logout = Browser::new();
    after_logout.cookie = Some(signed_in);
    let page = after_logout.get(&portal.url("/")).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/login?next=/&expired=1"));
}

/// A form posted with another session's CSRF token is refused and changes nothing.
#[tokio::test]
async fn a_booking_with_a_wrong_csrf_token_is_refused() {
    let portal = Portal::start().await;
    let mut browser = Browser::new();
    browser.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let page = browser
        .post(
            &portal.url("/appointments/new"),
            &[
                ("csrf", "forged-token"),
                ("patientName", "X"),
                ("doctorId", "x"),
            ],
        )
        .await;
    assert_eq!(page.status, 403);
    let page = browser
        .post(&portal.url("/account/password"), &[("newPassword", "x")])
        .await;
    assert_eq!(page.status, 403);
}

/// A new account must change its temporary password before anything else; then it can work.
#[tokio::test]
async fn a_new_doctor_changes_the_temporary_password_before_using_the_portal() {
    let portal = Portal::start().await;
    let admin = api_client::ApiClient::new(&portal.gateway().url())
        .unwrap()
        .logged_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .unwrap();
    let created = admin
        .create_user(&contract::api::CreateUserRequest {
            email: "new.doctor@clinic.co.zw".into(),
            first_name: "Nokuthula".into(),
            last_name: "Zulu".into(),
            role: "doctor".into(),
            phone_number: None,
        })
        .await
        .unwrap();
    let mut browser = Browser::new();
    let first = browser
        .log_in(
            &portal,
            "new.doctor@clinic.co.zw",
            &created.temporary_password,
        )
        .await;
    assert_eq!(first.location.as_deref(), Some("/account/password"));
    let blocked = browser.get(&portal.url("/appointments/new")).await;
    assert_eq!(blocked.location.as_deref(), Some("/account/password"));
    let form = browser.get(&portal.url("/account/password")).await;
    assert!(form.body.contains("Choose your own"), "{}", form.body);
    let csrf = form.csrf();
    let mismatch = browser
        .post(
            &portal.url("/account/password"),
            &[
                ("csrf", &csrf),
                ("currentPassword", &created.temporary_password),
                ("newPassword", "quiet night on ward seven"),
                ("confirmPassword", "something else entirely"),
            ],
        )
        .await;
    assert_eq!(mismatch.status, 422);
    let wrong = browser
        .post(
            &portal.url("/account/password"),
            &[
                ("csrf", &csrf),
                ("currentPassword", "not it"),
                ("newPassword", "quiet night on ward seven"),
                ("confirmPassword", "quiet night on ward seven"),
            ],
        )
        .await;
    assert!(
        wrong.body.contains("The current password is not right."),
        "{}",
        wrong.body
    );
    let changed = browser
        .post(
            &portal.url("/account/password"),
            &[
                ("csrf", &csrf),
                ("currentPassword", &created.temporary_password),
                ("newPassword", "quiet night on ward seven"),
                ("confirmPassword", "quiet night on ward seven"),
            ],
        )
        .await;
    assert_eq!(changed.location.as_deref(), Some("/"), "{}", changed.body);
    // The doctor can book now, with themselves only (once the new doctor is in both copies).
    let deadline = std::time::Instant::now() + sandbox::SETTLE;
    loop {
        let page = browser.get(&portal.url("/appointments/new")).await;
        if doctor_options(&page.body) == ["Dr Nokuthula Zulu"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new doctor, alone, in their Doctor list: {}",
            page.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `/admin/users`: the users of `auth_db` with a badge per user saying whether the directory
/// holds their latest version; filters; admins only.
#[tokio::test]
async fn the_admin_user_list_shows_each_users_sync_state_and_is_for_admins_only() {
    let portal = Portal::start().await;
    let mut admin = Browser::new();
    admin.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let deadline = std::time::Instant::now() + sandbox::SETTLE;
    let page = loop {
        let page = admin.get(&portal.url("/admin/users")).await;
        assert_eq!(page.status, 200);
        if page.body.matches("in sync").count() == 10 {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.body);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(page.body.contains("10 users") && !page.body.contains("syncing"));
    for label in [
        r#"<label for="role">Role</label>"#,
        r#"<label for="q">Name or email</label>"#,
    ] {
        assert!(page.body.contains(label), "{label}");
    }
    let doctors = admin
        .get(&portal.url("/admin/users?role=doctor&active=yes&q=&page=0"))
        .await;
    assert!(doctors.body.contains("6 users"), "{}", doctors.body);

    let nurse: String = sqlx::query_scalar("SELECT email FROM users WHERE role = 'nurse'")
        .fetch_one(&portal.auth_db)
        .await
        .unwrap();
    let mut browser = Browser::new();
    browser
        .log_in(&portal, &nurse, common::STAFF_PASSWORD)
        .await;
    assert_eq!(browser.get(&portal.url("/admin/users")).await.status, 403);
    assert!(!browser
        .get(&portal.url("/"))
        .await
        .body
        .contains("/admin/users"));
}

/// The page an admin watches: `/admin/sync` shows the outbox and each consumer's queue with its
/// consumer attached; a message the user-service can never apply appears with its reason and
/// goes back to its consumer with "Requeue"; an untrusted publisher's is marked as one that can
/// only be discarded, kept back by "Requeue" and removed by "Discard"; "Verify now" runs to its result for both copies;
/// one user's event trail. The same figures through the API, which a nurse may not read.
#[tokio::test]
async fn the_sync_page_shows_the_figures_requeues_dead_letters_and_verifies() {
    let portal = Portal::start().await;
    let mut admin = Browser::new();
    admin.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    sandbox::amqp::publish_to_queue(
        &portal.sb.amqp_url,
        "user-service.user-events",
        &[b"{ this is not json".to_vec()],
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + sandbox::SETTLE;
    let page = loop {
        let page = admin.get(&portal.url("/admin/sync")).await;
        assert_eq!(page.status, 200, "{}", page.body);
        if page.body.contains("Dead letters in") && page.body.contains("0 waiting") {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    for needle in [
        "user-service.user-events",
        "appointment-service.user-events",
        "not-json",
        "No verify has run",
        r#"<label for="user">Email or user id</label>"#,
        "Last receipt",
    ] {
        assert!(page.body.contains(needle), "{needle}: {}", page.body);
    }

    // Requeue: the message goes back to its consumer (which dead-letters it again: still not
    // JSON), and the page says how many went.
    let csrf = page.csrf();
    let done = admin
        .post(
            &portal.url("/admin/sync/requeue/user-service.user-events.dlq"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let back = done.location.unwrap();
    assert_eq!(
        back,
        "/admin/sync?requeued=1&from=user-service.user-events.dlq"
    );
    assert!(admin
        .get(&portal.url(&back))
        .await
        .body
        .contains("1 messages requeued"));
    let refused = admin
        .post(&portal.url("/admin/sync/requeue/users"), &[("csrf", &csrf)])
        .await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    let forged = admin
        .post(&portal.url("/admin/sync/verify"), &[("csrf", "forged")])
        .await;
    assert_eq!(forged.status, 403);

    // An untrusted publisher's message: marked, kept back by a requeue, gone with "Discard".
    let (stranger, stranger_url) = portal.sb.extra_broker_user("stranger").await.unwrap();
    sandbox::amqp::publish_one(
        &stranger_url,
        "user-service.user-events",
        b"{ \"forged\": true }",
        platform::amqp::persistent(&stranger),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + sandbox::SETTLE;
    let page = loop {
        let page = admin.get(&portal.url("/admin/sync")).await;
        if page.body.contains("Discard 1 untrusted") && page.body.contains("Requeue the other 1") {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        page.body.contains(&format!(
            "untrusted publisher &quot;{stranger}&quot;: can only be discarded"
        )),
        "{}",
        page.body
    );
    let done = admin
        .post(
            &portal.url("/admin/sync/requeue/user-service.user-events.dlq"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        done.location.as_deref(),
        Some("/admin/sync?requeued=1&kept=1&from=user-service.user-events.dlq"),
        "{}",
        done.body
    );
    let back = admin.get(&portal.url(&done.location.unwrap())).await;
    assert!(
        back.body.contains("1 kept back: untrusted publisher"),
        "{}",
        back.body
    );
    let done = admin
        .post(
            &portal.url("/admin/sync/discard/user-service.user-events.dlq"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(
        done.location.as_deref(),
        Some("/admin/sync?discarded=1&from=user-service.user-events.dlq"),
        "{}",
        done.body
    );
    let back = admin.get(&portal.url(&done.location.unwrap())).await;
    assert!(
        back.body.contains("1 untrusted messages discarded")
            && !back.body.contains("can only be discarded"),
        "{}",
        back.body
    );

    // Verify now, then its result for both copies.
    let started = admin
        .post(&portal.url("/admin/sync/verify"), &[("csrf", &csrf)])
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    let deadline = std::time::Instant::now() + sandbox::SETTLE;
    let verified = loop {
        let page = admin.get(&portal.url("/admin/sync")).await;
        if page.body.contains("Last run finished") {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "{}", page.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        verified.body.matches("10 users compared").count(),
        2,
        "{}",
        verified.body
    );

    // One user's trail from the event store.
    let trail = admin
        .get(&portal.url("/admin/sync?user=admin%40clinic.co.zw"))
        .await;
    assert!(trail.body.contains("user.created"), "{}", trail.body);
    let nobody = admin
        .get(&portal.url("/admin/sync?user=nobody%40clinic.co.zw"))
        .await;
    assert!(nobody.body.contains("No user with the email or id"));

    // The API behind it: an admin reads it; a nurse may not, nor the page.
    let api = api_client::ApiClient::new(&portal.gateway().url())
        .unwrap()
        .logged_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .unwrap();
    let status = api.sync_status().await.unwrap();
    assert!(status.unavailable.is_empty(), "{:?}", status.unavailable);
    let consumers = status.consumers.unwrap();
    assert!(consumers
        .iter()
        .all(|c| c.queue.consumers == Some(1) && c.queue.problem.is_none()));
    let nurse: String = sqlx::query_scalar("SELECT email FROM users WHERE role = 'nurse'")
        .fetch_one(&portal.auth_db)
        .await
        .unwrap();
    let as_nurse = api_client::ApiClient::new(&portal.gateway().url())
        .unwrap()
        .logged_in(&nurse, common::STAFF_PASSWORD)
        .await
        .unwrap();
    match as_nurse.sync_status().await {
        Err(api_client::Error::Refused { status, .. }) => assert_eq!(status.as_u16(), 403),
        other => panic!("a nurse read the sync status: {other:?}"),
    }
    let mut browser = Browser::new();
    browser
        .log_in(&portal, &nurse, common::STAFF_PASSWORD)
        .await;
    assert_eq!(browser.get(&portal.url("/admin/sync")).await.status, 403);

    // A part that is down is named on the 503 page, without any detail of the failure.
    let mut portal = portal;
    portal.stop_sync_admin().await;
    let down = admin.get(&portal.url("/admin/sync")).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert!(
        down.body
            .contains("Part of the system cannot be reached: sync-admin is unreachable"),
        "{}",
        down.body
    );
    assert!(!down.body.contains("127.0.0.1") && !down.body.contains("error sending"));
}

/// `/admin/users/{id}/edit`: a profile and a role are each saved as one versioned change that
/// reaches the directory; a refused change comes back with the values typed; an untouched form
/// writes nothing; the last active admin cannot be demoted.
#[tokio::test]
async fn an_admin_edits_a_profile_and_a_role() {
    let portal = Portal::start().await;
    let mut admin = Browser::new();
    admin.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let (id, email, last_name): (uuid::Uuid, String, String) =
        sqlx::query_as("SELECT id, email, last_name FROM users WHERE role = 'pharmacist'")
            .fetch_one(&portal.auth_db)
            .await
            .unwrap();
    let version = || async {
        sqlx::query_scalar::<_, i64>("SELECT user_version FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&portal.auth_db)
            .await
            .unwrap()
    };
    let list = admin
        .get(&portal.url(&format!("/admin/users?q={email}")))
        .await;
    let edit = format!("/admin/users/{id}/edit");
    assert!(
        list.body.contains(&format!(r#"href="{edit}""#)),
        "{}",
        list.body
    );
    let form = admin.get(&portal.url(&edit)).await;
    assert_eq!(form.status, 200);
    for label in [
        r#"<label for="email">Email</label>"#,
        r#"<label for="firstName">First name</label>"#,
        r#"<label for="role">Role</label>"#,
    ] {
        assert!(form.body.contains(label), "{label}");
    }
    let csrf = form.csrf();
    let before = version().await;

    let refused = admin
        .post(
            &portal.url(&edit),
            &[
                ("csrf", &csrf),
                ("email", "not an email"),
                ("firstName", "Tendai"),
                ("lastName", &last_name),
                ("phoneNumber", ""),
            ],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(refused.body.contains(r#"value="Tendai""#) && refused.body.contains("role=\"alert\""));
    assert_eq!(version().await, before);

    let saved = admin
        .post(
            &portal.url(&edit),
            &[
                ("csrf", &csrf),
                ("email", &email),
                ("firstName", "Tendai"),
                ("lastName", &last_name),
                ("phoneNumber", ""),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(
        saved.location.as_deref(),
        Some(format!("{edit}?saved=profile").as_str())
    );
    assert_eq!(version().await, before + 1);
    let role = admin
        .post(
            &portal.url(&format!("/admin/users/{id}/role")),
            &[("csrf", &csrf), ("role", "consultant")],
        )
        .await;
    assert_eq!(role.status, 303, "{}", role.body);
    assert_eq!(version().await, before + 2);
    let again = admin
        .post(
            &portal.url(&edit),
            &[
                ("csrf", &csrf),
                ("email", &email),
                ("firstName", "Tendai"),
                ("lastName", &last_name),
                ("phoneNumber", ""),
            ],
        )
        .await;
    assert_eq!(
        again.location.as_deref(),
        Some(format!("{edit}?saved=nothing").as_str())
    );
    assert_eq!(
        version().await,
        before + 2,
        "an untouched form wrote a change"
    );

    // Both changes reach the directory's copy.
    let user_db = platform::db::lazy_pool(&portal.sb.database_url("user"), 1).unwrap();
    sandbox::poll_until(sandbox::SETTLE, "the edits in user_db", || async {
        let row: (String, String) =
            sqlx::query_as("SELECT first_name, role FROM users WHERE id = $1")
                .bind(id)
                .fetch_one(&user_db)
                .await
                .ok()?;
        (row == ("Tendai".to_owned(), "consultant".to_owned())).then_some(())
    })
    .await;

    let admin_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE role = 'admin'")
        .fetch_one(&portal.auth_db)
        .await
        .unwrap();
    let demoted = admin
        .post(
            &portal.url(&format!("/admin/users/{admin_id}/role")),
            &[("csrf", &csrf), ("role", "nurse")],
        )
        .await;
    assert_eq!(demoted.status, 409, "{}", demoted.body);
    assert!(demoted.body.contains("role=\"alert\""), "{}", demoted.body);
}

/// An expired temporary password gets its own message, since only the right one learns of it;
/// a wrong password on the same account gets the one message of every failed login.
#[tokio::test]
async fn an_expired_temporary_password_is_told_apart_only_to_the_right_password() {
    let portal = Portal::start().await;
    let temporary = auth_service::password::temporary();
    // Tagged with the auth-service's own key, which lives in the sandbox's key directory.
    let key =
        auth_service::password::temporary::TagKey::load_or_create(&portal.sb.key_dir.0).unwrap();
    let stored = auth_service::password::temporary::hash(
        &temporary,
        std::time::Duration::ZERO,
        chrono::Utc::now(),
        &key,
    )
    .unwrap();
    let new = auth_service::store::NewUser::staff(
        "late.starter@clinic.co.zw",
        "Late",
        "Starter",
        contract::Role::Nurse,
        stored,
    )
    .unwrap();
    auth_service::store::insert_user(&portal.auth_db, new)
        .await
        .unwrap();
    let mut browser = Browser::new();
    let csrf = browser.get(&portal.url("/login")).await.csrf();
    let mut pages = Vec::new();
    for password in [temporary.as_str(), "not the password"] {
        let page = browser
            .post(
                &portal.url("/login"),
                &[
                    ("csrf", csrf.as_str()),
                    ("email", "late.starter@clinic.co.zw"),
                    ("password", password),
                    ("next", "/"),
                ],
            )
            .await;
        pages.push(page);
    }
    let (right, wrong) = (&pages[0], &pages[1]);
    assert_eq!(right.status, 401);
    assert!(
        right.body.contains("This temporary password has expired"),
        "{}",
        right.body
    );
    assert_eq!(wrong.status, 401);
    assert!(
        !wrong.body.contains("expired") && wrong.body.contains("did not let you in"),
        "{}",
        wrong.body
    );
}

/// With registration turned on, a request for an account waits on `/admin/users`; the admin
/// approves it there with a role, is shown the temporary password once, and the new account
/// signs in with it only — straight to the password change.
#[tokio::test]
async fn an_admin_approves_a_request_for_an_account_with_a_role_in_the_portal() {
    let portal =
        Portal::start_configured(|auth| auth.security.registration_enabled = true, |_| {}).await;
    let gateway = portal.gateway().url();
    let (s, _) = sandbox::http::post(
        &format!("{gateway}/api/v1/auth/register"),
        None,
        &serde_json::json!({"email": "new.nurse@clinic.co.zw", "firstName": "Nyasha",
                            "lastName": "Banda", "requestedRole": "nurse"}),
    )
    .await;
    assert_eq!(s, 202);
    let mut admin = Browser::new();
    admin.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let users = admin.get(&portal.url("/admin/users")).await;
    assert!(
        users.body.contains("Requests for an account"),
        "{}",
        users.body
    );
    assert!(users.body.contains("Approve Nyasha Banda"));
    let start = users.body.find("/admin/registrations/").unwrap() + "/admin/registrations/".len();
    let id = &users.body[start..start + 36];
    let approved = admin
        .post(
            &portal.url(&format!("/admin/registrations/{id}/approve")),
            &[("csrf", &users.csrf()), ("role", "pharmacist")],
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    let marker = r#"id="temporaryPassword" type="text" readonly value=""#;
    let at = approved.body.find(marker).expect("the temporary password") + marker.len();
    let temporary = &approved.body[at..at + approved.body[at..].find('"').unwrap()];
    let user: (String, bool) = sqlx::query_as(
        "SELECT role, must_change_password FROM users WHERE email = 'new.nurse@clinic.co.zw'",
    )
    .fetch_one(&portal.auth_db)
    .await
    .unwrap();
    assert_eq!(user, ("pharmacist".to_owned(), true), "the admin's role");
    let after = admin.get(&portal.url("/admin/users")).await;
    assert!(
        !after.body.contains("Requests for an account"),
        "the request is gone"
    );

    let mut newcomer = Browser::new();
    let page = newcomer
        .log_in(&portal, "new.nurse@clinic.co.zw", temporary)
        .await;
    assert_eq!(
        (page.status, page.location.as_deref()),
        (303, Some("/account/password")),
        "{}",
        page.body
    );
}
