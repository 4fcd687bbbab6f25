//! A consumer outside the repository, as another team would run one: `portal consumer add`
//! makes its broker user (only its rights, the password handed over once in an owner-only
//! file), its queues and its registration, and backfills it; the reference Python consumer
//! (`examples/python-consumer`) keeps its copy in a database of its own through the whole user
//! lifecycle; `portal verify` judges it by its receipts; what it cannot apply lands in its
//! dead-letter queue, and the sync admin API and `portal status` show it with its lag. A clinician
//! provisioned, deactivated and deleted through SCIM reaches its copy as every other (the time
//! each copy took is printed).
//!
//! The Python environment is `scripts/prepare-tests`' (`PORTAL_PYTHON_CONSUMER_VENV`, by default
//! `/var/tmp/portal-python-consumer`): nothing is downloaded here.

use crate::cli::portal;
use contract::control::{Receipt, ReceiptEntry, RECEIPT_TYPE};
use contract::topology::CONTROL_EXCHANGE;
use contract::Role;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use ops::verify::{CopySpec, Field, Label, Options};
use platform::amqp::{self, Outgoing};
use sandbox::db::count;
use sandbox::http::{get, post, send, Method};
use sandbox::{poll_until, Sandbox, System, SETTLE};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};

/// The Python consumer's copy, compared with `auth_db` by `portal verify`'s own comparison (the
/// test reads the database; an operator would not, which is why `verify` uses receipts).
const PHARMACY: CopySpec = CopySpec {
    service: "pharmacy",
    database: "pharmacy_db",
    table: "users",
    fields: &Field::ALL,
    label: Label::Email,
    on_removed: None,
};

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/python-consumer")
        .join(file)
}

/// The virtual environment's Python, made by `scripts/prepare-tests` from the example's
/// requirements (still the same ones).
fn python() -> PathBuf {
    let venv = std::env::var_os("PORTAL_PYTHON_CONSUMER_VENV").map_or_else(
        || PathBuf::from("/var/tmp/portal-python-consumer"),
        PathBuf::from,
    );
    let installed = std::fs::read(venv.join("requirements.txt")).unwrap_or_default();
    assert!(
        venv.join("bin/python").exists()
            && installed == std::fs::read(example("requirements.txt")).unwrap(),
        "{} is missing or has other requirements than examples/python-consumer: run \
         scripts/prepare-tests",
        venv.display()
    );
    venv.join("bin/python")
}

