//! Sessions: a login gives a short access token and a refresh token; each refresh rotates the
//! refresh token, a used one presented again revokes the whole session, and logout,
//! deactivation, a role change and a password change end sessions. Tokens carry a key id, the
//! service publishes its keys (JWKS), and a rotated key is picked up without a restart while
//! tokens signed before stay valid.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use platform::jwt::{JwtVerifier, KeySource, VerifierConfig, JWKS_PATH, LOCAL_ACCESS_TTL_SECONDS};
use sandbox::auth;
use sandbox::http::{get, post, send, Method};
use sandbox::{poll_until, Sandbox, SETTLE, TEST_PASSWORD};
use serde_json::{json, Value};

async fn login(base: &str, email: &str) -> Value {
    let (s, b) = post(
        &format!("{base}/api/v1/auth/login"),
        None,
        &json!({"email": email, "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    b
}

async fn refresh(base: &str, token: &Value) -> (u16, Value) {
    post(
        &format!("{base}/api/v1/auth/refresh"),
        None,
        &json!({ "refreshToken": token }),
    )
    .await
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_session() {
    let sb = Sandbox::for_test().await;
    let auth = auth::start(auth::config(&sb)).await;
    let base = auth.url();
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "nurse@clinic.test", Role::Nurse).await;

    let first = login(&base, "nurse@clinic.test").await;
    assert_eq!(first["expiresIn"], 600);
    assert!(first["sessionExpiresAt"].is_string());
    let (s, second) = refresh(&base, &first["refreshToken"]).await;
    assert_eq!(s, 200, "{second}");
    assert_ne!(second["refreshToken"], first["refreshToken"], "rotated");
    let (s, me) = get(
        &format!("{base}/api/v1/auth/me"),
        second["accessToken"].as_str(),
    )
    .await;
    assert_eq!((s, me["email"].as_str()), (200, Some("nurse@clinic.test")));
    assert_eq!(
        second["sessionExpiresAt"], first["sessionExpiresAt"],
        "a refresh does not extend the session"
    );
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_all(&pool)
        .await
        .unwrap();
    let plain = second["refreshToken"].as_str().unwrap().as_bytes().to_vec();
    assert!(
        stored.iter().all(|h| h.len() == 32 && *h != plain),
        "only hashes are stored"
    );

    // The first token again: someone holds a copy. Refused, and the session is over for
    // whoever holds the newest token too.
    let (s, b) = refresh(&base, &first["refreshToken"]).await;
    assert_eq!((s, b["error"].as_str()), (401, Some("unauthorized")));
    let (s, _) = refresh(&base, &second["refreshToken"]).await;
    assert_eq!(s, 401, "the whole family is revoked");
    let (s, _) = refresh(&base, &json!("made-up")).await;
    assert_eq!(s, 401);

    // Logout ends a session; another session of the same user is untouched.
    let (a, b) = (
        login(&base, "nurse@clinic.test").await,
        login(&base, "nurse@clinic.test").await,
    );
    let (s, _) = post(
        &format!("{base}/api/v1/auth/logout"),
        None,
        &json!({ "refreshToken": a["refreshToken"] }),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(refresh(&base, &a["refreshToken"]).await.0, 401);
    assert_eq!(refresh(&base, &b["refreshToken"]).await.0, 200);
}

#[tokio::test]
async fn deactivation_role_change_and_password_change_end_every_session() {
    let sb = Sandbox::for_test().await;
    let auth = auth::start(auth::config(&sb)).await;
    let base = auth.url();
    let pool = auth::pool(&sb).await;
    let admin = auth::admin_token(&pool, &base).await;
    let admin_users = format!("{base}/api/v1/auth/admin/users");

    let leaver = auth::create_user(&pool, "leaver@clinic.test", Role::Nurse).await;
    let promoted = auth::create_user(&pool, "promoted@clinic.test", Role::Nurse).await;
    auth::create_user(&pool, "careful@clinic.test", Role::Doctor).await;
    let sessions = [
        login(&base, "leaver@clinic.test").await,
        login(&base, "promoted@clinic.test").await,
        login(&base, "careful@clinic.test").await,
        login(&base, "careful@clinic.test").await,
    ];

    let (s, _) = post(
        &format!("{admin_users}/{leaver}/deactivate"),
        Some(&admin),
        &json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(
        Method::PUT,
        &format!("{admin_users}/{promoted}/role"),
        Some(&admin),
        Some(&json!({"role": "pharmacist"})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, b) = post(
        &format!("{base}/api/v1/auth/change-password"),
        sessions[2]["accessToken"].as_str(),
        &json!({"currentPassword": TEST_PASSWORD, "newPassword": "night shift on ward seven"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    for (i, session) in sessions.iter().enumerate() {
        assert_eq!(
            refresh(&base, &session["refreshToken"]).await.0,
            401,
            "session {i} ended"
        );
    }
    // A new login after the change works, with the new role in the token.
    let again = login(&base, "promoted@clinic.test").await;
    assert_eq!(again["user"]["role"], "pharmacist");
}

#[tokio::test]
async fn a_rotated_key_is_published_and_used_while_older_tokens_stay_valid() {
    let sb = Sandbox::for_test().await;
    let auth = auth::start(auth::config(&sb)).await;
    let base = auth.url();
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "doctor@clinic.test", Role::Doctor).await;
    let jwks_url = format!("{base}{JWKS_PATH}");
    // What another service does: fetch the keys over HTTP, never read the files.
    let verifier = JwtVerifier::new(VerifierConfig::new(
        KeySource::Jwks(jwks_url.clone()),
        LOCAL_ACCESS_TTL_SECONDS,
    ))
    .unwrap();

    let before = login(&base, "doctor@clinic.test").await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let old_kid = jsonwebtoken::decode_header(&before).unwrap().kid.unwrap();
    let (s, jwks) = get(&jwks_url, None).await;
    assert_eq!(
        (s, jwks["keys"][0]["kid"].as_str()),
        (200, Some(old_kid.as_str()))
    );
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert!(jwks["keys"][0].get("d").is_none(), "no private part");
    verifier.verify(&before).await.expect("verified by JWKS");

    let new_kid = sb.key_dir.rotate().unwrap();
    poll_until(SETTLE, "the service to publish the new key", || async {
        let (_, jwks) = get(&jwks_url, None).await;
        (jwks["keys"][0]["kid"] == new_kid.as_str()).then_some(())
    })
    .await;
    let (_, jwks) = get(&jwks_url, None).await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()),
        "the old key stays published"
    );
    let after = login(&base, "doctor@clinic.test").await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid.as_deref(),
        Some(new_kid.as_str())
    );
    // The verifier meets an unknown key id, fetches the keys again, and accepts both.
    verifier.verify(&after).await.expect("a new token");
    verifier.verify(&before).await.expect("an older token");
    for token in [&before, &after] {
        let (s, _) = get(&format!("{base}/api/v1/auth/me"), Some(token)).await;
        assert_eq!(s, 200);
    }
}

/// The typed client's session calls (what `portal users`, the benchmark and the chaos load use)
/// speak the same protocol: refresh rotates, logout (204, no body) ends the session.
#[tokio::test]
async fn the_api_client_refreshes_and_logs_out() {
    let sb = Sandbox::for_test().await;
    let auth = auth::start(auth::config(&sb)).await;
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "client@clinic.test", Role::Nurse).await;
    let client = sandbox::ApiClient::new(&auth.url()).unwrap();
    let first = client
        .login("client@clinic.test", TEST_PASSWORD)
        .await
        .unwrap();
    let second = client.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    client.logout(&second.refresh_token).await.unwrap();
    let refused = client.refresh(&second.refresh_token).await.unwrap_err();
    assert_eq!(refused.status().map(|s| s.as_u16()), Some(401));
}

/// An admin resets a password: a temporary one shown only in the answer, `mustChangePassword`
/// set, the user's sessions ended, and a versioned `user.updated` event that carries neither the
/// password nor its hash. The user logs in with the temporary password.
#[tokio::test]
async fn an_admin_reset_gives_a_temporary_password_ends_sessions_and_writes_its_event() {
    let sb = Sandbox::for_test().await;
    let auth = auth::start(auth::config(&sb)).await;
    let base = auth.url();
    let pool = auth::pool(&sb).await;
    let id = auth::create_user(&pool, "reset.me@clinic.test", Role::Nurse).await;
    let session = login(&base, "reset.me@clinic.test").await;
    let admin = auth::admin_token(&pool, &base).await;
    let url = format!("{base}/api/v1/auth/admin/users/{id}/reset-password");

    let (s, refused) = post(
        &url,
        Some(session["accessToken"].as_str().unwrap()),
        &json!({}),
    )
    .await;
    assert_eq!(s, 403, "only admins reset: {refused}");
    let (s, reset) = post(&url, Some(&admin), &json!({})).await;
    assert_eq!(s, 200, "{reset}");
    let temporary = reset["temporaryPassword"].as_str().unwrap().to_owned();
    assert!(temporary.len() >= 12);
    assert_eq!(reset["user"]["mustChangePassword"], true);
    assert_eq!(reset["user"]["userVersion"], 2);

    let (s, _) = refresh(&base, &session["refreshToken"]).await;
    assert_eq!(s, 401, "the user's sessions ended");
    let (event_type, body): (String, String) = sqlx::query_as(
        "SELECT event_type, body::text FROM event_store WHERE user_id = $1 ORDER BY seq DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(event_type, "user.updated");
    assert!(body.contains("mustChangePassword"), "{body}");
    assert!(
        !body.contains(&temporary) && !body.contains("argon2"),
        "{body}"
    );

    let (s, again) = post(
        &format!("{base}/api/v1/auth/login"),
        None,
        &json!({"email": "reset.me@clinic.test", "password": temporary}),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["user"]["mustChangePassword"], true);
    let (s, _) = post(
        &format!(
            "{base}/api/v1/auth/admin/users/{}/reset-password",
            uuid::Uuid::new_v4()
        ),
        Some(&admin),
        &json!({}),
    )
    .await;
    assert_eq!(s, 404);
}
