//! The `portal` binary as operators and scripts use it: exit codes and output of seed and
//! verify (one section per consumer's copy), and a user-service process killed with SIGKILL
//! catching up after restart.

use contract::Role;
use sandbox::auth::all_published;
use sandbox::db::count;
use sandbox::users::assert_in_sync;
use sandbox::{auth, users, System};
use sandbox::{poll_until, wait_for_user_version, Sandbox, SETTLE, TEST_PASSWORD};
use std::process::Output;
use tokio::process::Command;

/// `portal` on the sandbox's databases, vhost and keys, its services on free ports.
pub fn portal(sb: &Sandbox) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portal"));
    // The sandbox's settings only: nothing of the caller's environment (an operator's exported
    // SEED_ADMIN_PASSWORD, say), no install's credentials file, no setup.
    sandbox::process::isolated_async(&mut cmd)
        .env("PORTAL_CREDENTIALS", "none")
        .env("AUTH_DATABASE_URL", sb.database_url("auth"))
        .env("USER_DATABASE_URL", sb.database_url("user"))
        .env("APPOINTMENT_DATABASE_URL", sb.database_url("appointment"))
        .env("AMQP_URL", &sb.amqp_url)
        .env("JWT_KEY_DIR", &sb.key_dir.0)
        // As the in-process services and the token helpers sign them.
        .env(
            "TOKEN_TTL_SECONDS",
            platform::jwt::LOCAL_ACCESS_TTL_SECONDS.to_string(),
        )
        .env("AUTH_ADDR", "127.0.0.1:0")
        .env("USER_ADDR", "127.0.0.1:0")
        .env("APPOINTMENT_ADDR", "127.0.0.1:0")
        .env("GATEWAY_ADDR", "127.0.0.1:0")
        .env("WEB_PORT", "0")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

/// Runs `portal <args>` against the sandbox; exit code and stdout+stderr.
pub async fn portal_output(sb: &Sandbox, args: &[&str]) -> (i32, String) {
    run(portal(sb).args(args)).await
}

/// Runs `portal <args>` as an API client logged in as `admin_email` (password TEST_PASSWORD).
pub async fn portal_cli(
    sb: &Sandbox,
    args: &[&str],
    url: &str,
    admin_email: &str,
) -> (i32, String) {
    run(as_admin(portal(sb).args(args), url, admin_email)).await
}

/// `cmd` as an API client of `url` logged in as `admin_email` (password TEST_PASSWORD).
fn as_admin<'a>(cmd: &'a mut Command, url: &str, admin_email: &str) -> &'a mut Command {
    cmd.env("PORTAL_URL", url)
        .env("PORTAL_EMAIL", admin_email)
        .env("PORTAL_PASSWORD", TEST_PASSWORD)
}

async fn run(cmd: &mut Command) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().await.unwrap();
    let out = String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&stderr);
    (status.code().unwrap_or(-1), out)
}

