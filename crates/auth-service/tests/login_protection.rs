//! Login protection: wrong passwords are throttled per (account, address) across
//! auth-service processes (the 11th within a minute locks that pair only, 429 with
//! `Retry-After`, and the lock ends by itself); a stranger's thousand guesses at an account
//! never stop its owner signing in from elsewhere; an address guessing at many accounts is
//! locked except for accounts it signed in to before; guessing from many addresses slows
//! addresses the account does not know, never the ones it does. Over-long passwords are
//! refused before hashing, the password policy refuses common passwords and the person's own
//! words, self-registration is off by default and, when on, is a request that creates no
//! account until an admin approves it with a role and a temporary password; every answer
//! carries the security headers, and bodies on the auth routes are small. A password hashed
//! with older argon2 parameters is re-hashed by its next login.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use futures::StreamExt;
use sandbox::auth;
use sandbox::http::{assert_json_error, get, post};
use sandbox::{Sandbox, TEST_PASSWORD};
use serde_json::json;
use std::time::{Duration, Instant};

/// One login at `base` as if from `from` (the auth-service believes `X-Forwarded-For` from a
/// proxy on its own machine, as the gateway is): the status and `Retry-After`.
async fn login_from(base: &str, from: &str, email: &str, password: &str) -> (u16, Option<u64>) {
    // One client for every call: building one loads the system's CA certificates, which took
    // longer than the login itself. It keeps no idle connections: each test has a runtime of
    // its own, and a pooled connection belongs to the runtime that opened it.
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let resp = CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap()
        })
        .post(format!("{base}/api/v1/auth/login"))
        .header("x-forwarded-for", from)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (resp.status().as_u16(), retry_after)
}

