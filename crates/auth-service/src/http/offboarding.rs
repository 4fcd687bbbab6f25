//! Propagation and offboarding (admin bearer token, and an active admin now):
//! - `GET /admin/users/{id}/propagation`: the user's version and each registered consumer's
//!   receipt of it;
//! - `POST /admin/users/{id}/offboarding`: starts the saga (202), or answers the running one
//!   (200); `GET` the same path: the user's latest offboarding;
//! - `GET /admin/offboardings` (`?status=running|stalled`), `GET /admin/offboardings/{id}`,
//!   `POST /admin/offboardings/{id}/cancel`.

use super::admin::{parse_id, require_current_admin};
use super::AppState;
use crate::consumers;
use crate::offboarding::store::{self as sagas, Listing, SagaError, Started};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use contract::api::{Offboarding, OffboardingRequest, Page, Propagation};
use contract::ValidationError;
use platform::http::{ApiError, ApiJson, ApiQuery, Authenticated};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/users/{id}/propagation", get(propagation))
        .route(
            "/admin/users/{id}/offboarding",
            post(start).get(latest_of_user),
        )
        .route("/admin/offboardings", get(list))
        .route("/admin/offboardings/{id}", get(show))
        .route("/admin/offboardings/{id}/cancel", post(cancel))
}

impl From<SagaError> for ApiError {
    fn from(e: SagaError) -> Self {
        match e {
            SagaError::Store(e) => e.into(),
            SagaError::NotFound => ApiError::not_found("no such offboarding"),
            e @ (SagaError::TooLate(_) | SagaError::Conflict) => ApiError::conflict(e.to_string()),
            e @ SagaError::Self_ => ApiError::forbidden(e.to_string()),
        }
    }
}

async fn propagation(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Propagation>, ApiError> {
    require_current_admin(&state, &caller).await?;
    consumers::propagation(&state.db, parse_id(&id)?)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such user"))
}

async fn start(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<OffboardingRequest>,
) -> Result<(StatusCode, Json<Offboarding>), ApiError> {
    require_current_admin(&state, &caller).await?;
    let user = parse_id(&id)?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ValidationError::new("reason", "must be 1 to 500 characters").into());
    }
    let started = sagas::start(
        &state.db,
        caller.0.sub,
        user,
        reason,
        req.policy,
        state.offboarding.config(),
    )
    .await?;
    let (status, saga) = match started {
        Started::New(saga) => {
            state.offboarding.wake();
            (StatusCode::ACCEPTED, saga)
        }
        Started::Running(saga) => (StatusCode::OK, saga),
    };
    Ok((status, Json(sagas::view(&state.db, saga, true).await?)))
}

async fn latest_of_user(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Offboarding>, ApiError> {
    require_current_admin(&state, &caller).await?;
    let saga = sagas::latest_of(&state.db, parse_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("this user has no offboarding"))?;
    Ok(Json(sagas::view(&state.db, saga, true).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// `running`, `stalled`, or absent for the most recent.
    status: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Offboarding>>, ApiError> {
    require_current_admin(&state, &caller).await?;
    let which = match q.status.as_deref() {
        None => Listing::Recent,
        Some("running") => Listing::Running,
        Some("stalled") => Listing::Stalled,
        Some(_) => return Err(ValidationError::new("status", "must be running or stalled").into()),
    };
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ValidationError::new("limit", "must be 1 to 500").into());
    }
    let mut items = Vec::new();
    for saga in sagas::list(&state.db, which, limit).await? {
        items.push(sagas::view(&state.db, saga, false).await?);
    }
    Ok(Json(Page {
        total: items.len() as i64,
        items,
    }))
}

async fn show(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Offboarding>, ApiError> {
    require_current_admin(&state, &caller).await?;
    let saga = sagas::find(&state.db, parse_id(&id)?)
        .await?
        .ok_or(SagaError::NotFound)?;
    Ok(Json(sagas::view(&state.db, saga, true).await?))
}

async fn cancel(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Offboarding>, ApiError> {
    require_current_admin(&state, &caller).await?;
    let saga = sagas::cancel(&state.db, caller.0.sub, parse_id(&id)?).await?;
    Ok(Json(sagas::view(&state.db, saga, true).await?))
}
