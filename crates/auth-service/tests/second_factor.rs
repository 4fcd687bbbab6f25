//! The second factor for admins (TOTP with recovery codes) through the auth-service's API: under
//! ADMIN_MFA=required an admin without a factor enrols at sign-in before any token is issued;
//! afterwards every sign-in asks for a code; a code is good once; recovery codes sign in once
//! each; wrong codes lock the second step; a temporary password is spent only by the second
//! step; another admin can reset the factor (recorded, sessions ended), nobody their own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use sandbox::auth;
use sandbox::http::{assert_json_error, get, post};
use sandbox::{Sandbox, TEST_PASSWORD};
use serde_json::{json, Value};

use sandbox::auth::totp_code as code;

/// An auth-service of `sb` under ADMIN_MFA=required, and its database.
async fn required(sb: &Sandbox) -> (sandbox::in_process::Running, sqlx::PgPool) {
    let mut config = auth::config(sb);
    config.security.mfa = auth_service::mfa::MfaPolicy::Required;
    (auth::start(config).await, auth::pool(sb).await)
}

async fn login(base: &str, email: &str, password: &str) -> (u16, Value) {
    post(
        &format!("{base}/api/v1/auth/login"),
        None,
        &json!({"email": email, "password": password}),
    )
    .await
}

async fn second_step(base: &str, challenge: &Value, code: &str) -> (u16, Value) {
    post(
        &format!("{base}/api/v1/auth/login/second-factor"),
        None,
        &json!({"challenge": challenge, "code": code}),
    )
    .await
}

