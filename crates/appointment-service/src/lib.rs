//! The appointment-service: books patients with doctors. It knows the clinicians only from the
//! user events, exactly like the user-service knows the users: its own queue
//! (`appointment-service.user-events`), its own copy (`clinicians` in `appointment_db`), the
//! same shared consumer.
//!
//! Layout:
//! - [`copy`]: how a batch of user events changes `appointment_db` (the only consumer code of
//!   its own; the rest, and the service's skeleton, is the shared `consumer` crate's).
//! - [`store`]: the appointments: booking (the overlap rule is an exclusion constraint),
//!   listing, cancelling, reassigning.
//! - [`settings`]: its command-line and environment settings, and how they become a
//!   [`Config`].
//! - [`http`]: `/api/v1/appointments` (bearer token from the auth-service) and health.
//! - [`resolve`]: the offboarding saga's command: a leaving doctor's future appointments
//!   reassigned or cancelled, each with its event through this service's outbox (published by
//!   the shared relay, `crates/outbox`), and the reply.

pub mod copy;
pub mod http;
pub mod resolve;
pub mod settings;
pub mod store;

use consumer::service::{ConsumerService, Spec};
use consumer::ConsumerConfig;
use contract::topology;
use copy::ClinicianCopy;
use platform::jwt::{KeyDir, VerifierConfig};
use platform::service::Service;
use sqlx::PgPool;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub amqp_url: String,
    /// How the auth-service's tokens are checked: its public keys (its JWKS URL, or its key
    /// directory), the longest lifetime a token may claim, how often the keys are fetched.
    pub keys: VerifierConfig,
    /// Largest number of database connections this process opens.
    pub max_db_connections: u32,
    /// The least-privilege setup owns the schema and the broker topology (see the
    /// user-service's `Config`).
    pub managed_by_setup: bool,
    pub consumer: ConsumerConfig,
    /// Roles besides nurses and admins that read every appointment (`APPOINTMENTS_VISIBLE_TO`:
    /// pharmacists, consultants); empty, they see none.
    pub visible_to: Vec<contract::Role>,
    /// How the outbox's published rows are removed (OUTBOX_KEEP_PUBLISHED_SECS).
    pub outbox_cleanup: outbox::CleanupConfig,
}

impl Config {
    /// One machine's defaults around the given database, broker and keys: a free port, a small
    /// pool (tests and tools start services this way).
    pub fn local(database_url: &str, amqp_url: &str, key_dir: &KeyDir) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.to_owned(),
            amqp_url: amqp_url.to_owned(),
            keys: VerifierConfig::local(key_dir),
            max_db_connections: 6,
            managed_by_setup: false,
            consumer: consumer_config(ConsumerConfig::default()),
            visible_to: Vec::new(),
            outbox_cleanup: outbox::CleanupConfig::default(),
        }
    }
}

/// `base` under this service's consumer name (its queues are `appointment-service.user-events`
/// and the rest).
pub fn consumer_config(base: ConsumerConfig) -> ConsumerConfig {
    ConsumerConfig {
        name: topology::APPOINTMENT_SERVICE.to_owned(),
        ..base
    }
}

/// The migrations of `appointment_db`, which the least-privilege setup runs as the schema's
/// owner.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates `appointment_db` if absent, opens a pool and applies the migrations.
pub async fn prepare_database(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    platform::db::prepare(url, max_connections, &MIGRATIONS, "appointment_db").await
}

/// The service's pool: migrating when it may, or checking that every migration is applied.
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
        "appointment_db",
    )
    .await
}

/// The table rights of `appointment_db` the least-privilege setup grants: the service's role
/// (applies events, books) and the operator's (verify reads the copy; reconcile
/// `--delete-extra` deletes from it and flags the appointments of a doctor it deleted, which
/// needs no patient's name: only the columns that statement reads and writes).
pub fn grants(service: &str, operator: &str) -> Vec<String> {
    vec![
        format!(
            "GRANT SELECT, INSERT, UPDATE ON clinicians, history, appointments TO \"{service}\""
        ),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON outbox, command_results, processed_commands \
             TO \"{service}\""
        ),
        format!("GRANT SELECT, UPDATE ON relay_wakeup TO \"{service}\""),
        format!("GRANT USAGE, SELECT ON SEQUENCE outbox_seq_seq TO \"{service}\""),
        format!("GRANT SELECT ON _sqlx_migrations TO \"{service}\""),
        format!("GRANT SELECT, DELETE ON clinicians TO \"{operator}\""),
        format!("GRANT SELECT ON history, _sqlx_migrations TO \"{operator}\""),
        // `portal erasure verify` searches what may name an erased clinician: saga results,
        // replies, appointment events waiting in the outbox.
        format!(
            "GRANT SELECT ON command_results, processed_commands, outbox TO \"{operator}\""
        ),
        format!(
            "GRANT SELECT (doctor_id, status, starts_at, version), UPDATE (status, updated_at, version) \
             ON appointments TO \"{operator}\""
        ),
    ]
}

