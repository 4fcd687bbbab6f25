//! What a caller may do with appointments, by the role this service's copy knows. Who is
//! asking (a valid token whose user is not inactive in `clinicians`) is the shared
//! [`ActiveCaller`], checked against this copy ([`super::AppState`]'s `CallerCopy`).

use contract::{Role, UserId};
use platform::http::{ActiveCaller, ApiError};

/// The verified caller, with the role this copy knows.
pub type Caller = ActiveCaller;

/// What the caller's role lets them do here.
pub trait Permissions {
    /// Nurses and admins see and manage every appointment.
    fn manages_all(&self) -> bool;

    /// Who may book and cancel: nurses and admins for anyone, doctors for themselves;
    /// pharmacists and consultants read only.
    fn may_write(&self) -> Result<(), ApiError>;

    /// The doctor whose appointments alone this caller sees, if restricted.
    fn own_doctor(&self) -> Option<UserId>;
}

impl Permissions for ActiveCaller {
    fn manages_all(&self) -> bool {
        matches!(self.role, Role::Nurse | Role::Admin)
    }

    fn may_write(&self) -> Result<(), ApiError> {
        if self.manages_all() || self.role == Role::Doctor {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "a {} may read appointments, not book or change them",
                self.role
            )))
        }
    }

    fn own_doctor(&self) -> Option<UserId> {
        (self.role == Role::Doctor).then_some(self.id)
    }
}
