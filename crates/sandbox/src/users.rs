//! The user-service's test helpers, shared by its own tests and every test of the whole system:
//! the service in-process on a test's sandbox, its consumer driven one batch at a time, events
//! published straight to its queue, tokens signed with the sandbox's key, the dead letters read
//! back, and its copy compared with `auth_db` as `portal verify` does.

use crate::{poll_until, Running, Sandbox, SETTLE};
use consumer::{ConsumerConfig, SyncStats};
use contract::topology::{ConsumerQueues, USER_SERVICE};
use contract::Role;
use lapin::types::FieldTable;
use ops::verify::{Options, USER_SERVICE as USER_COPY};
use platform::jwt::{KeyRing, LOCAL_ACCESS_TTL_SECONDS};
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;
use user_service::copy::{UserConsumer, UserCopy};

/// The user-service's queues (standard retry delays).
pub fn queues() -> ConsumerQueues {
    ConsumerQueues::for_consumer(USER_SERVICE)
}

/// The service on the sandbox's `user` database, vhost and keys, on a free port, consuming.
pub fn config(sb: &Sandbox) -> user_service::Config {
    user_service::Config::local(&sb.database_url("user"), &sb.amqp_url, &sb.key_dir)
}

/// Builds (migrating the database) and runs the service in this process.
pub async fn start(config: user_service::Config) -> Running {
    Running::launch(user_service::Application::build(config)).await
}

/// [`start`], then waits until the service is ready: its consumer connected, its queue declared.
pub async fn start_ready(config: user_service::Config) -> Running {
    let users = start(config).await;
    poll_until(SETTLE, "the user-service ready", || async {
        let (status, _) = crate::http::get(&format!("{}/health/ready", users.url()), None).await;
        (status == 200).then_some(())
    })
    .await;
    users
}

/// A pool on the sandbox's `user` database, created and migrated if need be.
pub async fn pool(sb: &Sandbox) -> PgPool {
    user_service::prepare_database(&sb.database_url("user"), 4)
        .await
        .expect("user_db")
}

/// The service's consumer with its default settings, for a test to step with
/// [`consumer::Consumer::process_ready`] instead of running it, and the counters it keeps.
pub fn consumer(sb: &Sandbox, pool: &PgPool) -> (UserConsumer, Arc<SyncStats>) {
    let stats = Arc::new(SyncStats::default());
    let consumer = UserConsumer::new(
        pool.clone(),
        UserCopy,
        sb.amqp_url.clone(),
        ConsumerConfig::default(),
        stats.clone(),
    )
    .expect("the sandbox's AMQP URL names its broker user");
    (consumer, stats)
}

/// Publishes `bodies`, in this order, straight to the user-service's queue (bypassing the
/// exchange), declaring the topology first: events delivered duplicated, reordered or malformed.
pub async fn publish(sb: &Sandbox, bodies: &[Vec<u8>]) {
    platform::amqp::ensure_topology(&sb.amqp_url, &[queues()])
        .await
        .expect("declare the topology");
    crate::amqp::publish_to_queue(&sb.amqp_url, &queues().main, bodies)
        .await
        .expect("publish to the user-service's queue");
}

/// [`publish`] of events written as JSON.
pub async fn publish_events(sb: &Sandbox, events: &[Value]) {
    let bodies: Vec<Vec<u8>> = events.iter().map(crate::events::body).collect();
    publish(sb, &bodies).await;
}

/// Messages ready in `queue` of the sandbox's vhost.
pub async fn depth(sb: &Sandbox, queue: &str) -> u32 {
    platform::amqp::ready_messages(&sb.amqp_url, queue)
        .await
        .unwrap_or_else(|e| panic!("depth of {queue}: {e}"))
}

/// A bearer token for the directory, signed with the sandbox's key as the auth-service would,
/// of a user this copy does not hold (yet).
pub fn token(sb: &Sandbox, role: Role) -> String {
    token_for(sb, uuid::Uuid::new_v4(), role)
}

/// A bearer token of user `id` with `role`, signed with the sandbox's key.
pub fn token_for(sb: &Sandbox, id: uuid::Uuid, role: Role) -> String {
    KeyRing::open(&sb.key_dir, LOCAL_ACCESS_TTL_SECONDS)
        .and_then(|s| s.sign(id, "reader@clinic.test", role))
        .expect("sign a token")
}

/// The consumer's counters as `/health/ready` reports them.
pub async fn sync_counters(users: &Running) -> Value {
    crate::http::get(&format!("{}/health/ready", users.url()), None)
        .await
        .1["sync"]
        .clone()
}

/// The headers of every message in the user-service's dead-letter queue, oldest first (read
/// and put back: the queue is left as it was).
pub async fn dead_letters(sb: &Sandbox) -> Vec<FieldTable> {
    let conn = platform::amqp::connect(&sb.amqp_url, "dlq reader")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(&queues().dead_letter, Default::default())
        .await
        .expect("basic.get")
    {
        out.push(platform::amqp::headers_of(&m.delivery.properties));
    }
    conn.close(200, "done").await.ok();
    out
}

/// `portal verify`'s comparison of `user_db` with `auth_db` now, listing the first differences.
pub async fn compare(
    auth: &PgPool,
    users: &PgPool,
) -> Result<ops::verify::Report, ops::verify::VerifyError> {
    ops::verify::compare(auth, &USER_COPY, users, Options::listing(10)).await
}

/// Waits until `user_db` equals `auth_db` by the comparison `portal verify` uses.
pub async fn eventually_in_sync(auth: &PgPool, users: &PgPool) {
    poll_until(SETTLE, "user_db to equal auth_db", || async {
        compare(auth, users).await.ok()?.is_in_sync().then_some(())
    })
    .await;
}

/// Asserts that `portal verify`'s comparison finds `user_db` equal to `auth_db` now.
pub async fn assert_in_sync(auth: &PgPool, users: &PgPool) {
    let report = compare(auth, users)
        .await
        .expect("compare user_db with auth_db");
    assert!(report.is_in_sync(), "{}", report.summary());
}
