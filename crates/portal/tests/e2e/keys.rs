//! The signing keys and the access tokens' lifetime, against the real servers (issue 26): a
//! token signed with the real key but claiming to live ten years — what someone holding a
//! stolen key could mint — is refused by every part that checks tokens (the auth-service, the
//! user-service, the appointment-service, the sync admin API) while a normal one is accepted;
//! a retired key past its kept time is withdrawn by the auth-service and stops verifying at a
//! service that fetches the keys over HTTP within its refresh interval, the tokens it already
//! verified and remembered too; a key-set URL in plaintext to another machine is refused at
//! start (exit 64).

use contract::Role;
use platform::jwt::{
    KeySource, VerifierConfig, JWKS_PATH, LOCAL_ACCESS_TTL_SECONDS, RETIRED_KEY_KEPT,
};
use sandbox::http::{assert_json_error, get};
use sandbox::{auth, poll_until, users, Sandbox, System, SETTLE};
use std::time::{Duration, SystemTime};

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 86_400);
/// A lifetime the parts accept: the sandbox's TOKEN_TTL_SECONDS.
const NORMAL: Duration = Duration::from_secs(LOCAL_ACCESS_TTL_SECONDS as u64);

#[tokio::test]
async fn a_token_signed_with_the_real_key_for_ten_years_is_refused_everywhere() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .users()
        .appointments()
        .sync_admin()
        .account("key-holder@clinic.test", Role::Admin)
        .start()
        .await;
    let admin = sys.accounts[0];
    let normal = auth::token_living(&sb, admin, Role::Admin, NORMAL);
    let forged = auth::token_living(&sb, admin, Role::Admin, TEN_YEARS);
    let longer_by_a_second =
        auth::token_living(&sb, admin, Role::Admin, NORMAL + Duration::from_secs(1));
    let parts = [
        ("auth-service", format!("{}/api/v1/auth/me", sys.auth.url())),
        (
            "user-service",
            format!("{}/api/v1/users", sys.users().url()),
        ),
        (
            "appointment-service",
            format!("{}/api/v1/appointments", sys.appointments().url()),
        ),
        (
            "sync admin API",
            format!("{}/api/v1/admin/sync", sys.sync_admin().url()),
        ),
    ];
    for (part, url) in &parts {
        let (status, body) = get(url, Some(&normal)).await;
        assert_eq!(status, 200, "{part} accepts a normal token: {body}");
        // Twice each: a refusal is not remembered as anything else, and the normal token the
        // part remembers verified does not open the door to another.
        for _ in 0..2 {
            for token in [&forged, &longer_by_a_second] {
                let (status, body) = get(url, Some(token)).await;
                assert_json_error(status, &body, 401);
                assert_eq!(body["error"], "unauthorized", "{part}: {body}");
            }
        }
        let (status, body) = get(url, Some(&normal)).await;
        assert_eq!(status, 200, "{part} still accepts the normal token: {body}");
    }
}

#[tokio::test]
async fn a_retired_key_past_its_kept_time_stops_verifying_within_the_refresh_interval() {
    let sb = Sandbox::for_test().await;
    let sys = System::builder(&sb)
        .account("rotated@clinic.test", Role::Doctor)
        .start()
        .await;
    let doctor = sys.accounts[0];
    let jwks = format!("{}{JWKS_PATH}", sys.auth.url());
    // A user-service that fetches the keys over HTTP, as in production, every second.
    let refresh = Duration::from_secs(1);
    let mut config = users::config(&sb);
    config.keys = VerifierConfig::new(KeySource::Jwks(jwks.clone()), LOCAL_ACCESS_TTL_SECONDS)
        .refreshed_every(refresh);
    let user_service = users::start(config).await;
    let directory = format!("{}/api/v1/users", user_service.url());
    let me = format!("{}/api/v1/auth/me", sys.auth.url());
    let published = || async {
        let (status, doc) = get(&jwks, None).await;
        assert_eq!(status, 200, "{doc}");
        doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|k| k["kid"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    };

    let old_kid = sb.key_dir.current_public_key().unwrap().kid;
    let before = auth::token_living(&sb, doctor, Role::Doctor, NORMAL);
    // Verified, and remembered, by both.
    assert_eq!(get(&directory, Some(&before)).await.0, 200);
    assert_eq!(get(&me, Some(&before)).await.0, 200);

    let new_kid = sb.key_dir.rotate().unwrap();
    poll_until(
        SETTLE,
        "the auth-service to publish the new key",
        || async { (published().await.first() == Some(&new_kid)).then_some(()) },
    )
    .await;
    // Retired, within its kept time: still published and accepted.
    assert!(published().await.contains(&old_kid));
    assert_eq!(get(&directory, Some(&before)).await.0, 200);
    assert_eq!(get(&me, Some(&before)).await.0, 200);

    // As if the rotation was longer ago than a retired key is kept.
    let retired = sb.key_dir.0.join("retired").join(format!("{old_kid}.pub"));
    std::fs::File::options()
        .write(true)
        .open(&retired)
        .unwrap()
        .set_modified(SystemTime::now() - RETIRED_KEY_KEPT - Duration::from_secs(60))
        .unwrap();
    // The auth-service withdraws it on its timer: the file goes, the JWKS no longer lists it,
    // and the auth-service's own verification refuses its tokens.
    poll_until(
        SETTLE,
        "the auth-service to remove the retired key",
        || async { (!retired.exists()).then_some(()) },
    )
    .await;
    assert_eq!(published().await, std::slice::from_ref(&new_kid));
    poll_until(
        Duration::from_secs(10),
        "the auth-service to refuse the withdrawn key's token",
        || async { (get(&me, Some(&before)).await.0 == 401).then_some(()) },
    )
    .await;
    // The user-service drops it at its next refresh (with room for a loaded machine), and with
    // it the verification it remembered.
    poll_until(
        refresh + Duration::from_secs(10),
        "the user-service to refuse the withdrawn key's token",
        || async { (get(&directory, Some(&before)).await.0 == 401).then_some(()) },
    )
    .await;
    let after = auth::token_living(&sb, doctor, Role::Doctor, NORMAL);
    assert_eq!(get(&directory, Some(&after)).await.0, 200);
    assert_eq!(get(&me, Some(&after)).await.0, 200);
}

/// Keys fetched in plaintext from another machine could be swapped for an attacker's on the way:
/// such a JWKS_URL (or the AUTH_SERVICE_URL it derives from) is a configuration error at start,
/// exit 64, naming the setting and the way out, before anything connects.
#[tokio::test]
async fn a_plaintext_key_set_url_to_another_machine_is_refused_at_start() {
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portal"));
        let out = sandbox::process::isolated(&mut cmd)
            .env("PORTAL_CREDENTIALS", "none")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let jwks = "http://10.1.2.3/api/v1/auth/.well-known/jwks.json";
    for part in ["user-service", "appointment-service", "sync-admin"] {
        let (code, err) = run(&[part, "--jwks-url", jwks]);
        assert_eq!(code, Some(64), "{part}: {err}");
        assert!(
            err.contains("JWKS_URL") && err.contains("ALLOW_PLAINTEXT_NETWORK"),
            "{part}: {err}"
        );
    }
    let (code, err) = run(&["user-service", "--auth-service-url", "http://10.1.2.3:3001"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("AUTH_SERVICE_URL"), "{err}");
}
