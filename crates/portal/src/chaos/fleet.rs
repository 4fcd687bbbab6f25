//! The services under test as child processes of this very binary (`portal auth-service
//! --no-relay`, `portal user-service`, `portal relay`), each on a free port with the run's
//! databases, vhost and keys, logging to a file in the run's directory. The chaos comes from
//! killing them with SIGKILL, exactly what a crash or an OOM kill does; every child is also
//! killed when the fleet is dropped, on any exit path.

use anyhow::{anyhow, bail, Context};
use serde_json::Value;
use std::ffi::OsString;
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// How long a (re)started service may take to answer `/health/live`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    AuthService,
    UserService,
    Relay,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::AuthService => "auth-service",
            Part::UserService => "user-service",
            Part::Relay => "relay",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            // The relay runs as its own process so it can be killed without the API going down.
            Part::AuthService => &["auth-service", "--no-relay"],
            Part::UserService => &["user-service"],
            Part::Relay => &["relay"],
        }
    }

    /// The variable that sets where this part listens, if it serves HTTP.
    fn addr_var(self) -> Option<&'static str> {
        match self {
            Part::AuthService => Some("AUTH_ADDR"),
            Part::UserService => Some("USER_ADDR"),
            Part::Relay => None,
        }
    }
}

/// The user-service consumer's counters, as `GET /health/ready` reports them (field `sync`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncCounters {
    /// Snapshots that changed `user_db`.
    pub applied: u64,
    /// Valid events acked without effect: `user_db` already held that version or a newer one.
    pub ignored_stale: u64,
    pub dead_lettered: u64,
}

impl SyncCounters {
    fn add(&mut self, other: SyncCounters) {
        self.applied += other.applied;
        self.ignored_stale += other.ignored_stale;
        self.dead_lettered += other.dead_lettered;
    }

    /// Valid events the consumer received (each is either applied or ignored as stale).
    pub fn deliveries(&self) -> u64 {
        self.applied + self.ignored_stale
    }
}

struct Proc {
    child: Child,
    pid: u32,
    port: Option<u16>,
}

/// What one kill-and-restart did, for the log line.
pub struct Restart {
    pub old_pid: u32,
    pub new_pid: u32,
    pub downtime: Duration,
}