/// `portal_login_decisions_total{decision}` as the service's `/metrics` shows it now.
async fn decisions(base: &str, decision: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("portal_login_decisions_total{{decision=\"{decision}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn the_eleventh_wrong_password_locks_the_pair_on_every_process_until_the_lock_ends() {
    let sb = Sandbox::for_test().await;
    // Two auth-service processes on one database: the count is the database's, not theirs.
    let one = auth::start(auth::config(&sb)).await;
    let two = auth::start(auth::config(&sb)).await;
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "target@clinic.test", Role::Doctor).await;
    let (a, b) = (one.url(), two.url());
    for i in 0..10 {
        let base = if i % 2 == 0 { &a } else { &b };
        let (status, _) =
            login_from(base, "10.0.0.7", "Target@Clinic.test", "not the password").await;
        assert_eq!(status, 401, "attempt {}", i + 1);
    }
    let (status, retry_after) =
        login_from(&a, "10.0.0.7", "Target@Clinic.test", "not the password").await;
    assert_eq!(status, 429, "the 11th wrong password within a minute");
    let retry_after = retry_after.expect("Retry-After");
    assert!((250..=300).contains(&retry_after), "{retry_after}");
    let (status, _) = login_from(&b, "10.0.0.7", "target@clinic.test", TEST_PASSWORD).await;
    assert_eq!(
        status, 429,
        "the right password from that address is refused during the lock"
    );
    let (status, _) = login_from(&b, "10.0.0.8", "target@clinic.test", TEST_PASSWORD).await;
    assert_eq!(
        status, 200,
        "the same account from another address is not locked"
    );

    // The lock's end, by the server's clock: move it into the past rather than wait.
    sqlx::query("UPDATE login_throttle SET locked_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    let (status, _) = login_from(&a, "10.0.0.7", "target@clinic.test", TEST_PASSWORD).await;
    assert_eq!(status, 200, "the lock ended by itself");
    let pairs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM login_throttle WHERE key LIKE 'pair:%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(pairs, 0, "a successful login clears the pair's count");
}

/// The check: a thousand wrong passwords for the admin from one address, and the admin
/// signs in at once from another — never slowed, never refused.
#[tokio::test]
async fn a_thousand_guesses_from_a_stranger_never_lock_the_admin_out() {
    let sb = Sandbox::for_test().await;
    let svc = auth::start(auth::config(&sb)).await;
    let base = svc.url();
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "admin@clinic.test", Role::Admin).await;
    let started = Instant::now();
    let guesses = futures::stream::iter(0..1000)
        .map(|i| {
            let base = base.clone();
            async move {
                login_from(
                    &base,
                    "127.0.0.2",
                    "admin@clinic.test",
                    &format!("guess number {i}"),
                )
                .await
                .0
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<u16>>()
        .await;
    let count = |s: u16| guesses.iter().filter(|&&g| g == s).count();
    println!(
        "1000 wrong passwords for the admin from 127.0.0.2 in {:.1} s: {} answered 401, {} answered 429",
        started.elapsed().as_secs_f64(),
        count(401),
        count(429)
    );
    assert_eq!(count(401) + count(429), 1000, "{guesses:?}");
    assert!(count(401) <= 10, "the pair locks after ten failures");
    let slowed_before = decisions(&base, "slowed").await;
    let started = Instant::now();
    let (status, _) = login_from(&base, "127.0.0.1", "admin@clinic.test", TEST_PASSWORD).await;
    println!(
        "the admin's own login from 127.0.0.1 afterwards: {status} in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(status, 200, "the admin signs in from another address");
    assert_eq!(
        decisions(&base, "slowed").await,
        slowed_before,
        "and is not slowed"
    );
    assert!(decisions(&base, "pair_locked").await >= 990);
}

#[tokio::test]
async fn an_address_guessing_at_many_accounts_is_locked_except_where_it_signed_in_before() {
    let sb = Sandbox::for_test().await;
    let mut config = auth::config(&sb);
    config.security.login.source_max_failures = 10;
    let svc = auth::start(config).await;
    let base = svc.url();
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "ward@clinic.test", Role::Nurse).await;
    auth::create_user(&pool, "other@clinic.test", Role::Nurse).await;
    // The ward's terminal signed in from 10.1.1.1 before.
    assert_eq!(
        login_from(&base, "10.1.1.1", "ward@clinic.test", TEST_PASSWORD)
            .await
            .0,
        200
    );
    for i in 0..10 {
        let (s, _) = login_from(
            &base,
            "10.1.1.1",
            &format!("guess{i}@clinic.test"),
            "nope nope",
        )
        .await;
        assert_eq!(s, 401, "guess {i}");
    }
    let (s, retry) = login_from(&base, "10.1.1.1", "other@clinic.test", TEST_PASSWORD).await;
    assert_eq!(
        s, 429,
        "the address is locked for accounts it never signed in to"
    );
    assert!(retry.is_some());
    assert_eq!(
        login_from(&base, "10.1.1.1", "ward@clinic.test", TEST_PASSWORD)
            .await
            .0,
        200,
        "but not for the account that signed in from it before"
    );
    assert_eq!(
        login_from(&base, "10.1.1.2", "other@clinic.test", TEST_PASSWORD)
            .await
            .0,
        200,
        "and not from another address"
    );
    // IPv6 addresses count by their /64.
    for i in 0..10 {
        let from = format!("2001:db8:7:7::{:x}", i + 1);
        login_from(
            &base,
            &from,
            &format!("v6guess{i}@clinic.test"),
            "nope nope",
        )
        .await;
    }
    let (s, _) = login_from(
        &base,
        "2001:db8:7:7:ffff::1",
        "other@clinic.test",
        TEST_PASSWORD,
    )
    .await;
    assert_eq!(s, 429, "one /64 is one source");
    assert!(decisions(&base, "source_locked").await >= 2);
}

#[tokio::test]
async fn guessing_from_many_addresses_slows_new_addresses_and_never_known_ones() {
    let sb = Sandbox::for_test().await;
    let mut config = auth::config(&sb);
    config.security.login.account_slow_after = 5;
    config.security.login.max_delay = Duration::from_millis(100);
    let svc = auth::start(config).await;
    let base = svc.url();
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "doctor@clinic.test", Role::Doctor).await;
    assert_eq!(
        login_from(&base, "10.2.0.1", "doctor@clinic.test", TEST_PASSWORD)
            .await
            .0,
        200
    );
    for i in 0..8 {
        let (s, _) = login_from(
            &base,
            &format!("10.3.0.{}", i + 1),
            "doctor@clinic.test",
            "nope nope",
        )
        .await;
        assert_eq!(s, 401, "no address is locked: each guessed once");
    }
    assert!(
        decisions(&base, "slowed").await >= 3,
        "attempts past the ceiling are slowed"
    );
    let slowed = decisions(&base, "slowed").await;
    assert_eq!(
        login_from(&base, "10.2.0.1", "doctor@clinic.test", TEST_PASSWORD)
            .await
            .0,
        200
    );
    assert_eq!(
        decisions(&base, "slowed").await,
        slowed,
        "the known address is not slowed"
    );
    assert_eq!(
        login_from(&base, "10.9.9.9", "doctor@clinic.test", TEST_PASSWORD)
            .await
            .0,
        200,
        "a new address with the right password is slowed, never refused"
    );
    assert_eq!(decisions(&base, "slowed").await, slowed + 1);
}

#[tokio::test]
async fn passwords_are_bounded_and_checked_against_the_policy() {
    let sb = Sandbox::for_test().await;
    let svc = auth::start(auth::config(&sb)).await;
    let base = svc.url();
    let pool = auth::pool(&sb).await;
    let id = auth::create_user(&pool, "tendai.moyo@clinic.test", Role::Nurse).await;
    sqlx::query("UPDATE users SET first_name = 'Tendai', last_name = 'Moyo' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let token = auth::login(&base, "tendai.moyo@clinic.test", TEST_PASSWORD).await;
    let change = format!("{base}/api/v1/auth/change-password");
    for (password, says) in [
        ("password123", "common"),
        ("Sunshine1", "common"),
        ("tendai-on-ward-7", "first name"),
        ("ward7-MOYO-rounds", "last name"),
        ("i-am-tendai.moyo", "email"),
        ("short", "at least 8"),
    ] {
        let (s, b) = post(
            &change,
            Some(&token),
            &json!({"currentPassword": TEST_PASSWORD, "newPassword": password}),
        )
        .await;
        assert_json_error(s, &b, 422);
        assert_eq!(b["field"], "newPassword");
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
    let (s, _) = post(
        &change,
        Some(&token),
        &json!({"currentPassword": TEST_PASSWORD, "newPassword": "evening handover at the desk"}),
    )
    .await;
    assert_eq!(s, 200);
}

/// The check: a self-registered account cannot sign in until an admin approves it with
/// a role, and then only with a new temporary password.
#[tokio::test]
async fn a_registration_is_a_request_an_admin_approves_with_a_role_and_a_temporary_password() {
    let sb = Sandbox::for_test().await;
    let mut open = auth::config(&sb);
    open.security.registration_enabled = true;
    let svc = auth::start(open).await;
    let base = svc.url();
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "taken@clinic.test", Role::Doctor).await;
    let admin = auth::admin_token(&pool, &base).await;
    let register = format!("{base}/api/v1/auth/register");
    let body = |email: &str| {
        json!({"email": email, "password": "the squatter's own password",
               "firstName": "Dr", "lastName": "X", "requestedRole": "doctor"})
    };
    let events = || sandbox::db::count(&pool, "SELECT count(*) FROM event_store");
    let before = events().await;
    let taken = post(&register, None, &body("TAKEN@clinic.test")).await;
    let fresh = post(&register, None, &body("dr.x@clinic.test")).await;
    let again = post(&register, None, &body("dr.x@clinic.test")).await;
    assert_eq!(taken.0, 202);
    assert_eq!(taken, fresh, "the same answer either way");
    assert_eq!(fresh, again);
    assert_eq!(
        events().await,
        before,
        "a request is no account and no event"
    );
    assert_eq!(
        sandbox::db::count(
            &pool,
            "SELECT count(*) FROM users WHERE email = 'dr.x@clinic.test'"
        )
        .await,
        0
    );
    let (s, b) = post(&register, None, &json!({"email": "x@clinic.test", "firstName": "A", "lastName": "B", "requestedRole": "wizard"})).await;
    assert_json_error(s, &b, 422);
    assert_eq!(b["field"], "requestedRole");
    let (s, _) = login_from(
        &base,
        "10.4.0.1",
        "dr.x@clinic.test",
        "the squatter's own password",
    )
    .await;
    assert_eq!(s, 401, "nobody signs in with a request");

    let (s, pending) = get(
        &format!("{base}/api/v1/auth/admin/registrations"),
        Some(&admin),
    )
    .await;
    assert_eq!(s, 200);
    let pending = pending.as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["requestedRole"], "doctor");
    let id = pending[0]["id"].as_str().unwrap();
    let doctor = auth::login(&base, "taken@clinic.test", TEST_PASSWORD).await;
    let approve = format!("{base}/api/v1/auth/admin/registrations/{id}/approve");
    let (s, b) = post(&approve, Some(&doctor), &json!({"role": "nurse"})).await;
    assert_json_error(s, &b, 403);
    let (s, b) = post(&approve, Some(&admin), &json!({"role": "wizard"})).await;
    assert_json_error(s, &b, 422);
    let (s, approved) = post(&approve, Some(&admin), &json!({"role": "nurse"})).await;
    assert_eq!(s, 201, "{approved}");
    assert_eq!(
        approved["user"]["role"], "nurse",
        "the admin's choice, not the request's"
    );
    assert_eq!(approved["user"]["isActive"], true);
    assert_eq!(approved["user"]["mustChangePassword"], true);
    assert_eq!(events().await, before + 1, "one user.created, at approval");
    let (s, _) = login_from(
        &base,
        "10.4.0.1",
        "dr.x@clinic.test",
        "the squatter's own password",
    )
    .await;
    assert_eq!(s, 401, "the password typed with the request never signs in");
    let temporary = approved["temporaryPassword"].as_str().unwrap();
    let (s, _) = login_from(&base, "10.4.0.2", "dr.x@clinic.test", temporary).await;
    assert_eq!(s, 200, "the temporary password does");
    let (s, b) = post(&approve, Some(&admin), &json!({"role": "nurse"})).await;
    assert_json_error(s, &b, 404);

    // Declining removes a request; with registration off the endpoint says so with its code.
    post(&register, None, &body("declined@clinic.test")).await;
    let (_, pending) = get(
        &format!("{base}/api/v1/auth/admin/registrations"),
        Some(&admin),
    )
    .await;
    let id = pending[0]["id"].as_str().unwrap();
    let resp = reqwest::Client::new()
        .delete(format!("{base}/api/v1/auth/admin/registrations/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (_, pending) = get(
        &format!("{base}/api/v1/auth/admin/registrations"),
        Some(&admin),
    )
    .await;
    assert_eq!(pending, json!([]));

    let closed = auth::start(auth::config(&sb)).await;
    let (s, b) = post(
        &format!("{}/api/v1/auth/register", closed.url()),
        None,
        &body("another@clinic.test"),
    )
    .await;
    assert_json_error(s, &b, 403);
    assert_eq!(b["error"], "registration_disabled", "off by default: {b}");
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
    use auth_service::throttle::{attempt, Attempt, LoginPolicy, Scope};
    let sb = Sandbox::for_test().await;
    let pool = auth::pool(&sb).await;
    let policy = LoginPolicy::default();
    for n in 1..=10 {
        assert!(
            matches!(
                attempt(&pool, "a@clinic.test", "10.0.0.1", &policy).await.unwrap(),
                Attempt::Allowed { n: got, .. } if got == n
            ),
            "attempt {n}"
        );
    }
    let locking = attempt(&pool, "a@clinic.test", "10.0.0.1", &policy)
        .await
        .unwrap();
    assert!(
        matches!(
            locking,
            Attempt::Locked {
                scope: Scope::Pair,
                just_now: true,
                ..
            }
        ),
        "{locking:?}"
    );
    let after = attempt(&pool, "a@clinic.test", "10.0.0.1", &policy)
        .await
        .unwrap();
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
    for (account, source) in [
        ("other@clinic.test", "10.0.0.1"),
        ("a@clinic.test", "10.0.0.2"),
    ] {
        assert!(
            matches!(
                attempt(&pool, account, source, &policy).await.unwrap(),
                Attempt::Allowed { n: 1, .. }
            ),
            "{account} from {source} is counted apart"
        );
    }
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
            "SELECT password_hash, user_version, (SELECT count(*) FROM event_store) FROM users \
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
