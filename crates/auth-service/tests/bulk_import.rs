//! `POST /api/v1/auth/admin/users/bulk` and temporary passwords: every item is answered (created,
//! exists, invalid with its field), valid items are created with one `user.created` event each
//! even when others are invalid, the same list sent again creates nothing (also when two copies
//! race), and a temporary password logs in once and only until it expires, with errors of its
//! own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auth_service::password;
use auth_service::store::{insert_user, NewUser};
use contract::Role;
use sandbox::auth;
use sandbox::http::post;
use sandbox::{Sandbox, TEST_PASSWORD};
use serde_json::{json, Value};

fn person(email: &str, role: &str) -> Value {
    json!({"email": email, "firstName": "Chipo", "lastName": "Dube", "role": role})
}

#[tokio::test]
async fn a_bulk_request_creates_the_valid_items_answers_every_one_and_is_idempotent() {
    let sb = Sandbox::for_test().await;
    let svc = auth::start(auth::config(&sb)).await;
    let base = svc.url();
    let pool = auth::pool(&sb).await;
    let token = auth::admin_token(&pool, &base).await;
    let existing = auth::create_user(&pool, "already@clinic.test", Role::Nurse).await;
    let bulk = format!("{base}/api/v1/auth/admin/users/bulk");
    let events_before = sandbox::db::count(&pool, "SELECT count(*) FROM event_store").await;

    let list = json!({"users": [
        person("new.one@clinic.test", "doctor"),
        person("not-an-email", "doctor"),
        person("new.two@clinic.test", "surgeon"),
        person("NEW.ONE@clinic.test", "nurse"),
        person("Already@clinic.test", "nurse"),
        {"email": "new.three@clinic.test", "firstName": "Tariro", "lastName": "Moyo",
         "role": "pharmacist", "phoneNumber": "+263 77 123 4567"},
    ]});
    let (s, b) = post(&bulk, Some(&token), &list).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (&b["created"], &b["existing"], &b["invalid"]),
        (&json!(2), &json!(1), &json!(3)),
        "{b}"
    );
    let items = b["items"].as_array().unwrap();
    let statuses: Vec<&str> = items
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["created", "invalid", "invalid", "invalid", "exists", "created"]
    );
    let indexes: Vec<u64> = items.iter().map(|i| i["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4, 5]);
    assert_eq!(items[1]["error"]["field"], "email");
    assert_eq!(items[2]["error"]["field"], "role");
    assert_eq!(items[3]["error"]["field"], "email", "a repeated email");
    assert_eq!(items[4]["userId"], json!(existing.to_string()));
    assert!(items[4].get("temporaryPassword").is_none());
    assert_eq!(
        sandbox::db::count(&pool, "SELECT count(*) FROM event_store").await,
        events_before + 2,
        "one user.created event per account created, none for the others"
    );

    // The temporary password logs in, and the account must change it.
    let temporary = items[0]["temporaryPassword"].as_str().unwrap();
    let login = sandbox::ApiClient::new(&base)
        .unwrap()
        .login("new.one@clinic.test", temporary)
        .await
        .unwrap();
    assert!(login.user.must_change_password);
    assert!(login.user.is_active);
    // It logs in once: a second login with it is refused with its own error…
    let (s, b) = post(
        &format!("{base}/api/v1/auth/login"),
        None,
        &json!({"email": "new.one@clinic.test", "password": temporary}),
    )
    .await;
    assert_eq!(
        (s, b["error"].clone()),
        (401, json!("temporary_password_used")),
        "{b}"
    );
    // …while the session it started may still replace it.
    let (s, b) = post(
        &format!("{base}/api/v1/auth/change-password"),
        Some(&login.access_token),
        &json!({"currentPassword": temporary, "newPassword": "ward seven night rounds"}),
    )
    .await;
    assert_eq!(
        (s, b["mustChangePassword"].clone()),
        (200, json!(false)),
        "{b}"
    );
    auth::login(&base, "new.one@clinic.test", "ward seven night rounds").await;
    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'new.three@clinic.test'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(password::temporary::is_temporary(&stored), "{stored}");

    // The same list again creates nothing and changes nothing.
    let (s, again) = post(&bulk, Some(&token), &list).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(
        (&again["created"], &again["existing"], &again["invalid"]),
        (&json!(0), &json!(3), &json!(3)),
        "{again}"
    );
    assert_eq!(again["items"][0]["userId"], items[0]["userId"]);
    assert_eq!(
        sandbox::db::count(&pool, "SELECT count(*) FROM event_store").await,
        events_before + 3,
        "the two creations and the password change; spending the temporary password is none"
    );

    // Refusals of the whole request.
    let (s, b) = post(&bulk, Some(&token), &json!({"users": []})).await;
    assert_eq!((s, b["field"].clone()), (422, json!("users")), "{b}");
    let many: Vec<Value> = (0..1001)
        .map(|i| person(&format!("n{i}@clinic.test"), "nurse"))
        .collect();
    let (s, b) = post(&bulk, Some(&token), &json!({ "users": many })).await;
    assert_eq!((s, b["field"].clone()), (422, json!("users")), "{b}");
    auth::create_user(&pool, "nurse@clinic.test", Role::Nurse).await;
    let nurse = auth::login(&base, "nurse@clinic.test", TEST_PASSWORD).await;
    let (s, _) = post(&bulk, Some(&nurse), &list).await;
    assert_eq!(s, 403);
    let (s, _) = post(&bulk, None, &list).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn two_imports_of_the_same_list_at_once_create_each_account_once() {
    let sb = Sandbox::for_test().await;
    let svc = auth::start(auth::config(&sb)).await;
    let base = svc.url();
    let pool = auth::pool(&sb).await;
    let token = auth::admin_token(&pool, &base).await;
    let bulk = format!("{base}/api/v1/auth/admin/users/bulk");
    let users: Vec<Value> = (0..300)
        .map(|i| person(&format!("race{i}@clinic.test"), "nurse"))
        .collect();
    let list = json!({ "users": users });
    let (a, b) = tokio::join!(
        post(&bulk, Some(&token), &list),
        post(&bulk, Some(&token), &list)
    );
    assert_eq!((a.0, b.0), (200, 200), "{} {}", a.1, b.1);
    let created = a.1["created"].as_u64().unwrap() + b.1["created"].as_u64().unwrap();
    let existing = a.1["existing"].as_u64().unwrap() + b.1["existing"].as_u64().unwrap();
    assert_eq!((created, existing), (300, 300));
    assert_eq!(
        sandbox::db::count(
            &pool,
            "SELECT count(*) FROM event_store WHERE event_type = 'user.created' \
             AND body->'payload'->>'email' LIKE 'race%'"
        )
        .await,
        300
    );
}

#[tokio::test]
async fn an_expired_temporary_password_is_refused_with_its_own_error() {
    let sb = Sandbox::for_test().await;
    let svc = auth::start(auth::config(&sb)).await;
    let base = svc.url();
    let pool = auth::pool(&sb).await;
    let (expired_pw, live_pw) = (password::temporary(), password::temporary());
    let now = chrono::Utc::now();
    // Tagged with the auth-service's own key, which lives in the sandbox's key directory.
    let key = password::temporary::TagKey::load_or_create(&sb.key_dir.0).unwrap();
    let write = |email: &str, hash: String| {
        let new = NewUser::staff(email, "Temp", "Orary", Role::Doctor, hash).unwrap();
        insert_user(&pool, new)
    };
    write(
        "expired@clinic.test",
        password::temporary::hash(&expired_pw, std::time::Duration::ZERO, now, &key).unwrap(),
    )
    .await
    .unwrap();
    write(
        "live@clinic.test",
        password::temporary::hash(&live_pw, std::time::Duration::from_secs(3600), now, &key)
            .unwrap(),
    )
    .await
    .unwrap();
    let login = format!("{base}/api/v1/auth/login");

    let (s, b) = post(
        &login,
        None,
        &json!({"email": "expired@clinic.test", "password": expired_pw}),
    )
    .await;
    assert_eq!(
        (s, b["error"].clone()),
        (401, json!("temporary_password_expired")),
        "{b}"
    );
    // A wrong password learns nothing about expiry.
    let (s, b) = post(
        &login,
        None,
        &json!({"email": "expired@clinic.test", "password": live_pw}),
    )
    .await;
    assert_eq!((s, b["error"].clone()), (401, json!("unauthorized")), "{b}");
    // Two logins at once with the right one: it logs in once.
    let attempt = json!({"email": "live@clinic.test", "password": live_pw});
    let (a, b) = tokio::join!(post(&login, None, &attempt), post(&login, None, &attempt));
    let mut outcomes = [
        (a.0, a.1["error"].as_str().unwrap_or("").to_owned()),
        (b.0, b.1["error"].as_str().unwrap_or("").to_owned()),
    ];
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            (200, String::new()),
            (401, "temporary_password_used".to_owned())
        ],
        "{} {}",
        a.1,
        b.1
    );
}
