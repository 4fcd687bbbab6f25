//! `portal migrate status` as an operator runs it around an upgrade: under the least-privilege
//! setup, as the operator's role, it tells a database at this binary's level (exit 0) from one
//! with an older schema (a migration pending: exit 1, `portal setup` named), one a newer build
//! migrated (exit 1, a downgrade) and one with an edited migration (exit 1); a database out of
//! reach exits 2 and a bad URL 64. The older and newer schemas are made by editing sqlx's
//! bookkeeping table as the administrator, which is all the command reads.

use ops::setup::Credentials;
use platform::migrations::Applied;
use sandbox::Sandbox;
use serde_json::Value;
use tokio::process::Command;

/// The operator's three database URLs, by variable.
type OperatorUrls = [(&'static str, String); 3];

/// Runs `portal migrate status <args>` with the operator's URLs and nothing else of the
/// caller's environment; exit code, stdout and stderr.
async fn migrate_status(urls: &OperatorUrls, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portal"));
    sandbox::process::isolated_async(&mut cmd)
        .env("PORTAL_CREDENTIALS", "none")
        .env("RUST_LOG", "warn")
        .envs(urls.iter().map(|(k, v)| (*k, v)))
        .args(["migrate", "status"])
        .args(args);
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with(urls: &OperatorUrls, var: &str, url: &str) -> OperatorUrls {
    let mut urls = urls.clone();
    for (k, v) in &mut urls {
        if *k == var {
            *v = url.to_owned();
        }
    }
    urls
}

#[tokio::test]
async fn migrate_status_tells_a_current_schema_from_an_older_or_a_newer_one_as_the_operator() {
    let sb = Sandbox::for_test().await;
    let config = crate::identities::config(&sb);
    ops::setup::run(&config).await.unwrap();
    let creds = Credentials::load(&config.credentials).unwrap();
    let get = |key: &str| creds.get(key).unwrap().to_owned();
    let urls: OperatorUrls = [
        "OPERATOR_AUTH_DATABASE_URL",
        "OPERATOR_USER_DATABASE_URL",
        "OPERATOR_APPOINTMENT_DATABASE_URL",
    ]
    .map(|var| (var, get(var)));
    // The test's own edits of the bookkeeping, as the administrator: the operator may only read.
    let admin = |name: &str| platform::db::lazy_pool(&sb.database_url(name), 1).unwrap();
    let (auth_db, user_db, appointment_db) = (admin("auth"), admin("user"), admin("appointment"));

    // Freshly migrated by the setup: every database at this binary's level.
    let (code, out, err) = migrate_status(&urls, &[]).await;
    assert_eq!(code, 0, "{out}{err}");
    for database in [
        "auth-service (auth_db): current",
        "user-service (user_db): current",
        "appointment-service (appointment_db): current",
    ] {
        assert!(out.contains(database), "{database}: {out}");
    }
    let newest = auth_service::MIGRATIONS.iter().last().unwrap();
    assert!(
        out.contains(&format!(
            "  latest: {} {} (applied ",
            newest.version, newest.description
        )),
        "{out}"
    );
    let (code, json, _) = migrate_status(&urls, &["--json"]).await;
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((code, &json["ok"]), (0, &Value::Bool(true)), "{json}");
    assert_eq!(json["databases"].as_array().unwrap().len(), 3);

    // An older schema: auth_db without its newest migration.
    let removed: Applied = sqlx::query_as(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations) \
         RETURNING version, description, installed_on, success, checksum",
    )
    .fetch_one(&auth_db)
    .await
    .unwrap();
    assert_eq!(removed.version, newest.version);
    let (code, out, err) = migrate_status(&urls, &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    let behind = format!(
        "auth-service (auth_db): behind: 1 of {} migrations pending",
        auth_service::MIGRATIONS.iter().count()
    );
    assert!(out.contains(&behind), "{out}");
    assert!(
        out.contains(&format!(
            "  pending: {} {}",
            newest.version, newest.description
        )),
        "{out}"
    );
    assert!(
        out.contains("run `portal setup` (the migration role applies them)"),
        "{out}"
    );
    assert!(
        out.contains("user-service (user_db): current")
            && out.contains("appointment-service (appointment_db): current"),
        "the other databases are untouched: {out}"
    );
    assert!(
        err.contains("not at this binary's schema level: auth_db is behind"),
        "{err}"
    );
    let (code, json, _) = migrate_status(&urls, &["--json"]).await;
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(code, 1);
    assert_eq!(json["ok"], false);
    assert_eq!(
        json["databases"][0]["problems"],
        serde_json::json!(["behind"])
    );
    assert_eq!(
        json["databases"][0]["pending"][0]["version"],
        newest.version
    );
    // The auth-service, under its own role, refuses the same schema for the same reason.
    let refused = auth_service::open_database(&get("AUTH_DATABASE_URL"), 1, true)
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains(&format!("lacks migrations [{}]", newest.version)),
        "{refused:#}"
    );
    // Put back: the status is nothing but that bookkeeping.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, \
         execution_time) VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(removed.version)
    .bind(&removed.description)
    .bind(removed.installed_on)
    .bind(removed.success)
    .bind(&removed.checksum)
    .execute(&auth_db)
    .await
    .unwrap();
    assert_eq!(migrate_status(&urls, &[]).await.0, 0);

    // A newer schema: appointment_db migrated by a build this one does not know.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from a newer build', true, '\\x00', 0)",
    )
    .execute(&appointment_db)
    .await
    .unwrap();
    let (code, out, err) = migrate_status(&urls, &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("appointment-service (appointment_db): newer than this binary: 1 applied migration it does not know (a downgrade)"),
        "{out}"
    );
    assert!(
        out.contains("  unknown to this binary: 99990101000000 from a newer build (applied "),
        "{out}"
    );
    assert!(
        !out.contains("run `portal setup`"),
        "setup cannot mend it: {out}"
    );
    assert!(
        err.contains("appointment_db is newer than this binary"),
        "{err}"
    );
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 99990101000000")
        .execute(&appointment_db)
        .await
        .unwrap();

    // An edited migration: what ran differs from what this binary has.
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 1")
        .execute(&user_db)
        .await
        .unwrap();
    let (code, out, err) = migrate_status(&urls, &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("user-service (user_db): checksum mismatch in 1 applied migration")
            && out.contains("  checksum differs: 1 "),
        "{out}"
    );
    assert!(err.contains("user_db is mismatched"), "{err}");
}

