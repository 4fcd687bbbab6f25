//! The offboarding fault run as CI runs it, through the real binary (`portal-chaos
//! offboarding`): the short form (200 offboardings while the auth-service, the relay, the
//! user-service and the appointment-service are killed at random) must PASS, with every saga
//! completed or needing attention, some of them stalled on the way, and both copies in sync;
//! and a small run with `--inject-duplicate` must FAIL and name the duplicate. The two runs are
//! serialised: each loads the machine on its own. The services run from the `portal` binary
//! beside it; when only this crate was built, the test builds `portal` first
//! (`sandbox::process::tool_for_test`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandbox::process::tool_for_test;
use std::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The summary line.
    fn summary(&self) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with("chaos offboarding: offboardings="))
            .unwrap_or_else(|| panic!("no summary line in:\n{}", self.stdout))
    }

    /// The count after `name=` in the summary line.
    fn count(&self, name: &str) -> u64 {
        let summary = self.summary();
        let start = summary
            .find(&format!(" {name}="))
            .unwrap_or_else(|| panic!("no {name} in {summary}"))
            + name.len()
            + 2;
        summary[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count after {name}= in {summary}"))
    }
}

/// Runs `portal-chaos offboarding <args>` against the servers the other tests use.
fn offboarding(args: &[&str]) -> Run {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = tool_for_test(env!("CARGO_BIN_EXE_portal-chaos"))
        .expect("portal-chaos")
        .arg("offboarding")
        .args(args)
        .output()
        .expect("run portal-chaos offboarding");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // The run's own log (one line per kill) shows in the test output.
    eprintln!("{stderr}");
    println!("{stdout}");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

#[test]
fn the_short_offboarding_run_passes_under_kills_of_every_part() {
    let run = offboarding(&[]);
    let summary = run.summary();
    assert_eq!(run.code, 0, "{summary}");
    assert!(summary.ends_with("result=PASS"), "{summary}");
    assert!(summary.contains("offboardings=200 "), "{summary}");
    assert_eq!(
        run.count("completed") + run.count("needs-attention"),
        run.count("sagas"),
        "{summary}"
    );
    // Two appointments per leaving doctor, each resolved once and announced once.
    assert_eq!(run.count("appointments"), 400, "{summary}");
    assert_eq!(run.count("events"), 400, "{summary}");
    assert!(run.count("kills") >= 4, "{summary}");
    // The first fault keeps the appointment-service down past the saga's re-sends.
    assert!(run.count("stalled-then-completed") > 0, "{summary}");
    assert!(
        summary.contains("verify=user-service in sync")
            && summary.contains("appointment-service in sync"),
        "{summary}"
    );
}

#[test]
fn a_second_event_for_one_appointment_fails_the_run() {
    let run = offboarding(&[
        "--offboardings",
        "10",
        "--duration",
        "5s",
        "--inject-duplicate",
    ]);
    let summary = run.summary();
    assert_eq!(run.code, 1, "{summary}");
    assert!(summary.contains("result=FAIL ("), "{summary}");
    assert!(
        summary.contains("duplicate appointment events: 1 (e.g. 2 events for appointment"),
        "{summary}"
    );
    // Nothing else is wrong: the injected event is the only finding besides its own count.
    assert!(summary.contains("sagas=10 "), "{summary}");
    assert!(!summary.contains("offboardings not finished"), "{summary}");
    // A failed run keeps the services' logs for inspection; this failure was the point.
    if let Some(dir) = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("chaos: service logs kept in "))
    {
        std::fs::remove_dir_all(dir.trim()).ok();
    }
}
