//! A sandbox: everything one test, benchmark or chaos run owns on the shared servers. Databases
//! are named `<base>_<name>` (tests use `pt_<id>`, so `scripts/test` can find what a killed run
//! left), the vhost is `<base>` with `_` as `-`, and the work directory holds the JWT key pair
//! and the logs of child processes. [`Sandbox::cleanup`] drops and deletes all of it; a sandbox
//! dropped without a cleanup (a failed assertion, a panic) cleans up on a helper thread.

use anyhow::{anyhow, Context};
use platform::jwt::KeyDir;
use platform::rabbit_admin::Management;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Mutex;
use url::Url;

/// The shared servers a sandbox lives on.
#[derive(Debug, Clone)]
pub struct Servers {
    /// Any URL of the PostgreSQL server (its database part is replaced), e.g.
    /// `postgres://postgres@127.0.0.1:5432`.
    pub postgres: String,
    /// Any URL of the broker with credentials (its vhost part is replaced), e.g.
    /// `amqp://guest:guest@127.0.0.1:5672`.
    pub amqp: String,
    /// The management API, e.g. `http://127.0.0.1:15672`; called with the AMQP credentials.
    pub management: String,
}

impl Servers {
    /// The servers tests use: `TEST_DATABASE_URL`, `TEST_AMQP_URL` and
    /// `TEST_RABBITMQ_MANAGEMENT_URL`, defaulting to the machine's own.
    pub fn from_test_env() -> Self {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
        Self {
            postgres: var("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432"),
            amqp: var("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672"),
            management: var("TEST_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672"),
        }
    }

    /// A client of the management API, called with the AMQP URL's credentials.
    pub fn management(&self) -> anyhow::Result<Management> {
        let (user, password) = credentials(&self.amqp)?;
        Management::new(&self.management, &user, &password)
    }
}

/// `url` with its path (a database name or a vhost) replaced by `/<path>`, query kept; each
/// URL of a list (a broker cluster's nodes).
pub fn with_path(url: &str, path: &str) -> anyhow::Result<String> {
    platform::addresses::map(url, |url| {
        let mut parsed = Url::parse(url).with_context(|| format!("bad URL {}", redact(url)))?;
        parsed.set_path(&format!("/{path}"));
        anyhow::Ok(parsed.to_string())
    })
}

pub use platform::secret::redact_url as redact;

/// The (decoded) user and password of a URL.
fn credentials(url: &str) -> anyhow::Result<(String, String)> {
    let url = platform::addresses::first(url);
    let parsed = Url::parse(url).with_context(|| format!("bad URL {}", redact(url)))?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    if parsed.username().is_empty() {
        return Err(anyhow!(
            "{} has no user; the management API is called with the AMQP credentials",
            redact(url)
        ));
    }
    Ok((
        decode(parsed.username()),
        decode(parsed.password().unwrap_or_default()),
    ))
}

/// Everything one run owns. See the module documentation.
pub struct Sandbox {
    /// Random (tests, chaos) or chosen (the benchmark's `--id`): part of every name.
    pub id: String,
    /// Prefix of the database names.
    pub base: String,
    pub vhost: String,
    /// The broker URL with this sandbox's vhost.
    pub amqp_url: String,
    pub management: Management,
    /// Holds `keys/` and the logs of child processes.
    pub dir: PathBuf,
    pub key_dir: KeyDir,
    servers: Servers,
    /// What this sandbox made on the shared servers, removed at cleanup.
    owned: Mutex<Owned>,
    cleaned: bool,
}

/// Names a sandbox made on the shared servers. Databases live in one server, but PostgreSQL
/// roles and RabbitMQ users are server-wide, so each is named after the sandbox and removed with
/// it.
#[derive(Debug, Clone, Default)]
struct Owned {
    databases: BTreeSet<String>,
    pg_roles: BTreeSet<String>,
    broker_users: BTreeSet<String>,
}

/// A short random id (hex), for names.
pub fn random_id(len: usize) -> String {
    uuid::Uuid::new_v4().simple().to_string()[..len.min(32)].to_owned()
}

