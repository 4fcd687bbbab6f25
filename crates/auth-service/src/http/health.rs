//! Liveness and readiness: ready means `auth_db` answers and, where the relay runs in this
//! process, it holds a broker connection.

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
    let broker_up = state
        .broker_up
        .as_ref()
        .map(|up| up.load(Ordering::Relaxed));
    platform::http::readiness(&state.db, "auth_db", broker_up, None).await
}
