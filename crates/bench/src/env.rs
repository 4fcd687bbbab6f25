//! The benchmark's private world: a [`Sandbox`] named after `--id` (databases `<id>_auth` and
//! `<id>_user`, dropped and recreated for every step; vhost `<id>`), one precomputed password
//! hash, and the services as child processes of the `portal` binary (so each is a real process
//! whose peak memory `/proc` can tell). Nothing here touches `auth_db`, `user_db` or the default
//! vhost.

use crate::report::Setting;
use sandbox::process::{self, Process, Spec};
use sandbox::Sandbox;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// The password of every user the benchmark writes in bulk; hashed once (argon2 takes tens of
/// milliseconds, far too slow for a million users) and used to log in as the bench admin.
pub const PASSWORD: &str = "bench-password-not-secret";

pub struct BenchEnv {
    pub sandbox: Sandbox,
    pub auth_db_url: String,
    pub user_db_url: String,
    /// The `portal` binary the services run from.
    exe: PathBuf,
    pub password_hash: String,
    /// OUTBOX_KEEP_PUBLISHED_SECS of every service started: a day for the rows, which read
    /// when each event was published from the outboxes after their load; the soak's own.
    pub keep_published_secs: u64,
}

impl BenchEnv {
    /// Creates the sandbox named `id` on `servers` (vhost, key pair) and the password hash.
    /// Databases are made per step.
    pub async fn create(servers: &sandbox::ServerArgs, id: &str) -> anyhow::Result<Self> {
        let exe = servers.portal_bin()?;
        let sandbox = Sandbox::create(servers.servers(), id, id).await?;
        let password_hash = auth_service::password::hash(PASSWORD.into()).await?;
        Ok(Self {
            auth_db_url: sandbox.database_url("auth"),
            user_db_url: sandbox.database_url("user"),
            sandbox,
            exe,
            password_hash,
            keep_published_secs: 86_400,
        })
    }

    /// Drops and recreates both databases with their migrations; returns pools on them for the
    /// load generator and the measurements (`writers` connections on `auth_db`).
    pub async fn fresh_databases(&self, writers: u32) -> anyhow::Result<(PgPool, PgPool)> {
        self.sandbox.recreate_database("auth").await?;
        self.sandbox.recreate_database("user").await?;
        auth_service::prepare_database(&self.auth_db_url, 1)
            .await?
            .close()
            .await;
        user_service::prepare_database(&self.user_db_url, 1)
            .await?
            .close()
            .await;
        let pool = |url: &str, n: u32| -> anyhow::Result<PgPool> {
            let opts = PgConnectOptions::from_str(url)?.disable_statement_logging();
            // Writers may queue for a connection while the system is saturated: that is load,
            // not failure, so they wait longer than the services' 5 s.
            Ok(PgPoolOptions::new()
                .max_connections(n)
                .acquire_timeout(Duration::from_secs(120))
                .acquire_slow_level(tracing::log::LevelFilter::Off)
                .connect_lazy_with(opts))
        };
        Ok((
            pool(&self.auth_db_url, writers)?,
            pool(&self.user_db_url, 2)?,
        ))
    }

    /// Removes the databases, the vhost and the work directory.
    pub async fn cleanup(&mut self) {
        for problem in self.sandbox.cleanup(false).await {
            eprintln!("bench cleanup: {problem}");
        }
    }

    /// The environment of every child: the bench databases, vhost and keys, quiet logs.
    fn spec(&self, name: &str, command: &str) -> Spec {
        Spec::on(&self.sandbox, name, &[command])
            .env("USER_ADDR", "127.0.0.1:0")
            .env("AUTH_ADDR", "127.0.0.1:0")
            .env("GATEWAY_ADDR", "127.0.0.1:0")
            .env("RELAY_HTTP_PORT", "0")
            // The gateway routes no appointments: only row 9 runs an appointment-service, as a
            // second consumer of the import.
            .env("APPOINTMENT_SERVICE_URL", "none")
            .env("SYNC_ADMIN_URL", "none")
            .env(
                "OUTBOX_KEEP_PUBLISHED_SECS",
                self.keep_published_secs.to_string(),
            )
            .env("RUST_LOG", "warn")
    }

    /// Starts `portal <command>` against the bench databases and vhost. `extra` overrides the
    /// defaults (addresses, batch sizes). Its output goes to `<work dir>/<name>.log`.
    pub async fn spawn(
        &self,
        name: &str,
        command: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Process> {
        let spec = self
            .spec(name, command)
            .envs(extra.iter().map(|(k, v)| (*k, v.clone())));
        Process::start(&self.exe, &spec, &self.sandbox.dir).await
    }

    /// `portal <args>` run once against the bench databases and vhost (a command, not a
    /// service), with `extra` in its environment.
    pub fn command(&self, args: &[&str], extra: &[(&str, String)]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.exe);
        sandbox::process::isolated_async(&mut cmd)
            .args(args)
            .env("PORTAL_CREDENTIALS", "none")
            .env("AUTH_DATABASE_URL", &self.auth_db_url)
            .env("USER_DATABASE_URL", &self.user_db_url)
            .env("AMQP_URL", &self.sandbox.amqp_url)
            .env("RUST_LOG", "warn")
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .kill_on_drop(true);
        cmd
    }

    /// The relay alone.
    pub async fn spawn_relay(&self, setting: Setting) -> anyhow::Result<Process> {
        self.spawn("relay", "relay", &relay_env(setting)).await
    }

    /// The user-service (directory and consumer).
    pub async fn spawn_user_service(&self, prefetch: u16) -> anyhow::Result<Process> {
        self.spawn(
            "user-service",
            "user-service",
            &[("CONSUMER_PREFETCH", prefetch.to_string())],
        )
        .await
    }

    /// CPU, memory and server versions for the report header.
    pub async fn describe_machine(&self) -> serde_json::Value {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let mem_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| process::status_kib(&s, "MemTotal:"));
        let pg = match platform::db::lazy_pool(&self.sandbox.admin_database_url(), 1) {
            Ok(pool) => {
                let v: Option<String> = sqlx::query_scalar("SHOW server_version")
                    .fetch_one(&pool)
                    .await
                    .ok();
                pool.close().await;
                v
            }
            Err(_) => None,
        };
        let rabbit = self
            .sandbox
            .management
            .rabbitmq_version()
            .await
            .ok()
            .flatten();
        serde_json::json!({
            "cpu": cpu,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "memory_gib": mem_kib.map(|k| (k as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0),
            "postgresql": pg,
            "rabbitmq": rabbit,
        })
    }
}

/// The relay's part of `setting`, as the environment of a `portal` process.
pub fn relay_env(setting: Setting) -> [(&'static str, String); 2] {
    [
        ("RELAY_BATCH_SIZE", setting.relay_batch_size.to_string()),
        ("RELAY_IN_FLIGHT", setting.relay_in_flight.to_string()),
    ]
}
