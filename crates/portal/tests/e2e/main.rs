//! End-to-end tests: what only the whole system can show. A user written in the auth-service
//! reaches the user-service through the outbox, the relay and RabbitMQ (through the gateway, in
//! any order, whatever fails meanwhile), and the `portal` binary operates it. Real PostgreSQL and
//! RabbitMQ, the services started through the same `Application::build` the binary uses, each
//! test in its own sandbox (databases, vhost, keys), so they run in parallel. What one service
//! does on its own is tested in that service's crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The appointment-service's test helpers, shared rather than copied.
#[path = "../../../appointment-service/tests/common/mod.rs"]
pub mod appointment_common;
/// The auth-service's test helpers, shared rather than copied.
#[path = "../../../auth-service/tests/common/mod.rs"]
pub mod auth_common;
/// The user-service's test helpers, shared rather than copied.
#[path = "../../../user-service/tests/common/mod.rs"]
pub mod user_common;

mod appointments;
mod cli;
mod convergence;
mod copies;
mod deploy;
mod faults;
mod identities;
mod lifecycle;
mod observability;
mod pipeline;
mod recovery;
mod replicas;
mod restarts;
mod starts;
mod tls;

use sandbox::{poll_until, Running, Sandbox, SETTLE};
use sqlx::PgPool;

/// The three services of a sandbox, running in this process, and pools on both databases for
/// the test's own reads and writes.
pub struct System {
    pub auth: Running,
    pub users: Running,
    pub gateway: Running,
    pub auth_db: PgPool,
    pub user_db: PgPool,
}

impl System {
    /// A new admin's token, logged in through the gateway.
    pub async fn admin_token(&self) -> String {
        auth_common::admin_token(&self.auth_db, &self.gateway.url()).await
    }
}

/// The auth-service (with its relay), the user-service (with its consumer) and the gateway in
/// front of them.
pub async fn start_system(sb: &Sandbox) -> System {
    let (auth, users) = start_services(sb).await;
    let gateway = start_gateway(&auth, &users).await;
    let (auth_db, user_db) = pools(sb).await;
    System {
        auth,
        users,
        gateway,
        auth_db,
        user_db,
    }
}

/// The auth-service (with its relay) and the user-service (with its consumer), no gateway.
pub async fn start_services(sb: &Sandbox) -> (Running, Running) {
    let auth = auth_common::start(auth_common::config(sb)).await;
    (auth, user_common::start(user_common::config(sb)).await)
}

/// Pools on the sandbox's `auth_db` and `user_db`.
pub async fn pools(sb: &Sandbox) -> (PgPool, PgPool) {
    (auth_common::pool(sb).await, user_common::pool(sb).await)
}

pub async fn start_gateway(auth: &Running, users: &Running) -> Running {
    Running::launch(gateway::Application::build(gateway::Config::local(
        &auth.url(),
        &users.url(),
    )))
    .await
}

/// Starts a user-service and waits until it is ready: its consumer connected, its queue declared.
pub async fn start_ready_users(config: user_service::Config) -> Running {
    let users = user_common::start(config).await;
    poll_until(SETTLE, "the user-service ready", || async {
        let (status, _) = sandbox::http::get(&format!("{}/health/ready", users.url()), None).await;
        (status == 200).then_some(())
    })
    .await;
    users
}

/// Waits until `user_db` equals `auth_db` by the comparison `portal verify` uses.
pub async fn eventually_in_sync(auth: &PgPool, users: &PgPool) {
    poll_until(SETTLE, "user_db to equal auth_db", || async {
        ops::verify::compare(auth, users, 5)
            .await
            .ok()?
            .is_in_sync()
            .then_some(())
    })
    .await;
}

/// Waits until the relay has published every event of `auth_db`'s outbox.
pub async fn all_published(auth: &PgPool) {
    poll_until(SETTLE, "every outbox event published", || async {
        (auth_common::unpublished(auth).await == 0).then_some(())
    })
    .await;
}

/// Asserts that `portal verify`'s comparison finds `user_db` equal to `auth_db` now.
pub async fn assert_in_sync(auth: &PgPool, users: &PgPool) {
    let report = ops::verify::compare(auth, users, 10).await.unwrap();
    assert!(report.is_in_sync(), "{}", report.summary());
}
