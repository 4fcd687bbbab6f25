//! Liveness and readiness: ready means `user_db` answers and, where the consumer runs in this
//! process, it holds a broker connection. Readiness also reports the sync counters.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

pub fn router() -> Router<AppState> {
    platform::http::health_routes(ready)
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let stats = state.stats.as_ref();
    let broker_up = stats.map(|s| s.broker_up.load(Ordering::Relaxed));
    let counters = stats.map(|s| {
        json!({
            "applied": s.applied.load(Ordering::Relaxed),
            "ignoredStale": s.ignored_stale.load(Ordering::Relaxed),
            "deadLettered": s.dead_lettered.load(Ordering::Relaxed),
            "retried": s.retried.load(Ordering::Relaxed),
        })
    });
    let sync = ("sync", counters.unwrap_or(Value::Null));
    platform::http::readiness(&state.db, "user_db", broker_up, Some(sync)).await
}