/// Enrols `email` at sign-in and answers its secret, the completed login and the code it used.
async fn enrol(base: &str, email: &str, password: &str) -> (String, Value, String) {
    let (s, asked) = login(base, email, password).await;
    assert_eq!(s, 202, "{asked}");
    assert_eq!(asked["status"], "second_factor_enrolment_required");
    let (s, enrolment) = post(
        &format!("{base}/api/v1/auth/login/second-factor/enrol"),
        None,
        &json!({"challenge": asked["challenge"]}),
    )
    .await;
    assert_eq!(s, 200, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    assert!(enrolment["otpauthUri"]
        .as_str()
        .unwrap()
        .starts_with("otpauth://totp/"));
    let used = code(&secret, 0);
    let (s, done) = second_step(base, &asked["challenge"], &used).await;
    assert_eq!(s, 200, "{done}");
    (secret, done, used)
}

#[tokio::test]
async fn an_admin_enrols_at_sign_in_and_then_signs_in_with_a_code_once() {
    let sb = Sandbox::for_test().await;
    let (svc, pool) = required(&sb).await;
    let base = svc.url();
    auth::create_user(&pool, "admin@clinic.test", Role::Admin).await;
    auth::create_user(&pool, "nurse@clinic.test", Role::Nurse).await;

    let (s, b) = login(&base, "nurse@clinic.test", TEST_PASSWORD).await;
    assert_eq!(s, 200, "only admins must enrol: {b}");

    let (s, asked) = login(&base, "admin@clinic.test", TEST_PASSWORD).await;
    assert_eq!(s, 202);
    assert!(
        asked.get("accessToken").is_none(),
        "no token before the second factor"
    );
    let (s, b) = second_step(&base, &asked["challenge"], "123456").await;
    assert_json_error(s, &b, 401);

    let (secret, done, used) = enrol(&base, "admin@clinic.test", TEST_PASSWORD).await;
    let codes = done["recoveryCodes"].as_array().unwrap().clone();
    assert_eq!(codes.len(), 10);
    let token = done["accessToken"].as_str().unwrap().to_owned();
    let (s, status) = get(&format!("{base}/api/v1/auth/second-factor"), Some(&token)).await;
    assert_eq!(s, 200);
    assert_eq!(status["enrolled"], true);
    assert_eq!(status["required"], true);
    assert_eq!(status["recoveryCodesLeft"], 10);

    // The next sign-in asks for a code; the one used at enrolment is spent.
    let (s, asked) = login(&base, "admin@clinic.test", TEST_PASSWORD).await;
    assert_eq!(
        (s, asked["status"].as_str()),
        (202, Some("second_factor_required"))
    );
    let (s, b) = second_step(&base, &asked["challenge"], &used).await;
    assert_json_error(s, &b, 401);
    assert_eq!(
        b["error"], "second_factor_refused",
        "a code is good once: {b}"
    );
    let (s, b) = second_step(&base, &asked["challenge"], &code(&secret, 1)).await;
    assert_eq!(s, 200, "the next step's code, within the skew: {b}");
    assert!(b.get("recoveryCodes").is_none(), "shown once only");
    let (s, b) = second_step(&base, &asked["challenge"], &code(&secret, 1)).await;
    assert_json_error(s, &b, 401);
    assert_eq!(b["error"], "challenge_expired", "a challenge signs in once");

    // A recovery code signs in once.
    let recovery = codes[0].as_str().unwrap();
    let (_, asked) = login(&base, "admin@clinic.test", TEST_PASSWORD).await;
    let (s, b) = second_step(&base, &asked["challenge"], recovery).await;
    assert_eq!(s, 200, "{b}");
    let (_, asked) = login(&base, "admin@clinic.test", TEST_PASSWORD).await;
    let (s, _) = second_step(&base, &asked["challenge"], recovery).await;
    assert_eq!(s, 401, "a recovery code is good once");
}

#[tokio::test]
async fn wrong_codes_lock_the_second_step_and_a_challenge_takes_five() {
    let sb = Sandbox::for_test().await;
    let (svc, pool) = required(&sb).await;
    let base = svc.url();
    auth::create_user(&pool, "admin@clinic.test", Role::Admin).await;
    let (secret, _, _) = enrol(&base, "admin@clinic.test", TEST_PASSWORD).await;
    let (_, asked) = login(&base, "admin@clinic.test", TEST_PASSWORD).await;
    for _ in 0..5 {
        let (s, b) = second_step(&base, &asked["challenge"], "000000").await;
        assert_eq!(
            (s, b["error"].as_str()),
            (401, Some("second_factor_refused"))
        );
    }
    let (s, b) = second_step(&base, &asked["challenge"], &code(&secret, 1)).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("challenge_expired")),
        "{b}"
    );
    let (_, asked) = login(&base, "admin@clinic.test", TEST_PASSWORD).await;
    for _ in 0..5 {
        let (s, _) = second_step(&base, &asked["challenge"], "000000").await;
        assert_eq!(s, 401);
    }
    let (_, asked) = login(&base, "admin@clinic.test", TEST_PASSWORD).await;
    let (s, b) = second_step(&base, &asked["challenge"], "000000").await;
    assert_eq!(
        s, 429,
        "the eleventh wrong code locks the user's second step: {b}"
    );
    let (_, asked) = login(&base, "admin@clinic.test", TEST_PASSWORD).await;
    let (s, _) = second_step(&base, &asked["challenge"], &code(&secret, 1)).await;
    assert_eq!(s, 429, "even the right code, while locked");
}

