//! End-to-end tests: real PostgreSQL, real RabbitMQ, services started through the same
//! `Application::build` the binary uses, each test in its own databases and vhost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cli;
mod convergence;
mod faults;
mod http_api;
mod lifecycle;
mod ordering;
mod pipeline;
mod recovery;

use serde_json::Value;
use std::time::Duration;

/// Generous deadline for things that normally take milliseconds.
pub const SETTLE: Duration = Duration::from_secs(30);

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// GET with a bearer token; returns status and JSON body.
pub async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = http().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// POST JSON with an optional bearer token; returns status and JSON body.
pub async fn post(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = http().post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Waits until `user_db` equals `auth_db` by the comparison `portal verify` uses.
pub async fn eventually_in_sync(auth: &sqlx::PgPool, users: &sqlx::PgPool) {
    test_support::poll_until(SETTLE, "user_db to equal auth_db", || async {
        ops::verify::compare(auth, users, 5)
            .await
            .ok()?
            .is_in_sync()
            .then_some(())
    })
    .await;
}
