//! Who is asking: a valid token from the auth-service whose user is not inactive in this
//! service's own copy. A deactivated user's unexpired token stops working here as soon as the
//! deactivation event is applied (within the sync delay), not when the token expires.

use super::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use contract::Role;
use platform::http::{ApiError, Authenticated};

/// The verified caller of a directory request, with the role this copy knows.
pub struct Caller {
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        // A user not copied here yet (created a moment ago) is taken at the token's word: the
        // auth-service checked the account when it issued the token.
        let copy: Option<(bool, String)> =
            sqlx::query_as("SELECT is_active, role FROM users WHERE id = $1")
                .bind(claims.sub)
                .fetch_optional(&state.db)
                .await?;
        match copy {
            Some((false, _)) => Err(ApiError::unauthorized("this account is deactivated")),
            Some((true, role)) => Ok(Self {
                role: role.parse().unwrap_or(claims.role),
            }),
            None => Ok(Self { role: claims.role }),
        }
    }
}
