//! The admin's side of requests for an account: list them, approve one with a role (the
//! account is created active with a temporary password the admin hands over), or decline it.

use super::auth::Profile;
use super::AppState;
use crate::registrations;
use crate::store;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use contract::api::{ApproveRegistrationRequest, CreateUserResponse, NewProfile, Registration};
use contract::{Role, ValidationError};
use platform::http::{ApiError, ApiJson, Authenticated};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/registrations", get(list))
        .route("/admin/registrations/{id}/approve", post(approve))
        .route("/admin/registrations/{id}", delete(decline))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ValidationError::new("id", "must be a UUID").into())
}

async fn list(
    State(state): State<AppState>,
    caller: Authenticated,
) -> Result<Json<Vec<Registration>>, ApiError> {
    super::admin::require_current_admin(&state, &caller).await?;
    Ok(Json(registrations::list(&state.db).await?))
}

/// `POST /admin/registrations/{id}/approve`: the account, active, with the admin's choice of
/// role and a temporary password shown only in this answer. The request goes in the same
/// transaction; an email that has meanwhile got an account answers 409 and keeps the request.
async fn approve(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ApproveRegistrationRequest>,
) -> Result<(StatusCode, Json<CreateUserResponse>), ApiError> {
    super::admin::require_current_admin(&state, &caller).await?;
    let id = parse_id(&id)?;
    let role: Role = req.role.parse()?;
    let (temporary_password, hash) = state.temporary_password()?;
    let mut tx = state.db.begin().await?;
    let request = registrations::take(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such request for an account"))?;
    let profile = Profile::parse(&NewProfile {
        email: request.email,
        first_name: request.first_name,
        last_name: request.last_name,
        role: role.as_str().to_owned(),
        phone_number: request.phone_number,
    })?;
    let user = store::create_user(&mut tx, profile.into_new_user(hash, true, true)).await?;
    tx.commit().await?;
    tracing::info!(target: "security", event = "registration_approved", registration_id = %id, user_id = %user.id, role = %user.role, by = %caller.0.sub, "request for an account approved");
    Ok((
        StatusCode::CREATED,
        Json(CreateUserResponse {
            user: user.snapshot()?,
            temporary_password,
        }),
    ))
}

async fn decline(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    super::admin::require_current_admin(&state, &caller).await?;
    let id = parse_id(&id)?;
    if registrations::decline(&state.db, id).await? {
        tracing::info!(target: "security", event = "registration_declined", registration_id = %id, by = %caller.0.sub, "request for an account declined");
    }
    Ok(StatusCode::NO_CONTENT)
}
