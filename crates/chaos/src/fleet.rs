//! The services under test as child processes of the `portal` binary (`portal auth-service
//! --no-relay`, `portal user-service`, `portal relay`), each on a free port with the run's
//! databases, vhost and keys, logging to a file in the run's directory
//! ([`sandbox::process`]). The chaos comes from killing them with SIGKILL, exactly what a crash
//! or an OOM kill does; every child is also killed when the fleet is dropped, on any exit path.

use anyhow::Context;
use sandbox::process::{Process, Spec};
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// How to start it with the run's environment.
    fn spec(self, vars: &[(&'static str, OsString)]) -> Spec {
        let spec = Spec::new(self.name(), self.args()).envs(vars.iter().cloned());
        match self.addr_var() {
            Some(var) => spec.http(var),
            None => spec,
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
    auth: Process,
    users: Process,
    relay: Process,
    /// Counters of user-service processes that are gone, each read just before its kill.
    retired: SyncCounters,
    /// Children that exited without being killed by the run: a crash is a finding.
    pub unexpected_exits: Vec<String>,
}

impl Fleet {
    /// Starts the auth-service, the user-service and the relay, each answering before the next
    /// starts (the user-service needs the key pair the auth-service finds in place).
    pub async fn start(
        exe: &Path,
        vars: Vec<(&'static str, OsString)>,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("HTTP client")?;
        let auth = Process::start(exe, &Part::AuthService.spec(&vars), log_dir).await?;
        let users = Process::start(exe, &Part::UserService.spec(&vars), log_dir).await?;
        let relay = Process::start(exe, &Part::Relay.spec(&vars), log_dir).await?;
        Ok(Self {
            exe: exe.to_owned(),
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
        self.auth.url()
    }

    fn proc_mut(&mut self, part: Part) -> &mut Process {
        match part {
            Part::AuthService => &mut self.auth,
            Part::UserService => &mut self.users,
            Part::Relay => &mut self.relay,
        }
    }

    async fn respawn(&mut self, part: Part) -> anyhow::Result<u32> {
        let proc = Process::start(&self.exe, &part.spec(&self.vars), &self.log_dir).await?;
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
        proc.kill().await?;
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
            let proc = self.proc_mut(part);
            if let Some(status) = proc.exited()? {
                let what = format!(
                    "{} (pid {}) exited by itself ({status}); see {}",
                    part.name(),
                    proc.pid,
                    proc.log_path.display()
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
            self.proc_mut(part).kill().await.ok();
        }
    }
}
