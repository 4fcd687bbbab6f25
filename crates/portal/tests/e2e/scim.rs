//! SCIM through the gateway, as a directory reaches it: the scim2-tester compliance checks
//! (PyPI) pass with a token from `portal scim token create`, and a user created, deactivated and deleted
//! through SCIM reaches `user_db` and `appointment_db` like any other change (the time each
//! copy took is printed, not asserted: the polls' deadline bounds it).

use sandbox::http::post;
use sandbox::{poll_until, Sandbox, System};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The compliance checker's virtual environment (scripts/prepare-tests makes it).
fn scim_python() -> PathBuf {
    let venv = std::env::var_os("PORTAL_SCIM_VENV")
        .map_or_else(|| PathBuf::from("/var/tmp/portal-scim"), PathBuf::from);
    let python = venv.join("bin/python3");
    assert!(
        python.exists(),
        "{} is missing: run scripts/prepare-tests",
        python.display()
    );
    python
}

async fn scim_token(sys: &System, admin: &str) -> String {
    let (s, b) = post(
        &format!("{}/api/v1/auth/admin/scim-tokens", sys.gateway().url()),
        Some(admin),
        &json!({"name": "compliance"}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    b["secret"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_scim_compliance_checker_reports_no_failure() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).users().gateway().start().await;
    let admin = sys.admin_token().await;
    // The token as an admin makes one: `portal scim token create NAME --quiet`.
    let out = crate::cli::portal(&sb)
        .args(["scim", "token", "create", "compliance", "--quiet"])
        .env("PORTAL_URL", sys.gateway().url())
        .env("PORTAL_TOKEN", &admin)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("scim_"), "{token}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/scim-compliance");
    // Exactly the settings it needs: the token, and nothing of this process's environment.
    let out = tokio::process::Command::new(scim_python())
        .arg(&script)
        .arg(format!("{}/scim/v2", sys.gateway().url()))
        .env_clear()
        .env("SCIM_TOKEN", &token)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .await
        .expect("scripts/scim-compliance runs (bash scripts/prepare-tests installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "compliance checks failed:\n{stdout}");
    assert!(stdout.contains("scim-compliance:"), "{stdout}");
    assert!(!stdout.contains("\nERROR"), "{stdout}");
}

/// Polls until `query` (one row: the user's active flag) says `active`; the time it took.
async fn until_copy(
    pool: &sqlx::PgPool,
    sql: &str,
    id: Uuid,
    active: bool,
    what: &str,
) -> Duration {
    let started = Instant::now();
    poll_until(Duration::from_secs(10), what, || async {
        let row: Option<bool> = sqlx::query_scalar(sql)
            .bind(id)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
        (row == Some(active)).then_some(())
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_user_provisioned_through_scim_reaches_every_copy() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .users()
        .appointments()
        .gateway()
        .start()
        .await;
    let admin = sys.admin_token().await;
    let token = scim_token(&sys, &admin).await;
    let base = format!("{}/scim/v2", sys.gateway().url());
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, url: String, body: Option<Value>| {
        let mut req = http.request(method, url).bearer_auth(&token);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let user_db = "SELECT is_active FROM users WHERE id = $1";
    let appointment_db = "SELECT is_active FROM clinicians WHERE id = $1";

    let (s, created) = send(
        reqwest::Method::POST,
        format!("{base}/Users"),
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "chipo.dube@clinic.test",
            "name": {"givenName": "Chipo", "familyName": "Dube"},
            "emails": [{"value": "chipo.dube@clinic.test", "type": "work", "primary": true}],
            "roles": [{"value": "doctor", "primary": true}],
            "active": true
        })),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let created_users = until_copy(sys.user_db(), user_db, id, true, "created in user_db").await;
    let created_appts = until_copy(
        sys.appointment_db(),
        appointment_db,
        id,
        true,
        "created in appointment_db",
    )
    .await;

    let (s, b) = send(
        reqwest::Method::PATCH,
        format!("{base}/Users/{id}"),
        Some(
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}),
        ),
    )
    .await;
    assert_eq!((s, b["active"].clone()), (200, json!(false)), "{b}");
    let off_users = until_copy(sys.user_db(), user_db, id, false, "inactive in user_db").await;
    let off_appts = until_copy(
        sys.appointment_db(),
        appointment_db,
        id,
        false,
        "inactive in appointment_db",
    )
    .await;

    let (s, _) = send(reqwest::Method::DELETE, format!("{base}/Users/{id}"), None).await;
    assert_eq!(s, 204);
    let (s, _) = send(reqwest::Method::GET, format!("{base}/Users/{id}"), None).await;
    assert_eq!(s, 404);
    sys.all_published().await;
    sys.eventually_in_sync().await;
    println!(
        "SCIM to copies: created user_db {created_users:?} appointment_db {created_appts:?}; \
         deactivated user_db {off_users:?} appointment_db {off_appts:?}"
    );
}
