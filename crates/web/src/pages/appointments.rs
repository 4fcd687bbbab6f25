//! `/appointments/new` (the appointment form, its Doctor list from the directory),
//! `/appointments` (upcoming appointments) and `/appointments/{id}` (one, and the booking's
//! confirmation). If the directory cannot be reached the form says so and offers a retry: it
//! never shows an empty Doctor list as if there were no doctors — the failure this project
//! exists to end. Who sees which appointments is the appointment-service's rule (a doctor their
//! own, nurses and admins all, pharmacists and consultants none unless the clinic's
//! `APPOINTMENTS_VISIBLE_TO` says): a role it refuses gets a page saying so, with the usual
//! header, not an error.

use super::PageForm;
use crate::page::{layout, PageError};
use crate::staff::Staff;
use crate::AppState;
use api_client::{ApiClient, ListFilter};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};
use contract::api::{Appointment, AppointmentStatus, DirectoryEntry, NewAppointment};
use contract::Role;
use maud::{html, Markup};
use serde::Deserialize;

/// Every active doctor of the directory, every page of it, sorted by last and first name.
async fn active_doctors(api: &ApiClient) -> Result<Vec<DirectoryEntry>, api_client::Error> {
    const PAGE: u32 = 500;
    let mut doctors: Vec<DirectoryEntry> = Vec::new();
    loop {
        let page = api
            .directory(&ListFilter {
                role: Some(Role::Doctor.as_str().to_owned()),
                is_active: Some(true),
                limit: Some(PAGE),
                offset: Some(u32::try_from(doctors.len()).unwrap_or(u32::MAX)),
                q: None,
            })
            .await?;
        let got = page.items.len();
        doctors.extend(page.items);
        if got == 0 || i64::try_from(doctors.len()).unwrap_or(i64::MAX) >= page.total {
            break;
        }
    }
    let key = |d: &DirectoryEntry| (d.last_name.to_lowercase(), d.first_name.to_lowercase());
    doctors.sort_by_key(key);
    Ok(doctors)
}

/// Who may book: nurses and admins for anyone, doctors for themselves.
fn may_book(role: Role) -> bool {
    matches!(role, Role::Admin | Role::Nurse | Role::Doctor)
}

/// The form's fields as typed, kept when the form comes back with an error.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BookingForm {
    csrf: Option<String>,
    #[serde(default)]
    patient_name: String,
    #[serde(default)]
    doctor_id: String,
    #[serde(default)]
    date: String,
    #[serde(default)]
    time: String,
    #[serde(default)]
    duration_minutes: String,
    #[serde(default)]
    reason: String,
}

/// What is wrong with a submitted form: per field, and for the form as a whole.
#[derive(Debug, Default)]
struct Problems {
    fields: Vec<(&'static str, String)>,
    form: Option<String>,
}

impl Problems {
    fn of(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.form.is_none()
    }
}

/// The id of `field`'s error message, for `aria-describedby`, when it has one.
fn described(problems: &Problems, field: &str) -> Option<String> {
    problems.of(field).map(|_| format!("{field}-error"))
}

/// `aria-invalid="true"` when `field` has an error.
fn invalid(problems: &Problems, field: &str) -> Option<&'static str> {
    problems.of(field).map(|_| "true")
}

fn field_error(problems: &Problems, field: &str) -> Markup {
    html! {
        @if let Some(message) = problems.of(field) {
            p class="field-error" id=(format!("{field}-error")) { (message) }
        }
    }
}

