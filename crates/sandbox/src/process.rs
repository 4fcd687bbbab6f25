//! Services as child processes of the `portal` binary: each a real process (so it can be
//! `kill -9`ed like a crash, and its peak memory read from `/proc`), started with the sandbox's
//! databases, vhost and keys in its environment, logging to a file of the work directory, and
//! killed when dropped on any exit path.

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// What a child of the tests, the benchmark and the chaos run keeps of the caller's
/// environment: where programs are, nothing else. Every setting it needs is given to it
/// explicitly, so neither an operator's exported settings (`SEED_ADMIN_PASSWORD`, an
/// `AMQP_URL`…) nor values an install's credentials file put there reach a sandbox's services.
pub fn kept_env() -> impl Iterator<Item = (&'static str, std::ffi::OsString)> {
    ["PATH"]
        .into_iter()
        .filter_map(|var| std::env::var_os(var).map(|value| (var, value)))
}

/// `cmd` with only [`kept_env`] of the caller's environment (for `std::process`).
pub fn isolated(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env_clear().envs(kept_env())
}

/// `cmd` with only [`kept_env`] of the caller's environment (for `tokio::process`).
pub fn isolated_async(cmd: &mut Command) -> &mut Command {
    cmd.env_clear().envs(kept_env())
}

/// What puts a `portal` child on the sandbox `sb`: its three databases, its vhost, its keys,
/// and the access tokens' lifetime the in-process services have (`Config::local`), so a child
/// accepts the tokens they and the test helpers sign. The one place that says so, for the
/// tests, the benchmark and the chaos run alike.
pub fn sandbox_env(sb: &crate::Sandbox) -> Vec<(&'static str, OsString)> {
    vec![
        ("AUTH_DATABASE_URL", sb.database_url("auth").into()),
        ("USER_DATABASE_URL", sb.database_url("user").into()),
        (
            "APPOINTMENT_DATABASE_URL",
            sb.database_url("appointment").into(),
        ),
        ("AMQP_URL", sb.amqp_url.clone().into()),
        ("JWT_KEY_DIR", sb.key_dir.0.clone().into()),
        (
            "TOKEN_TTL_SECONDS",
            platform::jwt::LOCAL_ACCESS_TTL_SECONDS.to_string().into(),
        ),
        // The sandbox's admins sign in with a password alone, as under `portal up`; the
        // second factor has its own tests.
        ("ADMIN_MFA", "optional".into()),
    ]
}

/// How long a (re)started HTTP service may take to answer `/health/live`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a service may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The `portal` binary to run: `PORTAL_BIN`, else the `portal` beside the running executable
/// (for a test binary in `target/<profile>/deps`, the one in `target/<profile>`).
pub fn portal_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PORTAL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let candidate = dir.join("portal");
    if candidate.is_file() {
        return Ok(candidate);
    }
    bail!(
        "no portal binary at {}; build it (cargo build -p portal, or --release) or set PORTAL_BIN",
        candidate.display()
    )
}

/// The `portal` binary for a test that runs a tool driving it (`portal-bench`, `portal-chaos`):
/// [`portal_bin`], and when that is missing because only the tool's crate was built, `portal`
/// is built first by the cargo running the test (`$CARGO build -p portal`, into the test's own
/// target directory and profile, so it lands where [`portal_bin`] looks).
pub fn portal_bin_or_build() -> anyhow::Result<PathBuf> {
    if let Ok(path) = portal_bin() {
        return Ok(path);
    }
    let cargo = std::env::var_os("CARGO").ok_or_else(|| {
        anyhow!("no portal binary, and no cargo to build it with (CARGO is not set): run `cargo build -p portal` first or set PORTAL_BIN")
    })?;
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    // <target>/<profile>/deps/<test binary>
    let profile_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("{} is not in a cargo target directory", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("no target directory above {}", profile_dir.display()))?;
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "portal", "--bin", "portal"])
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
        None => bail!("no profile directory in {}", exe.display()),
    }
    let status = cmd.status().context("cannot run cargo to build portal")?;
    if !status.success() {
        bail!("cargo build -p portal failed ({status})");
    }
    portal_bin()
}

/// A test's command for a tool that builds its own sandbox and drives `portal`
/// (`portal-bench`, `portal-chaos`, given as `exe`): the servers of
/// [`crate::Servers::from_test_env`] as the tool's settings, the `portal` of
/// [`portal_bin_or_build`], quiet logs.
pub fn tool_for_test(exe: &str) -> anyhow::Result<std::process::Command> {
    let servers = crate::Servers::from_test_env();
    let mut cmd = std::process::Command::new(exe);
    isolated(&mut cmd)
        .env(
            "AUTH_DATABASE_URL",
            crate::world::with_path(&servers.postgres, "postgres")?,
        )
        .env("AMQP_URL", &servers.amqp)
        .env("RABBITMQ_MANAGEMENT_URL", &servers.management)
        .env("PORTAL_BIN", portal_bin_or_build()?)
        .env("RUST_LOG", "warn");
    Ok(cmd)
}

/// A port that was free a moment ago (bound and released). Another process could take it in
/// between; [`Process::start`] then sees the child fail to listen and tries another port.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// How to start one service.
#[derive(Debug, Clone)]
pub struct Spec {
    /// For messages and the log file (`<name>.log`).
    pub name: String,
    /// The `portal` arguments, e.g. `["auth-service", "--no-relay"]`.
    pub args: Vec<String>,
    pub env: Vec<(String, OsString)>,
    /// For an HTTP service: the variable that sets where it listens (`AUTH_ADDR`). A free port
    /// is chosen, and the start waits until `/health/live` answers there.
    pub addr_var: Option<String>,
}

