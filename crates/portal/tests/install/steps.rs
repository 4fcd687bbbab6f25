//! The install's steps as README.md gives them, each run the way an operator (or systemd) runs
//! it: packages built by `scripts/package`, `dpkg -i`, the operator's two files, the setup
//! unit's command, the first admin, every part started as `portal@.service` says.

use sandbox::process::free_port;
use sandbox::servers::{PrivatePostgres, PrivateRabbit};
use sandbox::unit::ServiceUnit;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The parts README.md's install enables (the auth-service runs its relay inside).
pub const STARTED: [&str; 6] = [
    "auth-service",
    "user-service",
    "appointment-service",
    "sync-admin",
    "gateway",
    "web",
];

/// Every part with a unit instance, an OS user and a credentials file.
pub const PARTS: [&str; 7] = ops::setup::PARTS;

pub const UNITS: &str = "/lib/systemd/system";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `cmd`, which must succeed; its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{said}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `portal@<part>.service` as installed.
pub fn part_unit(part: &str) -> ServiceUnit {
    ServiceUnit::read(&Path::new(UNITS).join("portal@.service"), Some(part))
        .expect("portal@.service")
}

/// This build's package, from the binary these tests were built with (the release build is
/// the script's default; packaging is what is tested here, not the optimiser), checked by
/// lintian (`--lint`: errors and warnings fail).
pub fn build_package(out: &Path) -> PathBuf {
    package_from(
        &repo(),
        Path::new(env!("CARGO_BIN_EXE_portal")),
        out,
        &["--lint"],
    )
}

/// `scripts/package` of the sources in `source`, packaging `binary`, into `out`.
fn package_from(source: &Path, binary: &Path, out: &Path, flags: &[&str]) -> PathBuf {
    let mut cmd = Command::new("bash");
    sandbox::process::isolated(&mut cmd)
        .current_dir(source)
        .arg("scripts/package")
        .args(flags)
        .env("PORTAL_BINARY", binary)
        .env("PACKAGE_OUT", out)
        // An exported tree has no git history to date the files by.
        .env("SOURCE_DATE_EPOCH", "1796688000");
    let stdout = run(&mut cmd);
    let deb = PathBuf::from(stdout.lines().last().expect("the package's path").trim());
    assert!(deb.exists(), "{} missing", deb.display());
    deb
}

/// The previous release (the last line of `deploy/releases`: version and commit).
pub fn previous_release() -> (String, String) {
    let text = std::fs::read_to_string(repo().join("deploy/releases")).unwrap();
    let line = text
        .lines()
        .rfind(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("a release in deploy/releases");
    let mut words = line.split_whitespace();
    (
        words.next().unwrap().to_owned(),
        words.next().expect("its commit").to_owned(),
    )
}

/// A folder of root's alone for what these tests build and later install as root: under a
/// world-writable /var/tmp, a folder someone else made (or could write to) is refused, never
/// trusted with a package that dpkg runs as root.
fn root_cache() -> PathBuf {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let dir = PathBuf::from("/var/tmp/portal-install-tests");
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).unwrap();
    assert!(
        meta.is_dir() && meta.uid() == 0 && meta.permissions().mode() & 0o077 == 0,
        "{} is not a folder of root's alone: remove it",
        dir.display()
    );
    dir
}

/// Machine-wide turns: one test process at a time installs the package on this machine (two
/// test runs, or two checkouts, would purge each other's install).
pub fn machine_lock() -> std::fs::File {
    let file = std::fs::File::create(root_cache().join("lock")).unwrap();
    file.lock().unwrap();
    file
}

/// The previous release's package, built from its own sources at its commit with its own
/// `scripts/package` (a debug build, in a target folder of its own, kept with the package in
/// [`root_cache`] so that later runs on this machine reuse them).
pub fn previous_package() -> PathBuf {
    let (version, commit) = previous_release();
    let cache = root_cache().join(format!("release-{commit}"));
    if let Some(deb) = std::fs::read_dir(&cache).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
    }) {
        return deb;
    }
    let source = root_cache().join(format!("source-{commit}"));
    let _ = std::fs::remove_dir_all(&source);
    std::fs::create_dir_all(&source).unwrap();
    // The release's tree, exported from this repository's history.
    let archive = run(Command::new("git")
        .current_dir(repo())
        .args(["archive", "--format=tar", "-o"])
        .arg(source.join("release.tar"))
        .arg(&commit));
    drop(archive);
    run(Command::new("tar")
        .current_dir(&source)
        .args(["-xf", "release.tar"]));
    let target = root_cache().join("release-target");
    let mut build = Command::new("cargo");
    build
        .current_dir(&source)
        .env_clear()
        .envs(
            std::env::vars().filter(|(k, _)| {
                matches!(k.as_str(), "PATH" | "HOME" | "CARGO_HOME" | "RUSTUP_HOME")
            }),
        )
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--locked", "-p", "portal"]);
    run(&mut build);
    let binary = target.join("debug/portal");
    let building = root_cache().join(format!("building-{commit}"));
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building).unwrap();
    let deb = package_from(&source, &binary, &building, &[]);
    // Kept only once whole: a run killed half-way leaves no package to trust.
    std::fs::rename(&building, &cache).unwrap();
    let deb = cache.join(deb.file_name().unwrap());
    assert!(
        deb.to_string_lossy()
            .contains(&format!("portal_{version}_")),
        "{} is not release {version}",
        deb.display()
    );
    std::fs::remove_dir_all(&source).ok();
    deb
}

