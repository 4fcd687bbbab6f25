//! One saga's pages: `GET /admin/offboarding/{id}` (`show`: the person, the state, the
//! receipts, the appointments, the steps; it refreshes itself while the saga runs) and
//! `POST /admin/offboarding/{id}/cancel` (`cancel`: a confirmation page, then the cancellation).

use super::{at, delay, policy_words, resolution_words, state_badge, state_words, step_words};
use crate::page::{layout, PageError};
use crate::pages::admin::{admin_only, refuse_admin_post};
use crate::pages::appointments;
use crate::pages::PageForm;
use crate::staff::Staff;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::FixedOffset;
use contract::api::{Offboarding, OffboardingState};
use contract::control::{Resolution, ResolvedAppointment};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

/// Seconds between the saga page's refreshes while the saga runs (the `Refresh` header, as the
/// sync page does: no JavaScript).
const REFRESH_WHILE_RUNNING: &str = "2";

#[derive(Debug, Default, Deserialize)]
pub struct SagaQuery {
    /// `off`: the page does not refresh itself (for reading at leisure).
    refresh: Option<String>,
}

/// Who started the saga, by name when the auth-service still knows them.
async fn requested_by(staff: &Staff, state: &AppState, saga: &Offboarding) -> String {
    match staff.api(state).user(saga.requested_by.0).await {
        Ok(u) => format!("{} {} ({})", u.first_name, u.last_name, u.email.as_str()),
        Err(_) => saga.requested_by.0.to_string(),
    }
}

fn receipts_table(saga: &Offboarding, offset: FixedOffset) -> Markup {
    html! {
        @if saga.receipts.is_empty() {
            p { "No consumer is registered: nothing to wait for." }
        } @else {
            div class="table-scroll" { table {
                thead { tr {
                    th scope="col" { "Consumer" } th scope="col" { "Required" }
                    th scope="col" { "Version" } th scope="col" { "Applied at" }
                    th scope="col" { "Delay" } th scope="col" { "Status" }
                } }
                tbody { @for r in &saga.receipts { tr {
                    td { (r.consumer) }
                    td { @if r.required { "yes" } @else { "no" } }
                    td { (r.user_version.map_or("-".to_owned(), |v| format!("v{v}"))) }
                    td { (r.applied_at.map_or("-".to_owned(), |t| at(t, offset))) }
                    td { (r.delay_seconds.map_or("-".to_owned(), delay)) }
                    td {
                        @if r.current { span class="badge ok" { "has the current version" } }
                        @else if r.user_version.is_some_and(|v| v >= saga.target_version) {
                            span class="badge ok" { "has the deactivation" }
                        }
                        @else if r.user_version.is_some() { span class="badge wait" { "waiting" } }
                        @else { span class="badge wait" { "no receipt yet" } }
                    }
                } } }
            } }
        }
    }
}

fn appointments_table(saga: &Offboarding, offset: FixedOffset) -> Markup {
    let row = |a: &ResolvedAppointment| {
        html! { tr {
            td { (a.patient_name) }
            td { (appointments::when(a.starts_at.as_datetime(), offset)) }
            td {
                @if a.resolution == Resolution::CancelledNoDoctorFree {
                    span class="badge bad" { (resolution_words(a.resolution)) }
                } @else { (resolution_words(a.resolution)) }
            }
            td { (a.doctor_name.as_deref().map_or("-".to_owned(), |d| format!("Dr {d}"))) }
        } }
    };
    html! {
        @if saga.appointments.is_empty() {
            p {
                @match saga.state {
                    OffboardingState::AwaitingReceipts => "Not resolved yet: the appointment-service \
                        is told once every required consumer has the deactivation.",
                    OffboardingState::ResolvingAppointments => "The appointment-service is moving \
                        or cancelling them now.",
                    OffboardingState::Cancelled => "None changed: the offboarding was cancelled.",
                    OffboardingState::Completed | OffboardingState::NeedsAttention =>
                        "There were no future appointments.",
                }
            }
        } @else {
            p { "Tell each of these patients what happened to their appointment." }
            div class="table-scroll" { table {
                thead { tr {
                    th scope="col" { "Patient" } th scope="col" { "Time" }
                    th scope="col" { "What happened" } th scope="col" { "New doctor" }
                } }
                tbody { @for a in &saga.appointments { (row(a)) } }
            } }
        }
    }
}

