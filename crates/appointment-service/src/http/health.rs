//! Liveness and readiness: ready means `appointment_db` answers, the consumer holds a broker
//! connection, and the copy is complete (the end-of-history mark is in and every user it counts
//! is held), so no booking is refused for a doctor who exists. Readiness also reports the sync
//! counters.

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
    let s = &state.stats;
    let counters = s.summary();
    let (mut status, Json(mut body)) = platform::http::readiness(
        &state.db,
        "appointment_db",
        Some(s.broker_up.load(Ordering::Relaxed)),
        Some(("sync", counters)),
    )
    .await;
    // `None`: not readable now (the database check above says so).
    let history = state.history().await.ok();
    let complete = history.map(|h| h.is_none_or(|h| h.complete()));
    body["checks"]["history"] = json!(complete);
    if let Some(Some(h)) = history.filter(|_| complete == Some(false)) {
        status = StatusCode::SERVICE_UNAVAILABLE;
        body["status"] = json!("unavailable");
        if let Some(down) = body["unavailable"].as_array_mut() {
            down.push(json!("history"));
        }
        body["message"] = json!(match h.expected {
            None => format!(
                "waiting for the stored history of the users (`portal consumer add {}`)",
                contract::topology::APPOINTMENT_SERVICE
            ),
            Some(n) => format!(
                "holds {} of the {n} users the backfill counted; the rest are on their way \
                 (if this lasts, events were pruned or dead-lettered: `portal reconcile`)",
                h.held
            ),
        });
    }
    (status, Json(body))
}