#[tokio::test]
async fn a_temporary_password_is_spent_by_the_second_step_and_admins_reset_each_others_factor() {
    let sb = Sandbox::for_test().await;
    let (svc, pool) = required(&sb).await;
    let base = svc.url();
    auth::create_user(&pool, "first@clinic.test", Role::Admin).await;
    let (_, first, _) = enrol(&base, "first@clinic.test", TEST_PASSWORD).await;
    let first_token = first["accessToken"].as_str().unwrap().to_owned();
    let (s, created) = post(
        &format!("{base}/api/v1/auth/admin/users"),
        Some(&first_token),
        &json!({"email": "second@clinic.test", "firstName": "Second", "lastName": "Admin", "role": "admin"}),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let temporary = created["temporaryPassword"].as_str().unwrap();
    let second_id = created["user"]["userId"].as_str().unwrap().to_owned();

    // The temporary password survives a first step that is never completed…
    let (s, _) = login(&base, "second@clinic.test", temporary).await;
    assert_eq!(s, 202);
    let (_, done, _) = enrol(&base, "second@clinic.test", temporary).await;
    assert_eq!(done["user"]["mustChangePassword"], true);
    // …and is spent by the one that is.
    let (s, b) = login(&base, "second@clinic.test", temporary).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (401, Some("temporary_password_used")),
        "{b}"
    );
    let second_refresh = done["refreshToken"].clone();

    // Nobody resets their own factor; another admin can, which ends the sessions and is recorded.
    let first_id: String =
        sqlx::query_scalar("SELECT id::text FROM users WHERE email = 'first@clinic.test'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let (s, b) = post(
        &format!("{base}/api/v1/auth/admin/users/{first_id}/second-factor/reset"),
        Some(&first_token),
        &json!({}),
    )
    .await;
    assert_json_error(s, &b, 409);
    let (s, b) = post(
        &format!("{base}/api/v1/auth/admin/users/{second_id}/second-factor/reset"),
        Some(&first_token),
        &json!({}),
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let (s, _) = post(
        &format!("{base}/api/v1/auth/refresh"),
        None,
        &json!({"refreshToken": second_refresh}),
    )
    .await;
    assert_eq!(s, 401, "the reset ended the user's sessions");
    let recorded = sandbox::db::count(
        &pool,
        &format!(
            "SELECT count(*) FROM security_events WHERE kind = 'second_factor_reset' \
             AND user_id = '{second_id}' AND by_user = '{first_id}'"
        ),
    )
    .await;
    assert_eq!(recorded, 1);
    assert_eq!(
        sandbox::db::count(
            &pool,
            "SELECT count(*) FROM security_events WHERE kind = 'second_factor_enrolled'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn under_optional_anyone_may_enrol_while_signed_in_and_is_then_asked() {
    let sb = Sandbox::for_test().await;
    let svc = auth::start(auth::config(&sb)).await;
    let base = svc.url();
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "doctor@clinic.test", Role::Doctor).await;
    let token = auth::login(&base, "doctor@clinic.test", TEST_PASSWORD).await;
    let (s, enrolment) = post(
        &format!("{base}/api/v1/auth/second-factor"),
        Some(&token),
        &json!({}),
    )
    .await;
    assert_eq!(s, 200, "{enrolment}");
    let secret = enrolment["secret"].as_str().unwrap();
    let (s, b) = post(
        &format!("{base}/api/v1/auth/second-factor/confirm"),
        Some(&token),
        &json!({"code": "000000"}),
    )
    .await;
    assert_json_error(s, &b, 422);
    assert_eq!(b["field"], "code");
    let (_, b) = login(&base, "doctor@clinic.test", TEST_PASSWORD).await;
    assert!(
        b["accessToken"].is_string(),
        "not asked before it is confirmed: {b}"
    );
    let (s, codes) = post(
        &format!("{base}/api/v1/auth/second-factor/confirm"),
        Some(&token),
        &json!({"code": code(secret, 0)}),
    )
    .await;
    assert_eq!(s, 200, "{codes}");
    assert_eq!(codes["recoveryCodes"].as_array().unwrap().len(), 10);
    let (s, b) = post(
        &format!("{base}/api/v1/auth/second-factor"),
        Some(&token),
        &json!({}),
    )
    .await;
    assert_json_error(s, &b, 409);
    let (s, asked) = login(&base, "doctor@clinic.test", TEST_PASSWORD).await;
    assert_eq!(
        (s, asked["status"].as_str()),
        (202, Some("second_factor_required"))
    );
    let (s, _) = second_step(&base, &asked["challenge"], &code(secret, 1)).await;
    assert_eq!(s, 200);
}
