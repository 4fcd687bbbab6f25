//! Who is asking: a valid token from the auth-service whose user is not inactive in this
//! service's own copy (a deactivated user's unexpired token stops working here as soon as the
//! deactivation is applied), with what the role lets them do.

use super::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use contract::{Role, UserId};
use platform::http::{ApiError, Authenticated};

/// The verified caller, with the role this copy knows.
pub struct Caller {
    pub id: UserId,
    pub role: Role,
}

impl Caller {
    /// Nurses and admins see and manage every appointment.
    pub fn manages_all(&self) -> bool {
        matches!(self.role, Role::Nurse | Role::Admin)
    }

    /// Who may book and cancel: nurses and admins for anyone, doctors for themselves;
    /// pharmacists and consultants read only.
    pub fn may_write(&self) -> Result<(), ApiError> {
        if self.manages_all() || self.role == Role::Doctor {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "a {} may read appointments, not book or change them",
                self.role
            )))
        }
    }

    /// The doctor whose appointments alone this caller sees, if restricted.
    pub fn own_doctor(&self) -> Option<UserId> {
        (self.role == Role::Doctor).then_some(self.id)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        // Someone not copied here yet (created a moment ago) is taken at the token's word: the
        // auth-service checked the account when it issued the token.
        let copy: Option<(bool, String)> =
            sqlx::query_as("SELECT is_active, role FROM clinicians WHERE id = $1")
                .bind(claims.sub)
                .fetch_optional(&state.db)
                .await?;
        let role = match copy {
            Some((false, _)) => return Err(ApiError::unauthorized("this account is deactivated")),
            Some((true, role)) => role.parse().unwrap_or(claims.role),
            None => claims.role,
        };
        Ok(Self {
            id: UserId(claims.sub),
            role,
        })
    }
}
