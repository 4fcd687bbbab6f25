//! The offboarding saga's step in the appointment-service: the command `resolve-doctor`
//! (`contract::control::ResolveDoctor`) on `appointment-service.control` moves or cancels each
//! future appointment of a doctor who left, each in a transaction of its own with its
//! appointment event (`appointment.reassigned` / `appointment.cancelled`, naming the patient)
//! written to this service's outbox, then replies with what became of every one.
//!
//! Idempotent by the command's message id: what each appointment's transaction did is recorded
//! under it (`command_results`), so a command redelivered after a crash skips what is done (an
//! appointment no longer the doctor's, or cancelled, is not touched again: never reassigned
//! twice, never announced twice), and a copy of an answered command gets the same reply with the
//! same message id (`processed_commands`). Only the auth-service's broker user (a trusted
//! publisher, as for user events) may command.

use crate::store;
use chrono::{DateTime, Utc};
use contract::control::{
    AppointmentChange, AppointmentEvent, AppointmentEventType, AppointmentPolicy, DoctorResolved,
    Resolution, ResolveDoctor, ResolvedAppointment, APPOINTMENT_EVENT_VERSION, APPOINTMENT_SOURCE,
    DOCTOR_RESOLVED_TYPE, RESOLVE_DOCTOR_TYPE,
};
use contract::topology::{self, ConsumerQueues, ControlQueue};
use contract::wire::TrustedPublishers;
use contract::{Timestamp, UserId};
use lapin::message::Delivery;
use outbox::Table;
use platform::amqp;
use platform::control::{self, Disposition};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// `appointment_db.outbox`: appointment events and replies to the saga.
pub fn outbox_table() -> Table {
    let queues = ConsumerQueues::for_consumer(topology::APPOINTMENT_SERVICE);
    Table::messages(
        "appointment_db.outbox",
        "outbox",
        "relay_wakeup",
        "appointment_outbox",
        APPOINTMENT_SOURCE,
        topology::declarations(std::slice::from_ref(&queues)),
        &ControlQueue::of(topology::APPOINTMENT_SERVICE).main,
    )
    .with_connection_name("appointment-service outbox")
}

/// [`outbox_table`], built once: where appointment events and replies are written.
static OUTBOX: std::sync::LazyLock<Table> = std::sync::LazyLock::new(outbox_table);

/// Reads the command queue (see the module).
pub struct Resolver {
    db: PgPool,
    amqp_url: String,
    declare_topology: bool,
    trusted: TrustedPublishers,
}

