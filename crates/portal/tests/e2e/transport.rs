//! TLS off loopback by default (issue 26): a part given a plaintext URL to another machine —
//! `amqp://` to a broker, `http://` to another part, the setup's administrative URLs, the
//! operator tools' — refuses to start (exit 64) naming the setting and the way out, before it
//! connects anywhere; with ALLOW_PLAINTEXT_NETWORK=true it starts and says so once, under the
//! `security` target. And `portal setup` deletes a broker user when asked
//! (SETUP_DISABLE_GUEST), never the one it logs in as. Nothing here touches the machine's own
//! `guest`: the refusals stop before any connection, and the deletion is tried on a user the
//! test creates.

use sandbox::process::{Process, Spec};
use sandbox::{poll_until, Sandbox, SETTLE};
use std::path::Path;

/// A host of TEST-NET-1 (RFC 5737): another machine that never answers.
const ELSEWHERE: &str = "192.0.2.10";

/// `portal <args>` with exactly `env` (and no credentials file): its exit code and standard
/// error.
pub(crate) fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portal"));
    let out = sandbox::process::isolated(&mut cmd)
        .env("PORTAL_CREDENTIALS", "none")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Exit 64, naming `setting` and both ways out, never the password.
fn assert_refused(what: &str, (code, err): (Option<i32>, String), setting: &str, tls: &str) {
    assert_eq!(code, Some(64), "{what}: {err}");
    assert!(
        err.contains(&format!("{setting}: "))
            && err.contains(tls)
            && err.contains("ALLOW_PLAINTEXT_NETWORK=true"),
        "{what} names {setting}, {tls} and ALLOW_PLAINTEXT_NETWORK: {err}"
    );
    assert!(!err.contains("s3cret"), "{what} shows no password: {err}");
}

