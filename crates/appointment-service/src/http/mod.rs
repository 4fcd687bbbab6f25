//! The appointment-service's HTTP API: `/api/v1/appointments` (bearer token required) and
//! health.

mod appointments;
mod caller;
mod health;

use axum::extract::FromRef;
use axum::http::StatusCode;
use axum::Router;
use consumer::SyncStats;
use platform::http::CallerCopy;
use platform::jwt::JwtVerifier;
use sqlx::PgPool;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub verifier: Arc<JwtVerifier>,
    pub stats: Arc<SyncStats>,
    /// The roles besides nurses and admins that read every appointment
    /// (`APPOINTMENTS_VISIBLE_TO`; the rule is in `caller.rs`).
    pub visible_to: Arc<[contract::Role]>,
    /// Set once the copy was seen complete ([`crate::History::complete`]); it stays so (users
    /// are never removed from the copy by events), so the check is a query only until then.
    pub complete: Arc<AtomicBool>,
}

impl AppState {
    /// Where the copy stands; `None` once it has been seen complete (no query then).
    pub async fn history(&self) -> Result<Option<crate::History>, sqlx::Error> {
        if self.complete.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let history = crate::history(&self.db).await?;
        if history.complete() {
            self.complete.store(true, Ordering::Relaxed);
        }
        Ok(Some(history))
    }

    /// True once the copy holds every user the end-of-history mark counts.
    pub async fn history_complete(&self) -> Result<bool, sqlx::Error> {
        Ok(self.history().await?.is_none_or(|h| h.complete()))
    }
}

impl FromRef<AppState> for Arc<JwtVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Callers are checked against this copy: a deactivated user's unexpired token stops working
/// here as soon as the deactivation is applied; someone not copied yet (created a moment ago)
/// is taken at the token's word.
impl CallerCopy for AppState {
    const LOOKUP: &'static str = "SELECT is_active, role FROM clinicians WHERE id = $1";

    fn copy_db(&self) -> &PgPool {
        &self.db
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
