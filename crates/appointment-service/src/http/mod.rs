//! The appointment-service's HTTP API: `/api/v1/appointments` (bearer token required) and
//! health.

mod appointments;
mod caller;
mod health;

use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::Router;
use consumer::SyncStats;
use platform::jwt::JwtVerifier;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub verifier: Arc<JwtVerifier>,
    pub stats: Arc<SyncStats>,
}

impl FromRef<AppState> for Arc<JwtVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .nest("/api/v1/appointments", appointments::router())
        .merge(health::router())
        .fallback(platform::http::fallback_not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(15),
        ))
        .with_state(state)
}