impl Sandbox {
    /// Names everything after `base` and creates the vhost, the work directory (emptied first: a
    /// run killed earlier may have left one) and the key pair. Databases are created by whoever
    /// uses them (the services migrate their own) or by [`Sandbox::recreate_database`].
    pub async fn create(servers: Servers, base: &str, id: &str) -> anyhow::Result<Self> {
        let vhost = base.replace('_', "-");
        let management = servers.management()?;
        let dir = std::env::temp_dir().join(format!("portal-{vhost}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let key_dir = KeyDir(dir.join("keys"));
        key_dir.ensure_key_pair()?;
        // A vhost of the same name left by a killed run holds its old queues: start empty.
        management.delete_vhost(&vhost).await?;
        management.create_vhost(&vhost).await?;
        Ok(Self {
            id: id.to_owned(),
            base: base.to_owned(),
            amqp_url: with_path(&servers.amqp, &vhost)?,
            vhost,
            management,
            dir,
            key_dir,
            servers,
            owned: Mutex::new(Owned::default()),
            cleaned: false,
        })
    }

    /// A test's sandbox on the servers of [`Servers::from_test_env`], named `pt_<id>`; panics
    /// when the servers are not there (a test cannot run without them).
    pub async fn for_test() -> Self {
        crate::init_test_logging();
        let id = random_id(12);
        Self::create(Servers::from_test_env(), &format!("pt_{id}"), &id)
            .await
            .expect("a test sandbox (are PostgreSQL and RabbitMQ with its management plugin up? scripts/prepare starts them)")
    }

    /// The URL of this sandbox's database `<base>_<name>` (created by the service that
    /// migrates it, or by [`Sandbox::recreate_database`]); dropped at cleanup.
    pub fn database_url(&self, name: &str) -> String {
        let db = format!("{}_{name}", self.base);
        self.owned().databases.insert(db.clone());
        with_path(&self.servers.postgres, &db).unwrap_or_default()
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A PostgreSQL role name of this sandbox, `<base>_<name>`, dropped at cleanup (roles are
    /// server-wide, so every run's must differ).
    pub fn pg_role(&self, name: &str) -> String {
        let role = format!("{}_{name}", self.base);
        self.owned().pg_roles.insert(role.clone());
        role
    }

    /// A RabbitMQ user name of this sandbox, `<vhost>-<name>`, deleted at cleanup (users are
    /// broker-wide, so every run's must differ).
    pub fn broker_user(&self, name: &str) -> String {
        let user = format!("{}-{name}", self.vhost);
        self.owned().broker_users.insert(user.clone());
        user
    }

    /// A RabbitMQ user of this sandbox with every permission on its vhost; returns its name and
    /// the broker URL that logs in as it.
    pub async fn extra_broker_user(&self, name: &str) -> anyhow::Result<(String, String)> {
        let user = self.broker_user(name);
        let password = random_id(24);
        self.management.put_user(&user, &password).await?;
        self.management
            .set_permissions(
                &self.vhost,
                &user,
                &platform::rabbit_admin::Permissions::all(),
            )
            .await?;
        let url = platform::addresses::map(&self.amqp_url, |node| {
            let mut url = Url::parse(node).context("the sandbox's AMQP URL")?;
            url.set_username(&user)
                .and_then(|()| url.set_password(Some(&password)))
                .map_err(|()| anyhow!("cannot put credentials in the AMQP URL"))?;
            anyhow::Ok(url.to_string())
        })?;
        Ok((user, url))
    }

    /// The RabbitMQ management API's base URL (called with the sandbox's AMQP credentials).
    pub fn management_url(&self) -> &str {
        &self.servers.management
    }

    /// The server's `postgres` database, from where databases are created and dropped and
    /// backends terminated without being one of them.
    pub fn admin_database_url(&self) -> String {
        with_path(&self.servers.postgres, "postgres").unwrap_or_default()
    }

    /// Drops `<base>_<name>` and creates it again empty; returns its URL.
    pub async fn recreate_database(&self, name: &str) -> anyhow::Result<String> {
        let url = self.database_url(name);
        let db = format!("{}_{name}", self.base);
        let admin = platform::db::lazy_pool(&self.admin_database_url(), 1)?;
        let result = async {
            drop_database(&admin, &db).await?;
            sqlx::query(&format!("CREATE DATABASE \"{db}\""))
                .execute(&admin)
                .await
                .with_context(|| format!("cannot create {db}"))?;
            anyhow::Ok(())
        }
        .await;
        admin.close().await;
        result.map(|()| url)
    }

    /// Drops every database handed out (ending whatever still uses them: only this run's own
    /// services and pools), deletes the vhost and, unless `keep_dir`, the work directory (a
    /// failed run keeps its logs). Returns what could not be removed.
    pub async fn cleanup(&mut self, keep_dir: bool) -> Vec<String> {
        self.cleaned = true;
        let owned = self.owned().clone();
        cleanup(
            &self.admin_database_url(),
            &owned,
            &self.management,
            &self.vhost,
            (!keep_dir).then_some(&self.dir),
        )
        .await
    }

    /// Leaves everything in place (`--keep`): nothing is removed, on drop either.
    pub fn keep(&mut self) {
        self.cleaned = true;
    }
}

async fn drop_database(admin: &sqlx::PgPool, db: &str) -> anyhow::Result<()> {
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .execute(admin)
        .await
        .with_context(|| format!("cannot drop {db}"))?;
    Ok(())
}

async fn cleanup(
    admin_url: &str,
    owned: &Owned,
    management: &Management,
    vhost: &str,
    dir: Option<&PathBuf>,
) -> Vec<String> {
    let mut problems = Vec::new();
    match platform::db::lazy_pool(admin_url, 1) {
        Ok(admin) => {
            for db in &owned.databases {
                if let Err(e) = drop_database(&admin, db).await {
                    problems.push(format!("{e:#}"));
                }
            }
            // After the databases: a role that owns nothing else can go.
            for role in &owned.pg_roles {
                let drop = format!("DROP ROLE IF EXISTS \"{role}\"");
                if let Err(e) = sqlx::query(&drop).execute(&admin).await {
                    problems.push(format!("role {role}: {e}"));
                }
            }
            admin.close().await;
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
    if let Err(e) = management.delete_vhost(vhost).await {
        problems.push(format!("vhost {vhost}: {e:#}"));
    }
    for user in &owned.broker_users {
        if let Err(e) = management.delete_user(user).await {
            problems.push(format!("broker user {user}: {e:#}"));
        }
    }
    if let Some(dir) = dir {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                problems.push(format!("{}: {e}", dir.display()));
            }
        }
    }
    problems
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Drop cannot await and may run inside the tokio runtime: clean up on a thread with a
        // runtime of its own (and a management client of its own: a client's pooled
        // connections belong to the runtime that opened them).
        let admin_url = self.admin_database_url();
        let owned = self.owned().clone();
        let vhost = self.vhost.clone();
        let dir = self.dir.clone();
        let Ok(management) = self.management.fresh() else {
            return;
        };
        let done = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(cleanup(&admin_url, &owned, &management, &vhost, Some(&dir)));
            }
        });
        let _ = done.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_replaced_and_passwords_hidden() {
        assert_eq!(
            with_path(
                "postgres://postgres@127.0.0.1:5432/auth_db?sslmode=disable",
                "x_auth"
            )
            .unwrap(),
            "postgres://postgres@127.0.0.1:5432/x_auth?sslmode=disable"
        );
        assert_eq!(
            with_path("amqp://guest:guest@127.0.0.1:5672/%2f", "pt-1").unwrap(),
            "amqp://guest:guest@127.0.0.1:5672/pt-1"
        );
        assert_eq!(redact("amqp://u:secret@h:1/v"), "amqp://u:***@h:1/v");
        assert_eq!(
            credentials("amqp://u%40x:p%3Aw@h:1/").unwrap(),
            ("u@x".to_owned(), "p:w".to_owned())
        );
        assert!(credentials("amqp://h:1/").is_err());
    }
}
