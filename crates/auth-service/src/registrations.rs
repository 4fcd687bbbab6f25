//! Requests for an account (`POST /api/v1/auth/register`, when REGISTRATION_ENABLED). A request
//! is not an account: it has no password and no role, writes no event and reaches no copy. An
//! admin approves it — choosing the role — which creates the account with a temporary password
//! the admin hands over (so whoever typed the request cannot sign in with anything they chose),
//! or declines it. One request per email (the first stays: a later one changes nothing, so the
//! answer cannot tell whether one was there); requests are kept [`KEPT`], and at most
//! [`MAX_PENDING`] wait at once, so a flood cannot fill the database.

use chrono::{DateTime, Utc};
use contract::api::{RegisterRequest, Registration};
use contract::{Email, PersonName, PhoneNumber, Role};
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;
use uuid::Uuid;

/// How long a request waits for an admin before it is removed.
pub const KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most requests that wait at once; later ones are dropped (and logged).
pub const MAX_PENDING: i64 = 1_000;

/// A request's validated fields.
pub struct NewRequest {
    pub email: Email,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub phone_number: Option<PhoneNumber>,
    pub requested_role: Option<Role>,
}

impl NewRequest {
    pub fn parse(req: &RegisterRequest) -> Result<Self, contract::ValidationError> {
        Ok(Self {
            email: Email::parse(&req.email)?,
            first_name: PersonName::parse("firstName", &req.first_name)?,
            last_name: PersonName::parse("lastName", &req.last_name)?,
            phone_number: req
                .phone_number
                .as_deref()
                .filter(|p| !p.trim().is_empty())
                .map(PhoneNumber::parse)
                .transpose()?,
            requested_role: req
                .requested_role
                .as_deref()
                .filter(|r| !r.trim().is_empty())
                .map(|r| {
                    r.parse::<Role>().map_err(|_| {
                        contract::ValidationError::new(
                            "requestedRole",
                            "must be one of doctor, nurse, pharmacist, consultant",
                        )
                    })
                })
                .transpose()?,
        })
    }
}

/// What storing a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A new request, waiting for an admin.
    Received(Uuid),
    /// The email has an account or a request already: nothing changed.
    AlreadyKnown,
    /// [`MAX_PENDING`] requests wait already: dropped.
    Full,
}

/// Stores a request unless its email has an account or a request, or too many wait.
pub async fn store(db: &PgPool, new: &NewRequest) -> sqlx::Result<Stored> {
    let id = Uuid::new_v4();
    // One statement: the count, the account check and the insert see one snapshot, and the
    // unique email settles two requests at once.
    let (inserted, pending): (Option<Uuid>, i64) = sqlx::query_as(
        "WITH pending AS (SELECT count(*) AS n FROM registration_requests), \
              ins AS ( \
                INSERT INTO registration_requests \
                  (id, email, first_name, last_name, phone_number, requested_role) \
                SELECT $1, $2, $3, $4, $5, $6 \
                WHERE (SELECT n FROM pending) < $7 \
                  AND NOT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($2)) \
                ON CONFLICT (email) DO NOTHING \
                RETURNING id) \
         SELECT (SELECT id FROM ins), (SELECT n FROM pending)",
    )
    .bind(id)
    .bind(new.email.as_str())
    .bind(new.first_name.as_str())
    .bind(new.last_name.as_str())
    .bind(new.phone_number.as_ref().map(PhoneNumber::as_str))
    .bind(new.requested_role.map(|r| r.as_str()))
    .bind(MAX_PENDING)
    .fetch_one(db)
    .await?;
    Ok(match inserted {
        Some(id) => Stored::Received(id),
        None if pending >= MAX_PENDING => Stored::Full,
        None => Stored::AlreadyKnown,
    })
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    email: String,
    first_name: String,
    last_name: String,
    phone_number: Option<String>,
    requested_role: Option<String>,
    requested_at: DateTime<Utc>,
}

impl From<Row> for Registration {
    fn from(r: Row) -> Self {
        Registration {
            id: r.id,
            email: r.email,
            first_name: r.first_name,
            last_name: r.last_name,
            phone_number: r.phone_number,
            requested_role: r.requested_role,
            requested_at: r
                .requested_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

const COLUMNS: &str =
    "id, email, first_name, last_name, phone_number, requested_role, requested_at";

/// The pending requests, oldest first.
pub async fn list(db: &PgPool) -> sqlx::Result<Vec<Registration>> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM registration_requests ORDER BY requested_at, id"
    ))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Registration::from).collect())
}

/// Takes the request `id` out of the table within `tx` (the approval's transaction, so a
/// failed approval leaves it waiting).
pub async fn take(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
) -> sqlx::Result<Option<Registration>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "DELETE FROM registration_requests WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(Registration::from))
}

/// Declines (removes) the request `id`; false when there was none.
pub async fn decline(db: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM registration_requests WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes requests older than [`KEPT`].
pub async fn prune(db: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM registration_requests WHERE requested_at < now() - make_interval(secs => $1)",
    )
    .bind(KEPT.as_secs_f64())
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
