//! `GET /api/v1/users` (filtered, paged directory) and `GET /api/v1/users/{id}`.

use super::AppState;
use crate::store;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use contract::{UserSnapshot, ValidationError};
use platform::http::{ApiError, Authenticated, ListParams};
use platform::users::UserRecord;
use serde::Serialize;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list))
        .route("/{id}", get(show))
}

#[derive(Serialize)]
struct Page {
    items: Vec<UserSnapshot>,
    total: i64,
}

async fn list(
    State(state): State<AppState>,
    _caller: Authenticated,
    ListParams(query): ListParams,
) -> Result<Json<Page>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (rows, total) = store::list(&mut conn, &query).await?;
    let items = rows
        .iter()
        .map(UserRecord::snapshot)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(Json(Page { items, total }))
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