/// Where the copy stands against the end-of-history mark of the last backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// The users a complete copy holds, from the mark; `None` before any mark.
    pub expected: Option<i64>,
    /// The users this copy holds.
    pub held: i64,
}

impl History {
    /// The mark is in and every user it counts is here: every existing doctor is known.
    pub fn complete(&self) -> bool {
        self.expected.is_some_and(|n| self.held >= n)
    }
}

pub async fn history(db: impl sqlx::PgExecutor<'_>) -> Result<History, sqlx::Error> {
    let (expected, held) =
        sqlx::query_as("SELECT (SELECT users FROM history), (SELECT count(*) FROM clinicians)")
            .fetch_one(db)
            .await?;
    Ok(History { expected, held })
}

pub struct Application {
    service: ConsumerService<ClinicianCopy>,
    state: http::AppState,
    /// The outbox's relay (appointment events, replies) and the saga's command queue.
    relay: outbox::Relay,
    resolver: resolve::Resolver,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let trusted = contract::wire::TrustedPublishers::new(
            &platform::amqp::broker_user_of(&config.amqp_url)?,
            &config.consumer.trusted_publishers,
        );
        let (amqp_url, managed_by_setup) = (config.amqp_url.clone(), config.managed_by_setup);
        let outbox_cleanup = config.outbox_cleanup.clone();
        let service = ConsumerService::build(Spec {
            name: Self::NAME,
            database: "appointment_db",
            migrations: &MIGRATIONS,
            copy: ClinicianCopy,
            http_addr: config.http_addr,
            database_url: config.database_url,
            database_setting: "APPOINTMENT_DATABASE_URL",
            amqp_setting: "APPOINTMENT_SERVICE_AMQP_URL",
            max_db_connections: config.max_db_connections,
            managed_by_setup: config.managed_by_setup,
            amqp_url: config.amqp_url,
            keys: config.keys,
            // Always here: booking needs the copy kept current.
            consumer: Some(consumer_config(config.consumer)),
            also_watch: {
                let control = topology::ControlQueue::of(topology::APPOINTMENT_SERVICE);
                vec![(control.main, true), (control.dead_letter, false)]
            },
        })
        .await?;
        let state = http::AppState {
            db: service.db().clone(),
            verifier: service.verifier().clone(),
            stats: service.stats().clone(),
            complete: Default::default(),
            visible_to: config.visible_to.into(),
        };
        let table = resolve::outbox_table();
        let relay = outbox::Relay::new(
            table.clone(),
            service.db().clone(),
            amqp_url.clone(),
            outbox::RelayConfig {
                batch_size: 100,
                cleanup: outbox_cleanup,
                declare_topology: !managed_by_setup,
                ..outbox::RelayConfig::default()
            },
        )
        .with_metrics(outbox::RelayMetrics::register(
            service.metrics(),
            &table,
            service.db().clone(),
        )?)
        .with_cleanup_metrics(outbox::CleanupMetrics::register(service.metrics())?);
        // The table of this service that grows with the traffic (the retention alerts).
        service
            .metrics()
            .watch_tables(service.db().clone(), "appointment_db", &["outbox"])?;
        let resolver =
            resolve::Resolver::new(service.db().clone(), amqp_url, !managed_by_setup, trusted);
        Ok(Self {
            service,
            state,
            relay,
            resolver,
        })
    }

    /// The service's database (tools and tests).
    pub fn pool(&self) -> &PgPool {
        &self.state.db
    }
}

impl Service for Application {
    const NAME: &'static str = "appointment-service";

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.service.local_addr()
    }

    /// Serves and consumes until `shutdown`; then finishes the batch in hand and returns.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if history(&self.state.db)
            .await
            .is_ok_and(|h| h.expected.is_none())
        {
            tracing::warn!(
                "appointment_db does not hold the stored history of the users yet: not ready, and \
                 booking nothing, until a backfill has delivered it (`portal consumer add \
                 {}`; `portal up` runs it)",
                topology::APPOINTMENT_SERVICE
            );
        }
        let router = http::router(self.state);
        let also = {
            let (relay, resolver) = (
                self.relay.run(shutdown.clone()),
                self.resolver.run(shutdown.clone()),
            );
            async move {
                tokio::join!(relay, resolver);
            }
        };
        self.service.run_with(router, also, shutdown).await
    }
}
