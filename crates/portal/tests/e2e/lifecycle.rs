//! The whole user lifecycle through the gateway: each admin change commits with exactly one
//! event of its type, and the directory follows within a second.

use contract::Role;
use sandbox::http::{get, post, Method};
use sandbox::users::assert_in_sync;
use sandbox::{auth, System};
use sandbox::{poll_until, Sandbox, SETTLE};
use serde_json::{json, Value};
use sqlx::PgPool;

/// `method url` with `token` and an optional JSON body.
async fn send(method: Method, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    sandbox::http::send(method, url, Some(token), body.as_ref()).await
}

/// The events of one user, oldest first: (type, userVersion, payload).
async fn events(pool: &PgPool, user: &str) -> Vec<(String, i64, Value)> {
    let rows: Vec<(String, i64, sqlx::types::Json<Value>)> = sqlx::query_as(
        "SELECT event_type, user_version, body::jsonb FROM event_store WHERE user_id = $1::uuid ORDER BY seq",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(t, v, b)| (t, v, b.0["payload"].clone()))
        .collect()
}

/// Waits (with the harness's generous deadline) until the directory's copy of `id` satisfies
/// `check`.
async fn directory_shows(
    gw: &str,
    token: &str,
    query: &str,
    id: &str,
    check: impl Fn(Option<&Value>) -> bool,
) {
    poll_until(
        SETTLE,
        &format!("directory ?{query} to reflect the change of {id}"),
        || async {
            let (_, page) = get(&format!("{gw}/api/v1/users?{query}"), Some(token)).await;
            let found = page["items"].as_array()?.iter().find(|u| u["userId"] == id);
            check(found).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_admin_edits_deactivates_reactivates_and_reroles_a_doctor_and_the_directory_follows() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().gateway().start().await;
    let (gw, auth) = (sys.gateway().url(), sys.auth_db.clone());
    let token = sys.admin_token().await;
    let admin = format!("{gw}/api/v1/auth/admin/users");
    let doctors = "role=doctor&isActive=true";

    let (s, created) = post(
        &admin,
        Some(&token),
        &json!({"email": "farai@clinic.test", "firstName": "Farai",
        "lastName": "Ncube", "role": "doctor", "phoneNumber": "+263 77 111 1111"}),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let id = created["user"]["userId"].as_str().unwrap().to_owned();
    directory_shows(&gw, &token, doctors, &id, |u| u.is_some()).await;

    // The admin list finds the doctor by name.
    let (s, page) = get(&format!("{admin}?role=doctor&q=ncub"), Some(&token)).await;
    assert_eq!((s, page["total"].clone()), (200, json!(1)), "{page}");

    // Edit: user.updated with changedFields.
    let (s, u) = send(
        Method::PATCH,
        &format!("{admin}/{id}"),
        &token,
        Some(json!({"phoneNumber": "+263 77 222 2222", "lastName": "Ncube-Moyo"})),
    )
    .await;
    assert_eq!((s, u["userVersion"].clone()), (200, json!(2)), "{u}");
    directory_shows(&gw, &token, doctors, &id, |u| {
        u.is_some_and(|u| u["lastName"] == "Ncube-Moyo" && u["phoneNumber"] == "+263 77 222 2222")
    })
    .await;
    // Clearing the phone with null.
    let (s, u) = send(
        Method::PATCH,
        &format!("{admin}/{id}"),
        &token,
        Some(json!({"phoneNumber": null})),
    )
    .await;
    assert_eq!(
        (s, u["phoneNumber"].clone(), u["userVersion"].clone()),
        (200, Value::Null, json!(3))
    );

    // Deactivate: drops out of the active doctors.
    let deactivate = || async {
        let url = format!("{admin}/{id}/deactivate");
        post(&url, Some(&token), &json!({})).await
    };
    let (s, u) = deactivate().await;
    assert_eq!((s, u["isActive"].clone()), (200, json!(false)));
    directory_shows(&gw, &token, doctors, &id, |u| u.is_none()).await;
    // Deactivating again changes nothing and writes no event.
    let (s, u) = deactivate().await;
    assert_eq!((s, u["userVersion"].clone()), (200, json!(4)));

    // Re-activate.
    let (s, _) = post(&format!("{admin}/{id}/activate"), Some(&token), &json!({})).await;
    assert_eq!(s, 200);
    directory_shows(&gw, &token, doctors, &id, |u| u.is_some()).await;

    // Re-role: user.role.changed with previousRole; no-op for the same role.
    let to_consultant = || async {
        let url = format!("{admin}/{id}/role");
        send(
            Method::PUT,
            &url,
            &token,
            Some(json!({"role": "consultant"})),
        )
        .await
    };
    let (s, u) = to_consultant().await;
    assert_eq!((s, u["role"].clone()), (200, json!("consultant")));
    directory_shows(&gw, &token, doctors, &id, |u| u.is_none()).await;
    directory_shows(&gw, &token, "role=consultant", &id, |u| {
        u.is_some_and(|u| u["userVersion"] == 6)
    })
    .await;
    let (s, u) = to_consultant().await;
    assert_eq!((s, u["userVersion"].clone()), (200, json!(6)));

    let history = events(&auth, &id).await;
    let kinds: Vec<(&str, i64)> = history.iter().map(|(t, v, _)| (t.as_str(), *v)).collect();
    assert_eq!(
        kinds,
        [
            ("user.created", 1),
            ("user.updated", 2),
            ("user.updated", 3),
            ("user.deactivated", 4),
            ("user.activated", 5),
            ("user.role.changed", 6)
        ]
    );
    let mut changed: Vec<String> =
        serde_json::from_value(history[1].2["changedFields"].clone()).unwrap();
    changed.sort();
    assert_eq!(changed, ["lastName", "phoneNumber"]);
    assert_eq!(history[5].2["previousRole"], "doctor");
    assert_eq!(history[5].2["role"], "consultant");
    assert!(history[3].2.get("changedFields").is_none());

    assert_in_sync(&auth, sys.user_db()).await;
}

#[tokio::test]
async fn changing_a_password_clears_must_change_password_and_emits_user_updated() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().gateway().start().await;
    let (gw, auth) = (sys.gateway().url(), sys.auth_db.clone());
    let token = sys.admin_token().await;
    let (_, created) = post(&format!("{gw}/api/v1/auth/admin/users"), Some(&token),
        &json!({"email": "temp@clinic.test", "firstName": "Temp", "lastName": "Orary", "role": "pharmacist"})).await;
    let temporary = created["temporaryPassword"].as_str().unwrap().to_owned();
    let id = created["user"]["userId"].as_str().unwrap().to_owned();
    let user_token = auth::login(&gw, "temp@clinic.test", &temporary).await;
    let url = format!("{gw}/api/v1/auth/change-password");

    let (s, b) = post(
        &url,
        Some(&user_token),
        &json!({"currentPassword": "wrong-one-here", "newPassword": "a-brand-new-pass"}),
    )
    .await;
    assert_eq!((s, b["field"].clone()), (422, json!("currentPassword")));
    let (s, b) = post(
        &url,
        Some(&user_token),
        &json!({"currentPassword": temporary, "newPassword": "short"}),
    )
    .await;
    assert_eq!((s, b["field"].clone()), (422, json!("newPassword")));
    let (s, u) = post(
        &url,
        Some(&user_token),
        &json!({"currentPassword": temporary, "newPassword": "a-brand-new-pass"}),
    )
    .await;
    assert_eq!(
        (s, u["mustChangePassword"].clone(), u["userVersion"].clone()),
        (200, json!(false), json!(2))
    );
    auth::login(&gw, "temp@clinic.test", "a-brand-new-pass").await;

    let history = events(&auth, &id).await;
    assert_eq!(
        history
            .last()
            .map(|(t, v, p)| (t.as_str(), *v, p["changedFields"].clone())),
        Some(("user.updated", 2, json!(["mustChangePassword"])))
    );
    directory_shows(&gw, &token, "role=pharmacist", &id, |u| {
        u.is_some_and(|u| u["mustChangePassword"] == false)
    })
    .await;
}

#[tokio::test]
async fn fifty_concurrent_role_changes_to_one_user_leave_no_version_gap() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().gateway().start().await;
    let (base, auth) = (sys.auth.url(), sys.auth_db.clone());
    let token = sys.admin_token().await;
    let id = auth::create_user(&auth, "busy@clinic.test", Role::Doctor).await;
    let roles = ["nurse", "pharmacist", "consultant", "doctor"];
    let url = format!("{base}/api/v1/auth/admin/users/{id}/role");
    let requests = (0..50).map(|i| {
        let (url, token) = (url.clone(), token.clone());
        tokio::spawn(async move {
            send(
                Method::PUT,
                &url,
                &token,
                Some(json!({"role": roles[i % roles.len()]})),
            )
            .await
            .0
        })
    });
    for r in futures::future::join_all(requests).await {
        assert_eq!(r.unwrap(), 200);
    }

    // Requests that found the role already set wrote nothing; every other one wrote exactly
    // one version, so the versions are 2..=1+n with no gap and no repeat.
    let history = events(&auth, &id.to_string()).await;
    let versions: Vec<i64> = history.iter().skip(1).map(|(_, v, _)| *v).collect();
    let n = versions.len() as i64;
    assert!(n >= 10, "most concurrent requests changed the role: {n}");
    assert_eq!(versions, (2..=1 + n).collect::<Vec<_>>());
    let (final_role, final_version): (String, i64) =
        sqlx::query_as("SELECT role, user_version FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&auth)
            .await
            .unwrap();
    assert_eq!(final_version, 1 + n);
    let last = history.last().unwrap();
    assert_eq!(
        last.2["role"],
        final_role.as_str(),
        "final role is the last committed one"
    );
    for pair in history.windows(2).skip(1) {
        assert_eq!(
            pair[1].2["previousRole"], pair[0].2["role"],
            "each change saw the one before"
        );
    }
    sandbox::wait_for_user_version(sys.user_db(), id, final_version, SETTLE).await;
    assert_in_sync(&auth, sys.user_db()).await;
}

/// A deactivated nurse's token, still unexpired, stops opening the directory within a second
/// of the deactivation (the user-service refuses a user inactive in its own copy), and the
/// auth-service refuses it at once (it checks `auth_db`).
#[tokio::test]
async fn a_deactivated_users_token_is_refused_by_the_directory_within_a_second() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().gateway().start().await;
    let gw = sys.gateway().url();
    let admin = sys.admin_token().await;
    let nurse = auth::create_user(&sys.auth_db, "ward.nurse@clinic.test", Role::Nurse).await;
    let token = auth::login(&gw, "ward.nurse@clinic.test", sandbox::TEST_PASSWORD).await;
    let directory = format!("{gw}/api/v1/users");
    poll_until(SETTLE, "the nurse's copy in user_db", || async {
        (get(&directory, Some(&token)).await.0 == 200).then_some(())
    })
    .await;

    let (s, b) = send(
        Method::POST,
        &format!("{gw}/api/v1/auth/admin/users/{nurse}/deactivate"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = get(&format!("{gw}/api/v1/auth/me"), Some(&token)).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (401, Some("this account is deactivated"))
    );
    poll_until(
        SETTLE,
        "the directory to refuse the deactivated nurse's token",
        || async { (get(&directory, Some(&token)).await.0 == 401).then_some(()) },
    )
    .await;
}
