//! The offboarding run's verdict on what the databases and the recorded events hold once the
//! system is at rest: every saga finished (completed or needs-attention), each leaving doctor's
//! appointment resolved exactly once (`command_results`) and announced exactly once (the run's
//! event queue; copies of one event, same eventId, are the relay's at-least-once delivery and
//! counted apart), never a reassigned and a cancelled event for one appointment, and each
//! saga's recorded outcome as `appointment_db` holds it. [`check`] is pure: [`load`] reads.

use super::setup::{Booking, Recorded};
use anyhow::Context;
use contract::control::{
    AppointmentEvent, AppointmentEventType, AppointmentPolicy, DoctorResolved, Resolution,
};
use sqlx::types::Json;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// The problem a second event for one appointment change is.
pub const DUPLICATE_EVENTS: &str = "duplicate appointment events";

/// A saga as the check reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SagaRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub state: String,
    pub policy: String,
    pub command_id: Option<Uuid>,
    pub outcome: Option<Json<DoctorResolved>>,
    /// A `stalled` step is in its history.
    pub stalled: bool,
}

/// An appointment as `appointment_db` holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppointmentRow {
    pub id: Uuid,
    pub doctor_id: Uuid,
    pub status: String,
    pub version: i64,
}

/// One row of `command_results`: what one command did to one appointment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResultRow {
    pub command_id: Uuid,
    pub appointment_id: Uuid,
    pub resolution: String,
    pub doctor_id: Option<Uuid>,
}

/// Everything the check looks at.
#[derive(Debug, Default)]
pub struct State {
    pub sagas: Vec<SagaRow>,
    /// Active doctors in `auth_db`.
    pub active_doctors: HashSet<Uuid>,
    pub appointments: Vec<AppointmentRow>,
    pub results: Vec<ResultRow>,
    /// The leaving doctors (each must have been offboarded) and their bookings.
    pub leaving: Vec<Uuid>,
    pub leaving_bookings: Vec<Booking>,
    /// The staying doctors' own bookings, which nothing may touch.
    pub staying_bookings: Vec<Booking>,
    pub events: Vec<Recorded>,
    /// Rows of `appointment_db.outbox` not published.
    pub unpublished_appointment_messages: i64,
}

/// Reads the sagas (`auth_db`), the appointments and command results (`appointment_db`).
pub async fn load(
    auth_pool: &PgPool,
    appointment_pool: &PgPool,
) -> anyhow::Result<(
    Vec<SagaRow>,
    HashSet<Uuid>,
    Vec<AppointmentRow>,
    Vec<ResultRow>,
)> {
    let sagas: Vec<SagaRow> = sqlx::query_as(
        "SELECT o.id, o.user_id, o.state, o.policy, o.command_id, o.outcome, \
             EXISTS (SELECT 1 FROM offboarding_steps s WHERE s.offboarding_id = o.id \
                 AND s.step = 'stalled') AS stalled \
         FROM offboardings o ORDER BY o.created_at",
    )
    .fetch_all(auth_pool)
    .await
    .context("reading the offboardings")?;
    let active: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE role = 'doctor' AND is_active")
            .fetch_all(auth_pool)
            .await
            .context("reading the active doctors")?;
    let appointments: Vec<AppointmentRow> =
        sqlx::query_as("SELECT id, doctor_id, status, version FROM appointments")
            .fetch_all(appointment_pool)
            .await
            .context("reading the appointments")?;
    let results: Vec<ResultRow> = sqlx::query_as(
        "SELECT command_id, appointment_id, resolution, doctor_id FROM command_results",
    )
    .fetch_all(appointment_pool)
    .await
    .context("reading command_results")?;
    Ok((sagas, active.into_iter().collect(), appointments, results))
}

/// What the check found: the counts the summary shows, and every kind of problem.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    pub sagas: usize,
    pub completed: usize,
    pub needs_attention: usize,
    /// Sagas that showed as stalled at some point and then finished.
    pub stalled_then_completed: usize,
    /// Of those, how many ended needing attention.
    pub stalled_then_needs_attention: usize,
    /// Appointments resolved, by resolution (from `command_results`).
    pub reassigned: usize,
    pub cancelled: usize,
    pub cancelled_no_doctor_free: usize,
    /// Distinct appointment events recorded (by eventId), and further copies of them.
    pub events: usize,
    pub event_copies: usize,
    /// Per kind of problem: how many, and the first example.
    pub problems: BTreeMap<&'static str, (usize, String)>,
}