pub struct Fleet {
    exe: PathBuf,
    vars: Vec<(&'static str, OsString)>,
    log_dir: PathBuf,
    http: reqwest::Client,
    auth: Proc,
    users: Proc,
    relay: Proc,
    /// Counters of user-service processes that are gone, each read just before its kill.
    retired: SyncCounters,
    /// Children that exited without being killed by the run: a crash is a finding.
    pub unexpected_exits: Vec<String>,
}

/// A port that was free a moment ago (bound and released). Another process could take it in
/// between; [`Fleet::spawn`] then sees the child fail to listen and tries another port.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

impl Fleet {
    /// Starts the auth-service, the user-service and the relay, each answering before the next
    /// starts (the user-service needs the key pair the auth-service finds in place).
    pub async fn start(
        vars: Vec<(&'static str, OsString)>,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("HTTP client")?;
        let auth = spawn(&exe, &vars, log_dir, &http, Part::AuthService).await?;
        let users = spawn(&exe, &vars, log_dir, &http, Part::UserService).await?;
        let relay = spawn(&exe, &vars, log_dir, &http, Part::Relay).await?;
        Ok(Self {
            exe,
            vars,
            log_dir: log_dir.to_owned(),
            http,
            auth,
            users,
            relay,
            retired: SyncCounters::default(),
            unexpected_exits: Vec::new(),
        })
    }

    pub fn auth_url(&self) -> anyhow::Result<String> {
        self.auth
            .port
            .map(|p| format!("http://127.0.0.1:{p}"))
            .ok_or_else(|| anyhow!("the auth-service has no port"))
    }

    fn proc_mut(&mut self, part: Part) -> &mut Proc {
        match part {
            Part::AuthService => &mut self.auth,
            Part::UserService => &mut self.users,
            Part::Relay => &mut self.relay,
        }
    }

    async fn respawn(&mut self, part: Part) -> anyhow::Result<u32> {
        let proc = spawn(&self.exe, &self.vars, &self.log_dir, &self.http, part).await?;
        let pid = proc.pid;
        *self.proc_mut(part) = proc;
        Ok(pid)
    }

    /// `kill -9`s `part`, leaves it down for `downtime` (the workload piles up meanwhile) and
    /// starts a new one, waiting until it answers when it serves HTTP.
    pub async fn kill_and_restart(
        &mut self,
        part: Part,
        downtime: Duration,
    ) -> anyhow::Result<Restart> {
        if part == Part::UserService {
            // Counters live in the process and die with it: take them just before the kill.
            // Whatever it does in the few milliseconds between this read and the SIGKILL is not
            // counted, so totals built from these are lower bounds.
            if let Some(c) = self.user_counters().await {
                self.retired.add(c);
            }
        }
        let proc = self.proc_mut(part);
        let old_pid = proc.pid;
        proc.child
            .start_kill()
            .with_context(|| format!("kill -9 {} (pid {old_pid})", part.name()))?;
        proc.child.wait().await.context("reaping killed child")?;
        tokio::time::sleep(downtime).await;
        let new_pid = self.respawn(part).await?;
        Ok(Restart {
            old_pid,
            new_pid,
            downtime,
        })
    }

    /// Restarts any child that exited by itself, recording each as an unexpected exit; returns
    /// their descriptions.
    pub async fn restart_exited(&mut self) -> anyhow::Result<Vec<String>> {
        let mut found = Vec::new();
        for part in [Part::AuthService, Part::UserService, Part::Relay] {
            let log = self.log_dir.join(format!("{}.log", part.name()));
            let proc = self.proc_mut(part);
            if let Some(status) = proc.child.try_wait().context("checking a child")? {
                let what = format!(
                    "{} (pid {}) exited by itself ({status}); see {}",
                    part.name(),
                    proc.pid,
                    log.display()
                );
                self.unexpected_exits.push(what.clone());
                found.push(what);
                self.respawn(part).await?;
            }
        }
        Ok(found)
    }

    /// The running user-service's counters, or `None` when it does not answer.
    pub async fn user_counters(&self) -> Option<SyncCounters> {
        let port = self.users.port?;
        // Readiness answers 503 while user_db or the broker is down, with the counters still in
        // the body, so the status is not checked.
        let body: Value = self
            .http
            .get(format!("http://127.0.0.1:{port}/health/ready"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let sync = &body["sync"];
        Some(SyncCounters {
            applied: sync["applied"].as_u64()?,
            ignored_stale: sync["ignoredStale"].as_u64()?,
            dead_lettered: sync["deadLettered"].as_u64()?,
        })
    }

    /// Counters over every user-service process of the run: the retired ones plus the current.
    pub async fn total_counters(&self) -> SyncCounters {
        let mut total = self.retired;
        if let Some(c) = self.user_counters().await {
            total.add(c);
        }
        total
    }

    /// Kills every child and waits for them.
    pub async fn shutdown(mut self) {
        for part in [Part::Relay, Part::UserService, Part::AuthService] {
            let proc = self.proc_mut(part);
            proc.child.start_kill().ok();
            proc.child.wait().await.ok();
        }
    }
}

/// Starts `part`; for an HTTP part, picks a free port and waits until `/health/live` answers
/// (a few tries when the port was taken in the meantime).
async fn spawn(
    exe: &Path,
    vars: &[(&'static str, OsString)],
    log_dir: &Path,
    http: &reqwest::Client,
    part: Part,
) -> anyhow::Result<Proc> {
    let log_path = log_dir.join(format!("{}.log", part.name()));
    let mut last_error = None;
    for _attempt in 0..3 {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut cmd = Command::new(exe);
        cmd.args(part.args())
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log file handle")?)
            .stderr(log)
            .kill_on_drop(true);
        let port = match part.addr_var() {
            Some(var) => {
                let port = free_port()?;
                cmd.env(var, format!("127.0.0.1:{port}"));
                Some(port)
            }
            None => None,
        };
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} {}", exe.display(), part.name()))?;
        let pid = child.id().unwrap_or_default();
        let mut proc = Proc { child, pid, port };
        let Some(port) = port else {
            return Ok(proc);
        };
        match wait_live(http, &mut proc.child, port).await {
            Ok(()) => return Ok(proc),
            Err(e) => {
                proc.child.start_kill().ok();
                proc.child.wait().await.ok();
                last_error = Some(e);
            }
        }
    }
    let e = last_error.unwrap_or_else(|| anyhow!("no attempt made"));
    Err(e.context(format!(
        "{} did not start; see {}",
        part.name(),
        log_path.display()
    )))
}

/// Polls `/health/live` until it answers 200; fails early when the child exits.
async fn wait_live(http: &reqwest::Client, child: &mut Child, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let url = format!("http://127.0.0.1:{port}/health/live");
    loop {
        if let Some(status) = child.try_wait()? {
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
