//! `GET /api/v1/users` (filtered, paged directory) and `GET /api/v1/users/{id}`.

use super::AppState;
use crate::store::{self, Filter};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use contract::{Role, UserSnapshot, ValidationError};
use platform::http::{ApiError, Authenticated};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list))
        .route("/{id}", get(show))
}

/// Raw query parameters; parsed by hand so every bad value gets a 422 naming it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    role: Option<String>,
    is_active: Option<String>,
    q: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

#[derive(Serialize)]
struct Page {
    items: Vec<UserSnapshot>,
    total: i64,
}

fn parse_int(
    field: &'static str,
    raw: Option<&str>,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, ValidationError> {
    let Some(raw) = raw else { return Ok(default) };
    raw.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ValidationError::new(
                field,
                format!(
                    "must be an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

async fn list(
    State(state): State<AppState>,
    _caller: Authenticated,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let role = params
        .role
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(str::parse::<Role>)
        .transpose()?;
    let is_active = match params.is_active.as_deref() {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ValidationError::new("isActive", "must be true or false").into()),
    };
    let q = params
        .q
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    let limit = parse_int(
        "limit",
        params.limit.as_deref(),
        DEFAULT_LIMIT,
        1..=MAX_LIMIT,
    )?;
    let offset = parse_int(
        "offset",
        params.offset.as_deref(),
        0,
        0..=i64::from(i32::MAX),
    )?;
    let filter = Filter { role, is_active, q };
    let mut conn = state.db.acquire().await?;
    let (rows, total) = store::list(&mut conn, &filter, limit, offset).await?;
    let items = rows
        .iter()
        .map(store::UserRow::snapshot)
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
