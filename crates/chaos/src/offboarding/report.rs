//! The offboarding run's verdict and its one summary line. It passes only when every saga
//! finished (completed or needs-attention) once the faults stopped, the system came to rest,
//! the check found nothing ([`super::checks`]), no dead letter was left, verify found 0
//! differences in both copies, and no part exited without being killed.

use super::checks::Findings;
use crate::fleet::Part;
use crate::report::verify_text;
use ops::verify::Report;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug)]
pub struct Summary {
    /// Doctors offboarded (one planned offboarding each).
    pub offboardings: u32,
    /// Offboarding requests not accepted at once and sent again.
    pub requests_retried: u64,
    /// Kills per part.
    pub kills: Vec<(Part, u64)>,
    /// How long every saga took to finish once the faults stopped, or why they did not.
    pub settled: Result<Duration, String>,
    /// How long the system then took to come to rest, or why it did not.
    pub quiescence: Result<Duration, String>,
    pub findings: Result<Findings, String>,
    /// Messages left in a dead-letter or unrouted queue, per queue (only those holding some).
    pub dead_letters: Result<Vec<(String, u32)>, String>,
    /// The appointment whose event was written twice (`--inject-duplicate`).
    pub duplicate_injected: Option<Uuid>,
    pub verify_users: Result<Report, String>,
    pub verify_appointments: Result<Report, String>,
    pub unexpected_exits: Vec<String>,
    pub elapsed: Duration,
}

impl Summary {
    /// Why the run fails; empty when it passes.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Err(e) = &self.settled {
            failures.push(format!("not finished: {e}"));
        }
        if let Err(e) = &self.quiescence {
            failures.push(format!("not quiescent: {e}"));
        }
        match &self.findings {
            Err(e) => failures.push(format!("the check could not run: {e}")),
            Ok(f) => {
                failures.extend(f.failures());
                if let Some(appointment) = self.duplicate_injected {
                    if !f.problems.contains_key(super::checks::DUPLICATE_EVENTS) {
                        failures.push(format!(
                            "the duplicate event injected for appointment {appointment} went \
                             unnoticed"
                        ));
                    }
                }
            }
        }
        match &self.dead_letters {
            Err(e) => failures.push(format!("dead letters could not be counted: {e}")),
            Ok(held) if !held.is_empty() => {
                let held: Vec<String> = held.iter().map(|(q, n)| format!("{q} {n}")).collect();
                failures.push(format!("messages set aside: {}", held.join(", ")));
            }
            Ok(_) => {}
        }
        for (copy, verify) in [
            ("user-service", &self.verify_users),
            ("appointment-service", &self.verify_appointments),
        ] {
            match verify {
                Err(e) => failures.push(format!("verify of the {copy} could not run: {e}")),
                Ok(r) if !r.is_in_sync() => failures.push(format!(
                    "verify of the {copy} found {} differences",
                    r.total_differences()
                )),
                Ok(_) => {}
            }
        }
        if !self.unexpected_exits.is_empty() {
            failures.push(format!(
                "{} service exits nobody caused",
                self.unexpected_exits.len()
            ));
        }
        failures
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    /// The one line the run ends with.
    pub fn line(&self) -> String {
        let failures = self.failures();
        let result = if failures.is_empty() {
            "PASS".to_owned()
        } else {
            format!("FAIL ({})", failures.join("; "))
        };
        let kills: Vec<String> = self
            .kills
            .iter()
            .map(|(part, n)| format!("{} {n}", part.name()))
            .collect();
        let total_kills: u64 = self.kills.iter().map(|(_, n)| n).sum();
        let counts = match &self.findings {
            Err(_) => "check=error".to_owned(),
            Ok(f) => format!(
                "sagas={} completed={} needs-attention={} stalled-then-completed={} ({} of them \
                 needing attention) appointments={} (reassigned {}, cancelled {}, \
                 cancelled-no-doctor-free {}) events={} (copies {})",
                f.sagas,
                f.completed,
                f.needs_attention,
                f.stalled_then_completed,
                f.stalled_then_needs_attention,
                f.reassigned + f.cancelled + f.cancelled_no_doctor_free,
                f.reassigned,
                f.cancelled,
                f.cancelled_no_doctor_free,
                f.events,
                f.event_copies,
            ),
        };
        format!(
            "chaos offboarding: offboardings={} (requests sent again {}) {counts} kills={total_kills} \
             ({}) verify=user-service {}, appointment-service {} elapsed={}s result={result}",
            self.offboardings,
            self.requests_retried,
            kills.join(", "),
            verify_text(&self.verify_users),
            verify_text(&self.verify_appointments),
            self.elapsed.as_secs(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing() -> Summary {
        Summary {
            offboardings: 200,
            requests_retried: 12,
            kills: vec![
                (Part::AuthService, 4),
                (Part::Relay, 3),
                (Part::UserService, 4),
                (Part::AppointmentService, 5),
            ],
            settled: Ok(Duration::from_secs(9)),
            quiescence: Ok(Duration::from_secs(7)),
            findings: Ok(Findings {
                sagas: 200,
                completed: 115,
                needs_attention: 85,
                stalled_then_completed: 9,
                stalled_then_needs_attention: 2,
                reassigned: 30,
                cancelled: 200,
                cancelled_no_doctor_free: 170,
                events: 400,
                event_copies: 1,
                ..Findings::default()
            }),
            dead_letters: Ok(Vec::new()),
            duplicate_injected: None,
            verify_users: Ok(Report {
                checked: 221,
                ..Report::default()
            }),
            verify_appointments: Ok(Report {
                checked: 221,
                ..Report::default()
            }),
            unexpected_exits: Vec::new(),
            elapsed: Duration::from_secs(95),
        }
    }

    #[test]
    fn a_clean_run_passes_with_every_count_on_one_line() {
        let s = passing();
        assert!(s.passed());
        assert_eq!(
            s.line(),
            "chaos offboarding: offboardings=200 (requests sent again 12) sagas=200 \
             completed=115 needs-attention=85 stalled-then-completed=9 (2 of them needing \
             attention) appointments=400 (reassigned 30, cancelled 200, cancelled-no-doctor-free \
             170) events=400 (copies 1) kills=16 (auth-service 4, relay 3, user-service 4, \
             appointment-service 5) verify=user-service in sync (221 users), appointment-service \
             in sync (221 users) elapsed=95s result=PASS"
        );
    }

    #[test]
    fn a_duplicate_a_dead_letter_or_a_difference_fails_the_run() {
        let mut s = passing();
        if let Ok(f) = &mut s.findings {
            f.problems
                .insert("duplicate appointment events", (1, "x".to_owned()));
        }
        s.dead_letters = Ok(vec![("auth-service.control.dlq".to_owned(), 2)]);
        s.verify_appointments = Ok(Report {
            checked: 221,
            stale: 1,
            ..Report::default()
        });
        let line = s.line();
        assert!(!s.passed());
        assert!(
            line.ends_with(
                "result=FAIL (duplicate appointment events: 1 (e.g. x); messages set aside: \
                 auth-service.control.dlq 2; verify of the appointment-service found 1 \
                 differences)"
            ),
            "{line}"
        );
        assert!(
            line.contains("appointment-service 1 difference (stale 1)"),
            "{line}"
        );
    }
}
