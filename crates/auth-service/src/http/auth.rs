//! Self-service endpoints: register, login, and who-am-I.

use super::AppState;
use crate::password;
use crate::store::{self, UserChange};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use contract::api::{
    ChangePasswordRequest, LoginRequest, LoginResponse, NewProfile, RegisterRequest,
};
use contract::{Email, PersonName, PhoneNumber, Role, UserSnapshot, ValidationError};
use platform::http::{ApiError, ApiJson, Authenticated};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/me", get(me))
        .route("/change-password", post(change_password))
}

/// The validated parts shared by self-registration and admin creation.
pub(super) struct Profile {
    pub email: Email,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub role: Role,
    pub phone_number: Option<PhoneNumber>,
}

impl Profile {
    pub fn parse(p: &NewProfile) -> Result<Self, ApiError> {
        Ok(Self {
            email: Email::parse(&p.email)?,
            first_name: PersonName::parse("firstName", &p.first_name)?,
            last_name: PersonName::parse("lastName", &p.last_name)?,
            role: p.role.parse()?,
            phone_number: p
                .phone_number
                .as_deref()
                .filter(|p| !p.trim().is_empty())
                .map(PhoneNumber::parse)
                .transpose()?,
        })
    }

    pub fn into_new_user(
        self,
        password_hash: String,
        is_active: bool,
        must_change_password: bool,
    ) -> store::NewUser {
        store::NewUser {
            email: self.email,
            password_hash,
            first_name: self.first_name,
            last_name: self.last_name,
            role: self.role,
            phone_number: self.phone_number,
            is_active,
            must_change_password,
        }
    }
}

/// Creates an inactive account; an admin activates it. Nobody can register as admin.
async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<UserSnapshot>), ApiError> {
    let profile = Profile::parse(&req.profile)?;
    if profile.role == Role::Admin {
        return Err(ApiError::forbidden(
            "the admin role cannot be self-registered",
        ));
    }
    password::check_policy("password", &req.password)?;
    let hash = password::hash(req.password)
        .await
        .map_err(ApiError::internal)?;
    let mut tx = state.db.begin().await?;
    let user = store::create_user(&mut tx, profile.into_new_user(hash, false, false)).await?;
    tx.commit().await?;
    tracing::info!(email = %user.email, role = %user.role, "user registered");
    Ok((StatusCode::CREATED, Json(user.snapshot()?)))
}

/// Wrong password, unknown email and inactive account get the same answer, so the endpoint does
/// not tell an attacker which accounts exist or are disabled.
async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let refused = || ApiError::unauthorized("invalid email or password");
    let user = match Email::parse(&req.email) {
        Ok(email) => store::find_by_email(&state.db, &email).await?,
        Err(_) => None,
    };
    let stored_hash = user.as_ref().map_or_else(
        || state.dummy_hash.as_str().to_owned(),
        |u| u.password_hash.clone(),
    );
    let matches = password::verify(req.password, stored_hash)
        .await
        .map_err(ApiError::internal)?;
    let user = match user {
        Some(u) if matches && u.is_active => u,
        _ => return Err(refused()),
    };
    let token = state
        .signer
        .sign(user.id, &user.email, user.role()?)
        .map_err(ApiError::internal)?;
    Ok(Json(LoginResponse {
        access_token: token,
        token_type: "Bearer".to_owned(),
        expires_in: state.signer.ttl_seconds(),
        user: user.snapshot()?,
    }))
}

async fn me(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Json<UserSnapshot>, ApiError> {
    let user = current_user(&state, claims.sub).await?;
    Ok(Json(user.snapshot()?))
}

/// The caller's account as `auth_db` holds it now: a token outlives a deactivation by up to its
/// lifetime, so an account that no longer exists or is inactive is refused here.
async fn current_user(state: &AppState, id: uuid::Uuid) -> Result<store::UserRow, ApiError> {
    match store::find_by_id(&state.db, id).await? {
        None => Err(ApiError::unauthorized(
            "the account of this token no longer exists",
        )),
        Some(user) if !user.is_active => Err(ApiError::unauthorized("this account is deactivated")),
        Some(user) => Ok(user),
    }
}

/// The caller changes their own password; this clears `mustChangePassword` and, like every
/// write of a user, bumps its version and emits `user.updated`.
async fn change_password(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<Json<UserSnapshot>, ApiError> {
    password::check_policy("newPassword", &req.new_password)?;
    if req.new_password == req.current_password {
        return Err(
            ValidationError::new("newPassword", "must differ from the current password").into(),
        );
    }
    let user = current_user(&state, claims.sub).await?;
    let matches = password::verify(req.current_password, user.password_hash.clone())
        .await
        .map_err(ApiError::internal)?;
    if !matches {
        return Err(ValidationError::new("currentPassword", "is not the current password").into());
    }
    let hash = password::hash(req.new_password)
        .await
        .map_err(ApiError::internal)?;
    let change = UserChange::Password {
        hash,
        must_change_password: false,
    };
    let mut tx = state.db.begin().await?;
    let outcome = store::change_user(&mut tx, claims.sub, change).await?;
    tx.commit().await?;
    Ok(Json(outcome.user().snapshot()?))
}