#[tokio::test]
async fn migrate_status_exits_2_when_a_database_cannot_be_reached_and_64_on_a_bad_url() {
    let sb = Sandbox::for_test().await;
    // Migrated as the sandbox's administrator: no setup needed to be out of reach.
    sandbox::auth::pool(&sb).await;
    sandbox::appointments::pool(&sb).await;
    let urls: OperatorUrls = [
        ("OPERATOR_AUTH_DATABASE_URL", sb.database_url("auth")),
        (
            "OPERATOR_USER_DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/user_db".to_owned(),
        ),
        (
            "OPERATOR_APPOINTMENT_DATABASE_URL",
            sb.database_url("appointment"),
        ),
    ];
    let (code, out, err) = migrate_status(&urls, &[]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("user-service (user_db): cannot reach: "),
        "{out}"
    );
    assert!(err.contains("cannot reach user_db"), "{err}");
    // The databases it could reach are still reported.
    assert!(
        out.contains("auth-service (auth_db): current")
            && out.contains("appointment-service (appointment_db): current"),
        "{out}"
    );
    let (code, json, _) = migrate_status(&urls, &["--json"]).await;
    let json: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(code, 2);
    assert_eq!(json["databases"][1]["status"], "unreachable");

    let bad = with(
        &urls,
        "OPERATOR_USER_DATABASE_URL",
        "postgres://u@h:no-port/x",
    );
    let (code, out, err) = migrate_status(&bad, &[]).await;
    assert_eq!(code, 64, "{out}{err}");
    assert!(err.contains("OPERATOR_USER_DATABASE_URL"), "{err}");
    assert!(out.is_empty(), "nothing is read with a bad setting: {out}");

    // Its help lists the operator's settings.
    let (code, out, _) = migrate_status(&urls, &["--help"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("OPERATOR_APPOINTMENT_DATABASE_URL") && out.contains("--json"),
        "{out}"
    );
}
