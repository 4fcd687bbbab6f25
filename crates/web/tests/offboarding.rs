//! Offboarding in the portal over HTTP, as a browser without JavaScript uses it: the user page's
//! propagation line, the "Offboard…" form (checked, CSRF, admins only), the saga page followed
//! to "Completed" with both consumers' receipts and the patient to inform, the list of sagas; a
//! saga that stalls (the user-service stopped) says why and is cancelled after a confirmation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Browser, Portal, ADMIN_EMAIL, ADMIN_PASSWORD};
use std::time::{Duration, Instant};

/// A doctor of the seed: id and name.
async fn a_doctor(portal: &Portal) -> (uuid::Uuid, String) {
    let (id, first, last): (uuid::Uuid, String, String) = sqlx::query_as(
        "SELECT id, first_name, last_name FROM users WHERE role = 'doctor' ORDER BY email LIMIT 1",
    )
    .fetch_one(&portal.auth_db)
    .await
    .unwrap();
    (id, format!("{first} {last}"))
}

/// GETs `path` until its body satisfies `done`; returns that page.
async fn page_until(
    browser: &mut Browser,
    portal: &Portal,
    path: &str,
    done: impl Fn(&str) -> bool,
) -> common::Page {
    let deadline = Instant::now() + sandbox::SETTLE;
    loop {
        let page = browser.get(&portal.url(path)).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        if done(&page.body) {
            return page;
        }
        assert!(Instant::now() < deadline, "{path}: {}", page.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The user page's propagation line, after "Propagation:" (its badges' tags left out).
fn propagation(body: &str) -> Option<String> {
    let start =
        body.find("<strong>Propagation:</strong> ")? + "<strong>Propagation:</strong> ".len();
    let line = &body[start..];
    let line = &line[..line.find("</p>")?];
    Some(
        line.replace(r#"<span class="badge wait">"#, "")
            .replace("</span>", ""),
    )
}

/// The saga's path from a redirect's `Location`.
fn saga_path(location: Option<&str>) -> String {
    let location = location.expect("a redirect");
    let id = location
        .strip_prefix("/admin/offboarding/")
        .unwrap_or_else(|| panic!("to the saga page: {location}"));
    id.parse::<uuid::Uuid>().expect("a saga id");
    location.to_owned()
}

#[tokio::test]
async fn an_admin_offboards_a_doctor_from_the_user_page_and_follows_the_saga_to_completed() {
    let portal = Portal::start().await;
    let (doctor, name) = a_doctor(&portal).await;
    // A future appointment of the doctor, which another (free) doctor takes over.
    let api = api_client::ApiClient::new(&portal.gateway().url())
        .unwrap()
        .logged_in(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .unwrap();
    let starts = (chrono::Utc::now() + chrono::Duration::days(2))
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_utc();
    api.book(&contract::api::NewAppointment {
        patient_name: "Rudo Mhlanga".into(),
        doctor_id: doctor.to_string(),
        starts_at: starts.to_rfc3339(),
        duration_minutes: 30,
        reason: None,
    })
    .await
    .unwrap();

    let mut admin = Browser::new();
    admin.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let user_page = format!("/admin/users/{doctor}");
    // Both consumers report the seed's version: each with its delay.
    let page = page_until(&mut admin, &portal, &user_page, |body| {
        propagation(body).is_some_and(|line| {
            line.starts_with("Active · ")
                && !line.contains("no receipt")
                && !line.contains("waiting")
        })
    })
    .await;
    let line = propagation(&page.body).unwrap();
    let parts: Vec<&str> = line.split(" · ").skip(1).collect();
    assert_eq!(parts.len(), 2, "{line}");
    for consumer in ["user-service", "appointment-service"] {
        let part = parts
            .iter()
            .find(|p| p.starts_with(&format!("{consumer} ")))
            .unwrap_or_else(|| panic!("{consumer} in {line}"));
        let seconds = part[consumer.len() + 1..]
            .strip_suffix(" s")
            .unwrap_or_else(|| panic!("a delay in seconds: {line}"));
        seconds.parse::<f64>().expect("a number of seconds");
    }
    for needle in [
        r#"href="/admin/offboarding">Offboarding</a>"#,
        "<summary>Offboard…</summary>",
        r#"<label for="offboardReason">Reason (required)</label>"#,
        "<legend>Future appointments</legend>",
        r#"<label for="policyReassign">Reassign to another free doctor, else cancel</label>"#,
        r#"<label for="policyCancel">Cancel them</label>"#,
        r#"<label for="offboardConfirm">I confirm: deactivate "#,
        &format!("No offboarding of {name} so far."),
    ] {
        assert!(page.body.contains(needle), "{needle}: {}", page.body);
    }
    let csrf = page.csrf();
    let offboard = portal.url(&format!("/admin/users/{doctor}/offboard"));

    // Checked before anything is asked: no reason, no confirmation; the choice is kept.
    let refused = admin
        .post(
            &offboard,
            &[("csrf", &csrf), ("reason", " "), ("policy", "cancel")],
        )
        .await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    for needle in [
        "Some fields need attention; your entries are kept.",
        &format!("Enter why {name} is leaving."),
        "Tick the box to confirm the offboarding.",
        r#"value="cancel" checked"#,
        "<details open>",
    ] {
        assert!(refused.body.contains(needle), "{needle}: {}", refused.body);
    }
    let forged = admin
        .post(
            &offboard,
            &[
                ("csrf", "forged"),
                ("reason", "left"),
                ("policy", "reassign"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);
    let active: bool = sqlx::query_scalar("SELECT is_active FROM users WHERE id = $1")
        .bind(doctor)
        .fetch_one(&portal.auth_db)
        .await
        .unwrap();
    assert!(active, "nothing happened before the form was right");

    let started = admin
        .post(
            &offboard,
            &[
                ("csrf", &csrf),
                ("reason", "Moved to another clinic"),
                ("policy", "reassign"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    let saga = saga_path(started.location.as_deref());
    let done = page_until(&mut admin, &portal, &saga, |body| {
        body.contains(r#"<span class="badge ok">Completed</span>"#)
    })
    .await;
    let body = &done.body;
    for needle in [
        format!("<h1>Offboarding of {name}</h1>"),
        "Moved to another clinic".into(),
        "Reassign to another free doctor, else cancel".into(),
        "<td>user-service</td>".into(),
        "<td>appointment-service</td>".into(),
        "<td>Rudo Mhlanga</td>".into(),
        "<td>Reassigned</td>".into(),
        r#"<th scope="col">New doctor</th>"#.into(),
        "<td>Started</td>".into(),
        "<td>Deactivated</td>".into(),
        "<td>Appointments resolved</td>".into(),
    ] {
        assert!(body.contains(&needle), "{needle}: {body}");
    }
    assert_eq!(
        body.matches("has the current version").count(),
        2,
        "both receipts: {body}"
    );
    assert!(
        !body.contains("Cancel offboarding") && !body.contains("refreshes itself"),
        "finished: no cancel, no refresh: {body}"
    );
    let moved_to = {
        let row = &body[body.find("<td>Reassigned</td>").unwrap()..];
        let cell = &row[row.find("<td>Dr ").unwrap() + 4..];
        cell[..cell.find("</td>").unwrap()].to_owned()
    };
    assert_ne!(moved_to, format!("Dr {name}"), "another doctor");

    // The user page now: deactivated everywhere, and the way to the saga; no second form.
    let after = page_until(&mut admin, &portal, &user_page, |body| {
        propagation(body)
            .is_some_and(|line| line.starts_with("Deactivated · ") && !line.contains("waiting"))
    })
    .await;
    assert!(
        after
            .body
            .contains(&format!(r#"href="{saga}">See the offboarding</a>"#)),
        "{}",
        after.body
    );

    // The list: the saga among the finished ones, linked by the person's name.
    let list = admin.get(&portal.url("/admin/offboarding")).await;
    assert_eq!(list.status, 200);
    assert!(
        list.body.contains(&format!(
            r#"<a href="{saga}" aria-label="Offboarding of {name}">{name}</a>"#
        )),
        "{}",
        list.body
    );
    assert!(list
        .body
        .contains("<h2 id=\"recent\">Recently finished</h2>"));

    // Admins only.
    let nurse: String = sqlx::query_scalar("SELECT email FROM users WHERE role = 'nurse'")
        .fetch_one(&portal.auth_db)
        .await
        .unwrap();
    let mut browser = Browser::new();
    browser
        .log_in(&portal, &nurse, common::STAFF_PASSWORD)
        .await;
    for path in ["/admin/offboarding", saga.as_str(), user_page.as_str()] {
        assert_eq!(browser.get(&portal.url(path)).await.status, 403, "{path}");
    }
    let home = browser.get(&portal.url("/")).await;
    assert!(!home.body.contains("/admin/offboarding"));
    let posted = browser
        .post(
            &offboard,
            &[
                ("csrf", &home.csrf()),
                ("reason", "x"),
                ("policy", "cancel"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(posted.status, 403, "{}", posted.body);
}

/// Short waits, so the saga stalls within a second or two.
fn quick(config: &mut auth_service::Config) {
    config.offboarding.timeout = Duration::from_millis(400);
    config.offboarding.resends = 2;
    config.offboarding.stalled_every = Duration::from_millis(500);
    config.offboarding.poll = Duration::from_millis(50);
}

#[tokio::test]
async fn a_stalled_offboarding_says_why_and_is_cancelled_after_a_confirmation() {
    let mut portal = Portal::start_configured(quick, |_| {}).await;
    let (doctor, name) = a_doctor(&portal).await;
    let mut admin = Browser::new();
    admin.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    // The user-service never confirms the deactivation.
    portal.stop_directory().await;
    let page = admin
        .get(&portal.url(&format!("/admin/users/{doctor}")))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let started = admin
        .post(
            &portal.url(&format!("/admin/users/{doctor}/offboard")),
            &[
                ("csrf", &page.csrf()),
                ("reason", "Contract ended"),
                ("policy", "cancel"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(started.status, 303, "{}", started.body);
    let saga = saga_path(started.location.as_deref());
    let stalled = page_until(&mut admin, &portal, &saga, |body| {
        body.contains("<strong>Stalled: </strong>")
    })
    .await;
    for needle in [
        r#"<span class="badge wait">Waiting for receipts</span>"#,
        "user-service",
        "refreshes itself every 2 seconds",
        r#"<button type="submit">Cancel offboarding</button>"#,
    ] {
        assert!(stalled.body.contains(needle), "{needle}: {}", stalled.body);
    }
    // While it runs, the user page links to it instead of offering the form again.
    let user_page = admin
        .get(&portal.url(&format!("/admin/users/{doctor}")))
        .await;
    assert!(
        user_page
            .body
            .contains(&format!(r#"href="{saga}">Follow the offboarding</a>"#))
            && !user_page.body.contains("<summary>Offboard…</summary>"),
        "{}",
        user_page.body
    );
    let list = admin.get(&portal.url("/admin/offboarding")).await;
    let stalled_section = &list.body
        [list.body.find("id=\"stalled\"").unwrap()..list.body.find("id=\"running\"").unwrap()];
    assert!(
        stalled_section.contains(&format!(">{name}</a>")),
        "{}",
        list.body
    );

    // "Cancel offboarding" asks first; only the confirmation cancels.
    let cancel = portal.url(&format!("{saga}/cancel"));
    let asked = admin.post(&cancel, &[("csrf", &stalled.csrf())]).await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert!(
        asked
            .body
            .contains(r#"<button type="submit">Yes, cancel the offboarding</button>"#),
        "{}",
        asked.body
    );
    assert!(!admin
        .get(&portal.url(&saga))
        .await
        .body
        .contains(">Cancelled<"));
    let forged = admin
        .post(&cancel, &[("csrf", "forged"), ("confirm", "yes")])
        .await;
    assert_eq!(forged.status, 403);
    let cancelled = admin
        .post(&cancel, &[("csrf", &asked.csrf()), ("confirm", "yes")])
        .await;
    assert_eq!(cancelled.status, 303, "{}", cancelled.body);
    assert_eq!(cancelled.location.as_deref(), Some(saga.as_str()));
    let page = admin.get(&portal.url(&saga)).await;
    assert!(
        page.body
            .contains(r#"<span class="badge">Cancelled</span>"#)
            && !page.body.contains("Cancel offboarding"),
        "{}",
        page.body
    );
    // Too late now: said on the saga page.
    let again = admin
        .post(&cancel, &[("csrf", &page.csrf()), ("confirm", "yes")])
        .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(again.body.contains("role=\"alert\""), "{}", again.body);
    // Reactivated; the stopped user-service has not confirmed any of it.
    let user_page = admin
        .get(&portal.url(&format!("/admin/users/{doctor}")))
        .await;
    let line = propagation(&user_page.body).unwrap();
    assert!(
        line.starts_with("Active · ") && line.contains("user-service waiting (has v"),
        "{line}"
    );
}
