//! The password-hashing queue is bounded: a flood of logins beyond it is answered 503 with
//! `Retry-After` at once instead of queueing without end, and the service answers normally as
//! soon as the flood is over; a refused guess costs its account no attempt. (Its own test binary: the bound is per process.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use sandbox::auth;
use sandbox::{Sandbox, TEST_PASSWORD};
use serde_json::json;
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_beyond_the_hashing_queue_is_answered_503() {
    let sb = Sandbox::for_test().await;
    let mut config = auth::config(&sb);
    config.security.hash_queue_limit = Some(2);
    let auth = auth::start(config).await;
    let pool = auth::pool(&sb).await;
    auth::create_user(&pool, "after@clinic.test", Role::Nurse).await;
    let client = reqwest::Client::new();
    let login = format!("{}/api/v1/auth/login", auth.url());
    // Each guess at another account, so the per-pair throttle never steps in.
    let flood = (0..48).map(|i| {
        let (client, login) = (client.clone(), login.clone());
        tokio::spawn(async move {
            let resp = client
                .post(&login)
                .json(&json!({"email": format!("guess{i}@clinic.test"), "password": "wrong password"}))
                .send()
                .await
                .unwrap();
            let retry = resp.headers().contains_key("retry-after");
            (resp.status().as_u16(), retry)
        })
    });
    let mut statuses = BTreeMap::new();
    for answer in futures::future::join_all(flood).await {
        let (status, retry) = answer.unwrap();
        *statuses.entry(status).or_insert(0) += 1;
        if status == 503 {
            assert!(retry, "503 carries Retry-After");
        }
    }
    assert!(statuses.get(&503).is_some_and(|&n| n > 0), "{statuses:?}");
    assert!(
        statuses.keys().all(|s| *s == 401 || *s == 503),
        "only refusals and 503s: {statuses:?}"
    );
    // A 503 cost its account no attempt: only the guesses that were checked are counted, so a
    // flood elsewhere cannot lock out whoever logs in meanwhile.
    let counted: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(attempts), 0) FROM login_throttle WHERE key LIKE 'pair:%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        counted,
        statuses.get(&401).copied().unwrap_or(0),
        "{statuses:?}"
    );
    let (s, _) = sandbox::http::post(
        &login,
        None,
        &json!({"email": "after@clinic.test", "password": TEST_PASSWORD}),
    )
    .await;
    assert_eq!(s, 200, "the service answers normally after the flood");
}