impl Findings {
    fn problem(&mut self, kind: &'static str, example: impl FnOnce() -> String) {
        let entry = self.problems.entry(kind).or_insert_with(|| (0, example()));
        entry.0 += 1;
    }

    /// One line per kind of problem.
    pub fn failures(&self) -> Vec<String> {
        self.problems
            .iter()
            .map(|(kind, (n, example))| format!("{kind}: {n} (e.g. {example})"))
            .collect()
    }
}

fn resolution_name(r: Resolution) -> &'static str {
    match r {
        Resolution::Reassigned => "reassigned",
        Resolution::Cancelled => "cancelled",
        Resolution::CancelledNoDoctorFree => "cancelled-no-doctor-free",
    }
}

/// Checks `state`; see the module.
pub fn check(state: &State) -> Findings {
    let mut f = Findings {
        sagas: state.sagas.len(),
        ..Findings::default()
    };
    let appointments: HashMap<Uuid, &AppointmentRow> =
        state.appointments.iter().map(|a| (a.id, a)).collect();
    let mut results_of: HashMap<Uuid, Vec<&ResultRow>> = HashMap::new();
    let mut results_by_command: HashMap<Uuid, Vec<&ResultRow>> = HashMap::new();
    for r in &state.results {
        results_of.entry(r.appointment_id).or_default().push(r);
        results_by_command.entry(r.command_id).or_default().push(r);
        match r.resolution.as_str() {
            "reassigned" => f.reassigned += 1,
            "cancelled" => f.cancelled += 1,
            _ => f.cancelled_no_doctor_free += 1,
        }
    }
    let saga_of_command: HashMap<Uuid, &SagaRow> = state
        .sagas
        .iter()
        .filter_map(|s| s.command_id.map(|c| (c, s)))
        .collect();

    // Every leaving doctor offboarded, every saga finished.
    let offboarded: HashSet<Uuid> = state.sagas.iter().map(|s| s.user_id).collect();
    for doctor in &state.leaving {
        if !offboarded.contains(doctor) {
            f.problem("leaving doctors without an offboarding", || {
                doctor.to_string()
            });
        }
    }
    for saga in &state.sagas {
        match saga.state.as_str() {
            "completed" => f.completed += 1,
            "needs_attention" => f.needs_attention += 1,
            "cancelled" => {
                f.problem("offboardings cancelled", || saga.id.to_string());
                continue;
            }
            other => {
                f.problem("offboardings not finished", || {
                    format!("{} {other}", saga.id)
                });
                continue;
            }
        }
        if saga.stalled {
            f.stalled_then_completed += 1;
            if saga.state == "needs_attention" {
                f.stalled_then_needs_attention += 1;
            }
        }
        check_outcome(
            &mut f,
            saga,
            &appointments,
            &results_by_command,
            &state.active_doctors,
        );
    }

    // Each appointment resolved at most once; each leaving doctor's exactly once; the staying
    // doctors' own never.
    for (appointment, rows) in &results_of {
        if rows.len() > 1 {
            f.problem("appointments resolved more than once", || {
                format!("{appointment} by {} commands", rows.len())
            });
        }
    }
    for booking in &state.leaving_bookings {
        if !results_of.contains_key(&booking.id) {
            let status = appointments
                .get(&booking.id)
                .map_or("missing", |a| a.status.as_str());
            f.problem("leaving doctors' appointments never resolved", || {
                format!("{} ({status})", booking.id)
            });
        }
    }
    for booking in &state.staying_bookings {
        let untouched = !results_of.contains_key(&booking.id)
            && appointments.get(&booking.id).is_some_and(|a| {
                a.status == "booked" && a.version == 1 && a.doctor_id == booking.doctor
            });
        if !untouched {
            f.problem("staying doctors' appointments changed", || {
                booking.id.to_string()
            });
        }
    }

    if state.unpublished_appointment_messages > 0 {
        f.problem("unpublished rows in appointment_db.outbox", || {
            state.unpublished_appointment_messages.to_string()
        });
    }
    check_events(&mut f, state, &appointments, &results_of, &saga_of_command);
    f
}

