//! Offboarding in the portal (admins only), over the auth-service's saga:
//! - on a user's page (`user_edit`): the propagation line (active or deactivated, and how far
//!   the current version has reached each registered consumer), the user's latest offboarding,
//!   and the "Offboard…" form (reason, what becomes of future appointments, a confirmation);
//! - `POST /admin/users/{id}/offboard`: starts the saga and goes to its page;
//! - `/admin/offboarding/{id}`: one saga — the person, its state in words, a stalled warning,
//!   its steps, each consumer's receipt, the appointments (the patients to inform), and
//!   "Cancel offboarding" while it waits for receipts; it refreshes itself until it finishes;
//! - `POST /admin/offboarding/{id}/cancel`: a confirmation page, then the cancellation;
//! - `/admin/offboarding`: the stalled, running and recent sagas.
//!
//! The pages live in [`user`] (the user page's sections and `start`), [`saga`] (one saga:
//! `show`, `cancel`) and [`list`] (the list page); this module keeps the wording they share.

mod list;
mod saga;
mod user;

pub use list::list;
pub use saga::{cancel, show};
pub use user::start;
pub(crate) use user::{user_sections, UserSections};

use chrono::FixedOffset;
use contract::api::{Offboarding, OffboardingState};
use contract::control::{AppointmentPolicy, Resolution};
use contract::Timestamp;
use maud::{html, Markup};

/// The state as the admin reads it.
pub(crate) fn state_words(state: OffboardingState) -> &'static str {
    match state {
        OffboardingState::AwaitingReceipts => "Waiting for receipts",
        OffboardingState::ResolvingAppointments => "Moving appointments",
        OffboardingState::Completed => "Completed",
        OffboardingState::NeedsAttention => "Needs attention",
        OffboardingState::Cancelled => "Cancelled",
    }
}

/// The state as a badge: green when done, red when someone must act, yellow while it runs.
fn state_badge(saga: &Offboarding) -> Markup {
    let class = match saga.state {
        OffboardingState::Completed => "badge ok",
        OffboardingState::NeedsAttention => "badge bad",
        OffboardingState::Cancelled => "badge",
        OffboardingState::AwaitingReceipts | OffboardingState::ResolvingAppointments => {
            "badge wait"
        }
    };
    html! {
        span class=(class) { (state_words(saga.state)) }
        @if saga.stalled_reason.is_some() { " " span class="badge bad" { "stalled" } }
    }
}

fn policy_words(policy: AppointmentPolicy) -> &'static str {
    match policy {
        AppointmentPolicy::Reassign => "Reassign to another free doctor, else cancel",
        AppointmentPolicy::Cancel => "Cancel them",
    }
}

fn resolution_words(resolution: Resolution) -> &'static str {
    match resolution {
        Resolution::Reassigned => "Reassigned",
        Resolution::Cancelled => "Cancelled",
        Resolution::CancelledNoDoctorFree => "Cancelled: no doctor was free; book again",
    }
}

/// A step's name in words (the API's names are codes); an unknown one as it is.
fn step_words(step: &str) -> &str {
    match step {
        "started" => "Started",
        "deactivated" => "Deactivated",
        "receipt" => "Receipt",
        "resent" => "Sent again",
        "stalled" => "Stalled",
        "command-sent" => "Appointment-service told",
        "resolved" => "Appointments resolved",
        "completed" => "Completed",
        "needs-attention" => "Needs attention",
        "cancelled" => "Cancelled",
        other => other,
    }
}

/// A time to the second: a saga's steps are often less than a second apart.
fn at(t: Timestamp, offset: FixedOffset) -> String {
    t.as_datetime()
        .with_timezone(&offset)
        .format("%a %-d %b %Y, %H:%M:%S")
        .to_string()
}

/// How long a change took to reach a consumer.
fn delay(seconds: f64) -> String {
    match seconds {
        s if s < 60.0 => format!("{s:.2} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}
