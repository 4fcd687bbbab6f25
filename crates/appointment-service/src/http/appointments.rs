//! `/api/v1/appointments`: book, list, show, cancel, reassign. Doctors see and cancel their
//! own; nurses and admins see and manage all; pharmacists and consultants see none (403) unless
//! `APPOINTMENTS_VISIBLE_TO` lists their role, and then read all (see [`super::caller`]). A
//! doctor is bookable when this service's own copy holds them as an active doctor.

use super::caller::{Caller, Permissions, Sight};
use super::AppState;
use crate::store::{self, Booking, Filter};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use contract::api::{Appointment, AppointmentStatus, NewAppointment, Page, ReassignRequest};
use contract::ValidationError;
use platform::http::{ApiError, ApiJson, ApiQuery};
use serde::Deserialize;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", post(create).get(list))
        .route("/{id}", get(show))
        .route("/{id}/cancel", post(cancel))
        .route("/{id}/reassign", post(reassign))
}

fn invalid(field: &'static str, message: &str) -> ApiError {
    ValidationError::new(field, message).into()
}

fn uuid_field(field: &'static str, value: &str) -> Result<Uuid, ApiError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(field, "must be a UUID"))
}

fn time_field(field: &'static str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            invalid(
                field,
                "must be a date and time in RFC 3339, e.g. 2027-01-15T09:30:00Z",
            )
        })
}

/// 422 naming `field` unless `doctor` is an active doctor in this service's copy.
async fn check_doctor(
    conn: &mut sqlx::PgConnection,
    field: &'static str,
    doctor: Uuid,
) -> Result<(), ApiError> {
    match store::unbookable_doctor(conn, doctor).await? {
        Some(why) => Err(invalid(field, why)),
        None => Ok(()),
    }
}

/// A write's result, with PostgreSQL's refusal of an overlapping booking (the exclusion
/// constraint, at the statement or at commit) answered 409.
fn unless_overlap<T>(result: Result<T, sqlx::Error>) -> Result<T, ApiError> {
    result.map_err(|e| {
        if store::is_overlap(&e) {
            ApiError::conflict("the doctor already has an appointment at that time")
        } else if store::is_deadlock(&e) {
            ApiError::unavailable("the booking collided with others at the same moment; try again")
                .retry_after(std::time::Duration::from_secs(1))
        } else {
            e.into()
        }
    })
}

/// How many times a write that PostgreSQL aborted as a deadlock is run again.
const DEADLOCK_TRIES: u32 = 3;

async fn answer(state: &AppState, id: Uuid) -> Result<Appointment, ApiError> {
    let row = store::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no appointment {id}")))?;
    row.into_api().map_err(ApiError::internal)
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewAppointment>,
) -> Result<Response, ApiError> {
    caller.may_write()?;
    let patient_name = body.patient_name.trim().to_owned();
    if patient_name.is_empty() || patient_name.chars().count() > 200 {
        return Err(invalid("patientName", "must be 1 to 200 characters"));
    }
    if patient_name.chars().any(char::is_control) {
        return Err(invalid("patientName", "must not hold control characters"));
    }
    let doctor_id = uuid_field("doctorId", &body.doctor_id)?;
    let starts_at = time_field("startsAt", &body.starts_at)?;
    if starts_at <= Utc::now() {
        return Err(invalid("startsAt", "is in the past"));
    }
    if starts_at > Utc::now() + chrono::Duration::days(5 * 366) {
        return Err(invalid("startsAt", "is more than 5 years ahead"));
    }
    let duration_minutes = i32::try_from(body.duration_minutes)
        .ok()
        .filter(|d| (5..=480).contains(d))
        .ok_or_else(|| invalid("durationMinutes", "must be 5 to 480 minutes"))?;
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(invalid("reason", "must be at most 500 characters"));
    }
    // Line breaks are fine in a reason; NUL and the other control characters are not (and
    // PostgreSQL's text cannot hold NUL at all).
    let control = |c: char| c.is_control() && !matches!(c, '\n' | '\r' | '\t');
    if reason.as_ref().is_some_and(|r| r.chars().any(control)) {
        return Err(invalid("reason", "must not hold control characters"));
    }
    if let Some(me) = caller.own_doctor() {
        if me.0 != doctor_id {
            return Err(ApiError::forbidden(
                "a doctor books appointments with themselves only",
            ));
        }
    }
    if !state.history_complete().await? {
        return Err(ApiError::unavailable(
            "the appointment-service is still loading the directory; try again shortly",
        )
        .retry_after(std::time::Duration::from_secs(5)));
    }
    let booking = Booking {
        patient_name,
        doctor_id,
        starts_at,
        duration_minutes,
        reason,
        created_by: caller.id.0,
    };
    let mut tries = 0;
    let id = loop {
        tries += 1;
        let mut tx = state.db.begin().await?;
        check_doctor(&mut tx, "doctorId", doctor_id).await?;
        let booked = match store::book(&mut tx, &booking).await {
            Ok(id) => tx.commit().await.map(|()| id),
            Err(e) => Err(e),
        };
        match booked {
            // Two bookings of one slot aborted as a deadlock: again, to meet the winner's row.
            Err(e) if store::is_deadlock(&e) && tries < DEADLOCK_TRIES => {
                tracing::info!(
                    tries,
                    "booking aborted as a deadlock with another; trying again"
                );
                continue;
            }
            other => break unless_overlap(other)?,
        }
    };
    let created = answer(&state, id).await?;
    let location = format!("/api/v1/appointments/{id}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

/// The query string as given; [`parse_filter`] validates it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFilter {
    doctor_id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    status: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

fn parse_filter(raw: &RawFilter) -> Result<Filter, ApiError> {
    let number = |field: &'static str,
                  value: &Option<String>,
                  default: i64,
                  range: std::ops::RangeInclusive<i64>| {
        match value {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    invalid(
                        field,
                        &format!(
                            "must be a whole number from {} to {}",
                            range.start(),
                            range.end()
                        ),
                    )
                }),
        }
    };
    let status = raw
        .status
        .as_deref()
        .map(|s| {
            s.parse::<AppointmentStatus>()
                .map_err(|()| invalid("status", "must be booked, cancelled or needs_reassignment"))
        })
        .transpose()?;
    Ok(Filter {
        doctor_id: raw
            .doctor_id
            .as_deref()
            .map(|v| uuid_field("doctorId", v))
            .transpose()?,
        from: raw
            .from
            .as_deref()
            .map(|v| time_field("from", v))
            .transpose()?,
        to: raw.to.as_deref().map(|v| time_field("to", v)).transpose()?,
        status,
        limit: number("limit", &raw.limit, 50, 1..=200)?,
        offset: number("offset", &raw.offset, 0, 0..=1_000_000_000)?,
    })
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(raw): ApiQuery<RawFilter>,
) -> Result<Json<Page<Appointment>>, ApiError> {
    // Who may look at all comes before what they asked for: a role that sees none learns
    // nothing from the filter's checks either.
    let sight = caller.sight(&state.visible_to)?;
    let mut filter = parse_filter(&raw)?;
    if let Sight::Own(me) = sight {
        match filter.doctor_id {
            Some(other) if other != me.0 => {
                return Err(ApiError::forbidden(
                    "a doctor sees their own appointments only",
                ))
            }
            _ => filter.doctor_id = Some(me.0),
        }
    }
    let mut conn = state.db.acquire().await?;
    let (rows, total) = store::list(&mut conn, &filter).await?;
    let items = rows
        .into_iter()
        .map(store::Row::into_api)
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::internal)?;
    Ok(Json(Page { items, total }))
}

