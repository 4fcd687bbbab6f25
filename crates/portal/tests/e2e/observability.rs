//! What an operator watches: every service's `GET /metrics` (auth-service with its relay,
//! user-service, appointment-service, sync admin API, gateway, web portal) passes
//! `promtool check metrics`, carries its families, and counts what happened: 10 changes are
//! 10 more applied on each consumer and 10 more published by the relay. The alert rules and
//! the dashboard under `deploy/` pass `promtool check rules` and name only metrics the services
//! really export.

use contract::Role;
use sandbox::{auth, users, System};
use sandbox::{poll_until, Running, Sandbox, SETTLE};
use std::io::Write;
use std::process::{Command, Stdio};

/// The parts the metrics test reads by name.
struct Sys<'a> {
    auth: &'a Running,
    users: &'a Running,
    gateway: &'a Running,
    auth_db: &'a sqlx::PgPool,
}

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

/// Every part in this process on one sandbox: the auth-service with its relay, the
/// user-service, the appointment-service (backfilled, so ready and quiet before the test starts
/// counting), the sync admin API, the gateway in front of them (every route) and the web portal.
async fn start_whole(sb: &Sandbox) -> System {
    System::builder(sb)
        .users()
        .backfilled()
        .sync_admin()
        .gateway()
        .web()
        .start()
        .await
}

