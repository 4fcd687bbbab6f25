//! The services under test as child processes of the `portal` binary (`portal auth-service
//! --no-relay`, which still runs the offboarding saga with its control queue and message relay;
//! `portal user-service`; `portal relay`, the user events' relay; `portal appointment-service`
//! in the offboarding run), each with the run's databases, vhost and keys, logging to a file in
//! the run's directory ([`sandbox::process`]). Each HTTP part keeps the port it was given first
//! across restarts, so the other parts (which fetch the auth-service's keys from
//! AUTH_SERVICE_URL) and the run's own clients find it again. The chaos comes from killing them
//! with SIGKILL, exactly what a crash or an OOM kill does; every child is also killed when the
//! fleet is dropped, on any exit path.

use anyhow::{anyhow, bail, Context};
use sandbox::process::{free_port, tail, Process, Spec};
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    AuthService,
    UserService,
    Relay,
    AppointmentService,
}

/// The parts of the user-synchronisation run, in start order.
pub const USER_SYNC: [Part; 3] = [Part::AuthService, Part::UserService, Part::Relay];
/// The parts of the offboarding run, in start order.
pub const OFFBOARDING: [Part; 4] = [
    Part::AuthService,
    Part::UserService,
    Part::Relay,
    Part::AppointmentService,
];

