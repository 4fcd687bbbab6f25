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

use super::admin::{admin_only, refuse_admin_post};
use super::PageForm;
use crate::page::{layout, PageError};
use crate::staff::Staff;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::FixedOffset;
use contract::api::{ConsumerPropagation, Offboarding, OffboardingState, Propagation};
use contract::control::{AppointmentPolicy, Resolution, ResolvedAppointment};
use contract::{Timestamp, UserSnapshot};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

/// Seconds between the saga page's refreshes while the saga runs (the `Refresh` header, as the
/// sync page does: no JavaScript).
const REFRESH_WHILE_RUNNING: &str = "2";

/// The longest reason the auth-service takes.
const REASON_MAX: usize = 500;

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

/// Where one consumer stands with the user's `version`: its delay when it holds it, else
/// "waiting (has vN of vM)" or "no receipt yet".
fn consumer_words(c: &ConsumerPropagation, version: i64) -> String {
    let state = if c.current {
        c.delay_seconds
            .map_or_else(|| "up to date".to_owned(), delay)
    } else {
        match c.user_version {
            Some(v) => format!("waiting (has v{v} of v{version})"),
            None => "no receipt yet".to_owned(),
        }
    };
    let optional = if c.required { "" } else { " (not required)" };
    format!("{} {state}{optional}", c.consumer)
}

/// The propagation line: "Deactivated · user-service 0.06 s · appointment-service 0.07 s".
fn propagation_line(p: &Propagation) -> Markup {
    html! {
        p id="propagation" {
            strong { "Propagation:" } " "
            @if p.is_active { "Active" } @else { "Deactivated" }
            @for c in &p.consumers {
                " · "
                @if c.current { (consumer_words(c, p.user_version)) }
                @else { span class="badge wait" { (consumer_words(c, p.user_version)) } }
            }
            @if p.consumers.is_empty() { " · no consumer registered" }
        }
    }
}

/// What a failed secondary read says in the page (the page itself still shows).
fn cannot_read(what: &str, e: api_client::Error) -> String {
    let why = match e.status().map(|s| s.as_u16()) {
        Some(404) => "the auth-service does not know it.".to_owned(),
        _ => PageError::from_api(e).message,
    };
    format!("{what} cannot be read right now: {why}")
}

/// The "Offboard…" form as typed.
#[derive(Debug, Default, Deserialize)]
pub struct OffboardForm {
    csrf: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    policy: String,
    confirm: Option<String>,
}

/// What is wrong with a submitted "Offboard…" form.
#[derive(Debug, Default)]
pub(crate) struct OffboardProblems {
    reason: Option<String>,
    policy: Option<String>,
    confirm: Option<String>,
    /// The API's refusal, for the form as a whole.
    form: Option<String>,
}

impl OffboardProblems {
    fn any_field(&self) -> bool {
        self.reason.is_some() || self.policy.is_some() || self.confirm.is_some()
    }
}

impl OffboardForm {
    /// The request, or what is wrong with the form.
    fn request(&self, name: &str) -> Result<contract::api::OffboardingRequest, OffboardProblems> {
        let mut problems = OffboardProblems::default();
        let reason = self.reason.trim();
        let length = reason.chars().count();
        if length == 0 {
            problems.reason = Some(format!("Enter why {name} is leaving."));
        } else if length > REASON_MAX {
            problems.reason = Some(format!(
                "The reason may be at most {REASON_MAX} characters; this one has {length}."
            ));
        }
        let policy = self.policy.parse::<AppointmentPolicy>().ok();
        if policy.is_none() {
            problems.policy = Some("Choose what becomes of their future appointments.".into());
        }
        if self.confirm.as_deref() != Some("yes") {
            problems.confirm = Some("Tick the box to confirm the offboarding.".into());
        }
        match policy {
            Some(policy) if !problems.any_field() => Ok(contract::api::OffboardingRequest {
                reason: reason.to_owned(),
                policy,
            }),
            _ => Err(problems),
        }
    }
}

/// What the user's page shows of propagation and offboarding.
pub(crate) struct UserSections {
    /// The propagation line, under the person's summary.
    pub propagation: Markup,
    /// The latest offboarding and the "Offboard…" form.
    pub offboarding: Markup,
}

