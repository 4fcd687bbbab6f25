//! The HTTP API fuzzed against its own OpenAPI document: schemathesis (from PyPI, installed by
//! `scripts/prepare` into `/var/tmp/portal-schemathesis`) reads the document the gateway serves
//! and sends generated requests — valid and invalid — to every operation, as an admin, against
//! the whole system (auth-service, user-service, appointment-service, sync admin API, gateway) on real
//! PostgreSQL and RabbitMQ. It fails on any 5xx answer (counted by the gateway, documented or
//! not) and on any answer the document does not
//! allow (status, content type, body schema). Its own test binary: it is the slowest suite.
//! `SCHEMATHESIS_MAX_EXAMPLES` (default 40) sets how many cases per operation; the long form is
//! a few hundred.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use sandbox::{auth, Sandbox, System};
use std::path::PathBuf;
use std::process::Command;
use uuid::Uuid;

/// The whole system in this process (auth-service, user-service, appointment-service, sync
/// admin API, gateway in front of them, `tune` adjusting its config), with an active doctor the
/// appointment-service knows (bookings with them can succeed: `System::accounts[0]`), a second
/// doctor who may be offboarded (`System::accounts[1]`), and the appointment-service given the
/// whole user history, as `portal up` does: it answers bookings 503 until then. Returns once it
/// reports ready.
async fn start_system<'a>(
    sb: &'a Sandbox,
    tune: impl FnOnce(&mut gateway::Config) + Send + 'a,
) -> System {
    System::builder(sb)
        .users()
        .sync_admin()
        .gateway_with(tune)
        .account("fuzz-doctor@clinic.test", Role::Doctor)
        .account("fuzz-leaver@clinic.test", Role::Doctor)
        .backfilled()
        .start()
        .await
}

/// The schemathesis configuration: the seeded doctor's id, times in the future and whole
/// durations offered for half of the `doctorId`, `startsAt` and `durationMinutes` values, so
/// that bookings, overlaps, cancellations and reassignments are reached rather than every
/// booking ending in "no such doctor", "in the past" or "more than 5 years ahead". The leaving
/// doctor's id is offered for half of the user ids of the propagation and offboarding
/// operations (and of no other: the fuzzer would deactivate or demote them), so their answers
/// about a real user (200, 202) are checked too, not only the 404 of a random id.
fn schemathesis_config(doctor: Uuid, leaver: Uuid) -> String {
    // Within the 5 years ahead a booking may be made.
    let day = |days: i64, minutes: i64| {
        (chrono::Utc::now().date_naive() + chrono::Duration::days(days))
            .and_hms_opt(9, 0, 0)
            .map(|t| t.and_utc() + chrono::Duration::minutes(minutes))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    let (a, b, c) = (day(30, 0), day(30, 30), day(200, 0));
    format!(
        r#"[dictionaries.doctors]
values = ["{doctor}"]

[dictionaries.future]
values = ["{a}", "{b}", "{c}"]

[dictionaries.durations]
values = [15, 30, 45]

[dictionaries.leavers]
values = ["{leaver}"]

[parameters]
"body.doctorId" = {{ dictionary = "doctors", probability = 0.5 }}
"query.doctorId" = {{ dictionary = "doctors", probability = 0.5 }}
"body.startsAt" = {{ dictionary = "future", probability = 0.5 }}
"body.durationMinutes" = {{ dictionary = "durations", probability = 0.5 }}

[[operations]]
include-operation-id = ["userPropagation", "startOffboarding", "userOffboarding"]
parameters = {{ "path.id" = {{ dictionary = "leavers", probability = 0.5 }} }}
"#
    )
}

/// The gateway's answers with a 5xx status so far (`portal_http_requests_total` lines of its
/// `/metrics` with a 5xx `status` and a count above 0).
async fn server_errors(gateway: &str) -> Vec<String> {
    let text = reqwest::get(format!("{gateway}/metrics"))
        .await
        .expect("the gateway's metrics")
        .text()
        .await
        .expect("metrics text");
    // The count this reads must exist, or the check would pass having read nothing.
    assert!(
        text.lines()
            .any(|l| l.starts_with("portal_http_requests_total{") && l.contains("status=\"2")),
        "the gateway's metrics count no answers:\n{text}"
    );
    text.lines()
        .filter(|l| l.starts_with("portal_http_requests_total{") && l.contains("status=\"5"))
        .filter(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|n| n.parse::<f64>().ok())
                .is_some_and(|n| n > 0.0)
        })
        .map(str::to_owned)
        .collect()
}

