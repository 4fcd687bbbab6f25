//! `GET /api/v1/users` (filtered, paged directory) and `GET /api/v1/users/{id}`.

use super::AppState;
use crate::store;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use contract::api::Page;
use contract::{UserSnapshot, ValidationError};
use platform::http::{ApiError, Authenticated, ListParams};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list))
        .route("/{id}", get(show))
}

async fn list(
    State(state): State<AppState>,
    _caller: Authenticated,
    ListParams(query): ListParams,
) -> Result<Json<Page<UserSnapshot>>, ApiError> {
    platform::http::user_page(&state.db, &query).await
}

async fn show(
    State(state): State<AppState>,
    _caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<UserSnapshot>, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::from(ValidationError::new("id", "must be a UUID")))?;
    let row = store::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user {id}")))?;
    Ok(Json(row.snapshot().map_err(ApiError::internal)?))
}