/// The saga page; `problem` is said at the top (a refused cancellation).
fn saga_page(
    staff: &Staff,
    saga: &Offboarding,
    requester: &str,
    offset: FixedOffset,
    refreshing: bool,
    problem: Option<&str>,
) -> Markup {
    let id = saga.id;
    let body = html! {
        @if let Some(problem) = problem { p class="problem" role="alert" { (problem) } }
        @if let Some(reason) = &saga.stalled_reason {
            div class="problem" role="alert" {
                p { strong { "Stalled: " } (reason) }
                p { "It goes on by itself once the answer comes. While it waits for receipts it can be cancelled." }
            }
        }
        @if saga.state == OffboardingState::NeedsAttention {
            p class="problem" role="alert" {
                "Some appointments were cancelled because no doctor was free: those patients "
                "need a new booking."
            }
        }
        p {
            strong { (saga.name) } " (" (saga.email) ") · "
            a href=(format!("/admin/users/{}", saga.user_id.0)) { "User page of " (saga.name) }
        }
        p id="state" { "State: " (state_badge(saga)) }
        @if !saga.state.is_terminal() {
            p class="hint" {
                @if refreshing {
                    "This page refreshes itself every " (REFRESH_WHILE_RUNNING) " seconds until the offboarding finishes. "
                    a href=(format!("/admin/offboarding/{id}?refresh=off")) { "Stop refreshing" }
                } @else {
                    a href=(format!("/admin/offboarding/{id}")) { "Refresh this page until it finishes" }
                }
            }
        }
        dl class="facts" {
            dt { "Reason" } dd { (saga.reason) }
            dt { "Future appointments" } dd { (policy_words(saga.policy)) }
            dt { "Requested by" } dd { (requester) }
            dt { "Started" } dd { (at(saga.created_at, offset)) }
            @if let Some(done) = saga.finished_at { dt { "Finished" } dd { (at(done, offset)) } }
            dt { "Deactivated as version" } dd { "v" (saga.target_version) }
        }
        @if saga.state == OffboardingState::AwaitingReceipts {
            form method="post" action=(format!("/admin/offboarding/{id}/cancel")) {
                input type="hidden" name="csrf" value=(staff.session.csrf);
                button type="submit" { "Cancel offboarding" }
                " " span class="hint" { "You are asked to confirm; " (saga.name) " is then reactivated." }
            }
        }
        section aria-labelledby="receipts" {
            h2 id="receipts" { "Receipts" }
            (receipts_table(saga, offset))
        }
        section aria-labelledby="appointments" {
            h2 id="appointments" { "Appointments" }
            (appointments_table(saga, offset))
        }
        section aria-labelledby="steps" {
            h2 id="steps" { "Steps" }
            div class="table-scroll" { table {
                thead { tr { th scope="col" { "Time" } th scope="col" { "Step" } th scope="col" { "Detail" } } }
                tbody { @for s in &saga.steps { tr {
                    td { (at(s.at, offset)) } td { (step_words(&s.step)) } td { (s.detail) }
                } } }
            } }
        }
        p { a href="/admin/offboarding" { "All offboardings" } }
    };
    layout(
        &format!("Offboarding of {}", saga.name),
        Some((&staff.signed, &staff.session)),
        body,
    )
}

/// `GET /admin/offboarding/{id}`.
pub async fn show(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Query(query): Query<SagaQuery>,
) -> Response {
    if let Some(refused) = admin_only(&staff) {
        return refused;
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return PageError::not_found().into_response();
    };
    let saga = match staff.api(&state).offboarding(id).await {
        Ok(saga) => saga,
        Err(e) => return staff.failed(&state, e),
    };
    let requester = requested_by(&staff, &state, &saga).await;
    let refreshing = !saga.state.is_terminal() && query.refresh.as_deref() != Some("off");
    let page = saga_page(
        &staff,
        &saga,
        &requester,
        state.utc_offset,
        refreshing,
        None,
    );
    if refreshing {
        ([(header::REFRESH, REFRESH_WHILE_RUNNING)], page).into_response()
    } else {
        page.into_response()
    }
}

#[derive(Debug, Deserialize)]
pub struct CancelForm {
    csrf: Option<String>,
    /// `yes` once the admin confirmed on the confirmation page.
    confirm: Option<String>,
}

/// `POST /admin/offboarding/{id}/cancel`: without `confirm=yes`, the confirmation page (a page
/// of its own, since the saga page refreshes itself and would lose a ticked box); with it, the
/// cancellation, then the saga page.
pub async fn cancel(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    PageForm(form): PageForm<CancelForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, form.csrf.as_deref()) {
        return refused;
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return PageError::not_found().into_response();
    };
    let api = staff.api(&state);
    let confirmed = form.confirm.as_deref() == Some("yes");
    let outcome = if confirmed {
        match api.cancel_offboarding(id).await {
            Ok(_) => return Redirect::to(&format!("/admin/offboarding/{id}")).into_response(),
            Err(api_client::Error::Refused { status, body }) if status.as_u16() == 409 => {
                Some(body.message)
            }
            Err(e) => return staff.failed(&state, e),
        }
    } else {
        None
    };
    let saga = match api.offboarding(id).await {
        Ok(saga) => saga,
        Err(e) => return staff.failed(&state, e),
    };
    if saga.state != OffboardingState::AwaitingReceipts || outcome.is_some() {
        let problem = outcome.unwrap_or_else(|| {
            format!(
                "This offboarding can no longer be cancelled: {}.",
                state_words(saga.state).to_lowercase()
            )
        });
        let requester = requested_by(&staff, &state, &saga).await;
        let page = saga_page(
            &staff,
            &saga,
            &requester,
            state.utc_offset,
            false,
            Some(&problem),
        );
        return (StatusCode::CONFLICT, page).into_response();
    }
    let body = html! {
        p {
            "Cancelling stops the offboarding of " strong { (saga.name) } " (" (saga.email) ") "
            "and reactivates them. No appointment has changed yet."
        }
        form method="post" action=(format!("/admin/offboarding/{id}/cancel")) {
            input type="hidden" name="csrf" value=(staff.session.csrf);
            input type="hidden" name="confirm" value="yes";
            button type="submit" { "Yes, cancel the offboarding" }
        }
        p { a href=(format!("/admin/offboarding/{id}")) { "No, back to the offboarding" } }
    };
    layout(
        &format!("Cancel the offboarding of {}?", saga.name),
        Some((&staff.signed, &staff.session)),
        body,
    )
    .into_response()
}