#[tokio::test]
async fn a_plaintext_url_to_another_machine_is_refused_at_start() {
    let remote_amqp = format!("amqp://u:s3cret@{ELSEWHERE}:5672/%2f");
    // The broker, under each setting a part reads it from; a cluster is refused for one node.
    let cluster = format!("amqp://u:s3cret@127.0.0.1:5672/%2f,{remote_amqp}");
    for (args, setting, url) in [
        (&["user-service"][..], "AMQP_URL", remote_amqp.as_str()),
        (&["user-service"][..], "USER_SERVICE_AMQP_URL", &cluster),
        (
            &["appointment-service"][..],
            "APPOINTMENT_SERVICE_AMQP_URL",
            &remote_amqp,
        ),
        (&["auth-service"][..], "RELAY_AMQP_URL", &remote_amqp),
        (&["relay"][..], "AMQP_URL", &remote_amqp),
        (&["sync-admin"][..], "OPERATOR_AMQP_URL", &remote_amqp),
        (&["dlq", "list"][..], "OPERATOR_AMQP_URL", &remote_amqp),
        (
            &["replay", "--to", "user-service.user-events"][..],
            "OPERATOR_AMQP_URL",
            &remote_amqp,
        ),
        (&["setup"][..], "ADMIN_AMQP_URL", &remote_amqp),
    ] {
        let what = format!("portal {} with {setting}", args.join(" "));
        assert_refused(&what, run(args, &[(setting, url)]), setting, "amqps://");
    }
    // HTTP between the parts: the gateway's upstreams, the web portal's gateway, the setup's
    // management API, the operator's API client.
    let remote_http = format!("http://{ELSEWHERE}:3002");
    let replicas = format!("http://127.0.0.1:3002,{remote_http}");
    for (args, setting, url) in [
        (&["gateway"][..], "USER_SERVICE_URL", replicas.as_str()),
        (&["gateway"][..], "AUTH_SERVICE_URL", &remote_http),
        (&["gateway"][..], "APPOINTMENT_SERVICE_URL", &remote_http),
        (&["gateway"][..], "SYNC_ADMIN_URL", &remote_http),
        // Compose's service names are not this machine either.
        (&["web"][..], "GATEWAY_URL", "http://gateway:3000"),
        (&["setup"][..], "RABBITMQ_MANAGEMENT_URL", &remote_http),
        (&["users", "list"][..], "PORTAL_URL", &remote_http),
    ] {
        let what = format!("portal {} with {setting}", args.join(" "));
        assert_refused(&what, run(args, &[(setting, url)]), setting, "https://");
    }
    // TLS to another machine passes the check (these then fail later, unreachable, not 64).
    let (code, err) = run(
        &["users", "list"],
        &[
            ("PORTAL_URL", "https://192.0.2.10:1"),
            ("PORTAL_TOKEN", "t"),
        ],
    );
    assert_ne!(code, Some(64), "{err}");
    // `portal config check` says beforehand what a part would refuse.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portal"));
    let out = sandbox::process::isolated(&mut cmd)
        .env("PORTAL_CREDENTIALS", "none")
        .env("GATEWAY_URL", "http://gateway:3000")
        .args(["config", "check", "web"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("web: GATEWAY_URL: ") && said.contains("ALLOW_PLAINTEXT_NETWORK"),
        "{said}"
    );
}

/// With ALLOW_PLAINTEXT_NETWORK=true the same user-service starts (its consumer keeps trying
/// the unreachable broker in the background) and logs one warning under `security` naming the
/// setting and the URL, password hidden.
#[tokio::test]
async fn allowed_on_a_trusted_network_a_part_starts_and_warns_once() {
    let sb = Sandbox::for_test().await;
    let url = format!("amqp://u:s3cret@{ELSEWHERE}:5672/%2f");
    let spec = Spec::on(&sb, "user-service-plaintext", &["user-service"])
        .env("AMQP_URL", &url)
        .env("ALLOW_PLAINTEXT_NETWORK", "true")
        .env("LOG_FORMAT", "json")
        .http("USER_ADDR");
    let mut users = Process::start(Path::new(env!("CARGO_BIN_EXE_portal")), &spec, &sb.dir)
        .await
        .expect("the user-service starts with ALLOW_PLAINTEXT_NETWORK=true");
    let shown = format!("amqp://u:***@{ELSEWHERE}:5672/%2f");
    let warnings = || {
        std::fs::read_to_string(&users.log_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("plaintext_network"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let lines = poll_until(SETTLE, "the plaintext warning in the log", || async {
        let lines = warnings();
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert_eq!(lines.len(), 1, "one warning per URL: {lines:?}");
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["target"], "security", "{line}");
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["fields"]["setting"], "AMQP_URL", "{line}");
    assert_eq!(line["fields"]["url"], shown.as_str(), "{line}");
    assert!(!lines[0].contains("s3cret"), "{line}");
    users.check_alive().unwrap();
    // Killed, not stopped: its consumer may be waiting on a connection that never answers.
    users.kill().await.unwrap();
}

/// `portal setup` with SETUP_DISABLE_GUEST=true while ADMIN_AMQP_URL logs in as guest (the
/// default) refuses before it connects anywhere; the deletion itself, through the management
/// API, is tried on a user of this test's own, and never on the user the setup logs in as.
#[tokio::test]
async fn the_setup_deletes_a_broker_user_but_never_the_one_it_logs_in_as() {
    let (code, err) = run(&["setup"], &[("SETUP_DISABLE_GUEST", "true")]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("SETUP_DISABLE_GUEST")
            && err.contains("ADMIN_AMQP_URL")
            && err.contains("guest")
            && err.contains("lock"),
        "{err}"
    );

    let sb = Sandbox::for_test().await;
    let admin = platform::amqp::broker_user_of(&sb.amqp_url).unwrap();
    let throwaway = sb.broker_user("not-guest");
    sb.management
        .put_user(&throwaway, &sandbox::world::random_id(24))
        .await
        .unwrap();
    let refused = ops::setup::disable_broker_user(&sb.management, &admin, &admin)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("lock itself out"), "{refused}");
    assert!(sb.management.users().await.unwrap().contains(&admin));
    assert!(
        ops::setup::disable_broker_user(&sb.management, &throwaway, &admin)
            .await
            .unwrap(),
        "it was there"
    );
    assert!(!sb.management.users().await.unwrap().contains(&throwaway));
    assert!(
        !ops::setup::disable_broker_user(&sb.management, &throwaway, &admin)
            .await
            .unwrap(),
        "gone already: nothing to do, no error"
    );
}