impl Spec {
    /// A `portal` child of a sandbox: it reads no credentials file (an install's, in the
    /// working directory, is not the sandbox's); its settings come from `env`.
    pub fn new(name: &str, args: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec![("PORTAL_CREDENTIALS".to_owned(), "none".into())],
            addr_var: None,
        }
    }

    /// [`Spec::new`] on `sb`: see [`Spec::sandbox`].
    pub fn on(sb: &crate::Sandbox, name: &str, args: &[&str]) -> Self {
        Self::new(name, args).sandbox(sb)
    }

    /// [`sandbox_env`] of `sb` (a later [`Spec::env`] of the same variable wins).
    pub fn sandbox(self, sb: &crate::Sandbox) -> Self {
        self.envs(sandbox_env(sb))
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn envs<K: AsRef<str>, V: Into<OsString>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            self.env.push((k.as_ref().to_owned(), v.into()));
        }
        self
    }

    /// Serves HTTP on a free port set through `var`.
    pub fn http(mut self, var: &str) -> Self {
        self.addr_var = Some(var.to_owned());
        self
    }
}

/// A running child process.
pub struct Process {
    pub name: String,
    pub pid: u32,
    /// The port it serves HTTP on, if it does.
    pub port: Option<u16>,
    child: Child,
    pub log_path: PathBuf,
}

impl Process {
    /// Starts `spec` with `exe`, appending its output to `<log_dir>/<name>.log`. An HTTP
    /// service is given a free port and waited for (a few tries when the port was taken in the
    /// meantime).
    pub async fn start(exe: &Path, spec: &Spec, log_dir: &Path) -> anyhow::Result<Self> {
        let log_path = log_dir.join(format!("{}.log", spec.name));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("HTTP client")?;
        let mut last_error = None;
        for _attempt in 0..3 {
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("cannot open {}", log_path.display()))?;
            let mut cmd = Command::new(exe);
            isolated_async(&mut cmd)
                .args(&spec.args)
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log.try_clone().context("log file handle")?)
                .stderr(log)
                .kill_on_drop(true);
            let port = match &spec.addr_var {
                Some(var) => {
                    let port = free_port()?;
                    cmd.env(var, format!("127.0.0.1:{port}"));
                    Some(port)
                }
                None => None,
            };
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {} {}", exe.display(), spec.name))?;
            let mut process = Process {
                name: spec.name.clone(),
                pid: child.id().unwrap_or_default(),
                port,
                child,
                log_path: log_path.clone(),
            };
            let Some(port) = port else {
                return Ok(process);
            };
            match process.wait_live(&http, port).await {
                Ok(()) => return Ok(process),
                Err(e) => {
                    process.kill().await.ok();
                    last_error = Some(e);
                }
            }
        }
        let e = last_error.unwrap_or_else(|| anyhow!("no attempt made"));
        Err(e.context(format!(
            "{} did not start; see {}",
            spec.name,
            log_path.display()
        )))
    }

    /// Polls `/health/live` until it answers 200; fails early when the child exits.
    async fn wait_live(&mut self, http: &reqwest::Client, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("http://127.0.0.1:{port}/health/live");
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("exited during start ({status})");
            }
            if let Ok(resp) = http.get(&url).send().await {
                if resp.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("not answering {url} after {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:<port>` of an HTTP service.
    pub fn url(&self) -> anyhow::Result<String> {
        self.port
            .map(|p| format!("http://127.0.0.1:{p}"))
            .ok_or_else(|| anyhow!("{} serves no HTTP", self.name))
    }

    /// The exit status when it has exited by now.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("checking {}", self.name))
    }

    /// Fails with the end of the service's log when it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.exited()? {
            bail!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                tail(&self.log_path, 20)
            );
        }
        Ok(())
    }

    /// `kill -9`, as a crash or the OOM killer would, and reaps it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .start_kill()
            .with_context(|| format!("kill -9 {} (pid {})", self.name, self.pid))?;
        self.child.wait().await.context("reaping a killed child")?;
        Ok(())
    }

    /// SIGTERM, then waits for the clean stop (a consumer finishes its batch); SIGKILL after a
    /// deadline, which is an error.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = i32::try_from(self.pid).map(Pid::from_raw);
        if let Ok(pid) = pid {
            let _ = kill(pid, Signal::SIGTERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                status.with_context(|| format!("waiting for {}", self.name))?;
                Ok(())
            }
            Err(_) => {
                self.kill().await.ok();
                bail!(
                    "{} did not stop within {STOP_TIMEOUT:?} of SIGTERM",
                    self.name
                )
            }
        }
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("cannot read /proc/{}/status ({})", self.pid, self.name))?;
        status_kib(&status, "VmHWM:").with_context(|| format!("no VmHWM for {}", self.name))
    }
}

/// The number of kB on the line starting with `key` of a `/proc` status-like file.
pub fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The last `n` lines of a file (empty when it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_values_are_read_in_kib() {
        let status = "Name:\tportal\nVmHWM:\t   21504 kB\nVmRSS:\t 20000 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(21504));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }
}
