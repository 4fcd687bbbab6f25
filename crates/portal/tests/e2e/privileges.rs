//! A part under the least-privilege setup (MANAGED_BY_SETUP) that connects as a PostgreSQL
//! superuser or a RabbitMQ administrator starts (a recovery may need it) but says so loudly:
//! one warning naming the part, the identity and the fix, and
//! `portal_privileged_identity{kind}` at 1 on its `/metrics`. Under identities of its own
//! neither appears. `portal config check` finds the environment overriding the identity the
//! credentials file holds for a part without connecting, and with `--connect` a superuser the
//! file itself names. Roles and broker users are named after the test's sandbox and removed
//! with it.

use contract::topology::{ConsumerQueues, USER_SERVICE};
use sandbox::process::{Process, Spec};
use sandbox::{poll_until, Sandbox, SETTLE};
use std::path::{Path, PathBuf};

/// The user-service's database migrated and its queues declared, as `portal setup` leaves them
/// (a service under the setup only checks both).
async fn as_the_setup_leaves_it(sb: &Sandbox) {
    let pool = user_service::prepare_database(&sb.database_url("user"), 1)
        .await
        .unwrap();
    pool.close().await;
    platform::amqp::ensure_topology(&sb.amqp_url, &[ConsumerQueues::for_consumer(USER_SERVICE)])
        .await
        .unwrap();
}

/// `portal user-service` under the setup with `env`, logging JSON lines, the privilege check's
/// own findings included.
async fn user_service(sb: &Sandbox, name: &str, env: &[(&str, &str)]) -> Process {
    let spec = Spec::on(sb, name, &["user-service"])
        .env("MANAGED_BY_SETUP", "true")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,security=info,platform::privilege=debug")
        .envs(env.iter().copied())
        .http("USER_ADDR");
    Process::start(Path::new(env!("CARGO_BIN_EXE_portal")), &spec, &sb.dir)
        .await
        .unwrap()
}

