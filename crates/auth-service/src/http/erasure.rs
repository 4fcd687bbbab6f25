//! Erasure (admin bearer token, and an active admin now):
//! - `POST /admin/users/{id}/erasure` `{"reason": "…"}`: erases a deactivated person's data
//!   (200 with the erasure; the earlier one when they were erased before; 409 while they are
//!   active or their offboarding runs);
//! - `GET` the same path: the person's erasure record (404 when not erased).

use super::admin::{parse_id, require_current_admin};
use super::AppState;
use crate::erasure::{self, Erased, ErasureError};
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use contract::api::{Erasure, ErasureRequest};
use contract::ValidationError;
use platform::http::{ApiError, ApiJson, Authenticated};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/users/{id}/erasure", post(erase).get(show))
}

impl From<ErasureError> for ApiError {
    fn from(e: ErasureError) -> Self {
        match e {
            ErasureError::NotFound => ApiError::not_found("no such user"),
            e @ (ErasureError::StillActive | ErasureError::OffboardingRunning) => {
                ApiError::conflict(e.to_string())
            }
            ErasureError::Invalid(detail) => ApiError::internal(detail),
            ErasureError::Store(e) => e.into(),
            ErasureError::Db(e) => e.into(),
        }
    }
}

async fn erase(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ErasureRequest>,
) -> Result<Json<Erasure>, ApiError> {
    require_current_admin(&state, &caller).await?;
    let user = parse_id(&id)?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ValidationError::new("reason", "must be 1 to 500 characters").into());
    }
    // The erased record keeps a hash no password matches (the one unknown emails are checked
    // against), so a sign-in with its placeholder email fails like any wrong password.
    let done = erasure::erase(&state.db, caller.0.sub, user, reason, &state.dummy_hash).await?;
    Ok(Json(match done {
        Erased::New(e) | Erased::Already(e) => e,
    }))
}

async fn show(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Erasure>, ApiError> {
    require_current_admin(&state, &caller).await?;
    erasure::find(&state.db, parse_id(&id)?)
        .await
        .map_err(ApiError::from)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("this person was not erased"))
}