fn schemathesis() -> PathBuf {
    let venv = std::env::var_os("PORTAL_SCHEMATHESIS_VENV").map_or_else(
        || PathBuf::from("/var/tmp/portal-schemathesis"),
        PathBuf::from,
    );
    venv.join("bin/schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_the_api_matches_its_openapi_document() {
    let exe = schemathesis();
    assert!(
        exe.exists(),
        "{} is missing: scripts/prepare installs schemathesis",
        exe.display()
    );
    let sb = Sandbox::for_test().await;
    let system = start_system(&sb, |config| {
        // The fuzzer logs in and registers far more often than a person: the per-address limit
        // would answer most of it 429 (allowed by the document, but nothing would be tested).
        config.auth_rate_limit = gateway::AuthRateLimit {
            per_minute: 100_000,
            burst: 10_000,
        };
    })
    .await;
    let (pool, auth) = (&system.auth_db, &system.auth);
    let (doctor, leaver) = (system.accounts[0], system.accounts[1]);
    // Two admins: the fuzzer may deactivate or demote one (never the last active admin).
    auth::admin_token(pool, &auth.url()).await;
    let token = auth::admin_token(pool, &auth.url()).await;
    let gw = system.gateway().url();
    let config_file = sb.dir.join("schemathesis.toml");
    std::fs::write(&config_file, schemathesis_config(doctor, leaver)).unwrap();
    let max_examples =
        std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "40".to_owned());

    // The operations that take an admin's powers away run last, in a run of their own: the
    // fuzzer learns ids from answers and would otherwise deactivate, demote or reset the admin
    // whose token it uses, and every later case would test only the 401. Starting an
    // offboarding deactivates whoever it names (never the caller): it runs after the others,
    // which book with the seeded doctor, in a run of its own; the operations that read or
    // cancel offboardings run after it, so they answer about real ones, not only 404.
    let groups: [(&str, &[&str]); 3] = [
        ("offboarding", &["startOffboarding"]),
        (
            "offboardings",
            &[
                "userOffboarding",
                "listOffboardings",
                "showOffboarding",
                "cancelOffboarding",
            ],
        ),
        ("disarming", &["deactivateUser", "setRole", "resetPassword"]),
    ];
    let flags = |flag: &str, ids: &[&str]| -> Vec<String> {
        ids.iter()
            .flat_map(|id| [flag.to_owned(), (*id).to_owned()])
            .collect()
    };
    let grouped: Vec<&str> = groups
        .iter()
        .flat_map(|(_, ids)| ids.iter().copied())
        .collect();
    let mut runs = vec![("other", flags("--exclude-operation-id", &grouped))];
    for (run, ids) in groups {
        runs.push((run, flags("--include-operation-id", ids)));
    }
    for (run, filter) in runs {
        let report = sb.dir.join(format!("schemathesis-{run}.xml"));
        let (exe, gw, bearer, max_examples, dir, config_file) = (
            exe.clone(),
            gw.clone(),
            token.clone(),
            max_examples.clone(),
            sb.dir.clone(),
            config_file.clone(),
        );
        let output = tokio::task::spawn_blocking(move || {
            Command::new(exe)
                .arg("--config-file")
                .arg(&config_file)
                .args(["run", &format!("{gw}{}", contract::openapi::PATH)])
                .args(["--url", &gw])
                .args(["--header", &format!("Authorization: Bearer {bearer}")])
                .args([
                    "--checks",
                    "not_a_server_error,status_code_conformance,content_type_conformance,\
                     response_schema_conformance",
                ])
                .args(["--max-examples", &max_examples])
                .args(["--phases", "examples,coverage,fuzzing"])
                .args(["--seed", "42"])
                // One worker: hypothesis describing its strategies from two threads at once trips
                // a CPython 3.11 parser error (seen: "AST constructor recursion depth mismatch").
                .args(["--workers", "1"])
                .args(filter)
                .args(["--report", "junit", "--report-junit-path"])
                .arg(&report)
                .env("NO_COLOR", "1")
                // Its cache (`.schemathesis/`) goes to the test's directory, not the checkout.
                .current_dir(&dir)
                .output()
                .expect("run schemathesis")
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        // The summary is the run's figures: printed for the log.
        let summary = stdout
            .find("=== SUMMARY")
            .map_or(stdout.as_ref(), |at| &stdout[at..]);
        println!("schemathesis, {run} operations:\n{summary}");
        assert!(
            output.status.success(),
            "schemathesis found answers the document does not allow:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("passed"),
            "schemathesis ran no operation:\n{stdout}"
        );
        // schemathesis lets a 5xx pass when the document lists it (the gateway's 502/503 for a
        // dead upstream): the gateway's own count of what it answered catches every one.
        let server_errors = server_errors(&system.gateway().url()).await;
        assert!(
            server_errors.is_empty(),
            "the gateway answered 5xx during the {run} run: {server_errors:?}"
        );
        if run == "other" {
            let (me, body) =
                sandbox::http::get(&format!("{}/api/v1/auth/me", auth.url()), Some(&token)).await;
            assert_eq!(
                me, 200,
                "the admin's token stayed valid through the run: {body}"
            );
            // The seeded doctor made some bookings succeed: the 201 answers were checked too.
            let booked =
                sandbox::db::count(system.appointment_db(), "SELECT count(*) FROM appointments")
                    .await;
            println!("appointments booked by the fuzzer: {booked}");
            assert!(
                booked > 0,
                "schemathesis booked no appointment: the values of `schemathesis_config` no \
                 longer make a valid booking"
            );
        }
    }
}

/// The document describes routes that exist: every documented operation, called through the
/// gateway, reaches a handler (never the "no such route" 404 or a 405).
#[tokio::test]
async fn every_documented_operation_is_served() {
    let sb = Sandbox::for_test().await;
    let system = start_system(&sb, |_| {}).await;
    let gateway = system.gateway();
    let token = auth::admin_token(&system.auth_db, &system.auth.url()).await;
    let (status, doc) = sandbox::http::get(
        &format!("{}{}", gateway.url(), contract::openapi::PATH),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        doc,
        contract::openapi::document(),
        "the gateway serves the current document"
    );
    let client = reqwest::Client::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            let url = format!(
                "{}{}",
                gateway.url(),
                path.replace("{id}", &uuid::Uuid::new_v4().to_string())
                    .replace("{queue}", "user-service.user-events.dlq")
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = client
                .request(method.clone(), &url)
                .bearer_auth(&token)
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            assert_ne!(status, 405, "{method} {path}");
            assert!(
                !(status == 404 && body["message"] == "no such route"),
                "{method} {path} is documented but not routed"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 51, "every operation was called");
}