/// A form coming back with its problems.
pub(crate) type Returned<'a> = Option<(&'a OffboardForm, &'a OffboardProblems)>;

/// The user page's sections for `user`; each read that fails is said in its section, never
/// fails the page.
pub(crate) async fn user_sections(
    staff: &Staff,
    state: &AppState,
    user: &UserSnapshot,
    returned: Returned<'_>,
) -> UserSections {
    let api = staff.api(state);
    let id = user.user_id.0;
    let (propagation, latest) = tokio::join!(api.propagation(id), api.offboarding_of(id));
    let propagation = match propagation {
        Ok(p) => propagation_line(&p),
        Err(e) => {
            tracing::warn!(error = %e, user_id = %id, "user page: propagation not read");
            html! { p id="propagation" class="problem" { (cannot_read("Propagation", e)) } }
        }
    };
    let latest = match latest {
        Ok(saga) => Ok(Some(saga)),
        Err(e) if e.status().is_some_and(|s| s.as_u16() == 404) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, user_id = %id, "user page: offboarding not read");
            Err(cannot_read("Offboardings", e))
        }
    };
    let offboarding = offboarding_section(staff, user, latest, returned, state.utc_offset);
    UserSections {
        propagation,
        offboarding,
    }
}

fn field_error(id: &str, problem: Option<&String>) -> Markup {
    html! {
        @if let Some(problem) = problem { p class="field-error" id=(format!("{id}-error")) { (problem) } }
    }
}

fn offboarding_section(
    staff: &Staff,
    user: &UserSnapshot,
    latest: Result<Option<Offboarding>, String>,
    returned: Returned<'_>,
    offset: FixedOffset,
) -> Markup {
    let id = user.user_id.0;
    let name = format!("{} {}", user.first_name, user.last_name);
    let running = matches!(&latest, Ok(Some(s)) if !s.state.is_terminal());
    let no_problems = OffboardProblems::default();
    let empty = OffboardForm::default();
    let (values, problems) = returned.unwrap_or((&empty, &no_problems));
    let reassign = values.policy.is_empty() || values.policy == "reassign";
    let described =
        |field: &str, problem: Option<&String>| problem.map(|_| format!("{field}-error"));
    let invalid = |problem: Option<&String>| problem.map(|_| "true");
    html! {
        section aria-labelledby="offboarding" {
            h2 id="offboarding" { "Offboarding" }
            @match &latest {
                Err(problem) => p class="problem" { (problem) },
                Ok(None) => p { "No offboarding of " (name) " so far." },
                Ok(Some(saga)) if !saga.state.is_terminal() => p {
                    (state_badge(saga)) " An offboarding of " (name) " runs since "
                    (at(saga.created_at, offset)) ". "
                    a href=(format!("/admin/offboarding/{}", saga.id)) { "Follow the offboarding" }
                },
                Ok(Some(saga)) => p {
                    "Last offboarding: " (state_badge(saga))
                    @if let Some(done) = saga.finished_at { " finished " (at(done, offset)) }
                    ". "
                    a href=(format!("/admin/offboarding/{}", saga.id)) { "See the offboarding" }
                },
            }
            @if id == staff.signed.user.user_id.0 {
                p class="hint" { "You cannot offboard yourself: another admin can." }
            } @else if !running {
                details open[returned.is_some()] {
                    summary { "Offboard…" }
                    @if let Some(problem) = &problems.form { p class="problem" role="alert" { (problem) } }
                    @if problems.any_field() {
                        p class="problem" role="alert" { "Some fields need attention; your entries are kept." }
                    }
                    p {
                        "Offboarding deactivates " (name) " at once (their sessions end), waits until "
                        "every part of the system has the change, then moves or cancels their future "
                        "appointments as chosen here."
                    }
                    form class="stacked" method="post" action=(format!("/admin/users/{id}/offboard")) {
                        input type="hidden" name="csrf" value=(staff.session.csrf);
                        div {
                            label for="offboardReason" { "Reason (required)" }
                            textarea id="offboardReason" name="reason" rows="3" required
                                maxlength=(REASON_MAX)
                                aria-describedby=[described("offboardReason", problems.reason.as_ref())]
                                aria-invalid=[invalid(problems.reason.as_ref())] { (values.reason) }
                            (field_error("offboardReason", problems.reason.as_ref()))
                        }
                        fieldset aria-describedby=[described("offboardPolicy", problems.policy.as_ref())] {
                            legend { "Future appointments" }
                            div class="choice" {
                                input type="radio" id="policyReassign" name="policy" value="reassign" checked[reassign];
                                label for="policyReassign" { (policy_words(AppointmentPolicy::Reassign)) }
                            }
                            div class="choice" {
                                input type="radio" id="policyCancel" name="policy" value="cancel" checked[values.policy == "cancel"];
                                label for="policyCancel" { (policy_words(AppointmentPolicy::Cancel)) }
                            }
                            (field_error("offboardPolicy", problems.policy.as_ref()))
                        }
                        div {
                            div class="choice" {
                                input type="checkbox" id="offboardConfirm" name="confirm" value="yes" required
                                    aria-describedby=[described("offboardConfirm", problems.confirm.as_ref())]
                                    aria-invalid=[invalid(problems.confirm.as_ref())];
                                label for="offboardConfirm" { "I confirm: deactivate " (name) " now and resolve their future appointments" }
                            }
                            (field_error("offboardConfirm", problems.confirm.as_ref()))
                        }
                        div { button type="submit" { "Offboard " (name) } }
                    }
                }
            }
        }
    }
}