pub fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "portal"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// `dpkg -i`, keeping the operator's edited conffiles on an upgrade (as an operator answering
/// dpkg's question with "keep" would).
pub fn dpkg_install(deb: &Path) {
    let mut dpkg = Command::new("dpkg");
    run(sandbox::process::isolated(&mut dpkg)
        .args(["--force-confold", "--force-confdef", "-i"])
        .arg(deb));
}

pub fn purge() {
    let mut cmd = Command::new("dpkg");
    run(sandbox::process::isolated(&mut cmd).args(["--purge", "portal"]));
}

/// Where the test's parts listen (this machine runs other tests beside it).
pub struct Ports {
    pub auth: u16,
    pub users: u16,
    pub appointments: u16,
    pub sync: u16,
    pub gateway: u16,
    pub web: u16,
    /// A relay of its own (`portal@relay`): its health and metrics.
    pub relay: u16,
}

impl Ports {
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway)
    }

    pub fn web(&self) -> String {
        format!("http://127.0.0.1:{}", self.web)
    }
}

/// The servers of the test's own: a private PostgreSQL and a private RabbitMQ node with an
/// administrator other than guest (the setup deletes guest, and creates users server-wide).
pub struct Servers {
    pub postgres: PrivatePostgres,
    pub rabbit: PrivateRabbit,
    pub broker_password: String,
}

impl Servers {
    pub fn start() -> Self {
        let postgres = PrivatePostgres::start().expect("a private PostgreSQL");
        let broker_password = sandbox::world::random_id(24);
        let rabbit = PrivateRabbit::start_with_management().expect("a private RabbitMQ node");
        for args in [
            vec!["add_user", "portal-admin", broker_password.as_str()],
            vec!["set_user_tags", "portal-admin", "administrator"],
            vec![
                "set_permissions",
                "-p",
                "/",
                "portal-admin",
                ".*",
                ".*",
                ".*",
            ],
        ] {
            rabbit.ctl_output(&args).unwrap();
        }
        Self {
            postgres,
            rabbit,
            broker_password,
        }
    }
}

/// The operator's two files, as README.md says: setup.env naming the test's servers, and the
/// shipped portal.env with the test's ports and no TLS proxy in front of the web portal.
pub fn configure(servers: &Servers) -> Ports {
    std::fs::write(
        "/etc/portal/setup.env",
        format!(
            "ADMIN_DATABASE_URL={}/postgres\n\
             ADMIN_AMQP_URL=amqp://portal-admin:{}@127.0.0.1:{}/%2f\n\
             RABBITMQ_MANAGEMENT_URL={}\n",
            servers.postgres.url(),
            servers.broker_password,
            servers.rabbit.port,
            servers.rabbit.management_url().unwrap()
        ),
    )
    .unwrap();
    let port = || free_port().unwrap();
    let ports = Ports {
        auth: port(),
        users: port(),
        appointments: port(),
        sync: port(),
        gateway: port(),
        web: port(),
        relay: port(),
    };
    let shipped = std::fs::read_to_string("/etc/portal/portal.env").unwrap();
    assert!(shipped.contains("ADMIN_MFA=required"), "{shipped}");
    let Ports {
        auth,
        users,
        appointments,
        sync,
        gateway,
        web,
        relay,
    } = ports;
    std::fs::write(
        "/etc/portal/portal.env",
        format!(
            "{shipped}\n# The test's ports, and no TLS proxy in front of the web portal.\n\
             AUTH_ADDR=127.0.0.1:{auth}\nUSER_ADDR=127.0.0.1:{users}\n\
             APPOINTMENT_ADDR=127.0.0.1:{appointments}\nSYNC_ADMIN_ADDR=127.0.0.1:{sync}\n\
             GATEWAY_ADDR=127.0.0.1:{gateway}\nWEB_HOST=127.0.0.1\nWEB_PORT={web}\n\
             RELAY_HTTP_PORT={relay}\n\
             AUTH_SERVICE_URL=http://127.0.0.1:{auth}\nUSER_SERVICE_URL=http://127.0.0.1:{users}\n\
             APPOINTMENT_SERVICE_URL=http://127.0.0.1:{appointments}\n\
             SYNC_ADMIN_URL=http://127.0.0.1:{sync}\nGATEWAY_URL=http://127.0.0.1:{gateway}\n\
             WEB_SECURE_COOKIES=false\n",
        ),
    )
    .unwrap();
    ports
}