/// `KEY=value` lines of a settings file.
fn settings(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `portal consumer <args>` as an operator of an install under the least-privilege setup, with
/// the administrator's broker credentials (which make the consumer's broker user and declare its
/// queues); exit code and output.
async fn consumer(sb: &Sandbox, args: &[&str]) -> (i32, String) {
    let out = portal(sb)
        .arg("consumer")
        .args(args)
        .env("MANAGED_BY_SETUP", "true")
        .env("ADMIN_AMQP_URL", &sb.amqp_url)
        .env("RABBITMQ_MANAGEMENT_URL", sb.management_url())
        // Broker users are broker-wide: this sandbox's are named after its vhost.
        .env("CONSUMER_BROKER_USER_PREFIX", format!("{}-", sb.vhost))
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// `portal verify`, polled until its exit code is `code` and its output holds every one of
/// `lines`; returns the output.
async fn verify_until(sb: &Sandbox, code: i32, lines: &[&str]) -> String {
    poll_until(
        SETTLE,
        &format!("portal verify: exit {code} with {lines:?}"),
        || async {
            let out = portal(sb).arg("verify").output().await.ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (out.status.code() == Some(code) && lines.iter().all(|l| text.contains(l)))
                .then_some(text)
        },
    )
    .await
}

/// The reference consumer as a child process with exactly its settings, logging to a file.
struct PythonConsumer {
    child: Child,
    log: PathBuf,
}

impl PythonConsumer {
    fn start(sb: &Sandbox, env: &BTreeMap<String, String>, database_url: &str) -> Self {
        let log = sb.dir.join("python-consumer.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(python());
        cmd.arg(example("consumer.py"))
            .env_clear()
            .env("AMQP_URL", &env["AMQP_URL"])
            .env("CONSUMER_NAME", &env["CONSUMER_NAME"])
            .env("TRUSTED_PUBLISHERS", &env["TRUSTED_PUBLISHERS"])
            .env("DATABASE_URL", database_url)
            .env("CONSUMER_PREFETCH", "20")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        Self {
            child: cmd.spawn().expect("start the Python consumer"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as a service manager stops it: it must exit by itself, cleanly.
    async fn stop(mut self) -> String {
        let pid = self.child.id().expect("running") as i32;
        kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(SETTLE, self.child.wait())
            .await
            .expect("the Python consumer exits on SIGTERM")
            .unwrap();
        let log = self.log();
        assert!(status.success(), "exit {status}:\n{log}");
        log
    }
}

/// Polls until the Python consumer's copy equals `auth_db` (every user, every field).
async fn copy_in_sync(auth: &PgPool, pharmacy: &PgPool, what: &str, python: &PythonConsumer) {
    let users = count(auth, "SELECT count(*) FROM users").await as u64;
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let report = ops::verify::compare(auth, &PHARMACY, pharmacy, Options::listing(5)).await;
        match report {
            Ok(r) if r.is_in_sync() && r.checked == users => return,
            other => assert!(
                std::time::Instant::now() < deadline,
                "the Python consumer's copy after {what}: {other:?}\n{}",
                python.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The erasure rule in the Python consumer's copy. A person with unmistakable name, email and
/// phone, changed and deactivated, is erased through the API: their row in `pharmacy_db` then
/// holds the placeholders only, at the erasure's version, as `auth_db`'s does. A late
/// `user.updated` from a trusted publisher (a replay of an old backup) with a lower version and
/// one with a higher version are both acknowledged and not applied, and confirm nothing.
async fn erasure_is_applied_and_final(
    auth: &PgPool,
    pharmacy: &PgPool,
    sb: &Sandbox,
    admin: &str,
    token: &str,
    python: &PythonConsumer,
) {
    const PERSONAL: [&str; 4] = ["zebulon", "quixwort", "900 1234", "clinic.test"];
    let email = "zebulon.quixwort@clinic.test";
    let (s, created) = post(
        admin,
        Some(token),
        &json!({"email": email, "firstName": "Zebulon", "lastName": "Quixwort",
                "role": "pharmacist", "phoneNumber": "+263 77 900 1234"}),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let id = created["user"]["userId"].as_str().unwrap().to_owned();
    let user = format!("{admin}/{id}");
    let (s, body) = send(
        Method::PATCH,
        &user,
        Some(token),
        Some(&json!({"lastName": "Quixwort-Vane"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = post(&format!("{user}/deactivate"), Some(token), &json!({})).await;
    assert_eq!(s, 200, "{body}");
    copy_in_sync(auth, pharmacy, "the person's changes", python).await;
    let leaks = || async {
        // Every column of every row as text, so a new column cannot hide a leak.
        let patterns: Vec<String> = PERSONAL.iter().map(|p| format!("%{p}%")).collect();
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM users u WHERE id = $1::uuid AND lower(u::text) LIKE ANY($2)",
        )
        .bind(&id)
        .bind(&patterns)
        .fetch_one(pharmacy)
        .await
        .unwrap()
    };
    assert_eq!(leaks().await, 1, "the copy held the person's data");

    let (s, erasure) = post(
        &format!("{user}/erasure"),
        Some(token),
        &json!({"reason": "erasure request, ticket 4711"}),
    )
    .await;
    assert_eq!(s, 200, "{erasure}");
    let version = erasure["userVersion"].as_i64().unwrap();
    type Held = (String, String, String, Option<String>, Option<i64>, bool);
    let held = || async {
        sqlx::query_as::<_, Held>(
            "SELECT email, first_name, last_name, phone_number, user_version, \
                    erased_at IS NOT NULL FROM users WHERE id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(pharmacy)
        .await
        .unwrap()
    };
    let tombstone: Held = (
        format!("erased-{id}@erased.invalid"),
        "Erased".into(),
        "User".into(),
        None,
        Some(version),
        true,
    );
    poll_until(SETTLE, "the erasure applied in pharmacy_db", || async {
        (held().await == tombstone).then_some(())
    })
    .await;
    assert_eq!(leaks().await, 0, "no personal data left in the row");
    copy_in_sync(auth, pharmacy, "the erasure", python).await;

    // Late snapshots with the old data, as a replay of an old backup would send them.
    let late = |v: i64| {
        json!({"eventId": uuid::Uuid::now_v7(), "eventType": "user.updated",
            "timestamp": "2026-02-07T10:00:00.000Z", "source": "auth-service", "version": "1.1",
            "payload": {"userId": id, "email": email, "firstName": "Zebulon",
                "lastName": "Quixwort", "role": "pharmacist", "phoneNumber": "+263 77 900 1234",
                "isActive": true, "mustChangePassword": false,
                "createdAt": "2026-02-07T10:00:00.000Z", "userVersion": v,
                "changedFields": ["isActive"]}})
        .to_string()
        .into_bytes()
    };
    sandbox::amqp::publish_to_queue(
        &sb.amqp_url,
        "pharmacy.user-events",
        &[late(version - 1), late(version + 5)],
    )
    .await
    .unwrap();
    // A user created after them reaches the copy through the same queue behind them: once it
    // is there, both late events were handled.
    let (s, after) = post(
        admin,
        Some(token),
        &json!({"email": "after.erasure@example.org", "firstName": "Tendai",
                "lastName": "Moyo", "role": "nurse"}),
    )
    .await;
    assert_eq!(s, 201, "{after}");
    let after = after["user"]["userId"].as_str().unwrap().to_owned();
    poll_until(SETTLE, "the user created after the late events", || async {
        let n = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users WHERE id = $1::uuid")
            .bind(&after)
            .fetch_one(pharmacy)
            .await
            .ok()?;
        (n == 1).then_some(())
    })
    .await;
    assert_eq!(
        held().await,
        tombstone,
        "late events applied over the erased"
    );
    assert_eq!(leaks().await, 0, "no personal data came back");
    copy_in_sync(auth, pharmacy, "late events for the erased", python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_consumer_added_by_portal_keeps_its_copy_and_is_verified_by_its_receipts() {
    python(); // before anything starts: fails at once without the environment
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .users()
        .appointments()
        .sync_admin()
        .gateway()
        .start()
        .await;
    let (gw, auth) = (sys.gateway().url(), sys.auth_db.clone());
    let token = sys.admin_token().await;
    let admin = format!("{gw}/api/v1/auth/admin/users");
    let create = |email: &str, role: &str| {
        let body =
            json!({"email": email, "firstName": "Rudo", "lastName": "Chikwanha", "role": role});
        let (admin, token) = (admin.clone(), token.clone());
        async move {
            let (s, created) = post(&admin, Some(&token), &body).await;
            assert_eq!(s, 201, "{created}");
            created["user"]["userId"].as_str().unwrap().to_owned()
        }
    };
    for (email, role) in [
        ("doctor@clinic.test", "doctor"),
        ("pharmacist@clinic.test", "pharmacist"),
        ("nurse@clinic.test", "nurse"),
    ] {
        create(email, role).await;
    }

    // Its own database, with the example's schema, as its team would make it.
    let pharmacy_url = sb.recreate_database("pharmacy").await.unwrap();
    let pharmacy = platform::db::lazy_pool(&pharmacy_url, 2).unwrap();
    let schema = std::fs::read_to_string(example("schema.sql")).unwrap();
    sqlx::raw_sql(&schema).execute(&pharmacy).await.unwrap();

    // `portal consumer add`: its broker user, settings in an owner-only file, never printed.
    let file = sb.dir.join("pharmacy.env");
    let file_arg = file.to_str().unwrap();
    let (code, out) = consumer(&sb, &["add", "pharmacy", "--credentials-file", file_arg]).await;
    assert_eq!(code, 0, "{out}");
    let broker_user = sb.broker_user("pharmacy"); // removed with the sandbox
    assert!(
        out.contains(&format!(
            "broker user {broker_user}: made, with only its rights"
        )),
        "{out}"
    );
    assert!(out.contains("registered pharmacy (required"), "{out}");
    assert!(out.contains("then the end-of-history mark"), "{out}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the settings are their owner's only");
    }
    let written = std::fs::read_to_string(&file).unwrap();
    let env = settings(&written);
    let password = url::Url::parse(&env["AMQP_URL"])
        .unwrap()
        .password()
        .unwrap()
        .to_owned();
    assert!(password.len() >= 32, "a strong password");
    assert!(
        !out.contains(&password),
        "the password is not printed: {out}"
    );
    assert_eq!(env["CONSUMER_NAME"], "pharmacy");
    assert!(
        env["TRUSTED_PUBLISHERS"].contains("guest"),
        "the sandbox's relay and operator"
    );

    // Its rights: its own queue and receipts only.
    let (_, rights) = get_management(&sb, &format!("permissions/{}/{broker_user}", sb.vhost)).await;
    assert_eq!(rights["configure"], "", "{rights}");
    assert_eq!(rights["read"], "^pharmacy\\.user\\-events$", "{rights}");

    let python = PythonConsumer::start(&sb, &env, &pharmacy_url);
    copy_in_sync(&auth, &pharmacy, "the backfill", &python).await;
    let users = count(&auth, "SELECT count(*) FROM users").await;
    poll_until(SETTLE, "the end-of-history mark recorded", || async {
        let marked = count(
            &pharmacy,
            "SELECT coalesce(max(users), -1) FROM history_complete",
        )
        .await;
        (marked == users).then_some(())
    })
    .await;

    // The lifecycle, through the API.
    let id = create("leaver@clinic.test", "doctor").await;
    let user = format!("{admin}/{id}");
    for (method, url, body) in [
        (
            Method::PATCH,
            user.clone(),
            json!({"lastName": "Moyo", "phoneNumber": "+263 77 123 4567"}),
        ),
        (
            Method::PUT,
            format!("{user}/role"),
            json!({"role": "consultant"}),
        ),
        (Method::POST, format!("{user}/deactivate"), json!({})),
        (Method::POST, format!("{user}/activate"), json!({})),
    ] {
        let (s, body) = send(method, &url, Some(&token), Some(&body)).await;
        assert_eq!(s, 200, "{url}: {body}");
    }
    copy_in_sync(&auth, &pharmacy, "the lifecycle", &python).await;
    let held: (String, String, bool, i64) = sqlx::query_as(
        "SELECT last_name, role, is_active, user_version FROM users WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&pharmacy)
    .await
    .unwrap();
    assert_eq!(held, ("Moyo".into(), "consultant".into(), true, 5));

    // A change its database refuses for a while goes through its retry queue, then applies.
    sqlx::query("ALTER TABLE users ADD CONSTRAINT not_yet CHECK (email <> 'late@clinic.test')")
        .execute(&pharmacy)
        .await
        .unwrap();
    create("late@clinic.test", "nurse").await;
    poll_until(
        SETTLE,
        "the refused event sent to the retry queue",
        || async {
            python
                .log()
                .contains("event could not be applied (attempt 1), retrying in 1s")
                .then_some(())
        },
    )
    .await;
    sqlx::query("ALTER TABLE users DROP CONSTRAINT not_yet")
        .execute(&pharmacy)
        .await
        .unwrap();
    copy_in_sync(&auth, &pharmacy, "the retry", &python).await;

    // The hospital's directory provisions, deactivates and deletes a clinician through SCIM:
    // every copy hears it, the Python consumer's too (the time each took is printed).
    let scim_token = {
        let (s, b) = post(
            &format!("{gw}/api/v1/auth/admin/scim-tokens"),
            Some(&token),
            &json!({"name": "entra"}),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        b["secret"].as_str().unwrap().to_owned()
    };
    let scim = |method: Method, path: String, body: Option<Value>| {
        let url = format!("{gw}/scim/v2{path}");
        let scim_token = scim_token.clone();
        async move { send(method, &url, Some(&scim_token), body.as_ref()).await }
    };
    let (s, created) = scim(
        Method::POST,
        "/Users".into(),
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "tatenda.sibanda@clinic.test",
            "name": {"givenName": "Tatenda", "familyName": "Sibanda"},
            "emails": [{"value": "tatenda.sibanda@clinic.test", "type": "work", "primary": true}],
            "roles": [{"value": "doctor", "primary": true}],
            "active": true
        })),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let scim_id: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let copies: [(&str, &PgPool, &str); 3] = [
        (
            "user_db",
            sys.user_db(),
            "SELECT is_active FROM users WHERE id = $1",
        ),
        (
            "appointment_db",
            sys.appointment_db(),
            "SELECT is_active FROM clinicians WHERE id = $1",
        ),
        (
            "pharmacy_db",
            &pharmacy,
            "SELECT is_active FROM users WHERE id = $1",
        ),
    ];
    let reached = |active: bool, step: &'static str| {
        let copies = &copies;
        async move {
            let started = std::time::Instant::now();
            let mut took = Vec::new();
            for (name, pool, sql) in copies {
                poll_until(SETTLE, &format!("{step} in {name}"), || async {
                    let held: Option<bool> = sqlx::query_scalar(sql)
                        .bind(scim_id)
                        .fetch_optional(*pool)
                        .await
                        .ok()
                        .flatten();
                    (held == Some(active)).then_some(())
                })
                .await;
                took.push(format!("{name} {:?}", started.elapsed()));
            }
            println!("SCIM {step}: {}", took.join(", "));
        }
    };
    reached(true, "created").await;
    let (s, b) = scim(
        Method::PATCH,
        format!("/Users/{scim_id}"),
        Some(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}),
        ),
    )
    .await;
    assert_eq!((s, b["active"].clone()), (200, json!(false)), "{b}");
    reached(false, "patched inactive").await;
    let (s, b) = scim(Method::DELETE, format!("/Users/{scim_id}"), None).await;
    assert_eq!(s, 204, "{b}");
    let (s, _) = scim(Method::GET, format!("/Users/{scim_id}"), None).await;
    assert_eq!(s, 404, "deleted: no longer seen through SCIM");
    reached(false, "deleted (deactivated, kept)").await;
    copy_in_sync(&auth, &pharmacy, "SCIM's changes", &python).await;

    // Erasure: a deactivated person with unmistakable data is erased; the copy keeps the row's
    // id and version, holds only the placeholders, and late events — older or newer — change
    // nothing. Checked before `verify` below, which must not find the copy ahead.
    erasure_is_applied_and_final(&auth, &pharmacy, &sb, &admin, &token, &python).await;

    // Receipts: `portal verify` finds every consumer in sync, the pharmacy by its receipts.
    let users = count(&auth, "SELECT count(*) FROM users").await;
    let out = verify_until(
        &sb,
        0,
        &[&format!(
            "pharmacy (receipts): in sync: {users} users confirmed"
        )],
    )
    .await;
    assert!(out.contains("user-service (user_db): in sync"), "{out}");
    // So does "Verify now" (the sync admin API's background verify).
    let (s, _) = post(
        &format!("{gw}/api/v1/admin/sync/verify"),
        Some(&token),
        &json!({}),
    )
    .await;
    assert_eq!(s, 202);
    let run = poll_until(SETTLE, "the background verify finished", || async {
        let (_, body) = get(&format!("{gw}/api/v1/admin/sync"), Some(&token)).await;
        (body["verify"]["state"] == "finished").then(|| body["verify"].clone())
    })
    .await;
    let pharmacy_run = run["copies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == "pharmacy")
        .unwrap_or_else(|| panic!("the pharmacy is in the run: {run}"));
    assert_eq!(pharmacy_run["database"], "receipts", "{run}");
    assert_eq!(pharmacy_run["inSync"], true, "{run}");
    assert_eq!(pharmacy_run["checked"], users, "{run}");

    // Running `consumer add` again keeps the password and the file.
    let (code, out) = consumer(&sb, &["add", "pharmacy", "--credentials-file", file_arg]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kept with its password"), "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);

    // What it must not apply: a stranger's forged event, and a body that is not JSON.
    let (mallory, mallory_url) = sb.extra_broker_user("mallory").await.unwrap();
    let forged = json!({"eventId": uuid::Uuid::new_v4(), "eventType": "user.snapshot",
        "timestamp": "2026-02-07T10:00:00.000Z", "source": "auth-service", "version": "1.0",
        "payload": {"userId": id, "email": "mallory@evil.test", "firstName": "M", "lastName": "X",
            "role": "admin", "isActive": true, "createdAt": "2026-02-07T10:00:00.000Z",
            "userVersion": 99}});
    sandbox::amqp::publish_one(
        &mallory_url,
        "pharmacy.user-events",
        forged.to_string().as_bytes(),
        amqp::persistent(&mallory),
    )
    .await
    .unwrap();
    sandbox::amqp::publish_to_queue(
        &sb.amqp_url,
        "pharmacy.user-events",
        &[b"{not json".to_vec()],
    )
    .await
    .unwrap();
    let sync = format!("{gw}/api/v1/admin/sync");
    let figures = poll_until(
        SETTLE,
        "two dead letters of the pharmacy on /admin/sync",
        || async {
            let (_, body) = get(&sync, Some(&token)).await;
            let pharmacy = body["consumers"]
                .as_array()?
                .iter()
                .find(|c| c["consumer"] == "pharmacy")?
                .clone();
            (pharmacy["deadLetter"]["messages"] == 2).then_some(pharmacy)
        },
    )
    .await;
    assert_eq!(figures["deadLetter"]["name"], "pharmacy.user-events.dlq");
    assert_eq!(figures["queue"]["consumers"], 1, "{figures}");
    assert!(
        figures["lastReceiptLagMs"].is_u64(),
        "its lag, from its receipts: {figures}"
    );
    assert!(figures["lastReceiptAt"].is_string(), "{figures}");
    let (s, letters) = get(
        &format!("{sync}/dead-letters/pharmacy.user-events.dlq"),
        Some(&token),
    )
    .await;
    assert_eq!(s, 200, "{letters}");
    let reasons: Vec<&str> = letters["first"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["untrusted-publisher", "not-json"], "{letters}");
    assert_eq!(letters["untrusted"], 1, "{letters}");
    assert_ne!(letters["first"][1]["firstFailure"], "-", "{letters}");
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE id = $1::uuid")
        .bind(&id)
        .fetch_one(&pharmacy)
        .await
        .unwrap();
    assert_eq!(role, "consultant", "the forged snapshot was not applied");

    // `portal status` shows the same, with the pharmacy's dead letters and its receipts' lag.
    let status = |json: bool| {
        let mut cmd = portal(&sb);
        cmd.arg("status")
            .args(json.then_some("--json"))
            .env("PORTAL_URL", &gw)
            .env("PORTAL_TOKEN", &token)
            .env("AUTH_SERVICE_URL", sys.auth.url())
            .env("USER_SERVICE_URL", sys.users().url())
            .env("APPOINTMENT_SERVICE_URL", sys.appointments().url())
            .env("SYNC_ADMIN_URL", sys.sync_admin().url())
            .env("WEB_PORT", "1");
        cmd
    };
    let out = status(false).output().await.unwrap();
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "degraded by the dead letters: {screen}"
    );
    let row = screen
        .lines()
        .find(|l| l.starts_with("pharmacy "))
        .unwrap_or_else(|| panic!("no pharmacy row: {screen}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(columns[4], "2", "its dead letters: {row}");
    assert!(
        row.contains(" ms, ") && row.ends_with(" s ago"),
        "its receipts' lag: {row}"
    );
    assert!(
        screen.contains("pharmacy: 2 messages in pharmacy.user-events.dlq"),
        "{screen}"
    );
    let out = status(true).output().await.unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = json["sync"]["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["consumer"] == "pharmacy")
        .unwrap()
        .clone();
    assert_eq!(shown["deadLetter"]["messages"], 2, "{json}");
    assert!(shown["lastReceiptLagMs"].is_u64(), "{json}");

    // Stopped (SIGTERM: a clean exit), it confirms nothing more: verify fails on the user
    // changed since (behind) and the one created since (unconfirmed).
    let log = python.stop().await;
    assert!(log.contains("consumer stopped"), "{log}");
    assert!(!log.contains(&password), "the password is never logged");
    let (s, body) = send(
        Method::PATCH,
        &user,
        Some(&token),
        Some(&json!({"firstName": "Tapiwa"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let newcomer = create("newcomer@clinic.test", "pharmacist").await;
    verify_until(
        &sb,
        1,
        &[
            "pharmacy (receipts): out of sync: 2 differences",
            &format!(
                "behind   {id} leaver@clinic.test: pharmacy confirmed version 5, auth_db has 6"
            ),
            &format!("unconfirmed {newcomer} newcomer@clinic.test: pharmacy confirmed no version"),
            // Polled with the rest: the other copies apply the newcomer a moment later.
            "user-service (user_db): in sync",
            "appointment-service (appointment_db): in sync",
        ],
    )
    .await;

    // Started again, it catches up from its queue, and verify passes.
    let python = PythonConsumer::start(&sb, &env, &pharmacy_url);
    copy_in_sync(&auth, &pharmacy, "the restart", &python).await;
    let users = count(&auth, "SELECT count(*) FROM users").await;
    verify_until(
        &sb,
        0,
        &[&format!(
            "pharmacy (receipts): in sync: {users} users confirmed"
        )],
    )
    .await;
    python.stop().await;

    // `consumer remove` deletes the broker user it made.
    let (code, out) = consumer(&sb, &["remove", "pharmacy"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("broker user {broker_user}: deleted")),
        "{out}"
    );
    let (status, _) = get_management(&sb, &format!("users/{broker_user}")).await;
    assert_eq!(status, 404, "the broker user is gone");

    // Added again without a file: its settings are printed, once; --new-password prints new.
    let (code, out) = consumer(&sb, &["add", "pharmacy", "--optional"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("shown this once"), "{out}");
    let printed = settings(&out);
    assert!(
        printed["AMQP_URL"].starts_with(&format!("amqp://{broker_user}:")),
        "{out}"
    );
    assert_ne!(
        printed["AMQP_URL"], env["AMQP_URL"],
        "a new user, a new password"
    );
    let (code, again) = consumer(&sb, &["add", "pharmacy", "--optional"]).await;
    assert_eq!(code, 0, "{again}");
    assert!(!again.contains("AMQP_URL="), "not shown again: {again}");
    let (code, renewed) = consumer(&sb, &["add", "pharmacy", "--optional", "--new-password"]).await;
    assert_eq!(code, 0, "{renewed}");
    assert!(renewed.contains("given a new password"), "{renewed}");
    assert_ne!(settings(&renewed)["AMQP_URL"], printed["AMQP_URL"]);
}

/// A consumer registered with a broker user of its own making (`--broker-user`): `portal
/// verify` passes while its receipts confirm every user's current version, and fails, listing
/// them, on a user whose latest version it has not confirmed or that it never confirmed.
#[tokio::test]
async fn verify_judges_a_consumer_it_cannot_read_by_its_receipts() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .users()
        .appointments()
        .account("a@clinic.test", Role::Doctor)
        .account("b@clinic.test", Role::Nurse)
        .start()
        .await;
    let auth = sys.auth_db.clone();
    let (ledger, ledger_url) = sb.extra_broker_user("ledger").await.unwrap();
    let (code, out) = consumer(
        &sb,
        &["add", "ledger", "--optional", "--broker-user", &ledger],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("registered as it is (not made or changed here)"),
        "{out}"
    );
    assert!(
        out.contains("'^receipt\\.ledger$'"),
        "the rights it needs: {out}"
    );

    // Nothing confirmed yet.
    verify_until(
        &sb,
        1,
        &["ledger (receipts): out of sync: 2 differences among 2 users (unconfirmed 2"],
    )
    .await;

    // It confirms both users at their versions: in sync.
    let receipt_for = |users: Vec<(uuid::Uuid, i64)>| Receipt {
        consumer: "ledger".into(),
        applied_at: contract::Timestamp::now(),
        users: users
            .into_iter()
            .map(|(id, version)| ReceiptEntry {
                user_id: contract::UserId(id),
                user_version: version,
                changed_at: contract::Timestamp::now(),
            })
            .collect(),
    };
    let (a, b) = (sys.accounts[0], sys.accounts[1]);
    send_receipt(&ledger_url, &ledger, &receipt_for(vec![(a, 1), (b, 1)])).await;
    verify_until(&sb, 0, &["ledger (receipts): in sync: 2 users confirmed"]).await;

    // b changes; ledger has not confirmed it: behind.
    let token = sys.admin_token().await;
    let (s, body) = send(
        Method::PATCH,
        &format!("{}/api/v1/auth/admin/users/{b}", sys.auth.url()),
        Some(&token),
        Some(&json!({"lastName": "Changed"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let admin: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE role = 'admin'")
        .fetch_one(&auth)
        .await
        .unwrap();
    verify_until(
        &sb,
        1,
        &[
            "ledger (receipts): out of sync: 2 differences among 3 users (unconfirmed 1, behind 1, ahead 0)",
            &format!("behind   {b} b@clinic.test: ledger confirmed version 1, auth_db has 2"),
            &format!("unconfirmed {admin} "),
            "user-service (user_db): in sync",
        ],
    )
    .await;

    // Confirmed: in sync again.
    send_receipt(&ledger_url, &ledger, &receipt_for(vec![(b, 2), (admin, 1)])).await;
    verify_until(&sb, 0, &["ledger (receipts): in sync: 3 users confirmed"]).await;
}

/// Publishes `receipt` as the broker user `user`, as a consumer does after a batch.
async fn send_receipt(url: &str, user: &str, receipt: &Receipt) {
    let conn = amqp::connect(url, "test receipts").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let body = serde_json::to_vec(receipt).unwrap();
    amqp::publish_confirmed(
        &ch,
        vec![Outgoing {
            exchange: CONTROL_EXCHANGE,
            routing_key: "receipt.ledger",
            body: &body,
            properties: amqp::message_properties(
                &uuid::Uuid::now_v7().to_string(),
                RECEIPT_TYPE,
                "ledger",
                user,
            ),
        }],
    )
    .await
    .require_all()
    .unwrap();
    conn.close(200, "done").await.ok();
}

/// `GET` of the RabbitMQ management API (`/api/<path>`) as the sandbox's administrator.
async fn get_management(sb: &Sandbox, path: &str) -> (u16, Value) {
    let servers = sandbox::Servers::from_test_env();
    let admin = url::Url::parse(&servers.amqp).unwrap();
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/{path}",
            sb.management_url().trim_end_matches('/')
        ))
        .basic_auth(admin.username(), admin.password())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}
