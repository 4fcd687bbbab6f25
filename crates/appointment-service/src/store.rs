//! `appointment_db`'s appointments: booking (the overlap rule is the table's exclusion
//! constraint, so two concurrent bookings of one slot cannot both commit), the filtered list,
//! cancelling and reassigning.

use chrono::{DateTime, Utc};
use contract::api::{Appointment, AppointmentStatus};
use contract::{Role, UserId};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// An appointment row with its doctor's name from the copy.
#[derive(Debug, sqlx::FromRow)]
pub struct Row {
    pub id: Uuid,
    pub patient_name: String,
    pub doctor_id: Uuid,
    pub doctor_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub duration_minutes: i32,
    pub reason: Option<String>,
    pub status: String,
    pub created_by: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Row {
    /// The API's view; `Err` names a row the table's checks should have kept out.
    pub fn into_api(self) -> Result<Appointment, String> {
        let status = self
            .status
            .parse()
            .map_err(|()| format!("appointment {} has status {:?}", self.id, self.status))?;
        Ok(Appointment {
            id: self.id,
            patient_name: self.patient_name,
            doctor_id: UserId(self.doctor_id),
            doctor_name: self.doctor_name,
            starts_at: self.starts_at.into(),
            ends_at: self.ends_at.into(),
            duration_minutes: i64::from(self.duration_minutes),
            reason: self.reason,
            status,
            created_by: UserId(self.created_by),
            created_at: self.created_at.into(),
            updated_at: self.updated_at.into(),
        })
    }
}

/// An appointment with its doctor's name; an erased doctor is `contract::erasure::
/// FORMER_CLINICIAN` (the clinical record keeps the appointment, not the person's name).
const SELECT: &str = "SELECT a.id, a.patient_name, a.doctor_id, \
        CASE WHEN c.erased_at IS NOT NULL THEN 'former clinician' \
             ELSE coalesce(c.first_name || ' ' || c.last_name, '') END AS doctor_name, \
        a.starts_at, a.ends_at, \
        a.duration_minutes, a.reason, a.status, a.created_by, a.created_at, a.updated_at \
    FROM appointments a LEFT JOIN clinicians c ON c.id = a.doctor_id";

/// Why a doctor cannot be booked, in the words the API answers with.
pub async fn unbookable_doctor(
    conn: &mut PgConnection,
    doctor: Uuid,
) -> Result<Option<&'static str>, sqlx::Error> {
    // FOR SHARE: a deactivation being applied right now waits for this booking to commit and
    // then flags it, or has committed and is seen here; it never misses the booking.
    let row: Option<(String, bool)> =
        sqlx::query_as("SELECT role, is_active FROM clinicians WHERE id = $1 FOR SHARE")
            .bind(doctor)
            .fetch_optional(conn)
            .await?;
    Ok(match row {
        None => Some("is not a doctor this service knows"),
        Some((role, _)) if role != Role::Doctor.as_str() => Some("is not a doctor"),
        Some((_, false)) => Some("is a doctor who is not active"),
        Some((_, true)) => None,
    })
}

/// What a booking writes.
#[derive(Debug)]
pub struct Booking {
    pub patient_name: String,
    pub doctor_id: Uuid,
    pub starts_at: DateTime<Utc>,
    pub duration_minutes: i32,
    pub reason: Option<String>,
    pub created_by: Uuid,
}

/// True when PostgreSQL aborted the transaction to break a deadlock (or a serialization
/// failure): two bookings racing for one slot can each wait for the other's row under the
/// exclusion constraint, and one of them is aborted. Run again, it meets the winner's committed
/// row and is refused as an overlap.
pub fn is_deadlock(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

/// True when PostgreSQL refused a row because the doctor is already booked then.
pub fn is_overlap(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "23P01")
}

pub async fn book(conn: &mut PgConnection, b: &Booking) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO appointments (id, patient_name, doctor_id, starts_at, ends_at, \
             duration_minutes, reason, created_by) \
         VALUES ($1, $2, $3, $4, $4 + make_interval(mins => $5), $5, $6, $7)",
    )
    .bind(id)
    .bind(&b.patient_name)
    .bind(b.doctor_id)
    .bind(b.starts_at)
    .bind(b.duration_minutes)
    .bind(&b.reason)
    .bind(b.created_by)
    .execute(conn)
    .await?;
    Ok(id)
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The doctor, status and start of an appointment, locked for a change.
pub async fn lock(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(Uuid, String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT doctor_id, status, starts_at FROM appointments WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn set_status(
    conn: &mut PgConnection,
    id: Uuid,
    status: AppointmentStatus,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE appointments SET status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(status.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves an appointment to `doctor` and books it again (the overlap rule applies).
pub async fn reassign(conn: &mut PgConnection, id: Uuid, doctor: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE appointments SET doctor_id = $2, status = 'booked', updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(doctor)
    .execute(conn)
    .await?;
    Ok(())
}

/// The list's filters, validated.
#[derive(Debug, Default)]
pub struct Filter {
    pub doctor_id: Option<Uuid>,
    /// Appointments starting at or after.
    pub from: Option<DateTime<Utc>>,
    /// Appointments starting before.
    pub to: Option<DateTime<Utc>>,
    pub status: Option<AppointmentStatus>,
    pub limit: i64,
    pub offset: i64,
}

/// One page in start order, and how many match in all.
pub async fn list(conn: &mut PgConnection, f: &Filter) -> Result<(Vec<Row>, i64), sqlx::Error> {
    const WHERE: &str = "WHERE ($1::uuid IS NULL OR a.doctor_id = $1) \
        AND ($2::timestamptz IS NULL OR a.starts_at >= $2) \
        AND ($3::timestamptz IS NULL OR a.starts_at < $3) \
        AND ($4::text IS NULL OR a.status = $4)";
    let status = f.status.map(AppointmentStatus::as_str);
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM appointments a {WHERE}"))
        .bind(f.doctor_id)
        .bind(f.from)
        .bind(f.to)
        .bind(status)
        .fetch_one(&mut *conn)
        .await?;
    let rows = sqlx::query_as(&format!(
        "{SELECT} {WHERE} ORDER BY a.starts_at, a.id LIMIT $5 OFFSET $6"
    ))
    .bind(f.doctor_id)
    .bind(f.from)
    .bind(f.to)
    .bind(status)
    .bind(f.limit)
    .bind(f.offset)
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_erased_doctor_is_named_as_the_contract_says() {
        assert!(super::SELECT.contains(&format!("'{}'", contract::erasure::FORMER_CLINICIAN)));
    }
}