/// portal-setup.service's command, as its unit runs it; what it printed.
pub fn setup() -> String {
    let unit = ServiceUnit::read(&Path::new(UNITS).join("portal-setup.service"), None).unwrap();
    run(&mut unit.command().unwrap())
}

/// `portal <args>` as root with the operator's credentials and the auth-service's key
/// directory (README.md's way).
pub fn operator(args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("/usr/bin/portal");
    sandbox::process::isolated(&mut cmd)
        .env("PORTAL_CREDENTIALS", "/etc/portal/credentials")
        .env("JWT_KEY_DIR", "/var/lib/portal/auth-service/keys")
        .args(args)
        .output()
        .unwrap()
}

/// `portal <args>` as `part` runs: its unit's user, environment and working directory.
pub fn as_part(part: &str, args: &[&str]) -> std::process::Output {
    let unit = part_unit(part);
    let (uid, gid) = unit.ids().unwrap().expect("User=");
    let mut cmd = Command::new(&unit.exec_start[0]);
    std::os::unix::process::CommandExt::uid(&mut cmd, uid);
    std::os::unix::process::CommandExt::gid(&mut cmd, gid);
    cmd.args(args)
        .env_clear()
        .envs(unit.environment().unwrap())
        .current_dir(unit.working_directory.clone().unwrap_or_else(|| "/".into()))
        .output()
        .unwrap()
}

/// The first admin; the temporary password it printed.
pub fn bootstrap_admin(email: &str) -> String {
    let out = operator(&["admin", "bootstrap", email]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    said.lines()
        .find_map(|l| l.split("the first sign-in): ").nth(1))
        .unwrap_or_else(|| panic!("no temporary password in:\n{said}"))
        .trim()
        .to_owned()
}

/// The parts the test started, stopped (and the package purged) on every exit path.
pub struct Install {
    children: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Install {
    pub fn new(logs: &Path) -> Self {
        Self {
            children: Vec::new(),
            logs: logs.to_owned(),
        }
    }

    pub fn log(&self, part: &str) -> String {
        std::fs::read_to_string(self.logs.join(format!("{part}.log"))).unwrap_or_default()
    }

    /// Starts `part` as `portal@<part>.service` says.
    pub fn start(&mut self, part: &str) {
        let unit = part_unit(part);
        unit.prepare_state_directory().unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{part}.log")))
            .unwrap();
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

    /// Starts every part README.md enables and waits until each is ready.
    pub async fn start_all(&mut self, ports: &Ports) {
        for part in STARTED {
            self.start(part);
        }
        for (part, port) in [
            ("auth-service", ports.auth),
            ("user-service", ports.users),
            ("appointment-service", ports.appointments),
            ("sync-admin", ports.sync),
            ("gateway", ports.gateway),
        ] {
            self.wait_ready(part, &format!("http://127.0.0.1:{port}/health/ready"))
                .await;
        }
        self.wait_ready("web", &format!("{}/login", ports.web()))
            .await;
    }

    /// Stops every part (SIGTERM, as systemd does) and waits for each.
    pub fn stop_all(&mut self) {
        for (_, child) in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for (part, child) in &mut self.children {
            let status = child.wait().unwrap();
            assert!(status.success(), "{part} stopped with {status}");
        }
        self.children.clear();
    }

    /// Waits until `url` answers 2xx.
    pub async fn wait_ready(&self, part: &str, url: &str) {
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
                self.log(part)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
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
        // The package's own purge removes /var/lib/portal (a test checks it did).
        if installed() {
            let _ = Command::new("dpkg").args(["--purge", "portal"]).output();
        }
    }
}

/// `path` as the part's OS user would open it: Ok, or the error's text.
pub fn read_as(part: &str, path: &str) -> Result<(), String> {
    let (uid, gid) = part_unit(part).ids().unwrap().expect("User=");
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