/// One finished saga's outcome against `appointment_db`.
fn check_outcome(
    f: &mut Findings,
    saga: &SagaRow,
    appointments: &HashMap<Uuid, &AppointmentRow>,
    results_by_command: &HashMap<Uuid, Vec<&ResultRow>>,
    active_doctors: &HashSet<Uuid>,
) {
    const KIND: &str = "outcomes that disagree with appointment_db";
    let Some(Json(outcome)) = &saga.outcome else {
        f.problem(KIND, || {
            format!("offboarding {} finished without one", saga.id)
        });
        return;
    };
    if Some(outcome.command_id) != saga.command_id
        || outcome.offboarding_id != saga.id
        || outcome.doctor_id.0 != saga.user_id
    {
        f.problem(KIND, || {
            format!("offboarding {}: the reply answers another command", saga.id)
        });
        return;
    }
    let unplaced = outcome.unplaced().count();
    let expected_state = if unplaced > 0 {
        "needs_attention"
    } else {
        "completed"
    };
    if saga.state != expected_state {
        f.problem(KIND, || {
            format!(
                "offboarding {} is {} with {unplaced} unplaced appointments",
                saga.id, saga.state
            )
        });
    }
    let rows: HashMap<Uuid, &ResultRow> = results_by_command
        .get(&outcome.command_id)
        .map(|rows| rows.iter().map(|r| (r.appointment_id, *r)).collect())
        .unwrap_or_default();
    if rows.len() != outcome.appointments.len() {
        f.problem(KIND, || {
            format!(
                "offboarding {} names {} appointments, command_results {}",
                saga.id,
                outcome.appointments.len(),
                rows.len()
            )
        });
    }
    let policy = saga.policy.parse::<AppointmentPolicy>().ok();
    for a in &outcome.appointments {
        let row = appointments.get(&a.appointment_id);
        let result = rows.get(&a.appointment_id);
        let allowed = match policy {
            Some(AppointmentPolicy::Cancel) => a.resolution == Resolution::Cancelled,
            Some(AppointmentPolicy::Reassign) => a.resolution != Resolution::Cancelled,
            None => false,
        };
        let recorded = result.is_some_and(|r| {
            r.resolution == resolution_name(a.resolution) && r.doctor_id == a.doctor_id.map(|d| d.0)
        });
        let held = row.is_some_and(|row| match a.resolution {
            Resolution::Reassigned => {
                row.status == "booked"
                    && Some(row.doctor_id) == a.doctor_id.map(|d| d.0)
                    && row.doctor_id != saga.user_id
                    && active_doctors.contains(&row.doctor_id)
            }
            _ => row.status == "cancelled" && row.doctor_id == saga.user_id,
        });
        if !(allowed && recorded && held) {
            f.problem(KIND, || {
                format!(
                    "appointment {} {} by offboarding {} (policy {}): {}",
                    a.appointment_id,
                    resolution_name(a.resolution),
                    saga.id,
                    saga.policy,
                    row.map_or("not in appointment_db".to_owned(), |r| format!(
                        "{} with doctor {}",
                        r.status, r.doctor_id
                    ))
                )
            });
        }
    }
}

