//! The benchmark's private world: its databases and vhost on the shared servers, a JWT key pair,
//! one precomputed password hash, and the services as child processes of this binary (so each
//! is a real process whose peak memory `/proc` can tell). Nothing here touches `auth_db`,
//! `user_db` or the default vhost.

use super::BenchArgs;
use crate::cli::Settings;
use crate::rabbit_admin::Management;
use anyhow::{bail, Context};
use platform::jwt::KeyDir;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The password of every user the benchmark writes in bulk; hashed once (argon2 takes tens of
/// milliseconds, far too slow for a million users) and used to log in as the bench admin.
pub const PASSWORD: &str = "bench-password-not-secret";

pub struct BenchEnv {
    pub id: String,
    pub vhost: String,
    /// `postgres://…/` without a database name.
    pg_server: String,
    pub auth_db_url: String,
    pub user_db_url: String,
    pub amqp_url: String,
    management: Management,
    pub key_dir: KeyDir,
    /// Logs of the child processes, kept on failure.
    pub work_dir: PathBuf,
    exe: PathBuf,
    pub password_hash: String,
}

/// Splits `scheme://authority/path?query` into (`scheme://authority`, query with its `?`).
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let scheme_end = url
        .find("://")
        .with_context(|| format!("{url} is not a URL"))?
        + 3;
    let path_start = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let query = url[path_start..]
        .find('?')
        .map_or("", |i| &url[path_start + i..]);
    Ok((&url[..path_start], query))
}

/// `user:password` of a URL's authority, if given.
fn credentials(url: &str) -> Option<(String, String)> {
    let (base, _) = split_url(url).ok()?;
    let authority = &base[base.find("://")? + 3..];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    Some((user.to_owned(), password.to_owned()))
}

