//! The offboarding saga's rows in `auth_db`: starting one (with the deactivation, in one
//! transaction), every transition under optimistic concurrency, the history of steps, the
//! reply, cancellation, views and pruning.

use super::{parse_stored, stored, OffboardingConfig};
use crate::consumers;
use crate::store::{self as users, Outcome, StoreError, UserChange};
use chrono::{DateTime, Utc};
use contract::api::{Offboarding, OffboardingState, OffboardingStep};
use contract::control::{AppointmentPolicy, DoctorResolved, ResolveDoctor};
use contract::{topology, EventType, Timestamp, UserId};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

/// A saga as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Saga {
    pub id: Uuid,
    pub user_id: Uuid,
    pub state: String,
    pub stalled_reason: Option<String>,
    pub policy: String,
    pub reason: String,
    pub requested_by: Uuid,
    pub target_version: i64,
    pub attempts: i32,
    pub command_id: Option<Uuid>,
    pub outcome: Option<Json<DoctorResolved>>,
    pub version: i32,
    pub due_at: Option<DateTime<Utc>>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Its wait has timed out, by the database's clock (the one `due_at` is compared with): set
    /// only by [`claim_due`].
    #[sqlx(default)]
    pub timed_out: bool,
}

const COLUMNS: &str = "id, user_id, state, stalled_reason, policy, reason, requested_by, \
    target_version, attempts, command_id, outcome, version, due_at, deadline_at, created_at, \
    updated_at, finished_at";

impl Saga {
    pub fn state(&self) -> Result<OffboardingState, StoreError> {
        parse_stored(&self.state).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "offboarding {} has state {:?}",
                self.id, self.state
            ))
        })
    }

    pub fn policy(&self) -> Result<AppointmentPolicy, StoreError> {
        self.policy.parse().map_err(StoreError::Corrupt)
    }
}

/// Why an offboarding cannot be started or cancelled.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the offboarding has {0}: it can no longer be cancelled")]
    TooLate(&'static str),
    #[error("no such offboarding")]
    NotFound,
    #[error("the offboarding changed while this was decided; try again")]
    Conflict,
    #[error("an admin cannot offboard themselves")]
    Self_,
}

impl From<sqlx::Error> for SagaError {
    fn from(e: sqlx::Error) -> Self {
        SagaError::Store(StoreError::Db(e))
    }
}

/// What [`start`] did.
#[derive(Debug)]
pub enum Started {
    /// A new saga, the person deactivated in the same transaction.
    New(Saga),
    /// One was running already, or had offboarded the person (still inactive): that one.
    Running(Saga),
}

/// Appends a step to the saga's history.
pub async fn step(
    conn: &mut PgConnection,
    saga: Uuid,
    name: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO offboarding_steps (offboarding_id, step, detail) VALUES ($1, $2, $3)")
        .bind(saga)
        .bind(name)
        .bind(detail)
        .execute(conn)
        .await?;
    Ok(())
}

async fn running_of(conn: &mut PgConnection, user: Uuid) -> Result<Option<Saga>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM offboardings WHERE user_id = $1 \
         AND state IN ('awaiting_receipts', 'resolving_appointments')"
    ))
    .bind(user)
    .fetch_optional(conn)
    .await
}

