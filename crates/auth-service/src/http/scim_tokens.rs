//! The admin's side of SCIM: create, list and revoke the bearer tokens SCIM clients present
//! (`/api/v1/auth/admin/scim-tokens`). Creation and revocation are in `security_events` (on the admin
//! who did it, with the token's id and name) and the security log.

use super::AppState;
use crate::scim::tokens::{self, TokenError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use contract::api::{CreatedScimToken, ScimToken, ScimTokenRequest};
use contract::ValidationError;
use platform::http::{ApiError, ApiJson, Authenticated};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/scim-tokens", post(create).get(list))
        .route("/admin/scim-tokens/{id}/revoke", post(revoke))
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            e @ TokenError::NameTaken(_) => ApiError::conflict(e.to_string()),
            TokenError::Db(e) => e.into(),
        }
    }
}

async fn create(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(req): ApiJson<ScimTokenRequest>,
) -> Result<(StatusCode, Json<CreatedScimToken>), ApiError> {
    super::admin::require_current_admin(&state, &caller).await?;
    let name = req.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "name",
            "must be 1 to 100 characters, without control characters",
        )
        .into());
    }
    let mut tx = state.db.begin().await?;
    let (token, secret) = tokens::create(&mut *tx, name, caller.0.sub).await?;
    crate::mfa::record_with(
        &mut *tx,
        "scim_token_created",
        caller.0.sub,
        Some(caller.0.sub),
        Some(serde_json::json!({"tokenId": token.id, "name": token.name})),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(target: "security", event = "scim_token_created", token = %token.name, token_id = %token.id, by = %caller.0.sub, "SCIM token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedScimToken { token, secret }),
    ))
}

async fn list(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<Vec<ScimToken>>, ApiError> {
    super::admin::require_current_admin(&state, &caller).await?;
    Ok(Json(tokens::list(&state.db).await?))
}

async fn revoke(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<ScimToken>, ApiError> {
    super::admin::require_current_admin(&state, &caller).await?;
    let id = super::admin::parse_id(&id)?;
    let mut tx = state.db.begin().await?;
    let token = tokens::revoke(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such SCIM token"))?;
    crate::mfa::record_with(
        &mut *tx,
        "scim_token_revoked",
        caller.0.sub,
        Some(caller.0.sub),
        Some(serde_json::json!({"tokenId": token.id, "name": token.name})),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(target: "security", event = "scim_token_revoked", token = %token.name, token_id = %token.id, by = %caller.0.sub, "SCIM token revoked");
    Ok(Json(token))
}
