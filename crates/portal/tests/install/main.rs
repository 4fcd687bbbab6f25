//! The packaged install, the way README.md's "Installing on a server" does it: the Debian
//! package built by `scripts/package`, installed with `dpkg -i` on this machine, setup.env and
//! portal.env written for servers of the test's own (a private PostgreSQL, a private RabbitMQ
//! node with its management API: the setup creates roles and users server-wide and deletes
//! guest), portal-setup.service's command run as that unit says, the first admin created with
//! `portal admin bootstrap`, and every part started as the installed `portal@.service` says
//! (its `User=`, `Environment=`, `EnvironmentFile=`, `ExecStart=`, state directory: read from
//! the unit, see `sandbox::unit`). Then the system is used: the admin signs in with the
//! printed password, must change it, enrols a second factor, creates a doctor, and the doctor
//! is in the web portal's Doctor list. No part can read another's credentials. The package is
//! purged at the end.
//!
//! Needs root (dpkg, the parts' OS users). Its own test binary: it changes the machine's
//! packages, so its tests take turns ([`MACHINE`]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod web;

use sandbox::process::free_port;
use sandbox::servers::{PrivatePostgres, PrivateRabbit};
use sandbox::unit::ServiceUnit;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One test at a time installs the package on this machine.
static MACHINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The parts README.md's install enables (the auth-service runs its relay inside).
const STARTED: [&str; 6] = [
    "auth-service",
    "user-service",
    "appointment-service",
    "sync-admin",
    "gateway",
    "web",
];

/// Every part with a unit instance, an OS user and a credentials file.
const PARTS: [&str; 7] = ops::setup::PARTS;