fn booking_page(
    staff: &Staff,
    doctors: &[DirectoryEntry],
    values: &BookingForm,
    problems: &Problems,
    offset: FixedOffset,
) -> Markup {
    let duration = if values.duration_minutes.is_empty() {
        "30"
    } else {
        values.duration_minutes.as_str()
    };
    let body = html! {
        @if let Some(message) = &problems.form {
            p class="problem" role="alert" { (message) }
        }
        @if !problems.fields.is_empty() {
            p class="problem" role="alert" { "Some fields need attention; your entries are kept." }
        }
        form class="stacked" method="post" action="/appointments/new" {
            input type="hidden" name="csrf" value=(staff.session.csrf);
            div {
                label for="patientName" { "Patient name" }
                input id="patientName" name="patientName" type="text" maxlength="200"
                    aria-describedby=[described(problems, "patientName")]
                    aria-invalid=[invalid(problems, "patientName")]
                    value=(values.patient_name);
                (field_error(problems, "patientName"))
            }
            div {
                label for="doctorId" { "Doctor" }
                select id="doctorId" name="doctorId"
                    aria-describedby=[described(problems, "doctorId")]
                    aria-invalid=[invalid(problems, "doctorId")] {
                    option value="" { "Choose a doctor" }
                    @for d in doctors {
                        @let id = d.user_id.0.to_string();
                        option value=(id) selected[id == values.doctor_id] {
                            "Dr " (d.first_name) " " (d.last_name)
                        }
                    }
                }
                (field_error(problems, "doctorId"))
            }
            div {
                label for="date" { "Date" }
                input id="date" name="date" type="date" value=(values.date)
                    aria-describedby=[described(problems, "date")]
                    aria-invalid=[invalid(problems, "date")];
                (field_error(problems, "date"))
            }
            div {
                label for="time" { "Time (UTC" (offset_label(offset)) ")" }
                input id="time" name="time" type="time" value=(values.time)
                    aria-describedby=[described(problems, "time")]
                    aria-invalid=[invalid(problems, "time")];
                (field_error(problems, "time"))
            }
            div {
                label for="durationMinutes" { "Duration (minutes)" }
                input id="durationMinutes" name="durationMinutes" type="number" min="5"
                    aria-describedby=[described(problems, "durationMinutes")]
                    aria-invalid=[invalid(problems, "durationMinutes")]
                    max="480" step="5" value=(duration);
                (field_error(problems, "durationMinutes"))
            }
            div {
                label for="reason" { "Reason (optional)" }
                textarea id="reason" name="reason" maxlength="500" rows="3"
                    aria-describedby=[described(problems, "reason")]
                    aria-invalid=[invalid(problems, "reason")] { (values.reason) }
                (field_error(problems, "reason"))
            }
            div { button type="submit" { "Book appointment" } }
        }
    };
    layout(
        "New appointment",
        Some((&staff.signed, &staff.session)),
        body,
    )
}

/// `+02:00`, or nothing for UTC itself.
fn offset_label(offset: FixedOffset) -> String {
    if offset.local_minus_utc() == 0 {
        String::new()
    } else {
        offset.to_string()
    }
}

/// The page that says the directory cannot be reached, with a retry: never an empty list.
fn directory_down(staff: &Staff, why: &str) -> Response {
    let body = html! {
        p class="problem" role="alert" {
            "The staff directory cannot be reached right now, so the list of doctors cannot be "
            "shown. No appointment can be booked until it is back."
        }
        p { (why) }
        p { a href="/appointments/new" { "Try again" } }
    };
    let page = layout(
        "New appointment",
        Some((&staff.signed, &staff.session)),
        body,
    );
    (StatusCode::SERVICE_UNAVAILABLE, page).into_response()
}

/// The page for a role the appointment-service shows no appointments (its 403, whose words
/// state the clinic's rule), in the signed-in layout so the rest of the portal stays at hand.
fn not_shown(staff: &Staff, why: &str) -> Response {
    let body = html! {
        p class="problem" role="alert" { (capitalised(why)) }
        p { "If your work needs them, ask an administrator of the clinic." }
        p { a href="/" { "Home" } }
    };
    let page = layout("Appointments", Some((&staff.signed, &staff.session)), body);
    (StatusCode::FORBIDDEN, page).into_response()
}

/// What a failed read of appointments shows: [`not_shown`] for a role that sees none, else the
/// usual page for the failure.
fn read_failed(state: &AppState, staff: &Staff, e: api_client::Error) -> Response {
    match e {
        api_client::Error::Refused { status, body } if status.as_u16() == 403 => {
            not_shown(staff, &body.message)
        }
        e => staff.failed(state, e),
    }
}

/// The form, or why it cannot be offered.
async fn form_page(
    state: &AppState,
    staff: &Staff,
    values: &BookingForm,
    problems: &Problems,
    status: StatusCode,
) -> Response {
    let doctors = match active_doctors(&staff.api(state)).await {
        // A doctor books with themselves only: the list holds them alone.
        Ok(doctors) if staff.signed.user.role == Role::Doctor => doctors
            .into_iter()
            .filter(|d| d.user_id == staff.signed.user.user_id)
            .collect(),
        Ok(doctors) => doctors,
        Err(e) if unreachable(&e) => {
            tracing::warn!(error = %e, "appointment form: the directory cannot be reached");
            return directory_down(staff, &PageError::from_api(e).message);
        }
        Err(e) => return staff.failed(state, e),
    };
    if doctors.is_empty() {
        let body = html! {
            p class="problem" role="alert" {
                "The directory lists no active doctor you can book with, so no appointment can "
                "be booked. An admin activates doctors in the user administration."
            }
            p { a href="/appointments/new" { "Try again" } }
        };
        let page = layout(
            "New appointment",
            Some((&staff.signed, &staff.session)),
            body,
        );
        return (StatusCode::OK, page).into_response();
    }
    let page = booking_page(staff, &doctors, values, problems, state.utc_offset);
    (status, page).into_response()
}

