//! The auth-service's HTTP API answers with the right status and a JSON error body
//! (`{"error", "message"}`, plus `"field"` on 422) for every refusal: authentication, roles,
//! conflicts, validation, malformed JSON, and the last active admin; refused changes write no
//! event, and every failed login looks the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use sandbox::auth;
use sandbox::http::{assert_json_error, get, post, send, Method};
use sandbox::{Sandbox, TEST_PASSWORD};
use serde_json::json;

#[tokio::test]
async fn auth_errors_are_json_with_the_right_status() {
    let sb = Sandbox::for_test().await;
    let auth = auth::start(auth::config(&sb)).await;
    let base = auth.url();
    let pool = auth::pool(&sb).await;
    let admin = auth::admin_token(&pool, &base).await;
    auth::create_user(&pool, "doctor@clinic.test", Role::Doctor).await;
    let doctor = auth::login(&base, "doctor@clinic.test", TEST_PASSWORD).await;
    let create = format!("{base}/api/v1/auth/admin/users");
    let body = json!({"email": "new@clinic.test", "firstName": "New", "lastName": "User", "role": "nurse"});

    // 401: no token, a garbage token.
    let (s, b) = post(&create, None, &body).await;
    assert_json_error(s, &b, 401);
    let (s, b) = get(&format!("{base}/api/v1/auth/me"), Some("not-a-jwt")).await;
    assert_json_error(s, &b, 401);
    // 403: a doctor may not create users; self-registration is off unless turned on.
    let (s, b) = post(&create, Some(&doctor), &body).await;
    assert_json_error(s, &b, 403);
    let (s, b) = post(
        &format!("{base}/api/v1/auth/register"),
        None,
        &json!({"email": "boss@clinic.test", "firstName": "B", "lastName": "C"}),
    )
    .await;
    assert_json_error(s, &b, 403);
    assert_eq!(b["error"], "registration_disabled", "{b}");
    // 201, then 409 for the same email in another case.
    let (s, _) = post(&create, Some(&admin), &body).await;
    assert_eq!(s, 201);
    let mut dup = body.clone();
    dup["email"] = json!("NEW@Clinic.Test");
    let (s, b) = post(&create, Some(&admin), &dup).await;
    assert_json_error(s, &b, 409);
    // 422 naming the field.
    for (field, value) in [
        ("email", json!("not-an-email")),
        ("role", json!("wizard")),
        ("firstName", json!("  ")),
        ("phoneNumber", json!("call me")),
    ] {
        let mut bad = body.clone();
        bad["email"] = json!(format!("{field}@clinic.test"));
        bad[field] = value;
        let (s, b) = post(&create, Some(&admin), &bad).await;
        assert_json_error(s, &b, 422);
        assert_eq!(b["field"], field, "{b}");
    }
    let (s, b) = post(
        &create,
        Some(&admin),
        &json!({"firstName": "No", "lastName": "Email", "role": "nurse"}),
    )
    .await;
    assert_json_error(s, &b, 422);
    assert!(b["message"].as_str().unwrap().contains("email"), "{b}");
    // Malformed JSON is a 400, still JSON.
    let resp = reqwest::Client::new()
        .post(&create)
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    // me works with a valid token.
    let (s, me) = get(&format!("{base}/api/v1/auth/me"), Some(&doctor)).await;
    assert_eq!(s, 200);
    assert_eq!(me["email"], "doctor@clinic.test");
}

