//! What an operator watches: every service's `GET /metrics` (auth-service with its relay,
//! user-service, appointment-service, sync admin API, gateway, web portal) passes
//! `promtool check metrics`, carries its families, and counts what happened: 10 changes are
//! 10 more applied on each consumer and 10 more published by the relay. The alert rules and
//! the dashboard under `deploy/` pass `promtool check rules` and name only metrics the services
//! really export.

use crate::{appointment_common, auth_common, start_system};
use contract::Role;
use sandbox::{poll_until, Running, Sandbox, SETTLE};
use std::io::Write;
use std::process::{Command, Stdio};

/// The value of the series `series` (name and labels exactly as printed) in `text`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

async fn scrape(service: &Running) -> String {
    let response = reqwest::get(format!("{}/metrics", service.url()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    response.text().await.unwrap()
}

/// `promtool check metrics` on `text`: its complaints, if any.
fn promtool(text: &str) -> Result<(), String> {
    let exe = std::env::var("PROMTOOL").unwrap_or_else(|_| "/usr/bin/promtool".into());
    assert!(
        std::path::Path::new(&exe).exists(),
        "{exe} is missing: scripts/prepare installs Debian's prometheus package"
    );
    let mut child = Command::new(exe)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

const APPLIED_USERS: &str =
    r#"portal_consumer_messages_total{consumer="user-service",outcome="applied"}"#;
const APPLIED_CLINICIANS: &str =
    r#"portal_consumer_messages_total{consumer="appointment-service",outcome="applied"}"#;

#[tokio::test]
async fn every_service_serves_metrics_that_promtool_accepts_and_that_count_the_changes() {
    let sb = Sandbox::for_test().await;
    let sys = start_system(&sb).await;
    let appointments = appointment_common::start_connected(appointment_common::config(&sb)).await;
    let sync_admin = Running::launch(sync_admin::Application::build(sync_admin::Config::local(
        &sb.database_url("auth"),
        &sb.database_url("user"),
        &sb.database_url("appointment"),
        &sb.amqp_url,
        &sb.key_dir,
    )))
    .await;
    let web = Running::launch(web::Application::build(web::Config::local(
        &sys.gateway.url(),
    )))
    .await;
    // Requests the HTTP families count: a known route and the 404 fallback.
    for service in [&sys.gateway, &sync_admin, &web] {
        sandbox::http::get(&format!("{}/health/live", service.url()), None).await;
    }
    sandbox::http::get(&format!("{}/no/such/page", sys.gateway.url()), None).await;

    let before = (scrape(&sys.auth).await, scrape(&sys.users).await);
    let published_before = value(&before.0, "portal_relay_published_total").unwrap_or(0.0);
    let applied_before = value(&before.1, APPLIED_USERS).unwrap_or(0.0);
    let clinicians_before = value(&scrape(&appointments).await, APPLIED_CLINICIANS).unwrap_or(0.0);
    for i in 0..10 {
        auth_common::create_user(
            &sys.auth_db,
            &format!("metrics-{i}@clinic.test"),
            Role::Nurse,
        )
        .await;
    }
    poll_until(SETTLE, "10 more applied by each consumer", || async {
        let users = value(&scrape(&sys.users).await, APPLIED_USERS)?;
        let clinicians = value(&scrape(&appointments).await, APPLIED_CLINICIANS)?;
        (users - applied_before == 10.0 && clinicians - clinicians_before == 10.0).then_some(())
    })
    .await;
    let auth = scrape(&sys.auth).await;
    assert_eq!(
        value(&auth, "portal_relay_published_total").unwrap() - published_before,
        10.0,
        "{auth}"
    );
    assert_eq!(
        value(&auth, "portal_outbox_unpublished"),
        Some(0.0),
        "{auth}"
    );

    let families: [(&str, &Running, &[&str]); 6] = [
        (
            "auth-service",
            &sys.auth,
            &[
                "portal_outbox_unpublished",
                "portal_outbox_oldest_unpublished_age_seconds",
                "portal_relay_published_total",
                "portal_relay_confirm_duration_seconds_bucket",
                "portal_relay_batch_size_bucket",
                "portal_db_pool_connections{database=\"auth_db\",state=\"max\"}",
            ],
        ),
        (
            "user-service",
            &sys.users,
            &[
                "portal_consumer_lag_seconds_bucket",
                "portal_consumer_apply_duration_seconds_bucket",
                "portal_consumer_batch_size_bucket",
                "portal_consumer_queue_messages{queue=\"user-service.user-events\"}",
                "portal_consumer_queue_messages{queue=\"user-service.user-events.dlq\"}",
                "portal_consumer_queue_consumers{queue=\"user-service.user-events\"} 1",
            ],
        ),
        (
            "appointment-service",
            &appointments,
            &["portal_consumer_lag_seconds_bucket", APPLIED_CLINICIANS],
        ),
        ("sync-admin", &sync_admin, &["portal_http_requests_total"]),
        (
            "gateway",
            &sys.gateway,
            &[
                "portal_http_requests_total{method=\"GET\",route=\"/health/live\",status=\"200\"}",
                "portal_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}",
                "portal_http_request_duration_seconds_bucket",
            ],
        ),
        (
            "web",
            &web,
            &["portal_http_requests_total", "portal_build_info"],
        ),
    ];
    let mut exported = String::new();
    for (service, running, expected) in families {
        let text = scrape(running).await;
        exported.push_str(&text);
        if let Err(complaints) = promtool(&text) {
            panic!("{service}: promtool check metrics:\n{complaints}\n{text}");
        }
        assert!(
            text.contains(&format!("service=\"{service}\"")),
            "{service}: build info\n{text}"
        );
        for family in expected {
            assert!(text.contains(family), "{service}: no {family}\n{text}");
        }
    }
    // What the alerts and the dashboard ask for exists.
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let rules = deploy.join("prometheus/alerts.yml");
    let checked =
        Command::new(std::env::var("PROMTOOL").unwrap_or_else(|_| "/usr/bin/promtool".into()))
            .args(["check", "rules"])
            .arg(&rules)
            .output()
            .unwrap();
    assert!(
        checked.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let dashboard = std::fs::read_to_string(deploy.join("grafana/portal-sync.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(parsed["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let asked = std::fs::read_to_string(&rules).unwrap() + &dashboard;
    let names: std::collections::BTreeSet<&str> = asked
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("portal_"))
        .collect();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        assert!(
            exported.contains(&format!("\n{name}"))
                || exported.contains(&format!("# TYPE {name} ")),
            "deploy/ uses {name}, which no service exports"
        );
    }
}

/// With `LOG_FORMAT=json`, a relay, a user-service and a seed run as processes write one JSON
/// object per line (time, level, service, message, fields), and their INFO lines name users by
/// id, never by email, while the seed's 10 users are published and applied.
#[tokio::test]
async fn json_logs_are_one_object_per_line_and_name_no_email_at_info() {
    use sandbox::process::{Process, Spec};
    let sb = Sandbox::for_test().await;
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_portal"));
    let settings = |spec: Spec| {
        spec.env("AUTH_DATABASE_URL", sb.database_url("auth"))
            .env("USER_DATABASE_URL", sb.database_url("user"))
            .env("AMQP_URL", &sb.amqp_url)
            .env("JWT_KEY_DIR", &sb.key_dir.0)
            .env("LOG_FORMAT", "json")
            .env(
                "RUST_LOG",
                "warn,portal=info,auth_service=info,user_service=info,consumer=info,platform=info",
            )
    };
    // The key pair the user-service reads (the auth-service would create it).
    sb.key_dir.ensure_key_pair().unwrap();
    let relay = Process::start(
        exe,
        &settings(Spec::new("relay", &["relay"])).env("RELAY_HTTP_PORT", "0"),
        &sb.dir,
    )
    .await
    .unwrap();
    let users = Process::start(
        exe,
        &settings(Spec::new("user-service", &["user-service"])).http("USER_ADDR"),
        &sb.dir,
    )
    .await
    .unwrap();
    let seed = crate::cli::portal(&sb)
        .arg("seed")
        .env("LOG_FORMAT", "json")
        .env(
            "RUST_LOG",
            "warn,portal=info,auth_service=info,platform=info",
        )
        .output()
        .await
        .unwrap();
    assert!(seed.status.success());
    let user_db = crate::user_common::pool(&sb).await;
    poll_until(SETTLE, "the seed applied", || async {
        (sandbox::db::count(&user_db, "SELECT count(*) FROM users").await >= 10).then_some(())
    })
    .await;
    let (relay_log, users_log) = (relay.log_path.clone(), users.log_path.clone());
    relay.stop().await.unwrap();
    users.stop().await.unwrap();

    let mut synced = 0;
    let logs = [
        ("relay", std::fs::read_to_string(relay_log).unwrap()),
        ("user-service", std::fs::read_to_string(users_log).unwrap()),
        ("portal", String::from_utf8_lossy(&seed.stderr).into_owned()),
    ];
    for (service, log) in &logs {
        // The seed reports on standard output; its log (standard error) may be empty.
        assert!(
            *service == "portal" || !log.trim().is_empty(),
            "{service} logged nothing"
        );
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let object: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{service}: not a JSON line ({e}): {line}"));
            for key in ["time", "level", "message", "fields"] {
                assert!(!object[key].is_null(), "{service}: no {key}: {line}");
            }
            assert_eq!(object["service"], *service, "{line}");
            if object["level"] == "INFO" {
                assert!(!line.contains('@'), "{service}: an email at INFO: {line}");
            }
            if object["message"] == "user synced" {
                assert!(object["fields"]["user_id"].is_string(), "{line}");
                synced += 1;
            }
        }
    }
    assert!(synced >= 10, "{synced} 'user synced' lines");
}
