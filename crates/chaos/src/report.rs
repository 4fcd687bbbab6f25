//! The verdict and its one summary line. The run passes only when the system came to rest,
//! verify found 0 differences, every injected malformed message (and nothing else) is in the
//! dead-letter queue, and no service exited without being killed.

use super::broker::DeadLetters;
use ops::verify::Report;
use std::time::Duration;

#[derive(Debug)]
pub struct Summary {
    pub creates: u64,
    pub changes: u64,
    /// Outbox rows: the events the accepted operations wrote (a no-op change writes none).
    pub events: i64,
    pub user_service_kills: u64,
    pub relay_kills: u64,
    pub connection_cuts: u64,
    pub backend_terminations: u64,
    /// Valid events the consumers received beyond one per event (see [`super::duplicates`]).
    pub duplicates_absorbed: u64,
    pub malformed_injected: u64,
    pub dead_letters: DeadLetters,
    /// How long the system took to come to rest after the load, or why it did not.
    pub quiescence: Result<Duration, String>,
    /// The row deleted behind the system's back (`--inject-drift`).
    pub drift_injected: Option<String>,
    pub verify: Result<Report, String>,
    pub unexpected_exits: Vec<String>,
    pub elapsed: Duration,
}

impl Summary {
    /// Why the run fails; empty when it passes.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Err(e) = &self.quiescence {
            failures.push(format!("not quiescent: {e}"));
        }
        match &self.verify {
            Err(e) => failures.push(format!("verify could not run: {e}")),
            Ok(report) if !report.is_in_sync() => {
                let n = report.total_differences();
                let what = format!("verify found {n} difference{}", plural(n));
                failures.push(if self.drift_injected.is_some() {
                    format!("drift detected: {what}")
                } else {
                    what
                });
            }
            Ok(_) => {}
        }
        let ours = self.dead_letters.ours.len() as u64;
        if ours != self.malformed_injected {
            failures.push(format!(
                "dead-lettered {ours} of {} malformed messages",
                self.malformed_injected
            ));
        }
        if self.dead_letters.foreign > 0 {
            failures.push(format!(
                "{} valid events were dead-lettered",
                self.dead_letters.foreign
            ));
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

    fn verify_text(&self) -> String {
        verify_text(&self.verify)
    }

    /// The one line the run ends with.
    pub fn line(&self) -> String {
        let dl = &self.dead_letters;
        let copies = if dl.copies > dl.ours.len() as u64 + dl.foreign {
            format!(" ({} copies)", dl.copies)
        } else {
            String::new()
        };
        let failures = self.failures();
        let result = if failures.is_empty() {
            "PASS".to_owned()
        } else {
            format!("FAIL ({})", failures.join("; "))
        };
        format!(
            "chaos: operations={} (creates {}, changes {}) events={} kills={} (user-service {}, \
             relay {}) connection-cuts={} backend-terminations={} duplicates-absorbed={} \
             dead-lettered={}/{}{copies} verify={} elapsed={}s result={result}",
            self.creates + self.changes,
            self.creates,
            self.changes,
            self.events,
            self.user_service_kills + self.relay_kills,
            self.user_service_kills,
            self.relay_kills,
            self.connection_cuts,
            self.backend_terminations,
            self.duplicates_absorbed,
            dl.ours.len(),
            self.malformed_injected,
            self.verify_text(),
            self.elapsed.as_secs(),
        )
    }
}

/// What verify said, in a few words: `in sync (N users)`, `N differences (missing …)` or
/// `error`.
pub fn verify_text(verify: &Result<Report, String>) -> String {
    match verify {
        Err(_) => "error".to_owned(),
        Ok(r) if r.is_in_sync() => format!("in sync ({} users)", r.checked),
        Ok(r) => {
            let n = r.total_differences();
            let parts: Vec<String> = [
                ("missing", r.missing),
                ("stale", r.stale),
                ("mismatched", r.mismatched),
                ("extra", r.extra),
            ]
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
            format!("{n} difference{} ({})", plural(n), parts.join(", "))
        }
    }
}

pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passing() -> Summary {
        let mut dead_letters = DeadLetters::default();
        for n in 0..3 {
            dead_letters.ours.insert(format!("chaos-malformed-{n}"));
        }
        dead_letters.copies = 3;
        Summary {
            creates: 10,
            changes: 90,
            events: 95,
            user_service_kills: 2,
            relay_kills: 1,
            connection_cuts: 1,
            backend_terminations: 1,
            duplicates_absorbed: 7,
            malformed_injected: 3,
            dead_letters,
            quiescence: Ok(Duration::from_secs(3)),
            drift_injected: None,
            verify: Ok(Report {
                checked: 11,
                ..Report::default()
            }),
            unexpected_exits: Vec::new(),
            elapsed: Duration::from_secs(100),
        }
    }

    #[test]
    fn a_clean_run_passes_with_every_count_on_one_line() {
        let s = passing();
        assert!(s.passed());
        assert_eq!(
            s.line(),
            "chaos: operations=100 (creates 10, changes 90) events=95 kills=3 (user-service 2, \
             relay 1) connection-cuts=1 backend-terminations=1 duplicates-absorbed=7 \
             dead-lettered=3/3 verify=in sync (11 users) elapsed=100s result=PASS"
        );
    }

    #[test]
    fn drift_or_a_lost_dead_letter_fails_the_run() {
        let mut s = passing();
        s.drift_injected = Some("user x".into());
        s.verify = Ok(Report {
            checked: 11,
            missing: 1,
            ..Report::default()
        });
        assert!(s.line().ends_with(
            "verify=1 difference (missing 1) elapsed=100s \
             result=FAIL (drift detected: verify found 1 difference)"
        ));
        let mut s = passing();
        s.dead_letters.ours.clear();
        assert!(s
            .line()
            .contains("result=FAIL (dead-lettered 0 of 3 malformed messages)"));
    }
}