/// The directory (or the way to it) is down: the API did not answer, or the gateway says an
/// upstream is unreachable or unavailable.
fn unreachable(e: &api_client::Error) -> bool {
    match e {
        api_client::Error::Unreachable { .. } => true,
        _ => e.status().is_some_and(|s| matches!(s.as_u16(), 502..=504)),
    }
}

pub async fn form(State(state): State<AppState>, staff: Staff) -> Response {
    if !may_book(staff.signed.user.role) {
        return PageError::forbidden("Your role may read appointments, not book them.")
            .into_response();
    }
    form_page(
        &state,
        &staff,
        &BookingForm::default(),
        &Problems::default(),
        StatusCode::OK,
    )
    .await
}

/// The form's fields as a booking, or what is missing.
fn to_booking(form: &BookingForm, offset: FixedOffset) -> Result<NewAppointment, Problems> {
    let mut problems = Problems::default();
    if form.patient_name.trim().is_empty() {
        problems
            .fields
            .push(("patientName", "Enter the patient's name.".into()));
    }
    if form.doctor_id.trim().is_empty() {
        problems
            .fields
            .push(("doctorId", "Choose a doctor.".into()));
    }
    let date = NaiveDate::parse_from_str(form.date.trim(), "%Y-%m-%d").ok();
    if date.is_none() {
        problems.fields.push(("date", "Enter the date.".into()));
    }
    let time = NaiveTime::parse_from_str(form.time.trim(), "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(form.time.trim(), "%H:%M:%S"))
        .ok();
    if time.is_none() {
        problems.fields.push(("time", "Enter the time.".into()));
    }
    let duration = form.duration_minutes.trim().parse::<i64>().ok();
    if duration.is_none() {
        problems
            .fields
            .push(("durationMinutes", "Enter the duration in minutes.".into()));
    }
    let starts_at = date
        .zip(time)
        .and_then(|(d, t)| offset.from_local_datetime(&d.and_time(t)).single())
        .map(|t| t.with_timezone(&Utc));
    match (starts_at, duration, problems.is_empty()) {
        (Some(starts_at), Some(duration), true) => Ok(NewAppointment {
            patient_name: form.patient_name.trim().to_owned(),
            doctor_id: form.doctor_id.trim().to_owned(),
            starts_at: starts_at.to_rfc3339(),
            duration_minutes: duration,
            reason: Some(form.reason.trim().to_owned()).filter(|r| !r.is_empty()),
        }),
        _ => Err(problems),
    }
}

/// The form's field an API field belongs to.
fn form_field(api_field: Option<&str>) -> &'static str {
    match api_field {
        Some("patientName") => "patientName",
        Some("doctorId") => "doctorId",
        Some("startsAt") => "date",
        Some("durationMinutes") => "durationMinutes",
        Some("reason") => "reason",
        _ => "",
    }
}

pub async fn book(
    State(state): State<AppState>,
    staff: Staff,
    PageForm(values): PageForm<BookingForm>,
) -> Result<Response, PageError> {
    staff.check_csrf(values.csrf.as_deref())?;
    if !may_book(staff.signed.user.role) {
        return Err(PageError::forbidden(
            "Your role may read appointments, not book them.",
        ));
    }
    let booking = match to_booking(&values, state.utc_offset) {
        Ok(booking) => booking,
        Err(problems) => {
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            return Ok(form_page(&state, &staff, &values, &problems, status).await);
        }
    };
    let mut problems = Problems::default();
    match staff.api(&state).book(&booking).await {
        Ok(made) => {
            return Ok(Redirect::to(&format!("/appointments/{}?booked=1", made.id)).into_response())
        }
        Err(api_client::Error::Refused { status, body }) if status.as_u16() == 422 => {
            let message = body
                .message
                .split_once(": ")
                .map_or(body.message.as_str(), |(_, m)| m);
            match form_field(body.field.as_deref()) {
                "" => problems.form = Some(body.message.clone()),
                field => problems.fields.push((field, capitalised(message))),
            }
        }
        Err(api_client::Error::Refused { status, body }) if status.as_u16() == 409 => {
            problems.form = Some(format!(
                "{} Choose another time or another doctor.",
                capitalised(&body.message)
            ));
        }
        Err(api_client::Error::Refused { status, body }) if status.as_u16() == 503 => {
            problems.form = Some(body.message);
        }
        Err(api_client::Error::Refused { status, body }) if status.as_u16() == 403 => {
            problems.form = Some(capitalised(&body.message));
        }
        Err(e) => return Ok(staff.failed(&state, e)),
    }
    Ok(form_page(
        &state,
        &staff,
        &values,
        &problems,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await)
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => {
            let rest: String = chars.collect();
            let end = if rest.ends_with('.') { "" } else { "." };
            format!("{}{rest}{end}", first.to_uppercase())
        }
        None => String::new(),
    }
}