#[tokio::test]
async fn every_service_serves_metrics_that_promtool_accepts_and_that_count_the_changes() {
    let sb = Sandbox::for_test().await;
    let whole = start_whole(&sb).await;
    let (appointments, sync_admin, web) = (whole.appointments(), whole.sync_admin(), whole.web());
    let users = whole.users.as_ref().unwrap();
    let sys = Sys {
        auth: &whole.auth,
        users,
        gateway: whole.gateway(),
        auth_db: &whole.auth_db,
    };
    // Requests the HTTP families count: a known route and the 404 fallback.
    for service in [sys.gateway, sync_admin, web] {
        sandbox::http::get(&format!("{}/health/live", service.url()), None).await;
    }
    sandbox::http::get(&format!("{}/no/such/page", sys.gateway.url()), None).await;

    let before = (scrape(sys.auth).await, scrape(sys.users).await);
    let published_before = value(&before.0, "portal_relay_published_total").unwrap_or(0.0);
    let applied_before = value(&before.1, APPLIED_USERS).unwrap_or(0.0);
    let clinicians_before = value(&scrape(appointments).await, APPLIED_CLINICIANS).unwrap_or(0.0);
    for i in 0..10 {
        auth::create_user(
            sys.auth_db,
            &format!("metrics-{i}@clinic.test"),
            Role::Nurse,
        )
        .await;
    }
    poll_until(SETTLE, "10 more applied by each consumer", || async {
        let users = value(&scrape(sys.users).await, APPLIED_USERS)?;
        let clinicians = value(&scrape(appointments).await, APPLIED_CLINICIANS)?;
        (users - applied_before == 10.0 && clinicians - clinicians_before == 10.0).then_some(())
    })
    .await;
    let auth = scrape(sys.auth).await;
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
            sys.auth,
            &[
                "portal_outbox_unpublished",
                "portal_outbox_oldest_unpublished_age_seconds",
                "portal_relay_published_total",
                "portal_relay_confirm_duration_seconds_bucket",
                "portal_relay_batch_size_bucket",
                "portal_db_pool_connections{database=\"auth_db\",state=\"max\"}",
                "portal_db_pool_acquire_wait_seconds{database=\"auth_db\"}",
                "portal_outbox_cleanup_batch_seconds_bucket{table=\"auth_db.outbox\"",
                "portal_outbox_cleanup_deleted_total{table=\"auth_db.message_outbox\"}",
                "portal_table_size_bytes{database=\"auth_db\",table=\"event_store\"}",
                "portal_table_dead_tuple_ratio{database=\"auth_db\",table=\"outbox\"}",
            ],
        ),
        (
            "user-service",
            sys.users,
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
            appointments,
            &[
                "portal_consumer_lag_seconds_bucket",
                APPLIED_CLINICIANS,
                "portal_table_size_bytes{database=\"appointment_db\",table=\"outbox\"}",
            ],
        ),
        ("sync-admin", sync_admin, &["portal_http_requests_total"]),
        (
            "gateway",
            sys.gateway,
            &[
                "portal_http_requests_total{method=\"GET\",route=\"/health/live\",status=\"200\"}",
                "portal_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}",
                "portal_http_request_duration_seconds_bucket",
            ],
        ),
        (
            "web",
            web,
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

/// `spec` as a `portal` child of the sandbox `sb`, logging JSON lines.
fn json_logged(sb: &Sandbox, spec: sandbox::process::Spec) -> sandbox::process::Spec {
    spec.sandbox(sb).env("LOG_FORMAT", "json")
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
        json_logged(&sb, spec).env(
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
    let user_db = users::pool(&sb).await;
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

/// `portal status` on a whole system: exit 0 and "healthy"; its `--json` carries the admin
/// API's figures; a dead letter makes it exit 1 naming the queue; with the user-service stopped
/// while a change waits, exit 1 naming it; with the gateway out of reach, exit 2.
#[tokio::test]
async fn portal_status_exits_by_the_systems_health_and_agrees_with_the_admin_api() {
    let sb = Sandbox::for_test().await;
    let mut whole = start_whole(&sb).await;
    let token = whole.admin_token().await;
    let web_port = whole.web().url().rsplit(':').next().unwrap().to_owned();
    // Where the user-service was: after it stops, nothing answers there.
    let users_url = whole.users.as_ref().unwrap().url();
    let status = |gateway: &str, extra: &[&str]| {
        let mut cmd = crate::cli::portal(&sb);
        cmd.arg("status")
            .args(extra)
            .env("PORTAL_URL", gateway)
            .env("PORTAL_TOKEN", &token)
            .env("AUTH_SERVICE_URL", whole.auth.url())
            .env("USER_SERVICE_URL", &users_url)
            // Fields, not `System`'s accessors: the closure holds these parts only, and the
            // user-service is taken out and stopped below.
            .env(
                "APPOINTMENT_SERVICE_URL",
                whole.appointments.as_ref().unwrap().url(),
            )
            .env("SYNC_ADMIN_URL", whole.sync_admin.as_ref().unwrap().url())
            .env("WEB_PORT", &web_port);
        cmd
    };
    let run = |mut cmd: tokio::process::Command| async move {
        let out = cmd.output().await.unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let gateway = whole.gateway().url();
    whole.all_published().await;

    let (code, screen, err) = run(status(&gateway, &[])).await;
    assert_eq!(code, 0, "{screen}{err}");
    assert!(screen.contains(": healthy"), "{screen}");
    assert!(screen.contains("user-service") && screen.contains("appointment-service"));

    let (code, json, err) = run(status(&gateway, &["--json"])).await;
    assert_eq!(code, 0, "{json}{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let api = api_client::ApiClient::new(&gateway)
        .unwrap()
        .authenticated(token.clone());
    let figures = serde_json::to_value(api.sync_status().await.unwrap()).unwrap();
    for key in ["consumers", "verify", "unavailable"] {
        assert_eq!(json["sync"][key], figures[key], "{key}");
    }
    assert_eq!(
        json["sync"]["outbox"]["unpublished"],
        figures["outbox"]["unpublished"]
    );

    // A message the user-service can never apply.
    sandbox::amqp::publish_to_queue(
        &sb.amqp_url,
        "user-service.user-events",
        &[b"not json".to_vec()],
    )
    .await
    .unwrap();
    poll_until(SETTLE, "the dead letter counted", || async {
        let s = api.sync_status().await.ok()?;
        s.consumers?
            .iter()
            .any(|c| c.dead_letter.messages == Some(1))
            .then_some(())
    })
    .await;
    let (code, screen, _) = run(status(&gateway, &[])).await;
    assert_eq!(code, 1, "{screen}");
    assert!(
        screen.contains("1 messages in user-service.user-events.dlq"),
        "{screen}"
    );

    // The user-service stopped while a change waits for it.
    whole.users.take().unwrap().stop().await.unwrap();
    auth::create_user(&whole.auth_db, "waiting@clinic.test", Role::Nurse).await;
    let (code, screen, _) = run(status(&gateway, &[])).await;
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("user-service does not answer"), "{screen}");
    assert!(
        screen.contains("no consumer reads user-service.user-events"),
        "{screen}"
    );

    let (code, screen, err) = run(status("http://127.0.0.1:1", &[])).await;
    assert_eq!(code, 2, "{screen}{err}");
}

/// One id from the HTTP request to the applied row: an admin's PATCH sent through the gateway
/// with a chosen `traceparent` is stored with its trace id in the outbox (the audit trail shows
/// it), published by the relay with that trace id in its `traceparent` AMQP header, and each
/// consumer's "user synced" line carries it.
#[tokio::test]
async fn a_chosen_trace_id_follows_a_change_from_the_request_to_each_consumers_log() {
    use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
    use sandbox::process::{Process, Spec};
    let sb = Sandbox::for_test().await;
    // No user-service in this process (the consumers run as processes below): the gateway's
    // directory routes go to a closed port.
    let sys = System::builder(&sb)
        .auth_with(|config| config.run_relay = false)
        .gateway()
        .start()
        .await;
    let (gateway, auth_db) = (sys.gateway(), sys.auth_db.clone());
    // A queue of the test's own on the exchange, to read the relay's headers.
    platform::amqp::ensure_topology(&sb.amqp_url, &[])
        .await
        .unwrap();
    let conn = platform::amqp::connect(&sb.amqp_url, "trace test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        "trace-watch",
        QueueDeclareOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        "trace-watch",
        contract::topology::EXCHANGE,
        "user.updated",
        QueueBindOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();

    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_portal"));
    let settings = |spec: Spec| json_logged(&sb, spec).env("RUST_LOG", "warn,consumer=info");
    let relay = Process::start(
        exe,
        &settings(Spec::new("relay", &["relay"])).env("RELAY_HTTP_PORT", "0"),
        &sb.dir,
    )
    .await
    .unwrap();
    let consumers = [
        ("user-service", "USER_ADDR"),
        ("appointment-service", "APPOINTMENT_ADDR"),
    ];
    let mut running = Vec::new();
    for (name, addr) in consumers {
        let process = Process::start(exe, &settings(Spec::new(name, &[name])).http(addr), &sb.dir)
            .await
            .unwrap();
        let ready = format!("{}/health/ready", process.url().unwrap());
        poll_until(SETTLE, "the consumer connected", || async {
            let (_, body) = sandbox::http::get(&ready, None).await;
            (body["checks"]["broker"] == true).then_some(())
        })
        .await;
        running.push(process);
    }

    let nurse = auth::create_user(&auth_db, "traced@clinic.test", Role::Nurse).await;
    let token = auth::admin_token(&auth_db, &gateway.url()).await;
    let chosen = "0af7651916cd43dd8448eb211c80319c";
    let answer = reqwest::Client::new()
        .patch(format!("{}/api/v1/auth/admin/users/{nurse}", gateway.url()))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{chosen}-b7ad6b7169203331-01"))
        .json(&serde_json::json!({"firstName": "Traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // The audit trail (what `portal events --user` prints) holds it.
    let (_, trail) = sandbox::http::get(
        &format!("{}/api/v1/auth/admin/users/{nurse}/events", gateway.url()),
        Some(&token),
    )
    .await;
    let updated = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["eventType"] == "user.updated")
        .cloned()
        .unwrap();
    assert_eq!(updated["traceId"], chosen, "{trail}");

    // The relay's AMQP header carries it.
    let header = poll_until(SETTLE, "the update published", || async {
        let m = ch
            .basic_get("trace-watch", BasicGetOptions { no_ack: true })
            .await
            .ok()??;
        let headers = platform::amqp::headers_of(&m.delivery.properties);
        platform::amqp::header_text(&headers, "traceparent")
    })
    .await;
    assert_eq!(
        platform::trace::trace_id_of(&header),
        Some(chosen),
        "{header}"
    );

    // Each consumer's line says so.
    for process in &running {
        let log = process.log_path.clone();
        poll_until(SETTLE, "the traced apply logged", || async {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|l| {
                    l["message"] == "user synced"
                        && l["fields"]["trace_id"] == chosen
                        && l["fields"]["user_id"] == nurse.to_string()
                })
                .then_some(())
        })
        .await;
    }
    relay.stop().await.unwrap();
    for process in running {
        process.stop().await.unwrap();
    }
    conn.close(200, "done").await.ok();
}
