//! The run's private world, so it can run beside anything else on the same servers: two
//! databases `chaos_<id>_auth` / `chaos_<id>_user` on the server of AUTH_DATABASE_URL /
//! USER_DATABASE_URL, a vhost `chaos-<id>` on the broker of AMQP_URL (the topology names are the
//! real ones; the vhost keeps them apart), and a temporary directory with the JWT key pair and
//! the services' logs. [`ChaosEnv::cleanup`] removes it all; dropping an uncleaned one (a panic)
//! does the same on a helper thread.

use crate::cli::Settings;
use crate::rabbit_admin::Management;
use anyhow::{anyhow, Context};
use platform::jwt::KeyDir;
use reqwest::Url;
use std::path::PathBuf;

pub struct ChaosEnv {
    pub id: String,
    pub auth_db_url: String,
    pub user_db_url: String,
    /// The `postgres` database of each server, from where ours are dropped and backends ended.
    auth_admin_url: String,
    user_admin_url: String,
    pub user_db_name: String,
    auth_db_name: String,
    pub vhost: String,
    pub amqp_url: String,
    /// Holds `keys/` and the services' logs.
    pub dir: PathBuf,
    pub key_dir: KeyDir,
    pub management: Management,
    cleaned: bool,
}

/// `url` with its path (database name or vhost) replaced.
fn with_path(url: &str, path: &str) -> anyhow::Result<String> {
    let mut parsed = Url::parse(url).with_context(|| format!("bad URL {url}"))?;
    parsed.set_path(path);
    Ok(parsed.to_string())
}

impl ChaosEnv {
    /// Names everything and creates the key pair and the vhost; the databases are created by
    /// the caller (with their migrations). Whatever was created is removed again on drop.
    pub async fn create(s: &Settings, management_url: &str) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let (auth_db_name, user_db_name) = (format!("chaos_{id}_auth"), format!("chaos_{id}_user"));
        let vhost = format!("chaos-{id}");
        let amqp =
            Url::parse(&s.amqp_url).with_context(|| format!("bad AMQP_URL {}", s.amqp_url))?;
        let (user, password) = (
            amqp.username().to_owned(),
            amqp.password().unwrap_or_default().to_owned(),
        );
        if user.is_empty() {
            return Err(anyhow!(
                "AMQP_URL has no user; the management API is called with AMQP_URL's credentials"
            ));
        }
        let dir = std::env::temp_dir().join(format!("portal-chaos-{id}"));
        let env = Self {
            auth_db_url: with_path(&s.auth_database_url, &format!("/{auth_db_name}"))?,
            user_db_url: with_path(&s.user_database_url, &format!("/{user_db_name}"))?,
            auth_admin_url: with_path(&s.auth_database_url, "/postgres")?,
            user_admin_url: with_path(&s.user_database_url, "/postgres")?,
            amqp_url: with_path(&s.amqp_url, &format!("/{vhost}"))?,
            key_dir: KeyDir(dir.join("keys")),
            management: Management::new(management_url, &user, &password)?,
            id,
            auth_db_name,
            user_db_name,
            vhost,
            dir,
            cleaned: false,
        };
        std::fs::create_dir_all(&env.dir)
            .with_context(|| format!("cannot create {}", env.dir.display()))?;
        env.key_dir.ensure_key_pair()?;
        env.management.create_vhost(&env.vhost).await?;
        Ok(env)
    }

    /// A pool on the `postgres` database of user_db's server, for terminating user_db's backends
    /// without being one of them.
    pub fn user_admin_pool(&self) -> anyhow::Result<sqlx::PgPool> {
        platform::db::lazy_pool(&self.user_admin_url, 1)
    }

    /// Drops both databases (terminating whatever still uses them), deletes the vhost and,
    /// unless `keep_dir`, the temporary directory. Returns what could not be removed.
    pub async fn cleanup(&mut self, keep_dir: bool) -> Vec<String> {
        self.cleaned = true;
        let mut problems = Vec::new();
        for (admin_url, db) in [
            (&self.auth_admin_url, &self.auth_db_name),
            (&self.user_admin_url, &self.user_db_name),
        ] {
            if let Err(e) = drop_database(admin_url, db).await {
                problems.push(format!("database {db}: {e:#}"));
            }
        }
        if let Err(e) = self.management.delete_vhost(&self.vhost).await {
            problems.push(format!("vhost {}: {e:#}", self.vhost));
        }
        if !keep_dir {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                problems.push(format!("{}: {e}", self.dir.display()));
            }
        }
        problems
    }

    /// Marks the environment as deliberately kept (`--keep`): nothing is removed on drop.
    pub fn keep(&mut self) {
        self.cleaned = true;
    }
}

async fn drop_database(admin_url: &str, db: &str) -> anyhow::Result<()> {
    let pool = platform::db::lazy_pool(admin_url, 1)?;
    // WITH (FORCE) ends the sessions still connected: only this run's own services and pools.
    let result = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(&pool)
        .await;
    pool.close().await;
    result.map(|_| ()).context("DROP DATABASE")
}

impl Drop for ChaosEnv {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Only reached when the run unwound without cleaning up. Drop cannot await, and may run
        // inside the tokio runtime: clean up on a thread with a runtime of its own.
        let (auth_admin, user_admin) = (self.auth_admin_url.clone(), self.user_admin_url.clone());
        let (auth_db, user_db) = (self.auth_db_name.clone(), self.user_db_name.clone());
        let vhost = self.vhost.clone();
        let dir = self.dir.clone();
        let management = self.management.fresh().ok();
        let done = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async move {
                    drop_database(&auth_admin, &auth_db).await.ok();
                    drop_database(&user_admin, &user_db).await.ok();
                    if let Some(management) = management {
                        management.delete_vhost(&vhost).await.ok();
                    }
                });
            }
            std::fs::remove_dir_all(dir).ok();
        });
        done.join().ok();
    }
}