#[tokio::test]
async fn seed_is_idempotent_and_verify_exit_codes_tell_sync_drift_and_outage_apart() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().appointments().start().await;
    let (auth, users) = (sys.auth_db.clone(), sys.user_db().clone());
    let appointment_db = sys.appointment_db().clone();

    let (code, out) = run(portal(&sb)
        .arg("seed")
        .env("SEED_ADMIN_PASSWORD", "a-long-ward-pw"))
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("seed: 10 created, 0 already present"), "{out}");
    let (code, out) = run(portal(&sb).arg("seed")).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("seed: 0 created, 10 already present"), "{out}");
    assert_eq!(
        count(&auth, "SELECT count(*) FROM event_store").await,
        10,
        "a second seed writes no event"
    );
    assert_eq!(
        count(&auth, "SELECT count(*) FROM users WHERE role = 'doctor'").await,
        6
    );

    poll_until(SETTLE, "10 users in user_db and appointment_db", || async {
        (count(&users, "SELECT count(*) FROM users").await == 10
            && count(&appointment_db, "SELECT count(*) FROM clinicians").await == 10)
            .then_some(())
    })
    .await;
    let (code, out) = run(portal(&sb).arg("verify")).await;
    assert_eq!(
        (code, out.trim()),
        (
            0,
            "user-service (user_db): in sync: 10 users\n\
             appointment-service (appointment_db): in sync: 10 users"
        )
    );

    sqlx::query("DELETE FROM users WHERE email = 'farai.ncube@clinic.co.zw'")
        .execute(&users)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET role = 'nurse' WHERE email = 'tendai.moyo@clinic.co.zw'")
        .execute(&users)
        .await
        .unwrap();
    let (code, out) = run(portal(&sb).arg("verify")).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("missing") && out.contains("farai.ncube@clinic.co.zw"),
        "{out}"
    );
    assert!(out.contains("mismatch") && out.contains("role"), "{out}");
    assert!(
        out.contains(
            "user-service (user_db): out of sync: 2 differences among 10 users (missing 1, \
             stale 0, mismatched 1, extra 0)"
        ),
        "{out}"
    );
    assert!(
        out.contains("in auth_db, not in user_db")
            && out.contains(r#"role is "nurse" in user_db, "doctor" in auth_db"#),
        "{out}"
    );
    assert!(
        out.contains("appointment-service (appointment_db): in sync: 10 users"),
        "the other copy is untouched: {out}"
    );
    assert!(
        out.contains("out of sync: user_db differs from auth_db"),
        "{out}"
    );

    let (code, out) = run(portal(&sb).arg("verify").env(
        "USER_DATABASE_URL",
        "postgres://postgres@127.0.0.1:1/user_db",
    ))
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("cannot reach user_db"), "{out}");
    // One copy out of reach: the others are still compared and reported, and it exits 2.
    let (code, out) = run(portal(&sb).arg("verify").env(
        "APPOINTMENT_DATABASE_URL",
        "postgres://postgres@127.0.0.1:1/appointment_db",
    ))
    .await;
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("cannot reach appointment_db")
            && out.contains("user-service (user_db): out of sync: 2 differences"),
        "{out}"
    );
}

#[tokio::test]
async fn a_user_service_killed_with_sigkill_catches_up_after_restart() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).start().await;
    let (auth, users) = (sys.auth_db.clone(), users::pool(&sb).await);

    let mut child = portal(&sb).arg("user-service").spawn().unwrap();
    let first = auth::create_user(&auth, "first@clinic.test", Role::Doctor).await;
    wait_for_user_version(&users, first, 1, SETTLE).await;

    child.kill().await.unwrap(); // SIGKILL: no clean shutdown
    let during = auth::create_user(&auth, "while-dead@clinic.test", Role::Doctor).await;
    all_published(&auth).await; // while the consumer is dead

    let _restarted = portal(&sb).arg("user-service").spawn().unwrap();
    wait_for_user_version(&users, during, 1, SETTLE).await;
    assert_in_sync(&auth, &users).await;
}

