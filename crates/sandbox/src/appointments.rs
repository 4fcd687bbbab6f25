//! The appointment-service's test helpers, shared by its own tests and every test of the whole
//! system: the service in-process on a test's sandbox, events and the end-of-history mark
//! published straight to its queue, tokens signed with the sandbox's key, and booking calls.

use crate::{poll_until, Running, Sandbox, SETTLE};
use contract::topology::{ConsumerQueues, APPOINTMENT_SERVICE};
use contract::Role;
use platform::amqp::{self, Outgoing};
use platform::jwt::{KeyRing, LOCAL_ACCESS_TTL_SECONDS};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// The appointment-service's queues.
pub fn queues() -> ConsumerQueues {
    ConsumerQueues::for_consumer(APPOINTMENT_SERVICE)
}

/// The service on the sandbox's `appointment` database, vhost and keys, on a free port.
pub fn config(sb: &Sandbox) -> appointment_service::Config {
    appointment_service::Config::local(&sb.database_url("appointment"), &sb.amqp_url, &sb.key_dir)
}

/// Builds (migrating the database) and runs the service in this process.
pub async fn start(config: appointment_service::Config) -> Running {
    Running::launch(appointment_service::Application::build(config)).await
}

/// [`start`], then waits until its consumer holds its broker connection: its queue is declared
/// and bound, so every event written from now on reaches it, and a backfill finds the queue.
pub async fn start_connected(config: appointment_service::Config) -> Running {
    let service = start(config).await;
    poll_until(
        SETTLE,
        "the appointment-service's consumer connected",
        || async {
            let (_, body) =
                crate::http::get(&format!("{}/health/ready", service.url()), None).await;
            (body["checks"]["broker"] == true).then_some(())
        },
    )
    .await;
    service
}

/// A pool on the sandbox's `appointment` database, created and migrated if need be.
pub async fn pool(sb: &Sandbox) -> PgPool {
    appointment_service::prepare_database(&sb.database_url("appointment"), 4)
        .await
        .expect("appointment_db")
}

/// Publishes `bodies` straight to the appointment-service's queue, declaring it first.
pub async fn publish(sb: &Sandbox, bodies: &[Vec<u8>]) {
    amqp::ensure_topology(&sb.amqp_url, &[queues()])
        .await
        .expect("declare the topology");
    crate::amqp::publish_to_queue(&sb.amqp_url, &queues().main, bodies)
        .await
        .expect("publish to the appointment-service's queue");
}

/// [`publish`] of events written as JSON.
pub async fn publish_events(sb: &Sandbox, events: &[Value]) {
    let bodies: Vec<Vec<u8>> = events.iter().map(crate::events::body).collect();
    publish(sb, &bodies).await;
}

/// Sends the end-of-history mark a backfill sends after the last stored event, counting
/// `users`.
pub async fn mark_history_complete(sb: &Sandbox, users: i64) {
    let body = serde_json::to_vec(&contract::wire::HistoryComplete { users }).expect("JSON");
    publish_mark(sb, &body).await;
}

/// A message of the end-of-history mark's type with `body`, straight to the service's queue.
pub async fn publish_mark(sb: &Sandbox, body: &[u8]) {
    let conn = amqp::connect(&sb.amqp_url, "test backfill")
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    let mark = Outgoing {
        exchange: "",
        routing_key: &queues().main,
        body,
        properties: amqp::event_properties(
            &Uuid::new_v4().to_string(),
            contract::wire::HISTORY_COMPLETE_TYPE,
            &amqp::broker_user(&sb.amqp_url),
        ),
    };
    amqp::publish_confirmed(&ch, vec![mark])
        .await
        .require_all()
        .expect("publish the mark");
    conn.close(200, "done").await.ok();
}

/// Waits until the service answers `/health/ready` with 200.
pub async fn wait_ready(service: &Running) {
    poll_until(SETTLE, "the appointment-service ready", || async {
        let (status, _) = crate::http::get(&format!("{}/health/ready", service.url()), None).await;
        (status == 200).then_some(())
    })
    .await;
}

/// A clinician event: `user` as `first last` with `role`, `version`, active or not.
pub fn clinician_event(user: Uuid, version: i64, last: &str, role: &str, active: bool) -> Value {
    let mut event = crate::events::user_event(
        user,
        Some(version),
        &format!("{}@clinic.test", last.to_lowercase()),
        role,
        active,
    );
    event["payload"]["lastName"] = json!(last);
    event
}

/// Waits until `clinicians` holds `user` at `version`.
pub async fn wait_for_clinician(pool: &PgPool, user: Uuid, version: i64) {
    poll_until(
        SETTLE,
        "the clinician's version in appointment_db",
        || async {
            let stored: Option<Option<i64>> =
                sqlx::query_scalar("SELECT user_version FROM clinicians WHERE id = $1")
                    .bind(user)
                    .fetch_optional(pool)
                    .await
                    .ok()?;
            (stored.flatten() == Some(version)).then_some(())
        },
    )
    .await;
}

/// A bearer token of user `id` with `role`, signed with the sandbox's key.
pub fn token_for(sb: &Sandbox, id: Uuid, role: Role) -> String {
    KeyRing::open(&sb.key_dir, LOCAL_ACCESS_TTL_SECONDS)
        .and_then(|s| s.sign(id, "staff@clinic.test", role))
        .expect("sign a token")
}

/// A booking body for `doctor`, starting `hours` from now (negative: in the past).
pub fn booking(doctor: Uuid, hours: i64, minutes: i64) -> Value {
    let starts = chrono::Utc::now() + chrono::Duration::hours(hours);
    json!({
        "patientName": "Tatenda Chirwa",
        "doctorId": doctor,
        "startsAt": starts.to_rfc3339(),
        "durationMinutes": minutes,
        "reason": "follow-up",
    })
}