/// `POST /admin/users/{id}/offboard`: starts the offboarding (or finds the one running) and
/// goes to its page; a form with problems comes back on the user's page, as typed.
pub async fn start(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    PageForm(form): PageForm<OffboardForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, form.csrf.as_deref()) {
        return refused;
    }
    let user = match super::user_edit::load(&staff, &state, &id).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let name = format!("{} {}", user.first_name, user.last_name);
    let problems = match form.request(&name) {
        Ok(request) => match staff.api(&state).offboard(user.user_id.0, &request).await {
            Ok(saga) => {
                return Redirect::to(&format!("/admin/offboarding/{}", saga.id)).into_response()
            }
            // Refused as asked (themselves, a conflict, a value the API will not take): said on
            // the form, which keeps what was typed.
            Err(api_client::Error::Refused { status, body })
                if matches!(status.as_u16(), 403 | 409 | 422) =>
            {
                OffboardProblems {
                    form: Some(body.message),
                    ..OffboardProblems::default()
                }
            }
            Err(e) => return staff.failed(&state, e),
        },
        Err(problems) => problems,
    };
    let sections = user_sections(&staff, &state, &user, Some((&form, &problems))).await;
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        super::user_edit::user_page(&staff, &user, &sections),
    )
        .into_response()
}

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
            td { (super::appointments::when(a.starts_at.as_datetime(), offset)) }
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

/// One list of sagas; `why` adds the stalled reason column.
fn saga_table(sagas: &[&Offboarding], why: bool, offset: FixedOffset) -> Markup {
    html! {
        div class="table-scroll" { table {
            thead { tr {
                th scope="col" { "Person" } th scope="col" { "Email" } th scope="col" { "State" }
                th scope="col" { "Started" } th scope="col" { "Finished" }
                th scope="col" { "Future appointments" }
                @if why { th scope="col" { "Why stalled" } }
            } }
            tbody { @for s in sagas { tr {
                td { a href=(format!("/admin/offboarding/{}", s.id)) aria-label=(format!("Offboarding of {}", s.name)) { (s.name) } }
                td { (s.email) }
                td { (state_badge(s)) }
                td { (at(s.created_at, offset)) }
                td { (s.finished_at.map_or("-".to_owned(), |t| at(t, offset))) }
                td { (policy_words(s.policy)) }
                @if why { td { (s.stalled_reason.as_deref().unwrap_or("-")) } }
            } } }
        } }
    }
}

