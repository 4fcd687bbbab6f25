//! The packaged install, the way README.md's "Installing on a server" does it: the Debian
//! package built by `scripts/package`, installed with `dpkg -i` on this machine, setup.env and
//! portal.env written for servers of the test's own (a private PostgreSQL, a private RabbitMQ
//! node with its management API: the setup creates roles and users server-wide and deletes
//! guest), portal-setup.service's command run as that unit says, the first admin created with
//! `portal admin bootstrap`, and every part started as the installed `portal@.service` says
//! (its `User=`, `Environment=`, `EnvironmentFile=`, `ExecStart=`, state directory: read from
//! the unit, see `sandbox::unit`). Then the system is used as people would, and the package is
//! purged. The upgrade test installs the previous release (`deploy/releases`) built from its own
//! sources, puts data in it, and upgrades to this build.
//!
//! Needs root (dpkg, the parts' users), and owns the package `portal` on the machine it runs
//! on: it purges an installed one (CI machines only, never a server). Its own test binary: it
//! changes the machine's packages, so its tests take turns, with each other and with other
//! test runs on the machine ([`steps::machine_lock`]); the parts' system users stay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod steps;
mod web;

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use steps::{Install, Servers, PARTS};

/// A work folder of the test's own, and no package left by a killed earlier run.
fn prepare(name: &str) -> PathBuf {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the install tests need root (dpkg, the parts' users)"
    );
    if steps::installed() {
        // A killed earlier run's: these tests own the package on this machine.
        steps::purge();
    }
    // A killed run's state, which no purge removed.
    let _ = std::fs::remove_dir_all("/var/lib/portal");
    let work = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", sandbox::world::random_id(8)));
    std::fs::create_dir_all(&work).unwrap();
    work
}

