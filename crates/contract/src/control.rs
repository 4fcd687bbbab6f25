//! Control messages: what the parts say to each other besides user events, on the exchange
//! [`crate::topology::CONTROL_EXCHANGE`].
//!
//! - A **receipt** ([`Receipt`]): after a consumer commits a batch it reports, for each user of
//!   the batch, the version its copy now holds. Trusted only from the broker user the consumer
//!   is registered with (`portal consumer add`), by the AMQP `user_id` the broker checks.
//! - The offboarding saga's **command** to the appointment-service ([`ResolveDoctor`]) and its
//!   **reply** ([`DoctorResolved`]): move or cancel a leaving doctor's future appointments.
//! - **Appointment events** ([`AppointmentEvent`], on [`crate::topology::APPOINTMENT_EXCHANGE`]):
//!   an appointment reassigned or cancelled, naming the patient to inform.
//!
//! Every body is UTF-8 JSON with camelCase names; readers ignore fields they do not know, as for
//! user events.

use crate::domain::UserId;
use crate::time::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The AMQP `type` of a receipt.
pub const RECEIPT_TYPE: &str = "portal.receipt";
/// The AMQP `type` of the command that resolves a leaving doctor's future appointments.
pub const RESOLVE_DOCTOR_TYPE: &str = "portal.command.resolve-doctor";
/// The AMQP `type` of the appointment-service's reply to [`RESOLVE_DOCTOR_TYPE`].
pub const DOCTOR_RESOLVED_TYPE: &str = "portal.reply.doctor-resolved";
/// The `source` of every appointment event.
pub const APPOINTMENT_SOURCE: &str = "appointment-service";
/// The `version` of appointment events this producer writes.
pub const APPOINTMENT_EVENT_VERSION: &str = "1.0";

/// What a consumer applied in one batch: for each user, the version its copy now holds (at
/// least). Sent after the batch's commit, on the consumer's own broker identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The registered consumer's name (`user-service`, `appointment-service`, ...).
    pub consumer: String,
    /// When the batch committed.
    pub applied_at: Timestamp,
    pub users: Vec<ReceiptEntry>,
}

/// One user of a receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiptEntry {
    pub user_id: UserId,
    /// The `userVersion` the copy holds now (the batch's newest for this user; the copy may
    /// hold a newer one, never an older one).
    pub user_version: i64,
    /// When that version was written in `auth_db` (the event's `timestamp`).
    pub changed_at: Timestamp,
}

/// What becomes of a leaving doctor's future appointments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppointmentPolicy {
    /// Each to another active doctor whose slot is free; cancelled where none is (and the
    /// offboarding then needs attention: those patients have no appointment any more).
    Reassign,
    /// Each cancelled.
    Cancel,
}

impl AppointmentPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reassign => "reassign",
            Self::Cancel => "cancel",
        }
    }
}

impl std::str::FromStr for AppointmentPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reassign" => Ok(Self::Reassign),
            "cancel" => Ok(Self::Cancel),
            other => Err(format!(
                "unknown policy {other:?}: expected reassign or cancel"
            )),
        }
    }
}

/// The saga's command: resolve the future appointments of `doctorId`, who has left. Sent again
/// with the same message id when no reply came in time; the appointment-service acts on one
/// message id once and answers every copy with the same reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolveDoctor {
    /// The offboarding this belongs to (named in every appointment event it causes).
    pub offboarding_id: Uuid,
    pub doctor_id: UserId,
    pub policy: AppointmentPolicy,
    /// Appointments starting at or after this are resolved (the offboarding's start).
    pub from: Timestamp,
    /// The offboarding's reason, for the cancellation events.
    pub reason: String,
}

/// What became of one appointment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// Moved to another doctor, same time.
    Reassigned,
    /// Cancelled because the policy says so.
    Cancelled,
    /// Cancelled because no active doctor was free at its time (policy `reassign`).
    CancelledNoDoctorFree,
}

/// One appointment the command changed: the patient to inform and what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedAppointment {
    pub appointment_id: Uuid,
    pub patient_name: String,
    pub starts_at: Timestamp,
    pub resolution: Resolution,
    /// The doctor who now sees the patient (reassigned only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctor_id: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctor_name: Option<String>,
}

/// The appointment-service's reply: every future appointment of the doctor, each resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorResolved {
    pub offboarding_id: Uuid,
    /// The message id of the command answered.
    pub command_id: Uuid,
    pub doctor_id: UserId,
    pub appointments: Vec<ResolvedAppointment>,
}

impl DoctorResolved {
    /// Appointments no doctor could take.
    pub fn unplaced(&self) -> impl Iterator<Item = &ResolvedAppointment> {
        self.appointments
            .iter()
            .filter(|a| a.resolution == Resolution::CancelledNoDoctorFree)
    }
}

/// The type of an appointment event (also its routing key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AppointmentEventType {
    #[serde(rename = "appointment.reassigned")]
    Reassigned,
    #[serde(rename = "appointment.cancelled")]
    Cancelled,
}

impl AppointmentEventType {
    pub const ALL: [AppointmentEventType; 2] = [Self::Reassigned, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reassigned => "appointment.reassigned",
            Self::Cancelled => "appointment.cancelled",
        }
    }
}

/// An appointment changed for a reason the patient must hear of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppointmentEvent {
    pub event_id: Uuid,
    pub event_type: AppointmentEventType,
    pub timestamp: Timestamp,
    /// Always `appointment-service`.
    pub source: String,
    /// `major.minor`, as for user events.
    #[schemars(regex(pattern = r"^1\.[0-9]+$"))]
    pub version: String,
    pub payload: AppointmentChange,
}

/// The appointment after the change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppointmentChange {
    pub appointment_id: Uuid,
    /// Rises by one with every change of the appointment: (appointmentId, appointmentVersion)
    /// names one change, so a consumer can drop a duplicate.
    pub appointment_version: i64,
    /// The patient to inform.
    pub patient_name: String,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// The doctor the patient now sees (the new one when reassigned).
    pub doctor_id: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doctor_name: Option<String>,
    /// The doctor before the change.
    pub previous_doctor_id: UserId,
    /// `booked` (reassigned) or `cancelled`.
    pub status: String,
    /// Why, in words (the offboarding's reason, or that no doctor was free).
    pub reason: String,
    /// The offboarding that caused it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offboarding_id: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_use_the_documented_names() {
        let receipt = Receipt {
            consumer: "user-service".into(),
            applied_at: Timestamp::now(),
            users: vec![ReceiptEntry {
                user_id: UserId::new(),
                user_version: 3,
                changed_at: Timestamp::now(),
            }],
        };
        let json = serde_json::to_value(&receipt).unwrap();
        assert!(json["users"][0]["userVersion"].is_i64(), "{json}");
        assert!(json["appliedAt"].is_string(), "{json}");
        let back: Receipt = serde_json::from_value(json).unwrap();
        assert_eq!(back, receipt);
        assert_eq!(
            serde_json::to_value(AppointmentEventType::Cancelled).unwrap(),
            "appointment.cancelled"
        );
        assert_eq!(
            serde_json::to_value(Resolution::CancelledNoDoctorFree).unwrap(),
            "cancelled-no-doctor-free"
        );
        assert_eq!("cancel".parse(), Ok(AppointmentPolicy::Cancel));
        assert!("fire".parse::<AppointmentPolicy>().is_err());
    }
}
