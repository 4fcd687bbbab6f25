//! The user list over HTTP: its query string as an extractor whose every bad value is a 422
//! naming it, and one page of a `users` table as the API answers it.

use crate::list::{ListQuery, RawListQuery};
use crate::record::UserRecord;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::Json;
use contract::api::Page;
use contract::UserSnapshot;
use platform::http::{ApiError, ApiQuery};

/// One page of a `users` table as the API answers it: both directories run exactly this.
pub async fn user_page(
    db: &sqlx::PgPool,
    query: &ListQuery,
) -> Result<Json<Page<UserSnapshot>>, ApiError> {
    let mut conn = db.acquire().await?;
    let (rows, total) = crate::list::page(&mut conn, query).await?;
    let items = rows
        .iter()
        .map(UserRecord::snapshot)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(Json(Page { items, total }))
}

/// The validated query string of a user list (`role`, `isActive`, `q`, `limit`, `offset`);
/// every bad value is a 422 naming it.
pub struct ListParams(pub ListQuery);

impl<S: Send + Sync> FromRequestParts<S> for ListParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiQuery(raw) = ApiQuery::<RawListQuery>::from_request_parts(parts, state).await?;
        Ok(Self(ListQuery::parse(&raw)?))
    }
}