impl Resolver {
    /// `trusted`: who may command (the consumer's trusted publishers: the system's own, this
    /// service's broker user, `TRUSTED_PUBLISHERS`).
    pub fn new(
        db: PgPool,
        amqp_url: String,
        declare_topology: bool,
        trusted: TrustedPublishers,
    ) -> Self {
        Self {
            db,
            amqp_url,
            declare_topology,
            trusted,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let declarations = match self.declare_topology {
            true => topology::declarations(&[ConsumerQueues::for_consumer(
                topology::APPOINTMENT_SERVICE,
            )]),
            false => Vec::new(),
        };
        let queue = control::Queue {
            amqp_url: self.amqp_url.clone(),
            connection_name: "appointment-service commands",
            queue: ControlQueue::of(topology::APPOINTMENT_SERVICE).main,
            declarations,
            prefetch: 1,
            // One command at a time: two leaving doctors' appointments would compete for the
            // same free doctors.
            concurrency: 1,
        };
        control::run(queue, self, shutdown).await
    }
}

impl control::Handler for Resolver {
    async fn handle(&self, delivery: &Delivery) -> Result<Disposition, sqlx::Error> {
        let publisher = amqp::publisher_of(&delivery.properties);
        if let Err(why) = self.trusted.check(publisher.as_deref(), None) {
            return Ok(Disposition::Reject("untrusted-publisher", why.to_string()));
        }
        let kind = control::kind_of(delivery);
        if kind != RESOLVE_DOCTOR_TYPE {
            return Ok(Disposition::Reject(
                "unknown-type",
                format!("message type {kind:?} is not a command this service knows"),
            ));
        }
        let Some(command_id) = control::message_id_of(delivery) else {
            return Ok(Disposition::Reject(
                "invalid",
                "command without a UUID message-id".into(),
            ));
        };
        let command: ResolveDoctor = match serde_json::from_slice(&delivery.data) {
            Ok(c) => c,
            Err(e) => return Ok(Disposition::Reject("invalid", format!("command: {e}"))),
        };
        resolve(&self.db, command_id, &command).await?;
        Ok(Disposition::Ack)
    }
}

/// Resolves every future appointment of the command's doctor and writes the reply to the
/// outbox; a command already answered gets its reply again.
pub async fn resolve(
    db: &PgPool,
    command_id: Uuid,
    command: &ResolveDoctor,
) -> Result<DoctorResolved, sqlx::Error> {
    if let Some(answered) = answered(db, command_id).await? {
        return Ok(answered);
    }
    let started = std::time::Instant::now();
    let pending: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM appointments WHERE doctor_id = $1 AND starts_at >= $2 \
         AND status IN ('booked', 'needs_reassignment') ORDER BY starts_at, id",
    )
    .bind(command.doctor_id.0)
    .bind(command.from.as_datetime())
    .fetch_all(db)
    .await?;
    for id in pending {
        resolve_one(db, command_id, command, id).await?;
    }
    let appointments = results_of(db, command_id).await?;
    let reply = DoctorResolved {
        offboarding_id: command.offboarding_id,
        command_id,
        doctor_id: command.doctor_id,
        appointments,
    };
    let mut tx = db.begin().await?;
    let reply_id = Uuid::now_v7();
    let fresh = sqlx::query(
        "INSERT INTO processed_commands (message_id, reply_message_id, reply) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(command_id)
    .bind(reply_id)
    .bind(Json(&reply))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if fresh == 0 {
        // Another replica answered it meanwhile: that answer stands.
        tx.rollback().await?;
        return Ok(answered(db, command_id).await?.unwrap_or(reply));
    }
    send_reply(&mut tx, reply_id, &reply).await?;
    tx.commit().await?;
    tracing::info!(
        offboarding = %command.offboarding_id, doctor = %command.doctor_id.0,
        appointments = reply.appointments.len(), unplaced = reply.unplaced().count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "a leaving doctor's appointments resolved"
    );
    Ok(reply)
}

/// The reply already given to `command_id`, sent again (same message id).
async fn answered(db: &PgPool, command_id: Uuid) -> Result<Option<DoctorResolved>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let done: Option<(Uuid, Json<DoctorResolved>)> = sqlx::query_as(
        "SELECT reply_message_id, reply FROM processed_commands WHERE message_id = $1",
    )
    .bind(command_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((reply_id, Json(reply))) = done else {
        return Ok(None);
    };
    send_reply(&mut tx, reply_id, &reply).await?;
    tx.commit().await?;
    Ok(Some(reply))
}

async fn send_reply(
    conn: &mut PgConnection,
    reply_id: Uuid,
    reply: &DoctorResolved,
) -> Result<(), sqlx::Error> {
    OUTBOX
        .enqueue(
            conn,
            &outbox::Message {
                id: reply_id,
                exchange: topology::CONTROL_EXCHANGE,
                routing_key: topology::DOCTOR_RESOLVED_KEY,
                kind: DOCTOR_RESOLVED_TYPE,
                body: &serde_json::to_value(reply).unwrap_or_default(),
            },
        )
        .await
}

#[derive(sqlx::FromRow)]
struct Locked {
    doctor_id: Uuid,
    status: String,
    patient_name: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    version: i64,
}

/// One appointment, in its own transaction: reassigned to a free active doctor (policy
/// `reassign`) or cancelled, with its event and its result. Skipped when it is no longer the
/// leaving doctor's open appointment (done before a crash, or changed by staff meanwhile).
async fn resolve_one(
    db: &PgPool,
    command_id: Uuid,
    command: &ResolveDoctor,
    id: Uuid,
) -> Result<(), sqlx::Error> {
    // A booking racing for the chosen doctor's slot makes the move fail the overlap rule: the
    // next free doctor is chosen in a new transaction.
    let mut tries = 0;
    loop {
        match resolve_in(db, command_id, command, id, command.policy).await {
            Err(e) if (store::is_overlap(&e) || store::is_deadlock(&e)) && tries < 5 => tries += 1,
            other => return other,
        }
    }
}

async fn resolve_in(
    db: &PgPool,
    command_id: Uuid,
    command: &ResolveDoctor,
    id: Uuid,
    policy: AppointmentPolicy,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    let row: Option<Locked> = sqlx::query_as(
        "SELECT doctor_id, status, patient_name, starts_at, ends_at, version \
         FROM appointments WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    if row.doctor_id != command.doctor_id.0
        || !matches!(row.status.as_str(), "booked" | "needs_reassignment")
    {
        return Ok(());
    }
    let free = match policy {
        AppointmentPolicy::Reassign => {
            free_doctor(&mut tx, command.doctor_id.0, row.starts_at, row.ends_at).await?
        }
        AppointmentPolicy::Cancel => None,
    };
    let version = row.version + 1;
    let (resolution, doctor, status, reason) = match &free {
        Some((doctor, _)) => (
            Resolution::Reassigned,
            *doctor,
            "booked",
            format!("the doctor left ({})", command.reason),
        ),
        None if policy == AppointmentPolicy::Reassign => (
            Resolution::CancelledNoDoctorFree,
            row.doctor_id,
            "cancelled",
            format!(
                "the doctor left ({}) and no other doctor is free at that time",
                command.reason
            ),
        ),
        None => (
            Resolution::Cancelled,
            row.doctor_id,
            "cancelled",
            format!("the doctor left ({})", command.reason),
        ),
    };
    sqlx::query(
        "UPDATE appointments SET doctor_id = $2, status = $3, version = $4, updated_at = now() \
         WHERE id = $1",
    )
    .bind(id)
    .bind(doctor)
    .bind(status)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    let doctor_name = free.as_ref().map(|(_, name)| name.clone());
    let event = AppointmentEvent {
        event_id: Uuid::now_v7(),
        event_type: match resolution {
            Resolution::Reassigned => AppointmentEventType::Reassigned,
            _ => AppointmentEventType::Cancelled,
        },
        timestamp: Timestamp::now(),
        source: APPOINTMENT_SOURCE.to_owned(),
        version: APPOINTMENT_EVENT_VERSION.to_owned(),
        payload: AppointmentChange {
            appointment_id: id,
            appointment_version: version,
            patient_name: row.patient_name.clone(),
            starts_at: row.starts_at.into(),
            ends_at: row.ends_at.into(),
            doctor_id: UserId(doctor),
            doctor_name: doctor_name.clone(),
            previous_doctor_id: UserId(row.doctor_id),
            status: status.to_owned(),
            reason,
            offboarding_id: Some(command.offboarding_id),
        },
    };
    OUTBOX
        .enqueue(
            &mut tx,
            &outbox::Message {
                id: event.event_id,
                exchange: topology::APPOINTMENT_EXCHANGE,
                routing_key: event.event_type.as_str(),
                kind: event.event_type.as_str(),
                body: &serde_json::to_value(&event).unwrap_or_default(),
            },
        )
        .await?;
    let resolution_name = serde_json::to_value(resolution)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    sqlx::query(
        "INSERT INTO command_results (command_id, appointment_id, resolution, patient_name, \
             starts_at, doctor_id, doctor_name) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT DO NOTHING",
    )
    .bind(command_id)
    .bind(id)
    .bind(resolution_name)
    .bind(&row.patient_name)
    .bind(row.starts_at)
    .bind(free.as_ref().map(|(d, _)| *d))
    .bind(doctor_name)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// An active doctor other than `leaving` with no booked appointment overlapping the slot: the
/// one with the fewest appointments that day, then by name. Locked `FOR SHARE`, like a booking,
/// so a deactivation applied meanwhile waits for this move and then flags it.
async fn free_doctor(
    conn: &mut PgConnection,
    leaving: Uuid,
    starts: DateTime<Utc>,
    ends: DateTime<Utc>,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.first_name || ' ' || c.last_name FROM clinicians c \
         WHERE c.role = 'doctor' AND c.is_active AND c.id <> $1 \
           AND NOT EXISTS (SELECT 1 FROM appointments b WHERE b.doctor_id = c.id \
               AND b.status = 'booked' AND tstzrange(b.starts_at, b.ends_at) && tstzrange($2, $3)) \
         ORDER BY (SELECT count(*) FROM appointments d WHERE d.doctor_id = c.id \
               AND d.status = 'booked' AND d.starts_at >= date_trunc('day', $2) \
               AND d.starts_at < date_trunc('day', $2) + interval '1 day'), \
             c.last_name, c.first_name, c.id \
         LIMIT 1 FOR SHARE OF c",
    )
    .bind(leaving)
    .bind(starts)
    .bind(ends)
    .fetch_optional(conn)
    .await
}

#[derive(sqlx::FromRow)]
struct ResultRow {
    appointment_id: Uuid,
    resolution: String,
    patient_name: String,
    starts_at: DateTime<Utc>,
    doctor_id: Option<Uuid>,
    doctor_name: Option<String>,
}

/// What `command_id` did, in appointment order.
async fn results_of(
    db: &PgPool,
    command_id: Uuid,
) -> Result<Vec<ResolvedAppointment>, sqlx::Error> {
    let rows: Vec<ResultRow> = sqlx::query_as(
        "SELECT appointment_id, resolution, patient_name, starts_at, doctor_id, doctor_name \
         FROM command_results WHERE command_id = $1 ORDER BY starts_at, appointment_id",
    )
    .bind(command_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let resolution: Resolution =
                serde_json::from_value(serde_json::Value::String(r.resolution)).ok()?;
            Some(ResolvedAppointment {
                appointment_id: r.appointment_id,
                patient_name: r.patient_name,
                starts_at: r.starts_at.into(),
                resolution,
                doctor_id: r.doctor_id.map(UserId),
                doctor_name: r.doctor_name,
            })
        })
        .collect())
}