/// How long a (re)started HTTP part may take to answer `/health/live`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Starts of one part tried before a restart counts as failed (its port may be briefly taken).
const START_ATTEMPTS: u32 = 3;

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::AuthService => "auth-service",
            Part::UserService => "user-service",
            Part::Relay => "relay",
            Part::AppointmentService => "appointment-service",
        }
    }

    /// How to start it with the run's environment, listening on `port` if it serves HTTP.
    fn spec(self, vars: &[(&'static str, OsString)], port: Option<u16>) -> Spec {
        let spec = Spec::new(self.name(), self.args()).envs(vars.iter().cloned());
        match (self.addr_var(), port) {
            (Some(var), Some(port)) => spec.env(var, format!("127.0.0.1:{port}")),
            _ => spec,
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            // The relay runs as its own process so it can be killed without the API going down.
            Part::AuthService => &["auth-service", "--no-relay"],
            Part::UserService => &["user-service"],
            Part::Relay => &["relay"],
            Part::AppointmentService => &["appointment-service"],
        }
    }

    /// The variable that sets where this part listens, if it serves HTTP.
    fn addr_var(self) -> Option<&'static str> {
        match self {
            Part::AuthService => Some("AUTH_ADDR"),
            Part::UserService => Some("USER_ADDR"),
            Part::AppointmentService => Some("APPOINTMENT_ADDR"),
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

/// One part as it runs now.
struct Member {
    part: Part,
    /// Where it listens, kept across restarts (HTTP parts only).
    port: Option<u16>,
    process: Process,
}

pub struct Fleet {
    exe: PathBuf,
    vars: Vec<(&'static str, OsString)>,
    log_dir: PathBuf,
    http: reqwest::Client,
    members: Vec<Member>,
    /// Counters of user-service processes that are gone, each read just before its kill.
    retired: SyncCounters,
    /// Children that exited without being killed by the run: a crash is a finding.
    pub unexpected_exits: Vec<String>,
}

impl Fleet {
    /// Starts `parts` in order, each answering before the next starts (the consumers need the
    /// key pair the auth-service finds in place). Every HTTP part gets a free port it keeps;
    /// the others are told the auth-service's (AUTH_SERVICE_URL).
    pub async fn start(
        exe: &Path,
        mut vars: Vec<(&'static str, OsString)>,
        log_dir: &Path,
        parts: &[Part],
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("HTTP client")?;
        let mut ports = Vec::new();
        for part in parts {
            ports.push(match part.addr_var() {
                Some(_) => Some(free_port()?),
                None => None,
            });
        }
        if let Some(Some(port)) = parts
            .iter()
            .position(|p| *p == Part::AuthService)
            .map(|i| ports[i])
        {
            vars.push((
                "AUTH_SERVICE_URL",
                format!("http://127.0.0.1:{port}").into(),
            ));
        }
        let mut fleet = Self {
            exe: exe.to_owned(),
            vars,
            log_dir: log_dir.to_owned(),
            http,
            members: Vec::new(),
            retired: SyncCounters::default(),
            unexpected_exits: Vec::new(),
        };
        for (part, port) in parts.iter().zip(ports) {
            let process = fleet.launch(*part, port).await?;
            fleet.members.push(Member {
                part: *part,
                port,
                process,
            });
        }
        Ok(fleet)
    }

    /// Starts `part` on `port`, waiting until an HTTP part answers `/health/live`; a few tries
    /// (a port just freed may still be held for a moment).
    async fn launch(&self, part: Part, port: Option<u16>) -> anyhow::Result<Process> {
        let spec = part.spec(&self.vars, port);
        let mut last_error = None;
        for attempt in 0..START_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let mut process = Process::start(&self.exe, &spec, &self.log_dir).await?;
            let Some(port) = port else {
                return Ok(process);
            };
            process.port = Some(port);
            match self.wait_live(&mut process, port).await {
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
            part.name(),
            self.log_dir.join(format!("{}.log", part.name())).display()
        )))
    }

    /// Polls `/health/live` until it answers 200; fails early when the child exits.
    async fn wait_live(&self, process: &mut Process, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("http://127.0.0.1:{port}/health/live");
        loop {
            if let Some(status) = process.exited()? {
                bail!(
                    "exited during start ({status}); its log ends with:\n{}",
                    tail(&process.log_path, 10)
                );
            }
            if let Ok(resp) = self.http.get(&url).send().await {
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

    fn member(&self, part: Part) -> anyhow::Result<&Member> {
        self.members
            .iter()
            .find(|m| m.part == part)
            .ok_or_else(|| anyhow!("this run has no {}", part.name()))
    }

    fn member_mut(&mut self, part: Part) -> anyhow::Result<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.part == part)
            .ok_or_else(|| anyhow!("this run has no {}", part.name()))
    }

    /// `http://127.0.0.1:<port>` of an HTTP part (the same across its restarts).
    pub fn url(&self, part: Part) -> anyhow::Result<String> {
        let port = self
            .member(part)?
            .port
            .ok_or_else(|| anyhow!("{} serves no HTTP", part.name()))?;
        Ok(format!("http://127.0.0.1:{port}"))
    }

    pub fn auth_url(&self) -> anyhow::Result<String> {
        self.url(Part::AuthService)
    }

    async fn respawn(&mut self, part: Part) -> anyhow::Result<u32> {
        let port = self.member(part)?.port;
        let process = self.launch(part, port).await?;
        let pid = process.pid;
        self.member_mut(part)?.process = process;
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
        let process = &mut self.member_mut(part)?.process;
        let old_pid = process.pid;
        process.kill().await?;
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
        let parts: Vec<Part> = self.members.iter().map(|m| m.part).collect();
        for part in parts {
            let process = &mut self.member_mut(part)?.process;
            if let Some(status) = process.exited()? {
                let what = format!(
                    "{} (pid {}) exited by itself ({status}); see {}",
                    part.name(),
                    process.pid,
                    process.log_path.display()
                );
                self.unexpected_exits.push(what.clone());
                found.push(what);
                self.respawn(part).await?;
            }
        }
        Ok(found)
    }

    /// The readiness answer of an HTTP part (`GET /health/ready`, whatever its status), or
    /// `None` when it does not answer.
    pub async fn readiness(&self, part: Part) -> Option<(u16, Value)> {
        let url = self.url(part).ok()?;
        let resp = self
            .http
            .get(format!("{url}/health/ready"))
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.json().await.ok()?))
    }

    /// The running user-service's counters, or `None` when it does not answer.
    pub async fn user_counters(&self) -> Option<SyncCounters> {
        // Readiness answers 503 while user_db or the broker is down, with the counters still in
        // the body, so the status is not checked.
        let (_, body) = self.readiness(Part::UserService).await?;
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

    /// Kills every child (the last started first) and waits for them.
    pub async fn shutdown(mut self) {
        for member in self.members.iter_mut().rev() {
            member.process.kill().await.ok();
        }
    }
}
