//! `portal healthcheck PART` as a container's HEALTHCHECK runs it: with exactly the part's own
//! settings in its environment. It passes while the part is ready, also when the part listens
//! on every address (asked on loopback); it fails, naming the URL and what it answered, when
//! the part answers not ready or nothing listens; and bad settings are a usage error.

use sandbox::process::{free_port, Process, Spec};
use sandbox::{poll_until, Sandbox, SETTLE};
use std::path::Path;

/// `portal healthcheck <part>` with exactly `env` (and no credentials file): its exit code and
/// its output (standard output, then standard error).
fn healthcheck(part: &str, env: &[(&str, String)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portal"));
    let out = sandbox::process::isolated(&mut cmd)
        .env("PORTAL_CREDENTIALS", "none")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["healthcheck", part])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn the_healthcheck_passes_on_a_ready_part_and_fails_where_nothing_listens() {
    let sb = Sandbox::for_test().await;
    let exe = Path::new(env!("CARGO_BIN_EXE_portal"));
    let spec = Spec::on(&sb, "user-service", &["user-service"]).http("USER_ADDR");
    let users = Process::start(exe, &spec, &sb.dir).await.unwrap();
    let port = users.port.unwrap();
    let url = format!("http://127.0.0.1:{port}/health/ready");

    // Live is not ready yet (its consumer connects to the broker): asked until it is.
    let at = |addr: &str| vec![("USER_ADDR", addr.to_owned())];
    let out = poll_until(SETTLE, "the user-service ready", || async {
        match healthcheck("user-service", &at(&format!("127.0.0.1:{port}"))) {
            (Some(0), out) => Some(out),
            _ => None,
        }
    })
    .await;
    assert_eq!(out.trim(), format!("{url} answered 200 OK"), "one line");
    let (code, out) = healthcheck("user-service", &at(&format!("0.0.0.0:{port}")));
    assert_eq!(code, Some(0), "every address is asked on loopback: {out}");
    assert!(out.contains(&url), "{out}");

    users.stop().await.unwrap();
    let (code, out) = healthcheck("user-service", &at(&format!("127.0.0.1:{port}")));
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    assert!(
        out.contains(&url) && out.contains("Connection refused"),
        "names the URL and the connection error: {out}"
    );

    // A part that answers, but not ready: the gateway with its upstreams down.
    let down = format!("http://127.0.0.1:{}", free_port().unwrap());
    let spec = Spec::new("gateway", &["gateway"])
        .env("AUTH_SERVICE_URL", &down)
        .env("USER_SERVICE_URL", &down)
        .http("GATEWAY_ADDR");
    let gateway = Process::start(exe, &spec, &sb.dir).await.unwrap();
    let port = gateway.port.unwrap();
    let (code, out) = healthcheck(
        "gateway",
        &[
            ("GATEWAY_ADDR", format!("127.0.0.1:{port}")),
            ("AUTH_SERVICE_URL", down.clone()),
            ("USER_SERVICE_URL", down.clone()),
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "http://127.0.0.1:{port}/health/ready answered 503 Service Unavailable"
        )) && out.contains("auth-service"),
        "names the URL, the status and what is down: {out}"
    );
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn bad_settings_or_a_port_chosen_at_start_are_a_usage_error() {
    for (part, var, value) in [
        ("user-service", "USER_ADDR", "nonsense"),
        ("relay", "RELAY_HTTP_PORT", "many"),
        ("web", "WEB_PORT", "0"),
    ] {
        let (code, out) = healthcheck(part, &[(var, value.to_owned())]);
        assert_eq!(code, Some(64), "{part} with {var}={value}: {out}");
        assert!(out.contains(var), "names {var}: {out}");
    }
}
