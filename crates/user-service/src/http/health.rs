//! Liveness and readiness: ready means `user_db` answers and, where the consumer runs in this
//! process, it holds a broker connection. Readiness also reports the sync counters.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health/live", get(platform::http::live))
        .route("/health/ready", get(ready))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let db_ok = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.db),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let broker_ok = state
        .stats
        .as_ref()
        .map(|s| s.broker_up.load(Ordering::Relaxed));
    let mut down = Vec::new();
    if !db_ok {
        down.push("user_db");
    }
    if broker_ok == Some(false) {
        down.push("rabbitmq");
    }
    let status = if down.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let counters = state.stats.as_ref().map(|s| {
        json!({
            "applied": s.applied.load(Ordering::Relaxed),
            "ignoredStale": s.ignored_stale.load(Ordering::Relaxed),
            "deadLettered": s.dead_lettered.load(Ordering::Relaxed),
            "retried": s.retried.load(Ordering::Relaxed),
        })
    });
    (
        status,
        Json(json!({
            "status": if down.is_empty() { "ready" } else { "unavailable" },
            "unavailable": down,
            "checks": { "database": db_ok, "broker": broker_ok },
            "sync": counters,
        })),
    )
}
