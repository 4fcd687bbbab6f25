//! The deployment under `deploy/systemd/`: the template unit, instantiated for every part, and
//! the setup unit pass `systemd-analyze verify` (Debian's systemd, offline: nothing is started),
//! every instance names a `portal` command that exists, the units keep their system-call filter
//! and private /proc, and the example environment keeps an install's security settings.

use std::path::Path;
use std::process::Command;

/// The parts `portal@.service` runs, one instance each.
const PARTS: [&str; 7] = [
    "auth-service",
    "user-service",
    "appointment-service",
    "relay",
    "gateway",
    "web",
    "sync-admin",
];

#[test]
fn the_systemd_units_verify_for_every_part() {
    let analyze =
        std::env::var("SYSTEMD_ANALYZE").unwrap_or_else(|_| "/usr/bin/systemd-analyze".into());
    assert!(
        Path::new(&analyze).exists(),
        "{analyze} is missing: it comes with Debian's systemd package"
    );
    let exe = env!("CARGO_BIN_EXE_portal");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/systemd");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("systemd-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The units name the installed binary; here, the one this test built.
    let installed = |unit: &str| {
        std::fs::read_to_string(units.join(unit))
            .unwrap()
            .replace("/usr/bin/portal", exe)
    };
    // A usage or configuration error (exit 64) is not restarted in a loop.
    assert!(
        installed("portal@.service")
            .lines()
            .any(|l| l.trim() == "RestartPreventExitStatus=64"),
        "portal@.service does not restart on exit 64"
    );
    // Only an ordinary service's system calls, and /proc showing the process alone: in both
    // units (their syscalls were checked against @system-service with strace).
    for unit in ["portal@.service", "portal-setup.service"] {
        let text = installed(unit);
        for line in [
            "SystemCallFilter=@system-service",
            "SystemCallErrorNumber=EPERM",
            "ProtectProc=invisible",
            "ProcSubset=pid",
        ] {
            assert!(
                text.lines().any(|l| l.trim() == line),
                "{unit} lacks {line}"
            );
        }
    }
    // The example environment an install starts from asks admins for a second factor and
    // serves the web portal's cookie for https.
    let env = std::fs::read_to_string(units.join("portal.env.example")).unwrap();
    for line in ["ADMIN_MFA=required", "WEB_SECURE_COOKIES=true"] {
        assert!(
            env.lines().any(|l| l.trim() == line),
            "portal.env.example lacks {line}"
        );
    }
    let mut files = Vec::new();
    for part in PARTS {
        let mut cmd = Command::new(exe);
        let help = sandbox::process::isolated(&mut cmd)
            .args([part, "--help"])
            .output()
            .unwrap();
        assert!(help.status.success(), "`portal {part}` is not a command");
        let file = dir.join(format!("portal@{part}.service"));
        std::fs::write(&file, installed("portal@.service")).unwrap();
        files.push(file);
    }
    let setup = dir.join("portal-setup.service");
    std::fs::write(&setup, installed("portal-setup.service")).unwrap();
    files.push(setup);
    let out = Command::new(&analyze)
        .arg("verify")
        .args(&files)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify:\n{said}");
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify complained:\n{said}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `compose.yaml` and `Dockerfile` cannot be run here (no container engine), so their
/// agreement with the install is checked as text: every part compose runs has its own user,
/// its own credentials file and `portal healthcheck` as its health check, the image makes each
/// part's user, and the setup writes per-part files.
#[test]
fn compose_runs_each_part_under_its_own_user_and_credentials() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let compose = std::fs::read_to_string(root.join("compose.yaml")).unwrap();
    let image = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    for part in [
        "auth-service",
        "user-service",
        "appointment-service",
        "sync-admin",
        "gateway",
        "web",
    ] {
        for line in [
            format!("user: portal-{part}"),
            format!("PORTAL_CREDENTIALS: /etc/portal/credentials.d/{part}.env"),
            format!(r#"test: ["CMD", "portal", "healthcheck", "{part}"]"#),
        ] {
            assert!(
                compose.lines().any(|l| l.trim() == line),
                "compose.yaml lacks `{line}`"
            );
        }
    }
    for part in ops::setup::PARTS {
        assert!(
            image.contains(part),
            "the Dockerfile makes no user for {part}"
        );
    }
    assert!(compose.contains("PART_CREDENTIALS_DIR: /etc/portal/credentials.d"));
    assert!(
        !compose.contains("chown"),
        "compose hands files around by hand"
    );
}
