//! The auth-service's HTTP API. Each submodule owns its routes; this one holds the shared state
//! and the mapping of store errors to answers.

mod admin;
mod auth;
mod erasure;
mod health;
mod offboarding;
mod registrations;
mod scim_tokens;
mod second_factor;

use crate::password::HashError;
use crate::store::StoreError;
use crate::SecurityConfig;
use axum::extract::FromRef;
use axum::Router;
use platform::http::ApiError;
use platform::jwt::{JwtVerifier, KeyRing};
use sqlx::PgPool;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

/// Everything a handler needs, cloned per request (all fields are cheap handles).
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    /// Signs access tokens and publishes the public keys.
    pub keys: Arc<KeyRing>,
    pub verifier: Arc<JwtVerifier>,
    /// A real argon2 hash checked when the email is unknown, so login takes as long for a
    /// missing account as for a wrong password and does not reveal which emails exist.
    pub dummy_hash: Arc<String>,
    /// Set by the relay while it holds a broker connection; `None` when no relay runs here.
    pub broker_up: Option<Arc<AtomicBool>>,
    pub security: Arc<SecurityConfig>,
    /// One bulk creation at a time in this process: each holds a thousand accounts, their
    /// events and their answer in memory, and four at once took the auth-service from 39 to
    /// 63 MiB (BENCHMARKS.md, row 9); the others wait their turn, which costs little time.
    pub bulk_turn: Arc<tokio::sync::Semaphore>,
    /// `portal_login_decisions_total{decision}`: what the login throttle decided, per attempt
    /// (allowed, slowed, pair_locked, source_locked).
    pub login_decisions: prometheus::IntCounterVec,
    /// The server secret temporary passwords are tagged with (a file in the key directory).
    pub tag_key: crate::password::temporary::TagKey,
    /// The offboarding saga's timer, woken when a saga starts.
    pub offboarding: crate::offboarding::runner::Runner,
}

impl AppState {
    /// A new temporary password and its stored form, tagged with this server's key and valid
    /// for TEMPORARY_PASSWORD_TTL: what account creation, a reset, a bulk import and an
    /// approved registration give out.
    pub fn temporary_password(&self) -> Result<(String, String), ApiError> {
        crate::password::temporary_with_hash(self.security.temporary_password_ttl, &self.tag_key)
            .map_err(|e| ApiError::internal(format!("{e:#}")))
    }
}

impl FromRef<AppState> for Arc<JwtVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let proxies = state.security.trusted_proxies.clone();
    let router = Router::new()
        .nest(
            "/api/v1/auth",
            auth::router()
                .merge(admin::router())
                .merge(offboarding::router())
                .merge(erasure::router())
                .merge(registrations::router())
                .merge(scim_tokens::router())
                .merge(second_factor::router()),
        )
        .nest("/scim/v2", crate::scim::router())
        .merge(health::router())
        .fallback(platform::http::fallback_not_found)
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            Duration::from_secs(15),
        ))
        .with_state(state);
    platform::client_addr::TrustedProxies::layer(router, &proxies)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DuplicateEmail => {
                ApiError::conflict("a user with this email already exists")
            }
            StoreError::NotFound => ApiError::not_found("no such user"),
            e @ StoreError::LastActiveAdmin => ApiError::conflict(e.to_string()),
            e @ StoreError::NotAdmin => ApiError::forbidden(e.to_string()),
            e @ StoreError::Erased => ApiError::conflict(e.to_string()),
            StoreError::Db(e) => e.into(),
            StoreError::Corrupt(detail) => ApiError::internal(detail),
        }
    }
}

impl From<HashError> for ApiError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => {
                ApiError::unavailable(e.to_string()).retry_after(Duration::from_secs(1))
            }
            HashError::Failed(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}
