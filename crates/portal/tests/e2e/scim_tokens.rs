//! `portal scim token create|list|revoke` against a running auth-service behind the gateway, as
//! a script uses it: `create NAME --quiet` prints the secret alone on stdout (the one stored, by
//! its hash), without `--quiet` the same stdout and the instructions on stderr; `list` shows the
//! token and never a secret; `revoke NAME` revokes the live one (again: no change, exit 0); a
//! second live token of a name exits 1 saying why; a non-admin exits 1, no API exits 2.

use contract::Role;
use sandbox::{auth, Sandbox, System, TEST_PASSWORD};

/// `portal scim token <args>` as an API client of `url` with PORTAL_TOKEN `token` (one login for
/// many runs: the gateway limits logins per address): exit code, stdout and stderr apart (a
/// script captures stdout alone).
async fn scim_token(sb: &Sandbox, url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = crate::cli::portal(sb);
    cmd.args(["scim", "token"])
        .args(args)
        .env("PORTAL_URL", url)
        .env("PORTAL_TOKEN", token);
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether the live token `name`'s stored hash is that of `secret`.
async fn stored(sys: &System, name: &str, secret: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM scim_tokens WHERE name = $1 AND revoked_at IS NULL \
         AND secret_hash = sha256(convert_to($2, 'UTF8')))",
    )
    .bind(name)
    .bind(secret)
    .fetch_one(&sys.auth_db)
    .await
    .unwrap()
}

#[tokio::test]
async fn portal_scim_token_creates_lists_and_revokes_and_refuses_a_live_name_twice() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).gateway().start().await;
    let admin = "scim.admin@clinic.test";
    auth::create_user(&sys.auth_db, admin, Role::Admin).await;
    let gateway = sys.gateway().url();
    let token = auth::login(&gateway, admin, TEST_PASSWORD).await;
    let (sb_ref, url, bearer) = (&sb, gateway.as_str(), token.as_str());
    let run = move |args: &'static [&'static str]| scim_token(sb_ref, url, bearer, args);

    // --quiet: the secret, one line, nothing else on either stream.
    let (code, stdout, stderr) = run(&["create", "entra-production", "--quiet"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let secret = stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("one line: {stdout:?}"));
    assert!(
        secret.starts_with("scim_") && !secret.contains(char::is_whitespace),
        "{stdout:?}"
    );
    assert_eq!(stderr, "", "--quiet says nothing else");
    assert!(stored(&sys, "entra-production", secret).await);

    // Without --quiet: stdout is still the secret alone; stderr tells where it goes.
    let (code, stdout, stderr) = run(&["create", "okta"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let okta = stdout.trim_end();
    assert!(
        okta.starts_with("scim_") && !okta.contains('\n'),
        "{stdout:?}"
    );
    assert_ne!(okta, secret);
    let tenant = format!("{}/scim/v2", gateway.trim_end_matches('/'));
    for needle in [
        "Created SCIM token \"okta\"",
        &tenant,
        "Secret Token",
        "API token",
        "cannot be shown again",
        "portal scim token revoke okta",
    ] {
        assert!(stderr.contains(needle), "{needle} in {stderr}");
    }
    assert!(!stderr.contains(okta), "the secret only once: {stderr}");

    // A second live token of a name: exit 1, the API's reason, nothing created.
    let (code, stdout, stderr) = run(&["create", "entra-production", "--quiet"]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stdout, "", "no secret printed");
    assert!(
        stderr.contains("entra-production") && stderr.contains("exists already"),
        "{stderr}"
    );
    assert!(stderr.contains("HTTP 409"), "{stderr}");

    // list: both, live, no secret.
    let (code, stdout, stderr) = run(&["list"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("NAME ") && stdout.contains("LAST USED"),
        "{stdout}"
    );
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} listed: {stdout}"))
            .to_owned()
    };
    for name in ["entra-production", "okta"] {
        let row = row(name);
        assert!(
            row.contains("  never ") && row.ends_with("  -"),
            "{name} live, never used: {stdout}"
        );
    }
    assert!(!stdout.contains("scim_"), "no secret listed: {stdout}");
    assert!(stdout.contains("2 tokens, 2 live, 0 revoked"), "{stdout}");

    // revoke by name: the live one; again: already revoked, exit 0.
    let (code, stdout, stderr) = run(&["revoke", "entra-production"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("revoked SCIM token \"entra-production\""),
        "{stdout}"
    );
    assert!(!stored(&sys, "entra-production", secret).await);
    let (code, stdout, stderr) = run(&["revoke", "entra-production"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("was already revoked"), "{stdout}");
    let (code, stdout, stderr) = run(&["list", "--json"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let entra = listed
        .iter()
        .find(|t| t["name"] == "entra-production")
        .expect("listed");
    assert!(entra["revokedAt"].is_string(), "{stdout}");
    assert!(entra.get("secret").is_none(), "{stdout}");

    // The name is free again; revoke by id names the token itself.
    let (code, stdout, stderr) = run(&["create", "entra-production", "--quiet"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let okta_id = listed
        .iter()
        .find(|t| t["name"] == "okta")
        .and_then(|t| t["id"].as_str())
        .expect("okta's id")
        .to_owned();
    let (code, stdout, stderr) = scim_token(&sb, &gateway, &token, &["revoke", &okta_id]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(&okta_id), "{stdout}");
    let (code, stdout, _) = run(&["list"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("3 tokens, 1 live, 2 revoked"), "{stdout}");

    // No such token: exit 1 saying so.
    let (code, stdout, stderr) = run(&["revoke", "nobody"]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("no SCIM token has the name or id \"nobody\""),
        "{stderr}"
    );
}

#[tokio::test]
async fn portal_scim_token_needs_an_admin_and_a_reachable_api() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb).gateway().start().await;
    let doctor = "scim.doctor@clinic.test";
    auth::create_user(&sys.auth_db, doctor, Role::Doctor).await;
    let token = auth::login(&sys.gateway().url(), doctor, TEST_PASSWORD).await;
    let (code, stdout, stderr) =
        scim_token(&sb, &sys.gateway().url(), &token, &["create", "x"]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("HTTP 403"), "{stderr}");
    assert_eq!(stdout, "");
    let (code, stdout, stderr) = scim_token(&sb, "http://127.0.0.1:1", &token, &["list"]).await;
    assert_eq!(code, 2, "{stdout}{stderr}");
}