/// Starts the offboarding of `user` by `admin`: deactivates them (the versioned change and its
/// event) and writes the saga, in one transaction. A saga already running for them is answered
/// instead; two requests at once queue on the user's row lock, and the second finds the first's.
pub async fn start(
    db: &PgPool,
    admin: Uuid,
    user: Uuid,
    reason: &str,
    policy: AppointmentPolicy,
    config: &OffboardingConfig,
) -> Result<Started, SagaError> {
    if admin == user {
        return Err(SagaError::Self_);
    }
    let mut tx = db.begin().await?;
    if let Some(running) = running_of(&mut tx, user).await? {
        tx.rollback().await?;
        return Ok(Started::Running(running));
    }
    // Offboarded already and still inactive (a request sent again after its answer was lost):
    // that offboarding is the answer, not a second one.
    let done: Option<Saga> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM offboardings o WHERE user_id = $1 \
           AND state IN ('completed', 'needs_attention') \
           AND NOT (SELECT is_active FROM users WHERE id = o.user_id) \
         ORDER BY created_at DESC LIMIT 1"
    ))
    .bind(user)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(done) = done {
        tx.rollback().await?;
        return Ok(Started::Running(done));
    }
    // Locks the user: a concurrent request that passed the checks above waits here, and its
    // insert then meets this saga in the unique index below and answers it.
    let outcome = users::change_user_by_admin(&mut tx, admin, user, UserChange::Deactivate).await?;
    // A new deactivation's receipts wake the saga; one already inactive may have all its
    // receipts already (none will come), so it is looked at now.
    let (version, detail, look_now) = match &outcome {
        Outcome::Changed(u) => (
            u.version(),
            format!("deactivated as version {}", u.version()),
            false,
        ),
        Outcome::Unchanged(u) => (
            u.version(),
            format!("already inactive at version {}", u.version()),
            true,
        ),
    };
    let id = Uuid::now_v7();
    let deadline = Utc::now() + chrono::Duration::from_std(config.timeout).unwrap_or_default();
    let saga: Option<Saga> = sqlx::query_as(&format!(
        "INSERT INTO offboardings (id, user_id, state, policy, reason, requested_by, \
             target_version, due_at, deadline_at) \
         VALUES ($1, $2, 'awaiting_receipts', $3, $4, $5, $6, \
             CASE WHEN $8 THEN now() ELSE $7 END, $7) \
         ON CONFLICT (user_id) WHERE state IN ('awaiting_receipts', 'resolving_appointments') \
         DO NOTHING RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(user)
    .bind(policy.as_str())
    .bind(reason)
    .bind(admin)
    .bind(version)
    .bind(deadline)
    .bind(look_now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(saga) = saga else {
        // Another request's saga committed between the check and the insert.
        tx.rollback().await?;
        let mut conn = db.acquire().await?;
        return running_of(&mut conn, user)
            .await?
            .map(Started::Running)
            .ok_or(SagaError::Conflict);
    };
    step(
        &mut tx,
        id,
        "started",
        &format!(
            "by {admin}: {reason}; future appointments: {}",
            policy.as_str()
        ),
    )
    .await?;
    step(&mut tx, id, "deactivated", &detail).await?;
    tx.commit().await?;
    tracing::info!(offboarding = %id, user_id = %user, version, by = %admin, "offboarding started");
    Ok(Started::New(saga))
}

/// Sends the user's current state again to `consumer`'s queue alone, as a `user.snapshot`
/// (applied at an equal version, so it also makes good a receipt that was lost).
pub async fn resend_snapshot(
    conn: &mut PgConnection,
    user: Uuid,
    consumer: &str,
) -> Result<(), SagaError> {
    let row = users::find_by_id(&mut *conn, user)
        .await?
        .ok_or(SagaError::Store(StoreError::NotFound))?;
    let mut envelope = contract::Envelope::new(EventType::Snapshot, row.snapshot()?);
    // When that version was written, not now: the receipt's delay measures from the change.
    if let Some(changed) = row.updated_at {
        envelope.timestamp = changed.into();
    }
    let body = serde_json::to_value(&envelope).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    crate::relay::MESSAGES
        .enqueue(
            conn,
            &outbox::Message {
                id: envelope.event_id,
                exchange: topology::EXCHANGE,
                routing_key: &topology::resend_key(consumer),
                kind: EventType::Snapshot.as_str(),
                body: &body,
            },
        )
        .await?;
    Ok(())
}

/// Sends the command that resolves the person's future appointments (again, with the same id).
pub async fn send_command(
    conn: &mut PgConnection,
    saga: &Saga,
    command_id: Uuid,
) -> Result<(), SagaError> {
    let command = ResolveDoctor {
        offboarding_id: saga.id,
        doctor_id: UserId(saga.user_id),
        policy: saga.policy()?,
        from: saga.created_at.into(),
        reason: saga.reason.clone(),
    };
    let body = serde_json::to_value(&command).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    crate::relay::MESSAGES
        .enqueue(
            conn,
            &outbox::Message {
                id: command_id,
                exchange: topology::CONTROL_EXCHANGE,
                routing_key: topology::RESOLVE_DOCTOR_KEY,
                kind: contract::control::RESOLVE_DOCTOR_TYPE,
                body: &body,
            },
        )
        .await?;
    Ok(())
}

/// The saga's new values: written only if its version is still `saga.version`.
#[derive(Debug, Default)]
pub struct Transition {
    pub state: Option<OffboardingState>,
    /// `Some(None)` clears it.
    pub stalled_reason: Option<Option<String>>,
    pub attempts: Option<i32>,
    pub command_id: Option<Uuid>,
    pub outcome: Option<DoctorResolved>,
    pub due_at: Option<Option<DateTime<Utc>>>,
    pub deadline_at: Option<Option<DateTime<Utc>>>,
}

/// Writes `change` if nobody changed the saga since it was read as `saga` (false otherwise: the
/// caller reads it again and decides again).
pub async fn transition(
    conn: &mut PgConnection,
    saga: &Saga,
    change: Transition,
) -> Result<bool, sqlx::Error> {
    let state = change.state.map(stored);
    let finished = change.state.is_some_and(OffboardingState::is_terminal);
    let done = sqlx::query(
        "UPDATE offboardings SET version = version + 1, updated_at = now(), \
             state = coalesce($3, state), \
             stalled_reason = CASE WHEN $4 THEN $5 ELSE stalled_reason END, \
             attempts = coalesce($6, attempts), command_id = coalesce($7, command_id), \
             outcome = coalesce($8, outcome), \
             due_at = CASE WHEN $9 THEN $10 ELSE due_at END, \
             deadline_at = CASE WHEN $11 THEN $12 ELSE deadline_at END, \
             finished_at = CASE WHEN $13 THEN now() ELSE finished_at END \
         WHERE id = $1 AND version = $2",
    )
    .bind(saga.id)
    .bind(saga.version)
    .bind(state)
    .bind(change.stalled_reason.is_some())
    .bind(change.stalled_reason.flatten())
    .bind(change.attempts)
    .bind(change.command_id)
    .bind(change.outcome.map(Json))
    .bind(change.due_at.is_some())
    .bind(change.due_at.flatten())
    .bind(change.deadline_at.is_some())
    .bind(change.deadline_at.flatten())
    .bind(finished)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records the appointment-service's reply once per message id: the saga completes, or needs
/// attention when some appointments no doctor could take were cancelled. A reply for a saga
/// not waiting for it (a copy, a late one) changes nothing.
pub async fn record_reply(
    db: &PgPool,
    message_id: Uuid,
    reply: DoctorResolved,
) -> Result<Option<OffboardingState>, SagaError> {
    for _ in 0..5 {
        let mut tx = db.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO processed_messages (message_id) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(message_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if fresh == 0 {
            return Ok(None);
        }
        let saga = find_in(&mut tx, reply.offboarding_id).await?;
        let Some(saga) = saga else {
            tx.commit().await?;
            return Ok(None);
        };
        if saga.state()? != OffboardingState::ResolvingAppointments
            || saga.command_id != Some(reply.command_id)
        {
            tx.commit().await?;
            return Ok(None);
        }
        let unplaced = reply.unplaced().count();
        let total = reply.appointments.len();
        let reassigned = reply
            .appointments
            .iter()
            .filter(|a| a.resolution == contract::control::Resolution::Reassigned)
            .count();
        let state = if unplaced > 0 {
            OffboardingState::NeedsAttention
        } else {
            OffboardingState::Completed
        };
        let written = transition(
            &mut tx,
            &saga,
            Transition {
                state: Some(state),
                stalled_reason: Some(None),
                outcome: Some(reply.clone()),
                due_at: Some(None),
                deadline_at: Some(None),
                ..Transition::default()
            },
        )
        .await?;
        if !written {
            tx.rollback().await?;
            continue;
        }
        step(
            &mut tx,
            saga.id,
            "resolved",
            &format!(
                "{total} future appointments: {reassigned} reassigned, {} cancelled{}",
                total - reassigned,
                if unplaced > 0 {
                    format!(" ({unplaced} because no doctor was free)")
                } else {
                    String::new()
                }
            ),
        )
        .await?;
        step(
            &mut tx,
            saga.id,
            state.as_str(),
            &match state {
                OffboardingState::NeedsAttention => format!(
                    "{unplaced} patients lost their appointment: no active doctor was free; they need a new booking"
                ),
                _ => "every required consumer confirmed and every future appointment is resolved"
                    .to_owned(),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(offboarding = %saga.id, state = state.as_str(), total, unplaced, "offboarding finished");
        return Ok(Some(state));
    }
    Err(SagaError::Conflict)
}

/// Cancels the saga `id` and reactivates the person (a new version and its event; the
/// appointment-service then clears the flags), possible only until the command that changes
/// appointments is sent.
pub async fn cancel(db: &PgPool, admin: Uuid, id: Uuid) -> Result<Saga, SagaError> {
    for _ in 0..5 {
        let mut tx = db.begin().await?;
        let saga = find_in(&mut tx, id).await?.ok_or(SagaError::NotFound)?;
        match saga.state()? {
            OffboardingState::AwaitingReceipts => {}
            OffboardingState::ResolvingAppointments => {
                return Err(SagaError::TooLate(
                    "sent the appointment-service its command (appointments may be changing)",
                ))
            }
            state => {
                return Err(SagaError::TooLate(match state {
                    OffboardingState::Cancelled => "been cancelled already",
                    _ => "finished",
                }))
            }
        }
        let written = transition(
            &mut tx,
            &saga,
            Transition {
                state: Some(OffboardingState::Cancelled),
                stalled_reason: Some(None),
                due_at: Some(None),
                deadline_at: Some(None),
                ..Transition::default()
            },
        )
        .await?;
        if !written {
            tx.rollback().await?;
            continue;
        }
        let outcome =
            users::change_user_by_admin(&mut tx, admin, saga.user_id, UserChange::Activate).await?;
        step(
            &mut tx,
            id,
            "cancelled",
            &format!(
                "by {admin}: reactivated as version {}",
                outcome.user().version()
            ),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(offboarding = %id, by = %admin, "offboarding cancelled, user reactivated");
        return find(db, id).await?.ok_or(SagaError::NotFound);
    }
    Err(SagaError::Conflict)
}

async fn find_in(conn: &mut PgConnection, id: Uuid) -> Result<Option<Saga>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM offboardings WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn find(db: &PgPool, id: Uuid) -> Result<Option<Saga>, sqlx::Error> {
    let mut conn = db.acquire().await?;
    find_in(&mut conn, id).await
}

/// The latest saga of `user`.
pub async fn latest_of(db: &PgPool, user: Uuid) -> Result<Option<Saga>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM offboardings WHERE user_id = $1 ORDER BY created_at DESC LIMIT 1"
    ))
    .bind(user)
    .fetch_optional(db)
    .await
}

/// True when some saga is due now (held by a runner or not).
pub async fn any_due(db: &PgPool) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM offboardings WHERE due_at <= now())")
        .fetch_one(db)
        .await
}

/// Claims the saga due first that no other runner holds, in `tx` (locked until it commits).
pub async fn claim_due(tx: &mut Transaction<'_, Postgres>) -> Result<Option<Saga>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS}, (deadline_at IS NULL OR deadline_at <= now()) AS timed_out \
         FROM offboardings WHERE due_at <= now() ORDER BY due_at LIMIT 1 \
         FOR UPDATE SKIP LOCKED"
    ))
    .fetch_optional(&mut **tx)
    .await
}

