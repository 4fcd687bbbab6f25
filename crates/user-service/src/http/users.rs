//! `GET /api/v1/users` (filtered, paged directory) and `GET /api/v1/users/{id}`. Admins see
//! every user and every field; everyone else sees active clinical staff only, with what a
//! colleague needs (name, role, phone).

use super::AppState;
use crate::store;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use contract::api::Page;
use contract::ValidationError;
use directory::http::ListParams;
use directory::record::UserRecord;
use platform::http::{ActiveCaller, ApiError};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list))
        .route("/{id}", get(show))
}

async fn list(
    State(state): State<AppState>,
    caller: ActiveCaller,
    ListParams(mut query): ListParams,
) -> Result<Response, ApiError> {
    if caller.is_admin() {
        return Ok(directory::http::user_page(&state.db, &query)
            .await?
            .into_response());
    }
    query.colleagues_only = true;
    let mut conn = state.db.acquire().await?;
    let (rows, total) = directory::list::page(&mut conn, &query).await?;
    let items = rows
        .iter()
        .map(UserRecord::colleague)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(Json(Page { items, total }).into_response())
}

async fn show(
    State(state): State<AppState>,
    caller: ActiveCaller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::from(ValidationError::new("id", "must be a UUID")))?;
    let not_found = || ApiError::not_found(format!("no user {id}"));
    let row = store::find(&state.db, id).await?.ok_or_else(not_found)?;
    if caller.is_admin() {
        return Ok(Json(row.snapshot().map_err(ApiError::internal)?).into_response());
    }
    // Staff who are not colleagues (inactive, admins) do not exist for a colleague.
    if !row.is_colleague() {
        return Err(not_found());
    }
    Ok(Json(row.colleague().map_err(ApiError::internal)?).into_response())
}