/// The recorded appointment events against `command_results`.
fn check_events(
    f: &mut Findings,
    state: &State,
    appointments: &HashMap<Uuid, &AppointmentRow>,
    results_of: &HashMap<Uuid, Vec<&ResultRow>>,
    saga_of_command: &HashMap<Uuid, &SagaRow>,
) {
    let mut distinct: HashMap<Uuid, AppointmentEvent> = HashMap::new();
    for recorded in &state.events {
        match serde_json::from_slice::<AppointmentEvent>(&recorded.body) {
            Ok(event) => {
                if recorded.message_id.as_deref() != Some(event.event_id.to_string().as_str()) {
                    f.problem(
                        "appointment events whose message-id is not their eventId",
                        || event.event_id.to_string(),
                    );
                }
                if distinct.insert(event.event_id, event).is_some() {
                    f.event_copies += 1;
                }
            }
            Err(e) => f.problem("unreadable appointment events", || e.to_string()),
        }
    }
    f.events = distinct.len();
    let mut by_change: HashMap<(Uuid, i64), usize> = HashMap::new();
    let mut by_appointment: HashMap<Uuid, Vec<&AppointmentEvent>> = HashMap::new();
    for event in distinct.values() {
        let p = &event.payload;
        *by_change
            .entry((p.appointment_id, p.appointment_version))
            .or_default() += 1;
        by_appointment
            .entry(p.appointment_id)
            .or_default()
            .push(event);
    }
    for ((appointment, version), n) in &by_change {
        if *n > 1 {
            f.problem(DUPLICATE_EVENTS, || {
                format!("{n} events for appointment {appointment} version {version}")
            });
        }
    }
    for (appointment, events) in &by_appointment {
        let reassigned = events
            .iter()
            .any(|e| e.event_type == AppointmentEventType::Reassigned);
        let cancelled = events
            .iter()
            .any(|e| e.event_type == AppointmentEventType::Cancelled);
        if reassigned && cancelled {
            f.problem(
                "appointments with both a reassigned and a cancelled event",
                || appointment.to_string(),
            );
        }
        if !results_of.contains_key(appointment) {
            f.problem("events for appointments nothing resolved", || {
                appointment.to_string()
            });
        }
    }
    for (appointment, rows) in results_of {
        let events = by_appointment
            .get(appointment)
            .map_or(&[][..], Vec::as_slice);
        if events.len() != 1 {
            f.problem("resolved appointments without exactly one event", || {
                format!("{appointment} has {}", events.len())
            });
            continue;
        }
        let (Some(event), Some(result)) = (events.first(), rows.first()) else {
            continue;
        };
        let saga = saga_of_command.get(&result.command_id);
        let p = &event.payload;
        let expected_type = match result.resolution.as_str() {
            "reassigned" => AppointmentEventType::Reassigned,
            _ => AppointmentEventType::Cancelled,
        };
        let agrees = event.event_type == expected_type
            && saga.is_some_and(|s| {
                p.offboarding_id == Some(s.id)
                    && p.previous_doctor_id.0 == s.user_id
                    && p.doctor_id.0 == result.doctor_id.unwrap_or(s.user_id)
            })
            && appointments
                .get(appointment)
                .is_some_and(|a| a.version == p.appointment_version);
        if !agrees {
            f.problem("events that disagree with appointment_db", || {
                format!(
                    "{} {} for appointment {appointment} ({} in command_results)",
                    event.event_type.as_str(),
                    event.event_id,
                    result.resolution
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::control::{AppointmentChange, ResolvedAppointment};
    use contract::{Timestamp, UserId};

    /// One leaving doctor with two appointments (one reassigned to a staying doctor, one
    /// cancelled for want of one), one staying booking, and the events, all as they should be.
    fn consistent() -> State {
        let (leaving, staying) = (Uuid::new_v4(), Uuid::new_v4());
        let (moved, lost, own) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (saga, command) = (Uuid::new_v4(), Uuid::new_v4());
        let resolved = |id, resolution, doctor: Option<Uuid>| ResolvedAppointment {
            appointment_id: id,
            patient_name: "P".into(),
            starts_at: Timestamp::now(),
            resolution,
            doctor_id: doctor.map(UserId),
            doctor_name: None,
        };
        let event = |id, kind, doctor: Uuid, status: &str| {
            let event = AppointmentEvent {
                event_id: Uuid::new_v4(),
                event_type: kind,
                timestamp: Timestamp::now(),
                source: "appointment-service".into(),
                version: "1.0".into(),
                payload: AppointmentChange {
                    appointment_id: id,
                    appointment_version: 2,
                    patient_name: "P".into(),
                    starts_at: Timestamp::now(),
                    ends_at: Timestamp::now(),
                    doctor_id: UserId(doctor),
                    doctor_name: None,
                    previous_doctor_id: UserId(leaving),
                    status: status.into(),
                    reason: "left".into(),
                    offboarding_id: Some(saga),
                },
            };
            Recorded {
                message_id: Some(event.event_id.to_string()),
                body: serde_json::to_vec(&event).unwrap_or_default(),
            }
        };
        State {
            sagas: vec![SagaRow {
                id: saga,
                user_id: leaving,
                state: "needs_attention".into(),
                policy: "reassign".into(),
                command_id: Some(command),
                outcome: Some(Json(DoctorResolved {
                    offboarding_id: saga,
                    command_id: command,
                    doctor_id: UserId(leaving),
                    appointments: vec![
                        resolved(moved, Resolution::Reassigned, Some(staying)),
                        resolved(lost, Resolution::CancelledNoDoctorFree, None),
                    ],
                })),
                stalled: true,
            }],
            active_doctors: HashSet::from([staying]),
            appointments: vec![
                AppointmentRow {
                    id: moved,
                    doctor_id: staying,
                    status: "booked".into(),
                    version: 2,
                },
                AppointmentRow {
                    id: lost,
                    doctor_id: leaving,
                    status: "cancelled".into(),
                    version: 2,
                },
                AppointmentRow {
                    id: own,
                    doctor_id: staying,
                    status: "booked".into(),
                    version: 1,
                },
            ],
            results: vec![
                ResultRow {
                    command_id: command,
                    appointment_id: moved,
                    resolution: "reassigned".into(),
                    doctor_id: Some(staying),
                },
                ResultRow {
                    command_id: command,
                    appointment_id: lost,
                    resolution: "cancelled-no-doctor-free".into(),
                    doctor_id: None,
                },
            ],
            leaving: vec![leaving],
            leaving_bookings: vec![
                Booking {
                    id: moved,
                    doctor: leaving,
                    slot: 0,
                },
                Booking {
                    id: lost,
                    doctor: leaving,
                    slot: 1,
                },
            ],
            staying_bookings: vec![Booking {
                id: own,
                doctor: staying,
                slot: 1,
            }],
            events: vec![
                event(moved, AppointmentEventType::Reassigned, staying, "booked"),
                event(lost, AppointmentEventType::Cancelled, leaving, "cancelled"),
            ],
            unpublished_appointment_messages: 0,
        }
    }

    #[test]
    fn a_consistent_run_has_no_problem_and_counts_what_happened() {
        let mut state = consistent();
        // A copy of one event (the relay republished it after a kill) is counted, not failed.
        state.events.push(state.events[0].clone());
        let f = check(&state);
        assert!(f.problems.is_empty(), "{:?}", f.failures());
        assert_eq!((f.sagas, f.completed, f.needs_attention), (1, 0, 1));
        assert_eq!(
            (f.stalled_then_completed, f.stalled_then_needs_attention),
            (1, 1)
        );
        assert_eq!(
            (f.reassigned, f.cancelled, f.cancelled_no_doctor_free),
            (1, 0, 1)
        );
        assert_eq!((f.events, f.event_copies), (2, 1));
    }

    #[test]
    fn a_second_event_or_resolution_of_one_appointment_is_caught() {
        let mut state = consistent();
        let mut second: AppointmentEvent =
            serde_json::from_slice(&state.events[0].body).unwrap_or_else(|e| panic!("{e}"));
        second.event_id = Uuid::new_v4();
        state.events.push(Recorded {
            message_id: Some(second.event_id.to_string()),
            body: serde_json::to_vec(&second).unwrap_or_default(),
        });
        let f = check(&state);
        assert!(f.problems.contains_key(DUPLICATE_EVENTS));
        assert!(f
            .problems
            .contains_key("resolved appointments without exactly one event"));

        let mut state = consistent();
        let mut again = state.results[0].clone();
        again.command_id = Uuid::new_v4();
        state.results.push(again);
        let f = check(&state);
        assert!(f
            .problems
            .contains_key("appointments resolved more than once"));
    }

    #[test]
    fn a_running_saga_or_an_outcome_appointment_db_does_not_hold_fails() {
        let mut state = consistent();
        state.sagas[0].state = "resolving_appointments".into();
        assert!(check(&state)
            .problems
            .contains_key("offboardings not finished"));

        let mut state = consistent();
        state.appointments[0].status = "cancelled".into();
        assert!(check(&state)
            .problems
            .contains_key("outcomes that disagree with appointment_db"));

        let mut state = consistent();
        state.sagas[0].state = "completed".into();
        assert!(check(&state)
            .problems
            .contains_key("outcomes that disagree with appointment_db"));
    }
}