/// Which sagas a list shows.
#[derive(Debug, Clone, Copy, Default)]
pub enum Listing {
    /// Running ones (stalled included) and the most recent others.
    #[default]
    Recent,
    Running,
    Stalled,
}

/// A saga as the API shows it; `steps` and `receipts` only when `detailed`.
pub async fn view(db: &PgPool, saga: Saga, detailed: bool) -> Result<Offboarding, SagaError> {
    let who: Option<(String, String, String)> =
        sqlx::query_as("SELECT email, first_name, last_name FROM users WHERE id = $1")
            .bind(saga.user_id)
            .fetch_optional(db)
            .await?;
    let (email, first, last) = who.unwrap_or_default();
    let (steps, receipts) = if detailed {
        let steps: Vec<(DateTime<Utc>, String, String)> = sqlx::query_as(
            "SELECT at, step, detail FROM offboarding_steps WHERE offboarding_id = $1 ORDER BY id",
        )
        .bind(saga.id)
        .fetch_all(db)
        .await?;
        let steps = steps
            .into_iter()
            .map(|(at, step, detail)| OffboardingStep {
                at: at.into(),
                step,
                detail,
            })
            .collect();
        (
            steps,
            consumers::receipts_of(db, saga.user_id, saga.target_version).await?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(Offboarding {
        id: saga.id,
        user_id: UserId(saga.user_id),
        email,
        name: format!("{first} {last}").trim().to_owned(),
        state: saga.state()?,
        stalled_reason: saga.stalled_reason.clone(),
        policy: saga.policy()?,
        reason: saga.reason.clone(),
        requested_by: UserId(saga.requested_by),
        target_version: saga.target_version,
        created_at: saga.created_at.into(),
        updated_at: saga.updated_at.into(),
        finished_at: saga.finished_at.map(Timestamp::from),
        steps,
        receipts,
        appointments: saga
            .outcome
            .map(|Json(o)| o.appointments)
            .unwrap_or_default(),
    })
}

/// Sagas for the list, newest first, at most `limit`.
pub async fn list(db: &PgPool, which: Listing, limit: i64) -> Result<Vec<Saga>, sqlx::Error> {
    let filter = match which {
        Listing::Recent => "TRUE",
        Listing::Running => "state IN ('awaiting_receipts', 'resolving_appointments')",
        Listing::Stalled => "stalled_reason IS NOT NULL",
    };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM offboardings WHERE {filter} ORDER BY created_at DESC LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Running sagas by state, and how many of them are stalled (for the metrics).
pub async fn counts(db: &PgPool) -> Result<(Vec<(String, i64)>, i64), sqlx::Error> {
    let by_state = sqlx::query_as(
        "SELECT state, count(*) FROM offboardings \
         WHERE state IN ('awaiting_receipts', 'resolving_appointments') GROUP BY state",
    )
    .fetch_all(db)
    .await?;
    let stalled =
        sqlx::query_scalar("SELECT count(*) FROM offboardings WHERE stalled_reason IS NOT NULL")
            .fetch_one(db)
            .await?;
    Ok((by_state, stalled))
}

/// Deletes sagas finished before the retention (their steps with them) and reply ids older
/// than that; returns how many sagas went.
pub async fn prune(db: &PgPool, retention: std::time::Duration) -> Result<u64, sqlx::Error> {
    let cutoff = Utc::now() - chrono::Duration::from_std(retention).unwrap_or_default();
    let sagas = sqlx::query("DELETE FROM offboardings WHERE finished_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM processed_messages WHERE processed_at < $1")
        .bind(cutoff)
        .execute(db)
        .await?;
    Ok(sagas)
}
