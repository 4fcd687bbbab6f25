//! The user-service: keeps `user_db` in step with user events and serves the user directory.
//!
//! Layout:
//! - [`store`]: the conditional upsert (the ordering rule), which is the service's
//!   `consumer::Apply` ([`copy::UserCopy`]; the consuming itself — batches, dead letters, acks
//!   after commit — and the service's skeleton are the shared `consumer` crate's), and the
//!   directory queries.
//! - [`settings`]: its command-line and environment settings, and how they become a
//!   [`Config`].
//! - [`http`]: `/api/v1/users` (bearer token from the auth-service) and health endpoints.

pub mod http;
pub mod settings;
pub mod store;

/// Where every consumer service keeps its `consumer::Apply` (`UserCopy`, `UserConsumer`): here,
/// the store's upsert.
pub use store as copy;

use consumer::service::{ConsumerService, Spec};
use consumer::{ConsumerConfig, SyncStats};
use copy::UserCopy;
use platform::jwt::{KeyDir, VerifierConfig};
use platform::service::Service;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub amqp_url: String,
    /// How the auth-service's tokens are checked: its public keys (its JWKS URL, or its key
    /// directory), the longest lifetime a token may claim, how often the keys are fetched.
    pub keys: VerifierConfig,
    /// Run the event consumer inside this process.
    pub run_consumer: bool,
    /// Largest number of database connections this process opens.
    pub max_db_connections: u32,
    /// The least-privilege setup (`portal setup`) owns the schema and the broker topology: this
    /// process, under an identity that may change neither, checks the schema is current
    /// instead of migrating, and declares nothing.
    pub managed_by_setup: bool,
    pub consumer: ConsumerConfig,
}

impl Config {
    /// One machine's defaults around the given database, broker and keys: a free port, the
    /// consumer in this process, a small pool (tests and tools start services this way).
    pub fn local(database_url: &str, amqp_url: &str, key_dir: &KeyDir) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.to_owned(),
            amqp_url: amqp_url.to_owned(),
            keys: VerifierConfig::local(key_dir),
            run_consumer: true,
            max_db_connections: 6,
            managed_by_setup: false,
            consumer: ConsumerConfig::default(),
        }
    }
}

/// The migrations of `user_db`, which the least-privilege setup runs as the schema's owner.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates `user_db` if absent, opens a pool and applies the migrations (a role that may change
/// the schema: development, tests, tools).
pub async fn prepare_database(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    platform::db::prepare(url, max_connections, &MIGRATIONS, "user_db").await
}

/// The table rights of `user_db` the least-privilege setup grants, as SQL run by the schema's
/// owner: the user-service's role (`service`: applies events, serves the directory) and the
/// operator's (`operator`: verify reads; reconcile `--delete-extra` deletes).
pub fn grants(service: &str, operator: &str) -> Vec<String> {
    vec![
        format!("GRANT SELECT, INSERT, UPDATE ON users TO \"{service}\""),
        format!("GRANT SELECT ON _sqlx_migrations TO \"{service}\""),
        format!("GRANT SELECT, DELETE ON users TO \"{operator}\""),
        format!("GRANT SELECT ON _sqlx_migrations TO \"{operator}\""),
    ]
}

/// The service's pool: migrating when it may, or, when the setup manages the schema
/// (`managed_by_setup`), checking that every migration is applied.
pub async fn open_database(
    url: &str,
    max_connections: u32,
    managed_by_setup: bool,
) -> anyhow::Result<PgPool> {
    platform::db::open(
        url,
        max_connections,
        managed_by_setup,
        &MIGRATIONS,
        "user_db",
    )
    .await
}

pub struct Application {
    service: ConsumerService<UserCopy>,
    state: http::AppState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let service = ConsumerService::build(Spec {
            name: Self::NAME,
            database: "user_db",
            migrations: &MIGRATIONS,
            copy: UserCopy,
            http_addr: config.http_addr,
            database_url: config.database_url,
            database_setting: "USER_DATABASE_URL",
            amqp_setting: "USER_SERVICE_AMQP_URL",
            max_db_connections: config.max_db_connections,
            managed_by_setup: config.managed_by_setup,
            amqp_url: config.amqp_url,
            keys: config.keys,
            consumer: config.run_consumer.then_some(config.consumer),
            also_watch: Vec::new(),
        })
        .await?;
        let state = http::AppState {
            db: service.db().clone(),
            verifier: service.verifier().clone(),
            stats: service.runs_consumer().then(|| service.stats().clone()),
        };
        Ok(Self { service, state })
    }

    /// The consumer's counters (`None` when no consumer runs here).
    pub fn stats(&self) -> Option<Arc<SyncStats>> {
        self.state.stats.clone()
    }
}

impl Service for Application {
    const NAME: &'static str = "user-service";

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    /// Serves and consumes until `shutdown`; then finishes the batch in hand and returns.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let router = http::router(self.state);
        self.service.run_until_stopped(router, shutdown).await
    }
}