/// Every command has help, and a part's help lists the settings that part reads and not
/// another part's: `portal web --help` is about the web portal.
#[tokio::test]
async fn every_command_has_help_listing_its_own_settings_only() {
    let help = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portal"));
        let out = sandbox::process::isolated(&mut cmd)
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?} --help");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(help(&[]).contains("64"), "the exit codes are listed");
    // (command, settings its help lists, settings of other parts it does not)
    let cases: [(&str, &[&str], &[&str]); 12] = [
        (
            "up",
            &[
                "AUTH_DATABASE_URL",
                "USER_DATABASE_URL",
                "WEB_PORT",
                "GATEWAY_ADDR",
                "RECONCILE_INTERVAL",
                "TOKEN_TTL_SECONDS",
                "JWKS_REFRESH",
                "ALLOW_PLAINTEXT_NETWORK",
                "METRICS_TOKEN",
                "APPOINTMENTS_VISIBLE_TO",
            ],
            // The development system keeps RabbitMQ's guest.
            &["SETUP_DISABLE_GUEST"],
        ),
        (
            "setup",
            &[
                "ADMIN_AMQP_URL",
                "RABBITMQ_MANAGEMENT_URL",
                "SETUP_DISABLE_GUEST",
                "ALLOW_PLAINTEXT_NETWORK",
            ],
            &["WEB_PORT", "TOKEN_TTL_SECONDS", "RELAY_BATCH_SIZE"],
        ),
        (
            "auth-service",
            &[
                "AUTH_DATABASE_URL",
                "AUTH_ADDR",
                "LOGIN_MAX_FAILURES",
                "RELAY_BATCH_SIZE",
                "TOKEN_TTL_SECONDS",
                "ALLOW_PLAINTEXT_NETWORK",
            ],
            &[
                "USER_DATABASE_URL",
                "WEB_PORT",
                "GATEWAY_AUTH_RATE",
                "CONSUMER_PREFETCH",
                "SEED_ADMIN_EMAIL",
                "JWKS_REFRESH",
                "METRICS_TOKEN",
                "APPOINTMENTS_VISIBLE_TO",
            ],
        ),
        (
            "relay",
            &[
                "AUTH_DATABASE_URL",
                "RELAY_BATCH_SIZE",
                "RELAY_HTTP_PORT",
                "ALLOW_PLAINTEXT_NETWORK",
            ],
            &[
                "TOKEN_TTL_SECONDS",
                "JWKS_REFRESH",
                "WEB_PORT",
                "USER_DATABASE_URL",
            ],
        ),
        (
            "user-service",
            &[
                "USER_DATABASE_URL",
                "USER_ADDR",
                "CONSUMER_PREFETCH",
                "JWKS_URL",
                "TOKEN_TTL_SECONDS",
                "JWKS_REFRESH",
                "ALLOW_PLAINTEXT_NETWORK",
            ],
            &[
                "AUTH_DATABASE_URL",
                "WEB_PORT",
                "RELAY_BATCH_SIZE",
                "RECONCILE_INTERVAL",
                "METRICS_TOKEN",
                "APPOINTMENTS_VISIBLE_TO",
            ],
        ),
        (
            "appointment-service",
            &[
                "APPOINTMENT_DATABASE_URL",
                "APPOINTMENT_ADDR",
                "CONSUMER_BATCH_SIZE",
                "TOKEN_TTL_SECONDS",
                "JWKS_REFRESH",
                "ALLOW_PLAINTEXT_NETWORK",
                "APPOINTMENTS_VISIBLE_TO",
            ],
            &[
                "AUTH_DATABASE_URL",
                "USER_DATABASE_URL",
                "WEB_PORT",
                "METRICS_TOKEN",
            ],
        ),
        (
            "gateway",
            &[
                "GATEWAY_ADDR",
                "AUTH_SERVICE_URL",
                "GATEWAY_TRUSTED_PROXIES",
                "METRICS_TOKEN",
                "ALLOW_PLAINTEXT_NETWORK",
            ],
            &[
                "AUTH_DATABASE_URL",
                "AMQP_URL",
                "WEB_PORT",
                "TOKEN_TTL_SECONDS",
                "JWKS_REFRESH",
                "APPOINTMENTS_VISIBLE_TO",
            ],
        ),
        (
            "web",
            &[
                "WEB_PORT",
                "GATEWAY_URL",
                "PORTAL_UTC_OFFSET",
                "WEB_SECURE_COOKIES",
                "METRICS_TOKEN",
                "ALLOW_PLAINTEXT_NETWORK",
            ],
            &[
                "AUTH_DATABASE_URL",
                "AMQP_URL",
                "GATEWAY_ADDR",
                "TOKEN_TTL_SECONDS",
                "JWKS_REFRESH",
                "APPOINTMENTS_VISIBLE_TO",
            ],
        ),
        (
            "sync-admin",
            &[
                "SYNC_ADMIN_ADDR",
                "OPERATOR_AUTH_DATABASE_URL",
                "RECONCILE_INTERVAL",
                "TOKEN_TTL_SECONDS",
                "JWKS_REFRESH",
                "ALLOW_PLAINTEXT_NETWORK",
            ],
            &[
                "WEB_PORT",
                "RELAY_BATCH_SIZE",
                "METRICS_TOKEN",
                "APPOINTMENTS_VISIBLE_TO",
            ],
        ),
        (
            "seed",
            &["AUTH_DATABASE_URL", "SEED_ADMIN_EMAIL"],
            // PostgreSQL needs no flag: another machine is reached with verify-full.
            &["WEB_PORT", "USER_DATABASE_URL", "ALLOW_PLAINTEXT_NETWORK"],
        ),
        (
            "verify",
            &[
                "OPERATOR_AUTH_DATABASE_URL",
                "OPERATOR_APPOINTMENT_DATABASE_URL",
            ],
            &["WEB_PORT", "LOGIN_LOCK", "ALLOW_PLAINTEXT_NETWORK"],
        ),
        ("config", &["check"], &[]),
    ];
    for (command, listed, absent) in cases {
        let text = help(&[command]);
        for var in listed {
            assert!(
                text.contains(var),
                "`portal {command} --help` lists {var}:\n{text}"
            );
        }
        for var in absent {
            assert!(
                !text.contains(var),
                "`portal {command} --help` does not list {var}:\n{text}"
            );
        }
    }
}