impl BenchEnv {
    /// Creates the vhost, the key pair and the password hash. Databases are made per step.
    pub async fn create(settings: &Settings, args: &BenchArgs) -> anyhow::Result<Self> {
        let id = args.id.clone();
        let vhost = id.replace('_', "-");
        let (pg_base, pg_query) = split_url(&settings.auth_database_url)?;
        let (amqp_base, amqp_query) = split_url(&settings.amqp_url)?;
        let (user, password) =
            credentials(&settings.amqp_url).unwrap_or_else(|| ("guest".into(), "guest".into()));
        let management = Management::new(&args.management_url, &user, &password)?;
        let work_dir = std::env::temp_dir().join(format!("portal-bench-{id}"));
        // A previous run may have been killed: start from nothing.
        if work_dir.exists() {
            std::fs::remove_dir_all(&work_dir)
                .with_context(|| format!("cannot clear {}", work_dir.display()))?;
        }
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("cannot create {}", work_dir.display()))?;
        let key_dir = KeyDir(work_dir.join("keys"));
        key_dir.ensure_key_pair()?;
        let password_hash = auth_service::password::hash(PASSWORD.into()).await?;
        let env = Self {
            auth_db_url: format!("{pg_base}/{id}_auth{pg_query}"),
            user_db_url: format!("{pg_base}/{id}_user{pg_query}"),
            pg_server: format!("{pg_base}/postgres{pg_query}"),
            amqp_url: format!("{amqp_base}/{vhost}{amqp_query}"),
            id,
            vhost,
            management,
            key_dir,
            work_dir,
            exe: std::env::current_exe().context("cannot find the portal executable")?,
            password_hash,
        };
        // A previous run may have been killed: start from an empty vhost.
        env.management.delete_vhost(&env.vhost).await?;
        env.management.create_vhost(&env.vhost).await?;
        Ok(env)
    }

    async fn admin_pool(&self) -> anyhow::Result<PgPool> {
        let opts = PgConnectOptions::from_str(&self.pg_server)?.disable_statement_logging();
        PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .context("cannot reach PostgreSQL")
    }

    /// Drops both databases, and creates them again empty when `recreate`.
    async fn drop_databases(&self, recreate: bool) -> anyhow::Result<()> {
        let admin = self.admin_pool().await?;
        for db in [format!("{}_auth", self.id), format!("{}_user", self.id)] {
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                .execute(&admin)
                .await
                .with_context(|| format!("cannot drop {db}"))?;
            if recreate {
                sqlx::query(&format!("CREATE DATABASE \"{db}\""))
                    .execute(&admin)
                    .await
                    .with_context(|| format!("cannot create {db}"))?;
            }
        }
        admin.close().await;
        Ok(())
    }

    /// Drops and recreates both databases with their migrations; returns pools on them for the
    /// load generator and the measurements (`writers` connections on `auth_db`).
    pub async fn fresh_databases(&self, writers: u32) -> anyhow::Result<(PgPool, PgPool)> {
        self.drop_databases(true).await?;
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

    /// Removes the databases, the vhost and the work directory (kept when `keep_logs`).
    pub async fn cleanup(&self) {
        if let Err(e) = self.drop_databases(false).await {
            eprintln!("bench cleanup: {e:#}");
        }
        if let Err(e) = self.management.delete_vhost(&self.vhost).await {
            eprintln!("bench cleanup: {e:#}");
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }

    /// Starts `portal <command>` against the bench databases and vhost. `extra` overrides the
    /// defaults (addresses, batch sizes). Its output goes to `<work_dir>/<name>.log`.
    pub fn spawn(
        &self,
        name: &'static str,
        command: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Service> {
        let log_path = self.work_dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg(command)
            .env("AUTH_DATABASE_URL", &self.auth_db_url)
            .env("USER_DATABASE_URL", &self.user_db_url)
            .env("AMQP_URL", &self.amqp_url)
            .env("JWT_KEY_DIR", &self.key_dir.0)
            .env("USER_ADDR", "127.0.0.1:0")
            .env("AUTH_ADDR", "127.0.0.1:0")
            .env("GATEWAY_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start portal {command}"))?;
        let pid = child.id().context("child exited at once")?;
        Ok(Service {
            name,
            pid,
            child,
            log_path,
        })
    }

    /// The relay alone.
    pub fn spawn_relay(&self, batch_size: i64) -> anyhow::Result<Service> {
        self.spawn(
            "relay",
            "relay",
            &[("RELAY_BATCH_SIZE", batch_size.to_string())],
        )
    }

    /// The user-service (directory and consumer).
    pub fn spawn_user_service(&self, prefetch: u16) -> anyhow::Result<Service> {
        self.spawn(
            "user-service",
            "user-service",
            &[("CONSUMER_PREFETCH", prefetch.to_string())],
        )
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
            .and_then(|s| status_kib(&s, "MemTotal:"));
        let pg = match self.admin_pool().await {
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
        let rabbit = self.management.rabbitmq_version().await.ok().flatten();
        serde_json::json!({
            "cpu": cpu,
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "memory_gib": mem_kib.map(|k| (k as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0),
            "postgresql": pg,
            "rabbitmq": rabbit,
        })
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

/// A service running as a child process.
pub struct Service {
    pub name: &'static str,
    pub pid: u32,
    child: Child,
    log_path: PathBuf,
}

impl Service {
    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("cannot read /proc/{}/status ({})", self.pid, self.name))?;
        status_kib(&status, "VmHWM:").with_context(|| format!("no VmHWM for {}", self.name))
    }

    /// Fails with the end of the service's log when it has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                tail(&self.log_path)
            );
        }
        Ok(())
    }

    /// SIGTERM, then waits for the clean stop (the consumer finishes its batch); SIGKILL after
    /// a deadline.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => {
                status.with_context(|| format!("waiting for {}", self.name))?;
                Ok(())
            }
            Err(_) => {
                self.child.start_kill().ok();
                self.child.wait().await.ok();
                bail!("{} did not stop within 20 s of SIGTERM", self.name)
            }
        }
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_split_and_credentials_read() {
        assert_eq!(
            split_url("postgres://postgres@127.0.0.1:5432/auth_db?sslmode=disable").ok(),
            Some(("postgres://postgres@127.0.0.1:5432", "?sslmode=disable"))
        );
        assert_eq!(
            split_url("amqp://guest:guest@127.0.0.1:5672/%2f").ok(),
            Some(("amqp://guest:guest@127.0.0.1:5672", ""))
        );
        assert_eq!(
            credentials("amqp://u:p@h:1/%2f"),
            Some(("u".to_owned(), "p".to_owned()))
        );
        assert_eq!(credentials("amqp://h:1/"), None);
    }
}
