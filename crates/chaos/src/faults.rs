//! The fault injector: at random intervals, one fault of the run's set. The user-synchronisation
//! run's ([`USER_SYNC`]): kill -9 and restart the user-service, kill -9 and restart the relay,
//! close every broker connection of the run's vhost, or terminate every backend of the run's
//! `user_db`. The offboarding run's ([`OFFBOARDING`]): kill -9 and restart the auth-service,
//! the relay, the user-service or the appointment-service. Faults are drawn from a shuffled bag
//! of the whole set, so even a short run sees each kind; one log line per fault.

use super::env::ChaosEnv;
use super::fleet::{Fleet, Part};
use super::progress::Progress;
use anyhow::Context;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` the part, restart it after a random downtime.
    Kill(Part),
    CutConnections,
    TerminateBackends,
}

/// The faults of the user-synchronisation run.
pub const USER_SYNC: [Fault; 4] = [
    Fault::Kill(Part::UserService),
    Fault::Kill(Part::Relay),
    Fault::CutConnections,
    Fault::TerminateBackends,
];

/// The faults of the offboarding run: every part killed in turn.
pub const OFFBOARDING: [Fault; 4] = [
    Fault::Kill(Part::AuthService),
    Fault::Kill(Part::Relay),
    Fault::Kill(Part::UserService),
    Fault::Kill(Part::AppointmentService),
];

/// What was injected (read by the progress display while the injector runs).
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub auth_service_kills: AtomicU64,
    pub user_service_kills: AtomicU64,
    pub relay_kills: AtomicU64,
    pub appointment_service_kills: AtomicU64,
    /// Cuts that closed at least one connection.
    pub connection_cuts: AtomicU64,
    pub connections_closed: AtomicU64,
    /// Terminations that ended at least one backend.
    pub backend_terminations: AtomicU64,
    pub backends_terminated: AtomicU64,
}

impl FaultCounts {
    pub fn kills(&self) -> u64 {
        [
            Part::AuthService,
            Part::UserService,
            Part::Relay,
            Part::AppointmentService,
        ]
        .into_iter()
        .map(|part| self.kills_of(part))
        .sum()
    }

    /// The kill counter of `part`.
    pub fn kill_counter(&self, part: Part) -> &AtomicU64 {
        match part {
            Part::AuthService => &self.auth_service_kills,
            Part::UserService => &self.user_service_kills,
            Part::Relay => &self.relay_kills,
            Part::AppointmentService => &self.appointment_service_kills,
        }
    }

    pub fn kills_of(&self, part: Part) -> u64 {
        self.kill_counter(part).load(Ordering::Relaxed)
    }
}

pub struct Injector<'a> {
    pub env: &'a ChaosEnv,
    /// On the `postgres` database, so terminating user_db's backends never ends this one.
    pub admin_pool: &'a PgPool,
    pub min_interval: Duration,
    pub max_interval: Duration,
    pub max_downtime: Duration,
    /// The faults drawn from ([`USER_SYNC`], [`OFFBOARDING`]).
    pub faults: &'a [Fault],
    /// A part the first fault kills, and for how long, so every run shows what a long outage
    /// of it does (the offboarding run: sagas that stall, then complete).
    pub first_long_kill: Option<(Part, Duration)>,
    pub counts: &'a FaultCounts,
    pub progress: &'a Progress,
}

fn uniform(rng: &mut StdRng, low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    rng.gen_range(low..=high)
}

impl Injector<'_> {
    /// Injects faults until `stop`; a fault in progress (a restart) is finished first, so the
    /// fleet is whole when this returns. Fails only when a service cannot be restarted.
    pub async fn run(
        &self,
        fleet: &mut Fleet,
        rng: &mut StdRng,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut bag: Vec<Fault> = Vec::new();
        let mut first_long_kill = self.first_long_kill;
        loop {
            // The random gap between faults is the workload, not a wait for anything.
            let gap = uniform(rng, self.min_interval, self.max_interval);
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(gap) => {}
            }
            for exit in fleet.restart_exited().await? {
                self.progress
                    .log(format_args!("UNEXPECTED: {exit}; restarted"));
            }
            if let Some((part, downtime)) = first_long_kill.take() {
                self.kill(fleet, part, downtime).await?;
                continue;
            }
            if bag.is_empty() {
                bag = self.faults.to_vec();
                bag.shuffle(rng);
            }
            let Some(fault) = bag.pop() else { continue };
            match fault {
                Fault::Kill(part) => {
                    let downtime = uniform(rng, Duration::ZERO, self.max_downtime);
                    self.kill(fleet, part, downtime).await?
                }
                Fault::CutConnections => self.cut_connections().await,
                Fault::TerminateBackends => self.terminate_backends().await,
            }
        }
    }

    async fn kill(&self, fleet: &mut Fleet, part: Part, downtime: Duration) -> anyhow::Result<()> {
        let r = fleet.kill_and_restart(part, downtime).await?;
        self.counts
            .kill_counter(part)
            .fetch_add(1, Ordering::Relaxed);
        self.progress.log(format_args!(
            "kill -9 {} (pid {}); down {:.1}s; restarted as pid {}",
            part.name(),
            r.old_pid,
            r.downtime.as_secs_f64(),
            r.new_pid
        ));
        Ok(())
    }

    /// A failed cut is logged, not fatal: the management API is a tool here, not under test.
    async fn cut_connections(&self) {
        let env = self.env;
        match env
            .management
            .close_connections(&env.vhost, "chaos: connection cut")
            .await
        {
            Ok(0) => self
                .progress
                .log("close all broker connections: none open right now"),
            Ok(n) => {
                self.counts.connection_cuts.fetch_add(1, Ordering::Relaxed);
                self.counts
                    .connections_closed
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.progress.log(format_args!(
                    "close all broker connections of vhost {}: {n} closed",
                    env.vhost
                ));
            }
            Err(e) => self
                .progress
                .log(format_args!("close all broker connections failed: {e:#}")),
        }
    }

    async fn terminate_backends(&self) {
        let db = &self.env.user_db_name;
        // The targets are fixed first (MATERIALIZED) so pg_terminate_backend can never be
        // evaluated for a row of another database: the server is shared.
        let result: anyhow::Result<i64> = sqlx::query_scalar(
            "WITH targets AS MATERIALIZED (SELECT pid FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()) \
             SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM targets",
        )
        .bind(db)
        .fetch_one(self.admin_pool)
        .await
        .context("pg_terminate_backend");
        match result {
            Ok(0) => self.progress.log(format_args!(
                "terminate {db} backends: none connected right now"
            )),
            Ok(n) => {
                self.counts
                    .backend_terminations
                    .fetch_add(1, Ordering::Relaxed);
                self.counts
                    .backends_terminated
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.progress
                    .log(format_args!("terminate {db} backends: {n} terminated"));
            }
            Err(e) => self
                .progress
                .log(format_args!("terminate {db} backends failed: {e:#}")),
        }
    }
}
