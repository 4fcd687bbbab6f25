//! The user-service's HTTP API: the user directory (bearer token required) and health.

mod health;
mod users;

use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::Router;
use consumer::SyncStats;
use platform::http::CallerCopy;
use platform::jwt::JwtVerifier;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub verifier: Arc<JwtVerifier>,
    /// `None` when no consumer runs in this process.
    pub stats: Option<Arc<SyncStats>>,
}

impl FromRef<AppState> for Arc<JwtVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Callers are checked against this copy: a deactivated user's unexpired token stops working
/// here as soon as the deactivation event is applied (within the sync delay), not when the
/// token expires; a user not copied yet (created a moment ago) is taken at the token's word.
impl CallerCopy for AppState {
    const LOOKUP: &'static str = "SELECT is_active, role FROM users WHERE id = $1";

    fn copy_db(&self) -> &PgPool {
        &self.db
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .nest("/api/v1/users", users::router())
        .merge(health::router())
        .fallback(platform::http::fallback_not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(15),
        ))
        .with_state(state)
}