/// The log lines of `process` holding `needle`, as JSON.
fn logged(process: &Process, needle: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(&process.log_path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `portal_privileged_identity{kind="<kind>"}` on the part's `/metrics`.
async fn privileged_gauge(process: &Process, kind: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", process.url().unwrap()))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let series = format!("portal_privileged_identity{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_part_under_the_setup_running_as_a_superuser_says_so_loudly() {
    let sb = Sandbox::for_test().await;
    as_the_setup_leaves_it(&sb).await;
    // The sandbox's own URLs: PostgreSQL's superuser on the test's database, the broker's
    // guest, as an operator's environment overriding the setup's identities would give them.
    let mut users = user_service(&sb, "user-service-superuser", &[]).await;

    let warnings = poll_until(SETTLE, "both warnings in the log", || async {
        let lines = logged(&users, "privileged_identity");
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    assert_eq!(warnings.len(), 2, "one line per identity: {warnings:?}");
    for (kind, setting) in [
        ("postgres", "USER_DATABASE_URL"),
        ("rabbitmq", "USER_SERVICE_AMQP_URL"),
    ] {
        let line = warnings
            .iter()
            .find(|l| l["fields"]["kind"] == kind)
            .unwrap_or_else(|| panic!("a {kind} warning: {warnings:?}"));
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["target"], "security", "{line}");
        assert_eq!(line["fields"]["part"], "user-service", "{line}");
        assert_eq!(line["fields"]["setting"], setting, "{line}");
        let message = line["message"].as_str().unwrap();
        assert!(
            message.starts_with("user-service connects as `")
                && message.contains("run with the identity `portal setup` wrote")
                && message.contains(&format!("unset {setting} in the environment")),
            "names the part, the identity and the fix: {message}"
        );
    }
    let superuser = warnings.iter().find(|l| l["fields"]["kind"] == "postgres");
    assert!(
        superuser.is_some_and(|l| l["message"].as_str().unwrap().contains("superuser")),
        "{warnings:?}"
    );
    for kind in ["postgres", "rabbitmq"] {
        assert_eq!(privileged_gauge(&users, kind).await, Some(1.0), "{kind}");
    }
    users.check_alive().unwrap();
    users.stop().await.unwrap();
}

#[tokio::test]
async fn a_part_under_identities_of_its_own_says_nothing() {
    let sb = Sandbox::for_test().await;
    as_the_setup_leaves_it(&sb).await;
    // A login role with the user-service's table rights only, as `portal setup` makes it.
    let (role, operator) = (sb.pg_role("user_service"), sb.pg_role("operator"));
    let password = sandbox::world::random_id(24);
    let admin = platform::db::lazy_pool(&sb.database_url("user"), 1).unwrap();
    let mut statements = vec![
        format!("CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"),
        format!("CREATE ROLE \"{operator}\" NOLOGIN"),
    ];
    statements.extend(user_service::grants(&role, &operator));
    for sql in statements {
        sqlx::query(&sql).execute(&admin).await.unwrap();
    }
    admin.close().await;
    let mut database_url = url::Url::parse(&sb.database_url("user")).unwrap();
    database_url.set_username(&role).unwrap();
    database_url.set_password(Some(&password)).unwrap();
    // A broker user with no management tag, as the setup's are.
    let (_, amqp_url) = sb.extra_broker_user("user-service").await.unwrap();

    let users = user_service(
        &sb,
        "user-service-own-identity",
        &[
            ("USER_DATABASE_URL", database_url.as_str()),
            ("USER_SERVICE_AMQP_URL", &amqp_url),
        ],
    )
    .await;
    // The check runs beside the start: its own findings say when it is done.
    poll_until(SETTLE, "both identities checked", || async {
        let checked: Vec<String> = logged(&users, "connects with limited rights")
            .iter()
            .filter_map(|l| l["fields"]["setting"].as_str().map(str::to_owned))
            .collect();
        (checked.contains(&"USER_DATABASE_URL".to_owned())
            && checked.contains(&"USER_SERVICE_AMQP_URL".to_owned()))
        .then_some(())
    })
    .await;
    assert!(
        logged(&users, "privileged_identity").is_empty(),
        "no warning: {}",
        std::fs::read_to_string(&users.log_path).unwrap_or_default()
    );
    for kind in ["postgres", "rabbitmq"] {
        assert_eq!(privileged_gauge(&users, kind).await, Some(0.0), "{kind}");
    }
    users.stop().await.unwrap();
}

/// `portal config check <args>` with the credentials file `creds` and exactly `env`.
fn config_check(creds: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portal"));
    let out = sandbox::process::isolated(&mut cmd)
        .env("PORTAL_CREDENTIALS", creds)
        .envs(env.iter().copied())
        .args(["config", "check"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// An owner-only credentials file in the sandbox's directory holding `lines`.
fn credentials(sb: &Sandbox, name: &str, lines: &[String]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = sb.dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[tokio::test]
async fn config_check_refuses_an_environment_overriding_the_setups_identity() {
    let sb = Sandbox::for_test().await;
    let written = "postgres://user_service:pw@127.0.0.1:5432/user_db";
    let creds = credentials(
        &sb,
        "credentials.env",
        &[
            "MANAGED_BY_SETUP=true".to_owned(),
            format!("USER_DATABASE_URL={written}"),
            "USER_SERVICE_AMQP_URL=amqp://portal-user-service:pw@127.0.0.1:5672/%2f".to_owned(),
        ],
    );
    let check = |env: &[(&str, &str)]| config_check(&creds, &["user-service"], env);
    let (code, out) = check(&[]);
    assert_eq!(code, Some(0), "the file's identities: {out}");
    let superuser = "postgres://postgres@127.0.0.1:5432/user_db";
    let (code, out) = check(&[("USER_DATABASE_URL", superuser)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "user-service: USER_DATABASE_URL from the environment overrides the identity \
             `portal setup` wrote for this part"
        ),
        "{out}"
    );
    let (code, out) = check(&[(
        "USER_SERVICE_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    )]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("USER_SERVICE_AMQP_URL from the environment overrides"),
        "{out}"
    );
    // Not an override: the part's own variable from the file wins over AMQP_URL; the same
    // value as the file's; and no setup to hold the part to.
    for env in [
        &[("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")][..],
        &[("USER_DATABASE_URL", written)][..],
        &[
            ("USER_DATABASE_URL", superuser),
            ("MANAGED_BY_SETUP", "false"),
        ][..],
    ] {
        let (code, out) = check(env);
        assert_eq!(code, Some(0), "{env:?}: {out}");
    }
    // Every part: the sync admin API reads USER_DATABASE_URL too when the file names no
    // operator's URL of its own, so it is held to the same identity.
    let (code, out) = config_check(&creds, &[], &[("USER_DATABASE_URL", superuser)]);
    assert_eq!(code, Some(1), "{out}");
    for part in ["user-service", "sync-admin"] {
        assert!(
            out.contains(&format!(
                "{part}: USER_DATABASE_URL from the environment overrides"
            )),
            "{part}: {out}"
        );
    }
    assert!(out.contains("2 problems in the settings"), "{out}");
}

#[tokio::test]
async fn config_check_connect_finds_a_superuser_the_file_itself_names() {
    let sb = Sandbox::for_test().await;
    as_the_setup_leaves_it(&sb).await;
    let (_, amqp_url) = sb.extra_broker_user("user-service").await.unwrap();
    let creds = credentials(
        &sb,
        "credentials.env",
        &[
            "MANAGED_BY_SETUP=true".to_owned(),
            format!("USER_DATABASE_URL={}", sb.database_url("user")),
            format!("USER_SERVICE_AMQP_URL={amqp_url}"),
        ],
    );
    let (code, out) = config_check(&creds, &["user-service"], &[]);
    assert_eq!(
        code,
        Some(0),
        "offline, the file's own URL is its identity: {out}"
    );
    let (code, out) = config_check(&creds, &["user-service", "--connect"], &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("user-service: USER_DATABASE_URL connects as `")
            && out.contains("a PostgreSQL superuser")
            && out.contains("the credentials file itself names it in USER_DATABASE_URL"),
        "{out}"
    );
    assert!(
        out.contains("1 problem in the settings"),
        "the broker user, without a management tag, is none: {out}"
    );
}