/// The appointment `id` as `caller` may see it: a doctor's view of another's is "not found";
/// a role that sees no appointment is refused (403) before anything is looked up.
async fn visible(state: &AppState, caller: &Caller, id: &str) -> Result<Appointment, ApiError> {
    let sight = caller.sight(&state.visible_to)?;
    let id = uuid_field("id", id)?;
    let found = answer(state, id).await?;
    match sight {
        Sight::Own(me) if me != found.doctor_id => {
            Err(ApiError::not_found(format!("no appointment {id}")))
        }
        _ => Ok(found),
    }
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Appointment>, ApiError> {
    Ok(Json(visible(&state, &caller, &id).await?))
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Appointment>, ApiError> {
    caller.may_write()?;
    let id = visible(&state, &caller, &id).await?.id;
    let mut tx = state.db.begin().await?;
    let (doctor, status, _) = store::lock(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no appointment {id}")))?;
    // Checked again under the lock: a reassignment in between may have made it another's.
    if caller.own_doctor().is_some_and(|me| me.0 != doctor) {
        return Err(ApiError::not_found(format!("no appointment {id}")));
    }
    if status == AppointmentStatus::Cancelled.as_str() {
        return Err(ApiError::conflict("the appointment is already cancelled"));
    }
    store::set_status(&mut tx, id, AppointmentStatus::Cancelled).await?;
    tx.commit().await?;
    Ok(Json(answer(&state, id).await?))
}

async fn reassign(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReassignRequest>,
) -> Result<Json<Appointment>, ApiError> {
    if !caller.manages_all() {
        return Err(ApiError::forbidden(
            "only nurses and admins reassign appointments",
        ));
    }
    let id = uuid_field("id", &id)?;
    let doctor = uuid_field("doctorId", &body.doctor_id)?;
    let mut tx = state.db.begin().await?;
    // The doctor first, then the appointment: the order the consumer locks them in (a
    // clinician's row, then their appointments), so the two never wait for each other.
    check_doctor(&mut tx, "doctorId", doctor).await?;
    let (_, status, starts_at) = store::lock(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no appointment {id}")))?;
    if status == AppointmentStatus::Cancelled.as_str() {
        return Err(ApiError::conflict("the appointment is cancelled"));
    }
    if starts_at <= Utc::now() {
        return Err(ApiError::conflict("the appointment has already started"));
    }
    unless_overlap(store::reassign(&mut tx, id, doctor).await)?;
    unless_overlap(tx.commit().await)?;
    Ok(Json(answer(&state, id).await?))
}
