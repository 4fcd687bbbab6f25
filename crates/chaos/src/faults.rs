//! The fault injector: at random intervals, one of kill -9 and restart the user-service, kill -9
//! and restart the relay, close every broker connection of the run's vhost, or terminate every
//! backend of the run's `user_db`. Faults are drawn from a shuffled bag of all four kinds, so
//! even a short run sees each kind; one log line per fault.

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

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillUserService,
    KillRelay,
    CutConnections,
    TerminateBackends,
}

const ALL: [Fault; 4] = [
    Fault::KillUserService,
    Fault::KillRelay,
    Fault::CutConnections,
    Fault::TerminateBackends,
];

/// What was injected (read by the progress display while the injector runs).
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub user_service_kills: AtomicU64,
    pub relay_kills: AtomicU64,
    /// Cuts that closed at least one connection.
    pub connection_cuts: AtomicU64,
    pub connections_closed: AtomicU64,
    /// Terminations that ended at least one backend.
    pub backend_terminations: AtomicU64,
    pub backends_terminated: AtomicU64,
}

impl FaultCounts {
    pub fn kills(&self) -> u64 {
        self.user_service_kills.load(Ordering::Relaxed) + self.relay_kills.load(Ordering::Relaxed)
    }
}

pub struct Injector<'a> {
    pub env: &'a ChaosEnv,
    /// On the `postgres` database, so terminating user_db's backends never ends this one.
    pub admin_pool: &'a PgPool,
    pub min_interval: Duration,
    pub max_interval: Duration,
    pub max_downtime: Duration,
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
            if bag.is_empty() {
                bag = ALL.to_vec();
                bag.shuffle(rng);
            }
            let Some(fault) = bag.pop() else { continue };
            match fault {
                Fault::KillUserService => {
                    self.kill(
                        fleet,
                        rng,
                        Part::UserService,
                        &self.counts.user_service_kills,
                    )
                    .await?
                }
                Fault::KillRelay => {
                    self.kill(fleet, rng, Part::Relay, &self.counts.relay_kills)
                        .await?
                }
                Fault::CutConnections => self.cut_connections().await,
                Fault::TerminateBackends => self.terminate_backends().await,
            }
        }
    }

    async fn kill(
        &self,
        fleet: &mut Fleet,
        rng: &mut StdRng,
        part: Part,
        counter: &AtomicU64,
    ) -> anyhow::Result<()> {
        let downtime = uniform(rng, Duration::ZERO, self.max_downtime);
        let r = fleet.kill_and_restart(part, downtime).await?;
        counter.fetch_add(1, Ordering::Relaxed);
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
