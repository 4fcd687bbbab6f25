//! What a caller may do with appointments, by the role this service's copy knows. Who is
//! asking (a valid token whose user is not inactive in `clinicians`) is the shared
//! [`ActiveCaller`], checked against this copy ([`super::AppState`]'s `CallerCopy`).
//!
//! The rule: a doctor sees and acts on their own appointments; nurses and admins see and
//! manage every one; pharmacists and consultants see none (403) unless the clinic lists their
//! role in `APPOINTMENTS_VISIBLE_TO`, and then read every one; they never book or change one.
//! Appointments name patients and why they come: a role whose work does not need them does
//! not get them by default.

use contract::{Role, UserId};
use platform::http::{ActiveCaller, ApiError};

/// The verified caller, with the role this copy knows.
pub type Caller = ActiveCaller;

/// Which appointments a caller reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// Every appointment.
    All,
    /// This doctor's only.
    Own(UserId),
}

/// What the caller's role lets them do here.
pub trait Permissions {
    /// Nurses and admins see and manage every appointment.
    fn manages_all(&self) -> bool;

    /// Who may book and cancel: nurses and admins for anyone, doctors for themselves;
    /// pharmacists and consultants never.
    fn may_write(&self) -> Result<(), ApiError>;

    /// The doctor whose appointments alone this caller sees, if restricted.
    fn own_doctor(&self) -> Option<UserId>;

    /// Which appointments the caller reads, given the extra roles the clinic lets read every
    /// one (`APPOINTMENTS_VISIBLE_TO`); 403 for a role that reads none.
    fn sight(&self, visible_to: &[Role]) -> Result<Sight, ApiError>;
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
                "a {} may not book or change appointments: nurses and admins do, and doctors \
                 for themselves",
                self.role
            )))
        }
    }

    fn own_doctor(&self) -> Option<UserId> {
        (self.role == Role::Doctor).then_some(self.id)
    }

    fn sight(&self, visible_to: &[Role]) -> Result<Sight, ApiError> {
        if let Some(me) = self.own_doctor() {
            Ok(Sight::Own(me))
        } else if self.manages_all() || visible_to.contains(&self.role) {
            Ok(Sight::All)
        } else {
            Err(ApiError::forbidden(format!(
                "a {} does not see appointments at this clinic: doctors see their own, nurses \
                 and admins all of them",
                self.role
            )))
        }
    }
}