/// A mistyped flag is a usage error (64), not "a server is unreachable" (2): a systemd unit
/// (`RestartPreventExitStatus=64`) does not restart in a loop on it, and a script can tell.
#[tokio::test]
async fn a_usage_or_configuration_error_exits_64() {
    let run = crate::transport::run;
    let (code, err) = run(&["--no-such-flag"], &[]);
    assert_eq!(code, Some(64), "{err}");
    let (code, err) = run(&["relay"], &[("RELAY_BATCH_SIZE", "many")]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("RELAY_BATCH_SIZE"),
        "the variable is named: {err}"
    );
    let (code, err) = run(&["verify"], &[("LOG_FORMAT", "jsno")]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("LOG_FORMAT"), "{err}");
    // A credentials file that is named but missing is refused, not read as absent.
    let (code, err) = run(
        &["verify"],
        &[("PORTAL_CREDENTIALS", "/nonexistent/portal/credentials.env")],
    );
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("/nonexistent/portal/credentials.env"), "{err}");
    let (code, _) = run(&["--version"], &[]);
    assert_eq!(code, Some(0));
}

/// `portal config check` passes on good settings, printing each part's effective settings
/// with secrets redacted and the file's values marked as such, and names a bad variable.
#[tokio::test]
async fn config_check_shows_the_effective_settings_and_names_a_bad_one() {
    const SECRET: &str = "cfg-s3cret";
    let dir = std::env::temp_dir().join(format!(
        "portal-config-check-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let creds = dir.join("credentials.env");
    std::fs::write(
        &creds,
        format!("USER_DATABASE_URL=postgres://portal_users:{SECRET}@127.0.0.1:5432/user_db\nRELAY_BATCH_SIZE=250\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = |env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portal"));
        let out = sandbox::process::isolated(&mut cmd)
            .env("PORTAL_CREDENTIALS", &creds)
            .envs(env.iter().copied())
            .args(["config", "check"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = check(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains(SECRET), "no secret shown:\n{out}");
    let user_db = out
        .lines()
        .find(|l| l.trim_start().starts_with("USER_DATABASE_URL"))
        .unwrap_or_else(|| panic!("USER_DATABASE_URL listed:\n{out}"));
    assert!(
        user_db.contains("portal_users:***@") && user_db.contains("(credentials file)"),
        "{user_db}"
    );
    assert!(
        out.contains("RELAY_BATCH_SIZE") && out.contains("250"),
        "{out}"
    );
    let (code, out) = check(&[("GATEWAY_HEALTH_INTERVAL", "often")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("gateway:") && out.contains("GATEWAY_HEALTH_INTERVAL"),
        "{out}"
    );
    let (code, out) = check(&[("AMQP_URL", "amqp:guest:hunter2@nowhere")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(": AMQP_URL: "), "{out}");
    assert!(
        !out.contains("hunter2"),
        "a URL that does not parse is not shown: {out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn portal_users_manages_users_through_the_admin_api() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().gateway().start().await;
    let auth = sys.auth_db.clone();
    auth::create_user(&auth, "ops-admin@clinic.test", Role::Admin).await;
    let users = |args: &[&str]| {
        let mut cmd = portal(&sb);
        cmd.arg("users").args(args);
        as_admin(&mut cmd, &sys.gateway().url(), "ops-admin@clinic.test");
        cmd
    };

    let (code, out) = run(&mut users(&[
        "create",
        "--email",
        "cli.doc@clinic.test",
        "--first-name",
        "Cli",
        "--last-name",
        "Doctor",
        "--role",
        "doctor",
        "--phone",
        "+263 77 555 0000",
    ]))
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("temporary password"), "{out}");
    let (code, out) = run(&mut users(&["list", "--role", "doctor"])).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("cli.doc@clinic.test") && out.contains("1 of 1 users"),
        "{out}"
    );
    let (code, out) = run(&mut users(&[
        "update",
        "cli.doc@clinic.test",
        "--last-name",
        "Doctorate",
    ]))
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&mut users(&[
        "set-role",
        "cli.doc@clinic.test",
        "consultant",
    ]))
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&mut users(&["reset-password", "cli.doc@clinic.test"])).await;
    assert_eq!(code, 0, "{out}");
    let temporary = out
        .lines()
        .find_map(|l| l.strip_prefix("temporary password"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the temporary password printed")
        .to_owned();
    let relogin = api_client::ApiClient::new(&sys.gateway().url())
        .unwrap()
        .login("cli.doc@clinic.test", &temporary)
        .await
        .unwrap();
    assert!(relogin.user.must_change_password);
    let (code, out) = run(&mut users(&["deactivate", "cli.doc@clinic.test"])).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = run(&mut users(&["show", "cli.doc@clinic.test", "--json"])).await;
    assert_eq!(code, 0, "{out}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            shown["lastName"].as_str(),
            shown["role"].as_str(),
            shown["isActive"].as_bool(),
            shown["userVersion"].as_i64()
        ),
        // Created, updated, role set, password reset, deactivated.
        (Some("Doctorate"), Some("consultant"), Some(false), Some(5))
    );
    let (code, out) = run(&mut users(&["activate", "cli.doc@clinic.test"])).await;
    assert_eq!(code, 0, "{out}");

    // Refusals exit 1 with the API's message; an unreachable API exits 2.
    let (code, out) = run(&mut users(&["deactivate", "ops-admin@clinic.test"])).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("last active admin") && out.contains("HTTP 409"),
        "{out}"
    );
    let (code, out) = run(&mut users(&["show", "nobody@clinic.test"])).await;
    assert_eq!(code, 1, "{out}");
    let (code, out) = run(users(&["list"]).env("PORTAL_URL", "http://127.0.0.1:1")).await;
    assert_eq!(code, 2, "{out}");

    sys.eventually_in_sync().await; // user_db follows the CLI's changes
}

/// `portal users import`: bad lines are listed with their line number and the rest imported,
/// the temporary passwords land in a new owner-only file and log in, and importing the same
/// file again creates nothing; the copy follows.
#[tokio::test]
async fn portal_users_import_reports_bad_lines_imports_the_rest_and_is_idempotent() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().gateway().start().await;
    let auth = sys.auth_db.clone();
    auth::create_user(&auth, "import-admin@clinic.test", Role::Admin).await;
    let dir = sb.dir.join("import");
    std::fs::create_dir_all(&dir).unwrap();
    let csv = dir.join("staff.csv");
    std::fs::write(
        &csv,
        "email,firstName,lastName,role,phoneNumber\n\
         farai.doc@clinic.test,Farai,Ncube,doctor,+263 77 100 0001\n\
         not-an-email,Bad,Row,nurse,\n\
         \"rudo.nurse@clinic.test\",Rudo,\"Chikwanha, RN\",nurse,\n\
         tinashe@clinic.test,Tinashe,Mhlanga,surgeon,\n\
         kuda.pharm@clinic.test,Kuda,Sibanda,pharmacist\n\
         import-admin@clinic.test,Import,Admin,admin,\n",
    )
    .unwrap();
    let passwords = dir.join("passwords.csv");
    let import = |out: &std::path::Path| {
        let mut cmd = portal(&sb);
        cmd.args(["users", "import"])
            .arg(&csv)
            .arg("--passwords-out")
            .arg(out);
        as_admin(&mut cmd, &sys.gateway().url(), "import-admin@clinic.test");
        cmd
    };

    let (code, out) = run(&mut import(&passwords)).await;
    assert_eq!(code, 1, "some rows were invalid: {out}");
    assert!(out.contains("line 3: email"), "{out}");
    assert!(out.contains("line 5: role"), "{out}");
    assert!(
        out.contains("line 6: has 4 fields where the header has 5"),
        "{out}"
    );
    assert!(
        out.contains("6 rows: 2 created, 1 already there, 3 invalid"),
        "{out}"
    );
    let mode = std::fs::metadata(&passwords).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the passwords file is owner-only");
    let written = std::fs::read_to_string(&passwords).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two accounts: {written}");
    let farai: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(&farai[..2], ["2", "farai.doc@clinic.test"]);
    let login = api_client::ApiClient::new(&sys.gateway().url())
        .unwrap()
        .login("farai.doc@clinic.test", farai[3])
        .await
        .unwrap();
    assert!(login.user.must_change_password);
    let rudo = auth_service::store::find_by_email(
        &auth,
        &contract::Email::parse("rudo.nurse@clinic.test").unwrap(),
    )
    .await
    .unwrap()
    .expect("a quoted field with a comma is one field");
    assert_eq!(rudo.last_name, "Chikwanha, RN");

    // Again: nothing created, no passwords file, the same exit for the same bad lines.
    let users_before = count(&auth, "SELECT count(*) FROM users").await;
    let second = dir.join("second.csv");
    let (code, out) = run(&mut import(&second)).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("6 rows: 0 created, 3 already there, 3 invalid"),
        "{out}"
    );
    assert!(!second.exists(), "no passwords, no file");
    assert_eq!(
        count(&auth, "SELECT count(*) FROM users").await,
        users_before
    );
    // An existing passwords file is never overwritten: refused before anything is sent.
    let (code, out) = run(&mut import(&passwords)).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("already exists"), "{out}");
    assert!(!out.contains("rows:"), "nothing sent: {out}");
    assert_eq!(std::fs::read_to_string(&passwords).unwrap(), written);

    // A file without the required columns is refused before anything is sent.
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "mail,firstName,lastName,role\nx@y.test,A,B,nurse\n").unwrap();
    let mut cmd = portal(&sb);
    cmd.args(["users", "import"]).arg(&bad);
    as_admin(&mut cmd, &sys.gateway().url(), "import-admin@clinic.test");
    let (code, out) = run(&mut cmd).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown column \"mail\""), "{out}");

    sys.eventually_in_sync().await;
}