const UNITS: &str = "/lib/systemd/system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{said}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package from the binary these tests were built with (the release build is the
/// script's default; packaging is what is tested here, not the optimiser).
fn build_package(out: &Path) -> PathBuf {
    let mut cmd = Command::new("bash");
    sandbox::process::isolated(&mut cmd)
        .current_dir(repo())
        .arg("scripts/package")
        .env("PORTAL_BINARY", env!("CARGO_BIN_EXE_portal"))
        .env("PACKAGE_OUT", out);
    let stdout = run(&mut cmd);
    let deb = PathBuf::from(stdout.lines().last().expect("the package's path").trim());
    assert!(deb.exists(), "{} missing", deb.display());
    deb
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "portal"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn purge() {
    let mut cmd = Command::new("dpkg");
    run(sandbox::process::isolated(&mut cmd).args(["--purge", "portal"]));
}

/// What the test started and installed, stopped and purged on every exit path.
struct Install {
    children: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Install {
    fn log(&self, part: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{part}.log"))).unwrap_or_default()
    }

    /// Starts `part` as `portal@<part>.service` says.
    fn start(&mut self, part: &str) {
        let unit = ServiceUnit::read(&Path::new(UNITS).join("portal@.service"), Some(part))
            .expect("portal@.service");
        unit.prepare_state_directory().unwrap();
        let log = std::fs::File::create(self.logs.join(format!("{part}.log"))).unwrap();
        let child = unit
            .command()
            .unwrap()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {part}: {e}"));
        self.children.push((part.to_owned(), child));
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for (_, child) in &mut self.children {
            let _ = child.wait();
        }
        if installed() {
            let _ = Command::new("dpkg").args(["--purge", "portal"]).output();
        }
        let _ = std::fs::remove_dir_all("/var/lib/portal");
    }
}

/// A private RabbitMQ node with an administrator other than guest (the setup deletes guest).
fn broker_with_admin(password: &str) -> PrivateRabbit {
    let rabbit = PrivateRabbit::start_with_management().expect("a private RabbitMQ node");
    rabbit
        .ctl_output(&["add_user", "portal-admin", password])
        .unwrap();
    rabbit
        .ctl_output(&["set_user_tags", "portal-admin", "administrator"])
        .unwrap();
    rabbit
        .ctl_output(&[
            "set_permissions",
            "-p",
            "/",
            "portal-admin",
            ".*",
            ".*",
            ".*",
        ])
        .unwrap();
    rabbit
}

/// Waits until `url` answers 200.
async fn wait_ready(install: &Install, part: &str, url: &str) {
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{part} not ready at {url} within 60 s; its log:\n{}",
            install.log(part)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `path` as the part's OS user would open it: Ok, or the error's text.
fn read_as(part: &str, path: &str) -> Result<(), String> {
    let unit = ServiceUnit::read(&Path::new(UNITS).join("portal@.service"), Some(part)).unwrap();
    let (uid, gid) = unit.ids().unwrap().expect("User=");
    let mut cmd = Command::new("cat");
    std::os::unix::process::CommandExt::uid(&mut cmd, uid);
    std::os::unix::process::CommandExt::gid(&mut cmd, gid);
    let out = sandbox::process::isolated(&mut cmd)
        .arg(path)
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

#[tokio::test]
async fn the_package_installs_sets_up_and_serves_with_one_identity_per_part() {
    let _machine = MACHINE.lock().await;
    assert!(
        nix::unistd::geteuid().is_root(),
        "the install test needs root (dpkg, the parts' users)"
    );
    if installed() {
        // A killed earlier run's: this test owns the package on this machine.
        purge();
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("install-{}", sandbox::world::random_id(8)));
    std::fs::create_dir_all(&work).unwrap();
    let deb = build_package(&work);
    let mut install = Install {
        children: Vec::new(),
        logs: work.clone(),
    };
    let mut dpkg = Command::new("dpkg");
    run(sandbox::process::isolated(&mut dpkg).arg("-i").arg(&deb));

    // What postinst made: one system user per part, the credentials folder.
    for part in PARTS {
        let user = format!("portal-{part}");
        assert!(
            nix::unistd::User::from_name(&user).unwrap().is_some(),
            "postinst made no user {user}"
        );
    }

    // The operator's two files, as README.md says (the servers are the test's own).
    let postgres = PrivatePostgres::start().expect("a private PostgreSQL");
    let broker_password = sandbox::world::random_id(24);
    let rabbit = broker_with_admin(&broker_password);
    std::fs::write(
        "/etc/portal/setup.env",
        format!(
            "ADMIN_DATABASE_URL={}/postgres\n\
             ADMIN_AMQP_URL=amqp://portal-admin:{broker_password}@127.0.0.1:{}/%2f\n\
             RABBITMQ_MANAGEMENT_URL={}\n",
            postgres.url(),
            rabbit.port,
            rabbit.management_url().unwrap()
        ),
    )
    .unwrap();
    let port = |_: &str| free_port().unwrap();
    let (auth, users, appointments, sync, gateway, web) = (
        port("auth"),
        port("users"),
        port("appointments"),
        port("sync"),
        port("gateway"),
        port("web"),
    );
    let shipped = std::fs::read_to_string("/etc/portal/portal.env").unwrap();
    assert!(shipped.contains("ADMIN_MFA=required"), "{shipped}");
    std::fs::write(
        "/etc/portal/portal.env",
        format!(
            "{shipped}\n# The test's ports (this machine runs other tests beside it), and no TLS\n\
             # proxy in front of the web portal.\n\
             AUTH_ADDR=127.0.0.1:{auth}\nUSER_ADDR=127.0.0.1:{users}\n\
             APPOINTMENT_ADDR=127.0.0.1:{appointments}\nSYNC_ADMIN_ADDR=127.0.0.1:{sync}\n\
             GATEWAY_ADDR=127.0.0.1:{gateway}\nWEB_HOST=127.0.0.1\nWEB_PORT={web}\n\
             RELAY_HTTP_PORT={}\n\
             AUTH_SERVICE_URL=http://127.0.0.1:{auth}\nUSER_SERVICE_URL=http://127.0.0.1:{users}\n\
             APPOINTMENT_SERVICE_URL=http://127.0.0.1:{appointments}\n\
             SYNC_ADMIN_URL=http://127.0.0.1:{sync}\nGATEWAY_URL=http://127.0.0.1:{gateway}\n\
             WEB_SECURE_COOKIES=false\n",
            free_port().unwrap()
        ),
    )
    .unwrap();

    // portal-setup.service, as its unit runs it.
    let setup = ServiceUnit::read(&Path::new(UNITS).join("portal-setup.service"), None).unwrap();
    let said = run(&mut setup.command().unwrap());
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

    // The first admin, as README.md says: root, with the operator's credentials.
    let mut bootstrap = Command::new("/usr/bin/portal");
    let said = run(sandbox::process::isolated(&mut bootstrap)
        .env("PORTAL_CREDENTIALS", "/etc/portal/credentials")
        .args(["admin", "bootstrap", "it.admin@clinic.test"]));
    let temporary = said
        .lines()
        .find_map(|l| l.split("first sign-in): ").nth(1))
        .unwrap_or_else(|| panic!("no temporary password in:\n{said}"))
        .trim()
        .to_owned();
    let again = run(
        sandbox::process::isolated(&mut Command::new("/usr/bin/portal"))
            .env("PORTAL_CREDENTIALS", "/etc/portal/credentials")
            .args(["admin", "bootstrap", "it.admin@clinic.test"]),
    );
    assert!(
        again.contains("exists already") && !again.contains(&temporary),
        "{again}"
    );

    // Every part as its unit starts it.
    for part in STARTED {
        install.start(part);
    }
    let api = format!("http://127.0.0.1:{gateway}");
    for (part, port) in [
        ("auth-service", auth),
        ("user-service", users),
        ("appointment-service", appointments),
        ("sync-admin", sync),
        ("gateway", gateway),
    ] {
        wait_ready(
            &install,
            part,
            &format!("http://127.0.0.1:{port}/health/ready"),
        )
        .await;
    }
    wait_ready(&install, "web", &format!("http://127.0.0.1:{web}/login")).await;

    // No part reads another's credentials, the operator's, or the signing key.
    for part in PARTS {
        read_as(part, &format!("/etc/portal/credentials.d/{part}.env"))
            .unwrap_or_else(|e| panic!("{part} cannot read its own credentials: {e}"));
        for other in PARTS.iter().filter(|o| **o != part) {
            let e = read_as(part, &format!("/etc/portal/credentials.d/{other}.env"))
                .expect_err(&format!("{part} reads {other}'s credentials"));
            assert!(e.contains("Permission denied"), "{part} → {other}: {e}");
        }
        let e = read_as(part, "/etc/portal/credentials").expect_err("the operator's file");
        assert!(e.contains("Permission denied"), "{e}");
        if part != "auth-service" {
            let e = read_as(part, "/var/lib/portal/auth-service/keys")
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
    let web_unit =
        ServiceUnit::read(&Path::new(UNITS).join("portal@.service"), Some("web")).unwrap();
    let gateway_unit =
        ServiceUnit::read(&Path::new(UNITS).join("portal@.service"), Some("gateway")).unwrap();
    let (uid, gid) = gateway_unit.ids().unwrap().unwrap();
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
    let mut browser = web::Browser::new(&format!("http://127.0.0.1:{web}"));
    browser
        .sign_in("it.admin@clinic.test", &token.password, &token.recovery[0])
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = browser.get("/appointments/new").await;
        let doctors = sandbox::http::doctor_options(&page.body);
        if doctors.iter().any(|d| d == "Dr Amara Okafor") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Dr Amara Okafor not in the Doctor list: {doctors:?}\n{}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    drop(install);
    assert!(!installed(), "the package was not purged");
    assert!(
        !Path::new("/etc/portal/credentials").exists(),
        "purge leaves the credentials"
    );
    drop((postgres, rabbit));
    std::fs::remove_dir_all(&work).ok();
}