/// A time as the clinic reads it.
pub(crate) fn when(t: DateTime<Utc>, offset: FixedOffset) -> String {
    t.with_timezone(&offset)
        .format("%a %-d %b %Y, %H:%M")
        .to_string()
}

fn status_words(status: AppointmentStatus) -> &'static str {
    match status {
        AppointmentStatus::Booked => "Booked",
        AppointmentStatus::Cancelled => "Cancelled",
        AppointmentStatus::NeedsReassignment => "Needs another doctor",
    }
}

fn appointment_rows(items: &[Appointment], offset: FixedOffset) -> Markup {
    html! {
        div class="table-scroll" { table {
            thead { tr { th scope="col" { "When" } th scope="col" { "Patient" }
                         th scope="col" { "Doctor" } th scope="col" { "Minutes" }
                         th scope="col" { "Status" } } }
            tbody {
                @for a in items {
                    tr {
                        td data-label="When" { a href=(format!("/appointments/{}", a.id)) { (when(a.starts_at.as_datetime(), offset)) } }
                        td data-label="Patient" { (a.patient_name) }
                        td data-label="Doctor" { "Dr " (a.doctor_name) }
                        td data-label="Minutes" { (a.duration_minutes) }
                        td data-label="Status" class=(format!("status-{}", a.status.as_str())) { (status_words(a.status)) }
                    }
                }
            }
        } }
    }
}

pub async fn list(State(state): State<AppState>, staff: Staff) -> Result<Markup, Response> {
    let from = Utc::now().to_rfc3339();
    let page = staff
        .api(&state)
        .appointments(&[("from", from), ("limit", "200".into())])
        .await
        .map_err(|e| read_failed(&state, &staff, e))?;
    let body = html! {
        @if page.items.is_empty() {
            p { "No upcoming appointments." }
        } @else {
            p { (page.total) " upcoming" @if page.total > 200 { ", the first 200 shown" } "." }
            (appointment_rows(&page.items, state.utc_offset))
        }
        @if may_book(staff.signed.user.role) {
            p { a href="/appointments/new" { "Book an appointment" } }
        }
    };
    Ok(layout(
        "Appointments",
        Some((&staff.signed, &staff.session)),
        body,
    ))
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    booked: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Result<Markup, Response> {
    let id: uuid::Uuid = id
        .parse()
        .map_err(|_| PageError::not_found().into_response())?;
    let a = staff
        .api(&state)
        .appointment(id)
        .await
        .map_err(|e| read_failed(&state, &staff, e))?;
    let at = when(a.starts_at.as_datetime(), state.utc_offset);
    let body = html! {
        @if query.booked.is_some() {
            p class="notice" role="status" {
                "Booked: " (a.patient_name) " with Dr " (a.doctor_name) " on " (at) "."
            }
        }
        dl {
            dt { "Patient" } dd { (a.patient_name) }
            dt { "Doctor" } dd { "Dr " (a.doctor_name) }
            dt { "When" } dd { (at) ", " (a.duration_minutes) " minutes" }
            @if let Some(reason) = &a.reason { dt { "Reason" } dd { (reason) } }
            dt { "Status" } dd class=(format!("status-{}", a.status.as_str())) { (status_words(a.status)) }
        }
        p { a href="/appointments" { "All appointments" } }
    };
    Ok(layout(
        "Appointment",
        Some((&staff.signed, &staff.session)),
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_typed_in_the_clinics_offset_is_booked_in_utc() {
        let form = BookingForm {
            patient_name: " Rudo ".into(),
            doctor_id: "01a23c83-9cf7-70b7-aaa3-fc7abe52862e".into(),
            date: "2027-01-15".into(),
            time: "09:30".into(),
            duration_minutes: "45".into(),
            ..BookingForm::default()
        };
        let harare: FixedOffset = "+02:00".parse().unwrap();
        let booking = to_booking(&form, harare).unwrap();
        assert_eq!(booking.starts_at, "2027-01-15T07:30:00+00:00");
        assert_eq!(
            (booking.patient_name.as_str(), booking.duration_minutes),
            ("Rudo", 45)
        );
        assert_eq!(booking.reason, None);
        let missing = to_booking(&BookingForm::default(), harare).unwrap_err();
        let fields: Vec<_> = missing.fields.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            fields,
            ["patientName", "doctorId", "date", "time", "durationMinutes"]
        );
    }
}
