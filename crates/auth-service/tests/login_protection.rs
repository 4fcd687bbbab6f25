//! Login protection: wrong passwords are throttled per account across auth-service processes
//! (the 11th within a minute is refused 429 with `Retry-After`, a right password too while
//! locked, and the lock ends by itself), over-long passwords are refused before hashing, the
//! password policy refuses common passwords and the person's own words, self-registration
//! can be turned off and never tells whether an email has an account, every answer carries the
//! security headers, and bodies on the auth routes are small. A password hashed with older
//! argon2 parameters is re-hashed by its next login.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use sandbox::auth;
use sandbox::http::{assert_json_error, post};
use sandbox::{Sandbox, TEST_PASSWORD};
use serde_json::json;

#[tokio::test]
async fn the_eleventh_wrong_password_locks_the_account_on_every_process_until_the_lock_ends() {
    let sb = Sandbox::for_test().await;
    // Two auth-service processes on one database: the count is the database's, not theirs.
    let one = auth::start(auth::config(&sb)).await;
    let two = auth::start(auth::config(&sb)).await;
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "target@clinic.test", Role::Doctor).await;
    let attempt = |base: String, password: &'static str| async move {
        let resp = reqwest::Client::new()
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": "Target@Clinic.test", "password": password}))
            .send()
            .await
            .unwrap();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        (resp.status().as_u16(), retry_after)
    };
    for i in 0..10 {
        let base = if i % 2 == 0 { one.url() } else { two.url() };
        let (status, _) = attempt(base, "not the password").await;
        assert_eq!(status, 401, "attempt {}", i + 1);
    }
    let (status, retry_after) = attempt(one.url(), "not the password").await;
    assert_eq!(status, 429, "the 11th wrong password within a minute");
    let retry_after = retry_after.expect("Retry-After");
    assert!((250..=300).contains(&retry_after), "{retry_after}");
    let (status, _) = attempt(two.url(), TEST_PASSWORD).await;
    assert_eq!(status, 429, "the right password is refused during the lock");

    // The lock's end, by the server's clock: move it into the past rather than wait.
    sqlx::query("UPDATE login_throttle SET locked_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    let (status, _) = attempt(one.url(), TEST_PASSWORD).await;
    assert_eq!(status, 200, "the lock ended by itself");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM login_throttle")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a successful login clears the count");
}

#[tokio::test]
async fn passwords_are_bounded_and_checked_against_the_policy() {
    let sb = Sandbox::for_test().await;
    let auth = auth::start(auth::config(&sb)).await;
    let base = auth.url();
    let register = format!("{base}/api/v1/auth/register");
    let person = |password: &str| {
        json!({"email": "tendai.moyo@clinic.test", "password": password,
               "firstName": "Tendai", "lastName": "Moyo", "role": "nurse"})
    };
    for (password, says) in [
        ("password123", "common"),
        ("Sunshine1", "common"),
        ("tendai-on-ward-7", "first name"),
        ("ward7-MOYO-rounds", "last name"),
        ("i-am-tendai.moyo", "email"),
        ("short", "at least 8"),
    ] {
        let (s, b) = post(&register, None, &person(password)).await;
        assert_json_error(s, &b, 422);
        assert_eq!(b["field"], "password");
        assert!(
            b["message"].as_str().unwrap().contains(says),
            "{password}: {b}"
        );
    }
    let (s, b) = post(
        &format!("{base}/api/v1/auth/login"),
        None,
        &json!({"email": "tendai.moyo@clinic.test", "password": "x".repeat(129)}),
    )
    .await;
    assert_json_error(s, &b, 422);
    assert!(
        b["message"].as_str().unwrap().contains("at most 128"),
        "{b}"
    );
    let (s, _) = post(&register, None, &person("evening handover at the desk")).await;
    assert_eq!(s, 202);
}

#[tokio::test]
async fn registration_never_tells_whether_an_email_exists_and_can_be_turned_off() {
    let sb = Sandbox::for_test().await;
    let auth = auth::start(auth::config(&sb)).await;
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "taken@clinic.test", Role::Doctor).await;
    let register = format!("{}/api/v1/auth/register", auth.url());
    let body = |email: &str| {
        json!({"email": email, "password": "evening handover at the desk",
               "firstName": "New", "lastName": "Person", "role": "nurse"})
    };
    let events = || sandbox::db::count(&pool, "SELECT count(*) FROM outbox");
    let before = events().await;
    let taken = post(&register, None, &body("TAKEN@clinic.test")).await;
    assert_eq!(events().await, before, "nothing written for a taken email");
    let fresh = post(&register, None, &body("fresh@clinic.test")).await;
    assert_eq!(events().await, before + 1);
    assert_eq!(taken.0, 202);
    assert_eq!(taken, fresh, "the same answer either way");

    let mut closed = auth::config(&sb);
    closed.security.registration_enabled = false;
    let closed = auth::start(closed).await;
    let (s, b) = post(
        &format!("{}/api/v1/auth/register", closed.url()),
        None,
        &body("another@clinic.test"),
    )
    .await;
    assert_json_error(s, &b, 403);
    assert!(b["message"].as_str().unwrap().contains("turned off"), "{b}");
}

