//! Liveness and readiness: ready means `user_db` answers and, where the consumer runs in this
//! process, it holds a broker connection. Readiness also reports the sync counters.

use super::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Json, Router};
use serde_json::Value;
use std::sync::atomic::Ordering;

pub fn router() -> Router<AppState> {
    platform::http::health_routes(ready)
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let stats = state.stats.as_ref();
    let broker_up = stats.map(|s| s.broker_up.load(Ordering::Relaxed));
    let counters = stats.map(|s| s.summary());
    let sync = ("sync", counters.unwrap_or(Value::Null));
    platform::http::readiness(&state.db, "user_db", broker_up, Some(sync)).await
}