#[tokio::test]
async fn login_failures_all_look_the_same() {
    let sb = Sandbox::for_test().await;
    let auth = auth::start(auth::config(&sb)).await;
    let login = format!("{}/api/v1/auth/login", auth.url());
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "active@clinic.test", Role::Nurse).await;
    let inactive_id = auth::create_user(&pool, "inactive@clinic.test", Role::Nurse).await;
    sqlx::query("UPDATE users SET is_active = false WHERE id = $1")
        .bind(inactive_id)
        .execute(&pool)
        .await
        .unwrap();

    let wrong_password = post(
        &login,
        None,
        &json!({"email": "active@clinic.test", "password": "wrong-password"}),
    )
    .await;
    let unknown = post(
        &login,
        None,
        &json!({"email": "nobody@clinic.test", "password": "wrong-password"}),
    )
    .await;
    let inactive = post(
        &login,
        None,
        &json!({"email": "inactive@clinic.test", "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(wrong_password.0, 401);
    assert_eq!(wrong_password, unknown);
    assert_eq!(wrong_password, inactive);

    let (s, ok) = post(
        &login,
        None,
        &json!({"email": "ACTIVE@clinic.test", "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ok["tokenType"], "Bearer");
    assert_eq!(ok["expiresIn"], 600);
    assert_eq!(ok["user"]["email"], "active@clinic.test");
}

#[tokio::test]
async fn admin_changes_answer_401_403_404_409_and_422_in_json() {
    let sb = Sandbox::for_test().await;
    let auth_svc = auth::start(auth::config(&sb)).await;
    let base = auth_svc.url();
    let pool = auth::pool(&sb).await;
    let token = auth::admin_token(&pool, &base).await;
    let nurse = auth::create_user(&pool, "nurse@clinic.test", Role::Nurse).await;
    auth::create_user(&pool, "taken@clinic.test", Role::Nurse).await;
    let nurse_token = auth::login(&base, "nurse@clinic.test", TEST_PASSWORD).await;
    let user = format!("{base}/api/v1/auth/admin/users/{nurse}");
    let events_before = sandbox::db::count(&pool, "SELECT count(*) FROM event_store").await;

    let (s, _) = post(&format!("{user}/deactivate"), None, &json!({})).await;
    assert_eq!(s, 401);
    let (s, _) = post(
        &format!("{user}/deactivate"),
        Some(&nurse_token),
        &json!({}),
    )
    .await;
    assert_eq!(s, 403);
    let (s, b) = post(
        &format!(
            "{base}/api/v1/auth/admin/users/{}/activate",
            uuid::Uuid::new_v4()
        ),
        Some(&token),
        &json!({}),
    )
    .await;
    assert_eq!((s, b["error"].clone()), (404, json!("not_found")));
    let (s, b) = send(
        Method::PATCH,
        &user,
        Some(&token),
        Some(&json!({"email": "TAKEN@clinic.test"})),
    )
    .await;
    assert_eq!((s, b["error"].clone()), (409, json!("conflict")), "{b}");
    let (s, b) = send(
        Method::PATCH,
        &user,
        Some(&token),
        Some(&json!({"role": "admin"})),
    )
    .await;
    assert_eq!(s, 422, "role is not editable by PATCH: {b}");
    let (s, b) = send(
        Method::PATCH,
        &user,
        Some(&token),
        Some(&json!({"email": "nope"})),
    )
    .await;
    assert_eq!((s, b["field"].clone()), (422, json!("email")));
    let (s, b) = send(
        Method::PUT,
        &format!("{user}/role"),
        Some(&token),
        Some(&json!({"role": "surgeon"})),
    )
    .await;
    assert_eq!((s, b["field"].clone()), (422, json!("role")));
    let (s, b) = get(
        &format!("{base}/api/v1/auth/admin/users?isActive=maybe"),
        Some(&token),
    )
    .await;
    assert_eq!((s, b["field"].clone()), (422, json!("isActive")));
    assert_eq!(
        sandbox::db::count(&pool, "SELECT count(*) FROM event_store").await,
        events_before,
        "refused changes write no event"
    );
}

#[tokio::test]
async fn the_last_active_admin_cannot_be_deactivated_or_demoted() {
    let sb = Sandbox::for_test().await;
    let auth_svc = auth::start(auth::config(&sb)).await;
    let base = auth_svc.url();
    let pool = auth::pool(&sb).await;
    let only = auth::create_user(&pool, "only-admin@clinic.test", Role::Admin).await;
    let token = auth::login(&base, "only-admin@clinic.test", TEST_PASSWORD).await;
    let me = format!("{base}/api/v1/auth/admin/users/{only}");

    let (s, b) = post(&format!("{me}/deactivate"), Some(&token), &json!({})).await;
    assert_eq!(s, 409, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("last active admin"),
        "{b}"
    );
    let step_down = || async {
        let url = format!("{me}/role");
        send(
            Method::PUT,
            &url,
            Some(&token),
            Some(&json!({"role": "doctor"})),
        )
        .await
    };
    let (s, _) = step_down().await;
    assert_eq!(s, 409);

    // With a second active admin, the first may step down, and then its token loses its powers.
    let second = auth::create_user(&pool, "second-admin@clinic.test", Role::Admin).await;
    let (s, u) = step_down().await;
    assert_eq!((s, u["role"].clone()), (200, json!("doctor")));
    let (s, _) = get(&format!("{base}/api/v1/auth/admin/users"), Some(&token)).await;
    assert_eq!(
        s, 403,
        "a demoted admin's token no longer grants admin powers"
    );

    // Nor may it change anyone: a change reads the caller's standing with the user's lock. An
    // existing user, an unknown one and a malformed id all answer 403, and nothing is written.
    let events_before = sandbox::db::count(&pool, "SELECT count(*) FROM event_store").await;
    let unknown = uuid::Uuid::new_v4().to_string();
    for target in [second.to_string(), unknown, "not-a-uuid".to_owned()] {
        let (s, b) = send(
            Method::PATCH,
            &format!("{base}/api/v1/auth/admin/users/{target}"),
            Some(&token),
            Some(&json!({"firstName": "Changed"})),
        )
        .await;
        assert_eq!(
            (s, b["error"].clone()),
            (403, json!("forbidden")),
            "{target}: {b}"
        );
        assert!(
            b["message"]
                .as_str()
                .unwrap()
                .contains("no longer an active admin"),
            "{b}"
        );
    }
    let (s, _) = post(
        &format!("{base}/api/v1/auth/admin/users/{second}/reset-password"),
        Some(&token),
        &json!({}),
    )
    .await;
    assert_eq!(s, 403, "a reset is a change like the others");
    assert_eq!(
        sandbox::db::count(&pool, "SELECT count(*) FROM event_store").await,
        events_before,
        "a refused change writes no event"
    );
}