#[tokio::test]
async fn answers_carry_security_headers_and_auth_bodies_are_small() {
    let sb = Sandbox::for_test().await;
    let auth = auth::start(auth::config(&sb)).await;
    let base = auth.url();
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "nobody@clinic.test", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ] {
        assert_eq!(resp.headers()[name], value, "{name}");
    }
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "ok@clinic.test", Role::Nurse).await;
    let resp = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "ok@clinic.test", "password": TEST_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["cache-control"],
        "no-store",
        "an answer carrying tokens"
    );

    let padding = "x".repeat(5 * 1024);
    let resp = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "ok@clinic.test", "password": padding}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let b: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(b["error"], "payload_too_large");
}

#[tokio::test]
async fn the_attempt_that_locks_says_so_once() {
    use auth_service::throttle::{attempt, Attempt, LoginPolicy};
    let sb = Sandbox::for_test().await;
    let pool = auth::pool(&sb).await;
    let policy = LoginPolicy::default();
    for n in 1..=10 {
        assert_eq!(
            attempt(&pool, "a@clinic.test", &policy).await.unwrap(),
            Attempt::Allowed(n)
        );
    }
    let locking = attempt(&pool, "a@clinic.test", &policy).await.unwrap();
    assert!(
        matches!(locking, Attempt::Locked { just_now: true, .. }),
        "{locking:?}"
    );
    let after = attempt(&pool, "a@clinic.test", &policy).await.unwrap();
    assert!(
        matches!(
            after,
            Attempt::Locked {
                just_now: false,
                ..
            }
        ),
        "{after:?}"
    );
    assert_eq!(
        attempt(&pool, "other@clinic.test", &policy).await.unwrap(),
        Attempt::Allowed(1),
        "accounts are counted apart"
    );
}

#[tokio::test]
async fn seeded_passwords_meet_the_same_policy() {
    let sb = Sandbox::for_test().await;
    let pool = auth::pool(&sb).await;
    let options = |admin: &str, staff: Option<&str>| auth_service::seed::SeedOptions {
        admin_email: contract::Email::parse("admin@clinic.test").unwrap(),
        admin_password: Some(admin.to_owned()),
        staff_password: staff.map(str::to_owned),
    };
    for (admin, staff, says) in [
        ("password1", None, "SEED_ADMIN_PASSWORD"),
        ("my-admin-password", None, "SEED_ADMIN_PASSWORD"),
        (
            "evening handover at the desk",
            Some("qwertyuiop"),
            "SEED_STAFF_PASSWORD",
        ),
    ] {
        let refused = auth_service::seed::seed(&pool, &options(admin, staff))
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains(says), "{refused}");
    }
    let users = || sandbox::db::count(&pool, "SELECT count(*) FROM users");
    assert_eq!(users().await, 0, "a refused seed writes nobody");
    auth_service::seed::seed(&pool, &options("evening handover at the desk", None))
        .await
        .unwrap();
    assert_eq!(users().await, 10);
}

/// Accounts hashed before the parameters changed (argon2's default: 19 MiB, 2 passes) still log
/// in, and their first login re-hashes the password with today's (7 MiB, 5 passes) — without a
/// new version or event, since the hash is in no copy.
#[tokio::test]
async fn a_login_rehashes_a_password_hashed_with_older_parameters() {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let sb = Sandbox::for_test().await;
    let svc = auth::start(auth::config(&sb)).await;
    let pool = auth::pool(&sb).await;
    let id = auth::create_user(&pool, "old-hash@clinic.test", Role::Nurse).await;
    let old = argon2::Argon2::default()
        .hash_password(TEST_PASSWORD.as_bytes(), &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
        .bind(id)
        .bind(&old)
        .execute(&pool)
        .await
        .unwrap();
    let state = || async {
        sqlx::query_as::<_, (String, i64, i64)>(
            "SELECT password_hash, user_version, (SELECT count(*) FROM outbox) FROM users \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let (_, version, events) = state().await;

    auth::login(&svc.url(), "old-hash@clinic.test", TEST_PASSWORD).await;
    let (hash, version_after, events_after) = state().await;
    assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
    assert_eq!((version_after, events_after), (version, events));
    // The new hash is of the same password.
    auth::login(&svc.url(), "old-hash@clinic.test", TEST_PASSWORD).await;
    assert_eq!(state().await.0, hash, "re-hashed once");
}