#[tokio::test]
async fn portal_up_stops_cleanly_on_sigterm_within_ten_seconds() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let sb = Sandbox::for_test().await;
    // Real ports: the gateway reaches the services at the addresses it is given.
    let port = || format!("127.0.0.1:{}", sandbox::process::free_port().unwrap());
    let mut child = portal(&sb)
        .arg("up")
        .env("AUTH_ADDR", port())
        .env("USER_ADDR", port())
        .env("APPOINTMENT_ADDR", port())
        .env("SYNC_ADMIN_ADDR", port())
        .env("GATEWAY_ADDR", port())
        .env(
            "WEB_PORT",
            sandbox::process::free_port().unwrap().to_string(),
        )
        .env("SEED_ADMIN_PASSWORD", "a-long-ward-pw")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Reads its output line by line until it says it is up (a deadline, not a sleep).
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !seen.last().is_some_and(|l| l.contains("stop with Ctrl-C")) {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(line))) => seen.push(line),
            other => panic!("portal up did not come up: {other:?}; printed {seen:?}"),
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("seed: 10 created")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("admin login") && l.contains("SEED_ADMIN_PASSWORD")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l
            .contains("appointment-service: 10 stored events and the end-of-history mark sent")),
        "a new appointment_db is backfilled: {seen:?}"
    );
    // The system works before it is stopped.
    let (auth, users) = (auth::pool(&sb).await, users::pool(&sb).await);
    poll_until(SETTLE, "the seed synced", || async {
        (count(&users, "SELECT count(*) FROM users").await == 10).then_some(())
    })
    .await;
    // The web portal answers beside the others, its login page first.
    let web = seen
        .iter()
        .find_map(|l| {
            l.strip_prefix("web portal")
                .map(|url| url.trim().to_owned())
        })
        .expect("the web portal's URL printed");
    let login = reqwest::get(format!("{web}/login")).await.unwrap();
    assert_eq!(login.status().as_u16(), 200);
    assert!(login.text().await.unwrap().contains("Log in"));
    // An appointment booked through the gateway for a seeded doctor is listed; deactivating the
    // doctor flags it.
    let gateway = seen
        .iter()
        .find_map(|l| l.strip_prefix("gateway").map(|url| url.trim().to_owned()))
        .expect("the gateway's URL printed");
    let admin = api_client::ApiClient::new(&gateway)
        .unwrap()
        .logged_in("admin@clinic.co.zw", "a-long-ward-pw")
        .await
        .unwrap();
    let doctors = admin
        .directory(&api_client::ListFilter {
            role: Some("doctor".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(doctors.total, 6);
    let doctor = doctors.items[0].user_id.0;
    let booking = contract::api::NewAppointment {
        patient_name: "Chipo Zhou".into(),
        doctor_id: doctor.to_string(),
        starts_at: (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339(),
        duration_minutes: 30,
        reason: None,
    };
    let booked = poll_until(SETTLE, "the appointment-service ready to book", || async {
        admin.book(&booking).await.ok()
    })
    .await;
    let listed = admin.appointments(&[]).await.unwrap();
    assert_eq!(listed.items, vec![booked.clone()]);
    admin.deactivate(doctor).await.unwrap();
    poll_until(SETTLE, "the appointment flagged", || async {
        let now = admin.appointment(booked.id).await.ok()?;
        (now.status == contract::api::AppointmentStatus::NeedsReassignment).then_some(())
    })
    .await;

    let pid = child.id().unwrap().to_string();
    let stopping = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("exited within 10 s")
        .unwrap();
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest += &line;
    }
    assert_eq!(status.code(), Some(0), "{rest}");
    assert!(rest.contains("stopped cleanly"), "{rest}");
    println!(
        "portal up stopped {} ms after SIGTERM",
        stopping.elapsed().as_millis()
    );
    assert_in_sync(&auth, &users).await;
    let (code, out) = run(portal(&sb).arg("verify")).await;
    assert_eq!(
        (code, out.trim()),
        (
            0,
            "user-service (user_db): in sync: 10 users\n\
             appointment-service (appointment_db): in sync: 10 users"
        )
    );
}

/// No password given in a URL reaches `--help`, an error message or a log line: an operator's
/// terminal, a CI log or a support ticket is not where credentials belong.
#[tokio::test]
async fn passwords_in_urls_never_reach_help_errors_or_logs() {
    const SECRET: &str = "t0p-s3cret-pw";
    let unreachable = |cmd: &mut Command| {
        sandbox::process::isolated_async(cmd)
            .env(
                "AUTH_DATABASE_URL",
                format!("postgres://postgres:{SECRET}@127.0.0.1:1/auth_db"),
            )
            .env(
                "USER_DATABASE_URL",
                format!("postgres://postgres:{SECRET}@127.0.0.1:1/user_db"),
            )
            .env(
                "APPOINTMENT_DATABASE_URL",
                format!("postgres://postgres:{SECRET}@127.0.0.1:1/appointment_db"),
            )
            .env("AMQP_URL", format!("amqp://guest:{SECRET}@127.0.0.1:1/%2f"))
            .env("SEED_ADMIN_PASSWORD", SECRET)
            .env("PORTAL_CREDENTIALS", "none")
            .env("PORTAL_PASSWORD", SECRET)
            .env("RUST_LOG", "debug")
            .kill_on_drop(true);
    };
    let mut outputs = Vec::new();
    for args in [
        &["--help"][..],
        &["up", "--help"],
        &["users", "list", "--help"],
        &["verify"],
        &["reconcile", "--dry-run"],
        &["dlq", "list"],
        &["replay", "--to", "user-service.user-events"],
        &["consumer", "add", "late"],
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portal"));
        unreachable(cmd.args(args));
        let (code, out) = run(&mut cmd).await;
        outputs.push((args.join(" "), code, out));
    }
    // A service that cannot reach its database or broker logs its outage; its log must not
    // carry the URL's password either.
    let mut relay = Command::new(env!("CARGO_BIN_EXE_portal"));
    unreachable(relay.arg("relay"));
    let child = relay
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let relay_out =
        tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
            .await
            .map(|o| o.unwrap())
            .ok();
    if let Some(o) = relay_out {
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        outputs.push(("relay".into(), o.status.code().unwrap_or(-1), text));
    }
    for (what, code, out) in &outputs {
        assert!(
            !out.contains(SECRET),
            "`portal {what}` (exit {code}) shows the password:\n{out}"
        );
    }
    let errors: Vec<_> = outputs
        .iter()
        .filter(|(w, ..)| !w.contains("help"))
        .collect();
    assert!(
        errors.iter().any(|(_, code, _)| *code == 2),
        "the unreachable servers were reported: {errors:?}"
    );
    assert!(
        outputs
            .iter()
            .any(|(_, _, out)| out.contains("127.0.0.1:1")),
        "the messages still say where: {outputs:?}"
    );
}