/// Polls the web portal's Doctor list (signed in as `browser`) until it shows `doctor`.
async fn wait_for_doctor(browser: &mut web::Browser, doctor: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = browser.get("/appointments/new").await;
        let doctors = sandbox::http::doctor_options(&page.body);
        if doctors.iter().any(|d| d == doctor) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{doctor} not in the Doctor list: {doctors:?}\n{}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn the_package_installs_sets_up_and_serves_with_one_identity_per_part() {
    let _machine = steps::machine_lock();
    let work = prepare("install");
    let deb = steps::build_package(&work);
    let mut install = Install::new(&work);
    steps::dpkg_install(&deb);

    // What postinst made: one system user per part.
    for part in PARTS {
        let user = format!("portal-{part}");
        assert!(
            nix::unistd::User::from_name(&user).unwrap().is_some(),
            "postinst made no user {user}"
        );
    }

    // The runbooks travel with the package.
    for doc in ["README.md", "docs/operations.md"] {
        let path = Path::new("/usr/share/doc/portal").join(doc);
        assert!(path.exists(), "{} is not installed", path.display());
    }

    let servers = Servers::start();
    let ports = steps::configure(&servers);
    let said = steps::setup();
    assert!(said.contains("deleted RabbitMQ user guest"), "{said}");
    assert!(said.contains("end-of-history mark sent"), "{said}");

    // Files and modes: the operator's file root's own; each part's its own user's, read-only.
    let mode = |p: &str| {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        (m.permissions().mode() & 0o7777, m.uid())
    };
    assert_eq!(mode("/etc/portal/credentials"), (0o600, 0));
    assert_eq!(mode("/etc/portal/setup.env").0, 0o600);
    assert_eq!(mode("/etc/portal/portal.env").0 & 0o077, 0o044);
    for part in PARTS {
        let file = format!("/etc/portal/credentials.d/{part}.env");
        let owner = nix::unistd::User::from_name(&format!("portal-{part}"))
            .unwrap()
            .unwrap();
        assert_eq!(mode(&file), (0o400, owner.uid.as_raw()), "{file}");
    }

    install.start_all(&ports).await;
    // A relay of its own beside the auth-service's, under the outbox-only role.
    let relay_file = std::fs::read_to_string("/etc/portal/credentials.d/relay.env").unwrap();
    assert!(
        relay_file.contains("AUTH_DATABASE_URL=postgres://portal_relay:"),
        "the relay's own database role"
    );
    install.start("relay");
    install
        .wait_ready(
            "relay",
            &format!("http://127.0.0.1:{}/health/ready", ports.relay),
        )
        .await;

    // Each part's health check, as a container runs it: its own user and settings.
    for part in steps::STARTED.into_iter().chain(["relay"]) {
        let out = steps::as_part(part, &["healthcheck", part]);
        assert!(
            out.status.success(),
            "portal healthcheck {part}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The first admin, as README.md says, once the auth-service has made its keys: root, with
    // the operator's credentials; a second run changes nothing and shows no password.
    let temporary = steps::bootstrap_admin("it.admin@clinic.test");
    let again = steps::operator(&["admin", "bootstrap", "it.admin@clinic.test"]);
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.contains("exists already") && !again.contains(&temporary),
        "{again}"
    );

    // No part reads another's credentials, the operator's, or the signing key.
    for part in PARTS {
        steps::read_as(part, &format!("/etc/portal/credentials.d/{part}.env"))
            .unwrap_or_else(|e| panic!("{part} cannot read its own credentials: {e}"));
        for other in PARTS.iter().filter(|o| **o != part) {
            let e = steps::read_as(part, &format!("/etc/portal/credentials.d/{other}.env"))
                .expect_err(&format!("{part} reads {other}'s credentials"));
            assert!(e.contains("Permission denied"), "{part} → {other}: {e}");
        }
        let e = steps::read_as(part, "/etc/portal/credentials").expect_err("the operator's file");
        assert!(e.contains("Permission denied"), "{e}");
        if part != "auth-service" {
            let e = steps::read_as(part, "/var/lib/portal/auth-service/keys")
                .expect_err("the auth-service's keys");
            assert!(e.contains("Permission denied"), "{part}: {e}");
        }
    }
    assert!(
        Path::new("/var/lib/portal/auth-service/keys").is_dir(),
        "the signing key is in the auth-service's own state directory"
    );

    // A part that cannot read its credentials says so and exits 64 (restarting cannot mend
    // it): the web portal started as the gateway's user.
    let web_unit = steps::part_unit("web");
    let (uid, gid) = steps::part_unit("gateway").ids().unwrap().unwrap();
    let mut wrong = web_unit.command().unwrap();
    // The web portal's own state directory is closed to the gateway's user too.
    wrong.current_dir("/");
    std::os::unix::process::CommandExt::uid(&mut wrong, uid);
    std::os::unix::process::CommandExt::gid(&mut wrong, gid);
    let out = wrong.output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{said}");
    assert!(said.contains("/etc/portal/credentials.d/web.env"), "{said}");

    // The first admin signs in with the printed password, must change it, enrols a second
    // factor (ADMIN_MFA=required, as shipped), and creates a doctor.
    let api = ports.api();
    let token = web::first_sign_in(&api, "it.admin@clinic.test", &temporary).await;
    let (s, created) = sandbox::http::post(
        &format!("{api}/api/v1/auth/admin/users"),
        Some(&token.access),
        &json!({"email": "amara.okafor@clinic.test", "firstName": "Amara",
                "lastName": "Okafor", "role": "doctor"}),
    )
    .await;
    assert_eq!(s, 201, "{created}");

    // The doctor is in the web portal's Doctor list.
    let mut browser = web::Browser::new(&ports.web());
    browser
        .sign_in("it.admin@clinic.test", &token.password, &token.recovery[0])
        .await;
    wait_for_doctor(&mut browser, "Dr Amara Okafor").await;

    drop(install);
    assert!(!steps::installed(), "the package was not purged");
    assert!(
        !Path::new("/etc/portal/credentials").exists(),
        "purge leaves the credentials"
    );
    drop(servers);
    std::fs::remove_dir_all(&work).ok();
}

/// An install of the previous release with data in it (an admin, a doctor, an appointment)
/// upgraded to this build as README.md's upgrade runbook says: the parts stopped, the new
/// package installed over it (the operator's settings kept), the setup run (its migrations),
/// the parts started again. Every copy is then in sync, every account still signs in (the
/// doctor with the temporary password the old build gave out: the server's keys survive),
/// and the appointment is still there.
#[tokio::test]
async fn the_previous_release_upgrades_to_this_build_keeping_data_and_accounts() {
    let _machine = steps::machine_lock();
    let work = prepare("upgrade");
    let (previous, _) = steps::previous_release();
    let old = steps::previous_package();
    let new = steps::build_package(&work);
    let mut install = Install::new(&work);
    steps::dpkg_install(&old);
    let servers = Servers::start();
    let ports = steps::configure(&servers);
    steps::setup();
    install.start_all(&ports).await;
    let temporary = steps::bootstrap_admin("it.admin@clinic.test");
    let api = ports.api();
    let admin = web::first_sign_in(&api, "it.admin@clinic.test", &temporary).await;
    let (s, doctor) = sandbox::http::post(
        &format!("{api}/api/v1/auth/admin/users"),
        Some(&admin.access),
        &json!({"email": "amara.okafor@clinic.test", "firstName": "Amara",
                "lastName": "Okafor", "role": "doctor"}),
    )
    .await;
    assert_eq!(s, 201, "{doctor}");
    let doctor_id: uuid::Uuid = doctor["user"]["userId"].as_str().unwrap().parse().unwrap();
    let doctor_password = doctor["temporaryPassword"].as_str().unwrap().to_owned();
    // The appointment-service learns of the doctor through its queue: booking waits for it.
    let booked = sandbox::poll::poll_until(Duration::from_secs(30), "a booking", || {
        let (url, token) = (format!("{api}/api/v1/appointments"), admin.access.clone());
        async move {
            let booking = sandbox::appointments::booking(doctor_id, 24, 30);
            let (s, body) = sandbox::http::post(&url, Some(&token), &booking).await;
            (s == 201).then_some(body)
        }
    })
    .await;
    let appointment = booked["id"].as_str().unwrap().to_owned();

    // The upgrade.
    install.stop_all();
    steps::dpkg_install(&new);
    let version = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "portal"])
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert_ne!(
        version, previous,
        "the new package did not replace {previous}"
    );
    steps::setup();
    let status = steps::operator(&["migrate", "status"]);
    assert!(
        status.status.success(),
        "the schemas after the upgrade's setup:\n{}",
        String::from_utf8_lossy(&status.stdout)
    );
    install.start_all(&ports).await;

    // Every copy in sync (the operator's verify), every account signs in, the appointment kept.
    let verified = sandbox::poll::poll_until(Duration::from_secs(30), "verify in sync", || async {
        let out = steps::operator(&["verify"]);
        out.status.success().then_some(out)
    })
    .await;
    assert!(
        String::from_utf8_lossy(&verified.stdout).contains("in sync"),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let (s, asked) = sandbox::http::post(
        &format!("{api}/api/v1/auth/login"),
        None,
        &json!({"email": "it.admin@clinic.test", "password": admin.password}),
    )
    .await;
    assert_eq!(s, 202, "{asked}");
    let (s, done) = sandbox::http::post(
        &format!("{api}/api/v1/auth/login/second-factor"),
        None,
        &json!({"challenge": asked["challenge"], "code": admin.recovery[0]}),
    )
    .await;
    assert_eq!(s, 200, "the admin after the upgrade: {done}");
    let token = done["accessToken"].as_str().unwrap().to_owned();
    let (s, body) = sandbox::http::post(
        &format!("{api}/api/v1/auth/login"),
        None,
        &json!({"email": "amara.okafor@clinic.test", "password": doctor_password}),
    )
    .await;
    assert_eq!(
        s, 200,
        "the doctor's temporary password after the upgrade: {body}"
    );
    assert_eq!(body["user"]["mustChangePassword"], true, "{body}");
    let (s, body) = sandbox::http::get(
        &format!("{api}/api/v1/appointments/{appointment}"),
        Some(&token),
    )
    .await;
    assert_eq!(s, 200, "the appointment after the upgrade: {body}");

    drop(install);
    drop(servers);
    std::fs::remove_dir_all(&work).ok();
}
