//! Admin user management (admin bearer token required).

use super::auth::Profile;
use super::AppState;
use crate::{password, store};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use contract::UserSnapshot;
use platform::http::{ApiError, ApiJson, Authenticated};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/users", post(create_user))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateUserRequest {
    email: String,
    first_name: String,
    last_name: String,
    role: String,
    phone_number: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreateUserResponse {
    user: UserSnapshot,
    /// Shown only in this answer; only its hash is stored.
    temporary_password: String,
}

/// Creates an active account that must change its random temporary password at first login.
async fn create_user(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<CreateUserResponse>), ApiError> {
    caller.require_admin()?;
    let profile = Profile::parse(
        &req.email,
        &req.first_name,
        &req.last_name,
        &req.role,
        req.phone_number.as_deref(),
    )?;
    let temporary_password = password::temporary();
    let hash = password::hash(temporary_password.clone())
        .await
        .map_err(ApiError::internal)?;
    let mut tx = state.db.begin().await?;
    let user = store::create_user(&mut tx, profile.into_new_user(hash, true, true)).await?;
    tx.commit().await?;
    tracing::info!(email = %user.email, role = %user.role, by = %caller.0.email, "user created by admin");
    Ok((
        StatusCode::CREATED,
        Json(CreateUserResponse {
            user: user.snapshot()?,
            temporary_password,
        }),
    ))
}
