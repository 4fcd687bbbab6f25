//! The chaos run as CI runs it, through the real binary (`portal-chaos`): the short form
//! (20,000 operations under kills, connection cuts, backend terminations and malformed
//! messages) must PASS with every malformed message dead-lettered, and a small run with
//! `--inject-drift` must FAIL and name the drift. The two runs are serialised: each loads the
//! machine on its own. The services it starts run from the `portal` binary beside it; when only
//! this crate was built, the test builds `portal` first (`sandbox::process::tool_for_test`).
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
            .find(|l| l.starts_with("chaos: operations="))
            .unwrap_or_else(|| panic!("no summary line in:\n{}", self.stdout))
    }
}

/// Runs `portal-chaos <args>` against the servers the other tests use.
fn chaos(args: &[&str]) -> Run {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let out = tool_for_test(env!("CARGO_BIN_EXE_portal-chaos"))
        .expect("portal-chaos")
        .args(args)
        .output()
        .expect("run portal-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // The run's own log (one line per fault) shows in the test output.
    eprintln!("{stderr}");
    println!("{stdout}");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout,
        stderr,
    }
}

#[test]
fn the_short_chaos_run_passes_with_every_malformed_message_dead_lettered() {
    let run = chaos(&[]);
    let summary = run.summary();
    assert_eq!(run.code, 0, "{summary}");
    assert!(summary.ends_with("result=PASS"), "{summary}");
    assert!(summary.contains("operations=20000 "), "{summary}");
    assert!(summary.contains("dead-lettered=300/300"), "{summary}");
    assert!(summary.contains("verify=in sync"), "{summary}");
    assert!(!summary.contains("kills=0 "), "{summary}");
}

#[test]
fn a_row_deleted_behind_the_systems_back_fails_the_run() {
    let run = chaos(&[
        "--operations",
        "500",
        "--duration",
        "10s",
        "--malformed",
        "20",
        "--inject-drift",
    ]);
    let summary = run.summary();
    assert_eq!(run.code, 1, "{summary}");
    assert!(
        summary.contains("verify=1 difference (missing 1)"),
        "{summary}"
    );
    assert!(
        summary.contains("result=FAIL (drift detected: verify found 1 difference)"),
        "{summary}"
    );
    assert!(summary.contains("dead-lettered=20/20"), "{summary}");
    assert!(
        run.stdout.contains("missing "),
        "the missing user is listed:\n{}",
        run.stdout
    );
    // A failed run keeps the services' logs for inspection; this failure was the point.
    if let Some(dir) = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("chaos: service logs kept in "))
    {
        std::fs::remove_dir_all(dir.trim()).ok();
    }
}
