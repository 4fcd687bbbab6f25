//! HTTP answers: status codes and JSON error bodies `{"error", "message"}`.

use crate::{get, post};
use contract::Role;
use serde_json::json;
use test_support::TestEnv;

fn assert_json_error(status: u16, body: &serde_json::Value, expected: u16) {
    assert_eq!(status, expected, "{body}");
    assert!(body["error"].is_string(), "error code in {body}");
    assert!(body["message"].is_string(), "message in {body}");
}

#[tokio::test]
async fn auth_errors_are_json_with_the_right_status() {
    let env = TestEnv::new().await;
    let sys = env.start_system().await;
    let gw = sys.gateway.url();
    let admin = env.admin_token(&gw).await;
    let pool = env.auth_pool().await;
    env.create_user(&pool, "doctor@clinic.test", Role::Doctor)
        .await;
    let doctor = env
        .login(&gw, "doctor@clinic.test", test_support::TEST_PASSWORD)
        .await;
    let create = format!("{gw}/api/v1/auth/admin/users");
    let body = json!({"email": "new@clinic.test", "firstName": "New", "lastName": "User", "role": "nurse"});

    // 401: no token, a garbage token, on both services.
    let (s, b) = post(&create, None, &body).await;
    assert_json_error(s, &b, 401);
    let (s, b) = get(&format!("{gw}/api/v1/auth/me"), Some("not-a-jwt")).await;
    assert_json_error(s, &b, 401);
    let (s, b) = get(&format!("{gw}/api/v1/users"), None).await;
    assert_json_error(s, &b, 401);
    // 403: a doctor may not create users; nobody may self-register as admin.
    let (s, b) = post(&create, Some(&doctor), &body).await;
    assert_json_error(s, &b, 403);
    let (s, b) = post(
        &format!("{gw}/api/v1/auth/register"),
        None,
        &json!({"email": "boss@clinic.test", "password": "long-enough-pw", "firstName": "B", "lastName": "C", "role": "admin"}),
    )
    .await;
    assert_json_error(s, &b, 403);
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
    let resp = crate::http()
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
    let (s, me) = get(&format!("{gw}/api/v1/auth/me"), Some(&doctor)).await;
    assert_eq!(s, 200);
    assert_eq!(me["email"], "doctor@clinic.test");
    // Unknown user id → 404, bad id → 422.
    let (s, b) = get(
        &format!("{gw}/api/v1/users/{}", uuid::Uuid::new_v4()),
        Some(&doctor),
    )
    .await;
    assert_json_error(s, &b, 404);
    let (s, b) = get(&format!("{gw}/api/v1/users/nope"), Some(&doctor)).await;
    assert_json_error(s, &b, 422);
    let (s, b) = get(&format!("{gw}/api/v1/users?role=wizard"), Some(&doctor)).await;
    assert_json_error(s, &b, 422);
}

#[tokio::test]
async fn login_failures_all_look_the_same() {
    let env = TestEnv::new().await;
    let auth = env.start_auth().await;
    let login = format!("{}/api/v1/auth/login", auth.url());
    let pool = env.auth_pool().await;
    env.create_user(&pool, "active@clinic.test", Role::Nurse)
        .await;
    let (s, registered) = post(
        &format!("{}/api/v1/auth/register", auth.url()),
        None,
        &json!({"email": "inactive@clinic.test", "password": "long-enough-pw", "firstName": "In", "lastName": "Active", "role": "nurse"}),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(registered["isActive"], false);

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
        &json!({"email": "inactive@clinic.test", "password": "long-enough-pw"}),
    )
    .await;
    assert_eq!(wrong_password.0, 401);
    assert_eq!(wrong_password, unknown);
    assert_eq!(wrong_password, inactive);

    let (s, ok) = post(
        &login,
        None,
        &json!({"email": "ACTIVE@clinic.test", "password": test_support::TEST_PASSWORD}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ok["tokenType"], "Bearer");
    assert_eq!(ok["expiresIn"], 600);
    assert_eq!(ok["user"]["email"], "active@clinic.test");
}

#[tokio::test]
async fn the_gateway_answers_502_json_when_an_upstream_is_down() {
    let env = TestEnv::new().await;
    let auth = env.start_auth().await;
    let users = env.start_users().await;
    let gateway = env.start_gateway(&auth, &users).await;
    users.stop().await.unwrap();
    let (s, b) = get(&format!("{}/api/v1/users?role=doctor", gateway.url()), None).await;
    assert_json_error(s, &b, 502);
    assert!(
        b["message"].as_str().unwrap().contains("user-service"),
        "{b}"
    );
    // The other upstream still answers through it, with its own status passed through.
    let (s, b) = get(&format!("{}/api/v1/auth/me", gateway.url()), None).await;
    assert_json_error(s, &b, 401);
}