/// `GET /admin/offboarding`: stalled, running (the others) and recent finished sagas.
pub async fn list(State(state): State<AppState>, staff: Staff) -> Response {
    if let Some(refused) = admin_only(&staff) {
        return refused;
    }
    let api = staff.api(&state);
    let (stalled, running, recent) = tokio::join!(
        api.offboardings(Some("stalled")),
        api.offboardings(Some("running")),
        api.offboardings(None),
    );
    let (stalled, running, recent) = match (stalled, running, recent) {
        (Ok(s), Ok(r), Ok(n)) => (s.items, r.items, n.items),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return staff.failed(&state, e),
    };
    // Each saga once: stalled first, then the other running ones, then the finished ones.
    let stalled_ids: Vec<Uuid> = stalled.iter().map(|s| s.id).collect();
    let running_rest: Vec<&Offboarding> = running
        .iter()
        .filter(|s| !stalled_ids.contains(&s.id))
        .collect();
    let finished: Vec<&Offboarding> = recent
        .iter()
        .filter(|s| s.state.is_terminal() && !stalled_ids.contains(&s.id))
        .collect();
    let stalled: Vec<&Offboarding> = stalled.iter().collect();
    let offset = state.utc_offset;
    let body = html! {
        p {
            "An offboarding is started from the person's page ("
            a href="/admin/users" { "Users" } ", then the person). "
            a href="/admin/offboarding" { "Refresh" }
        }
        section aria-labelledby="stalled" {
            h2 id="stalled" { "Stalled" }
            @if stalled.is_empty() { p { "None." } }
            @else {
                p class="problem" role="alert" { (stalled.len()) " waiting longer than they should." }
                (saga_table(&stalled, true, offset))
            }
        }
        section aria-labelledby="running" {
            h2 id="running" { "Running" }
            @if running_rest.is_empty() { p { "None." } }
            @else { (saga_table(&running_rest, false, offset)) }
        }
        section aria-labelledby="recent" {
            h2 id="recent" { "Recently finished" }
            @if finished.is_empty() { p { "None yet." } }
            @else { (saga_table(&finished, false, offset)) }
        }
    };
    layout("Offboarding", Some((&staff.signed, &staff.session)), body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer(name: &str, version: Option<i64>, current: bool) -> ConsumerPropagation {
        ConsumerPropagation {
            consumer: name.into(),
            required: true,
            user_version: version,
            applied_at: None,
            delay_seconds: current.then_some(0.0612),
            current,
        }
    }

    #[test]
    fn the_propagation_line_says_each_consumers_delay_or_what_it_waits_for() {
        let mut p = Propagation {
            user_id: contract::UserId(Uuid::nil()),
            user_version: 4,
            is_active: false,
            changed_at: Timestamp::now(),
            consumers: vec![
                consumer("user-service", Some(4), true),
                consumer("appointment-service", Some(4), true),
            ],
        };
        let text = |p: &Propagation| {
            let html = propagation_line(p).into_string();
            // The words without the tags.
            let mut out = String::new();
            let mut tag = false;
            for c in html.chars() {
                match c {
                    '<' => tag = true,
                    '>' => tag = false,
                    c if !tag => out.push(c),
                    _ => {}
                }
            }
            out
        };
        assert_eq!(
            text(&p),
            "Propagation: Deactivated · user-service 0.06 s · appointment-service 0.06 s"
        );
        p.is_active = true;
        p.consumers = vec![
            consumer("user-service", Some(3), false),
            consumer("appointment-service", None, false),
        ];
        p.consumers[1].required = false;
        assert_eq!(
            text(&p),
            "Propagation: Active · user-service waiting (has v3 of v4) · appointment-service no \
             receipt yet (not required)"
        );
        assert_eq!(delay(90.0), "2 min");
        assert_eq!(delay(7200.0), "2.0 h");
    }

    #[test]
    fn the_form_is_checked_before_anything_is_asked() {
        let form = OffboardForm {
            csrf: None,
            reason: "  ".into(),
            policy: "keep".into(),
            confirm: None,
        };
        let problems = form.request("Ann Dube").unwrap_err();
        assert_eq!(
            problems.reason.as_deref(),
            Some("Enter why Ann Dube is leaving.")
        );
        assert!(problems.policy.is_some() && problems.confirm.is_some());
        let long = OffboardForm {
            reason: "x".repeat(501),
            policy: "cancel".into(),
            confirm: Some("yes".into()),
            ..OffboardForm::default()
        };
        assert!(long.request("A").unwrap_err().reason.is_some());
        let good = OffboardForm {
            reason: " left the clinic ".into(),
            policy: "cancel".into(),
            confirm: Some("yes".into()),
            ..OffboardForm::default()
        };
        let request = good.request("A").unwrap();
        assert_eq!(request.reason, "left the clinic");
        assert_eq!(request.policy, AppointmentPolicy::Cancel);
    }
}
