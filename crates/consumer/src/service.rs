//! The skeleton every consumer service shares, so a service's `lib.rs` keeps only what is its
//! own (its configuration, migrations, grants, routes): [`ConsumerService::build`] opens the
//! service's database (migrating it, or checking it under the least-privilege setup), builds
//! the token verifier, the sync counters, the consumer with the service's [`Apply`], the
//! metrics (the pool's and the consumer's), and binds the listener;
//! [`ConsumerService::run_until_stopped`] serves the service's routes with the consumer beside
//! them until shutdown.

use crate::{Apply, Consumer, ConsumerConfig, SyncStats};
use anyhow::Context;
use contract::topology::ConsumerQueues;
use platform::jwt::{JwtVerifier, VerifierConfig};
use platform::metrics::Metrics;
use platform::privilege::{self, Identity};
use sqlx::migrate::Migrator;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a consumer service is made of: its own parts (name, database, migrations, copy) and
/// its configuration.
pub struct Spec<A> {
    /// The service's name (`Service::NAME`): its metrics registry and its log lines.
    pub name: &'static str,
    /// Its database's name in messages and metrics (`user_db`).
    pub database: &'static str,
    /// Its database's migrations.
    pub migrations: &'static Migrator,
    /// How a batch of snapshots changes its copy.
    pub copy: A,
    pub http_addr: SocketAddr,
    pub database_url: String,
    /// The settings that give `database_url` and `amqp_url` (`USER_DATABASE_URL`,
    /// `USER_SERVICE_AMQP_URL`): named when either is more than the setup's identity.
    pub database_setting: &'static str,
    pub amqp_setting: &'static str,
    pub max_db_connections: u32,
    /// The least-privilege setup owns the schema and the broker topology: the database is
    /// checked rather than migrated, and the consumer declares nothing.
    pub managed_by_setup: bool,
    pub amqp_url: String,
    /// How the auth-service's tokens are checked: where its public keys are, how long a token
    /// may live, how often the keys are fetched again.
    pub keys: VerifierConfig,
    /// The consumer's configuration; `None` when this process runs no consumer.
    pub consumer: Option<ConsumerConfig>,
    /// Other queues the service reads (its control queue, and its dead letters), shown in the
    /// queue metrics beside the consumer's; `true` counts the consumers attached.
    pub also_watch: Vec<(String, bool)>,
}

/// A consumer service built and bound, ready to run (see the module).
pub struct ConsumerService<A: Apply> {
    name: &'static str,
    db: PgPool,
    verifier: Arc<JwtVerifier>,
    stats: Arc<SyncStats>,
    consumer: Option<Consumer<A>>,
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
}

impl<A: Apply> ConsumerService<A> {
    /// Opens the database, builds the verifier, the counters, the consumer and the metrics, and
    /// binds `http_addr`.
    pub async fn build(spec: Spec<A>) -> anyhow::Result<Self> {
        // The configuration first: a URL that names no broker user is a mistake to report as
        // such, not behind a database that happens to be down.
        if spec.consumer.is_some() {
            platform::amqp::broker_user_of(&spec.amqp_url)?;
        }
        let db = platform::db::open(
            &spec.database_url,
            spec.max_db_connections,
            spec.managed_by_setup,
            spec.migrations,
            spec.database,
        )
        .await?;
        let verifier = Arc::new(JwtVerifier::new(spec.keys)?);
        let stats = Arc::new(SyncStats::default());
        let consumer = spec.consumer.as_ref().map(|config| {
            Consumer::new(
                db.clone(),
                spec.copy,
                spec.amqp_url.clone(),
                ConsumerConfig {
                    // Under the setup the consumer's broker user may not declare: its queue is
                    // only checked.
                    declare_topology: !spec.managed_by_setup,
                    ..config.clone()
                },
                stats.clone(),
            )
        });
        let consumer = consumer.transpose()?;
        let metrics = Metrics::new(spec.name)?;
        metrics.watch_pool(db.clone(), spec.database)?;
        let broker = spec
            .consumer
            .is_some()
            .then(|| Identity::rabbitmq(spec.amqp_setting, &spec.amqp_url));
        let database = Identity::postgres(spec.database_setting, &db);
        privilege::watch(
            spec.name,
            &metrics,
            spec.managed_by_setup,
            [database].into_iter().chain(broker),
        )?;
        if let Some(config) = &spec.consumer {
            crate::metrics::register(
                &metrics,
                &stats,
                &config.name,
                &spec.amqp_url,
                &ConsumerQueues::with_retry_delays(&config.name, &config.retry_delays),
                &spec.also_watch,
            )?;
        }
        let listener = tokio::net::TcpListener::bind(spec.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", spec.http_addr))?;
        Ok(Self {
            name: spec.name,
            db,
            verifier,
            stats,
            consumer,
            metrics,
            listener,
        })
    }

    /// The service's database.
    pub fn db(&self) -> &PgPool {
        &self.db
    }

    /// The verifier of the auth-service's tokens.
    pub fn verifier(&self) -> &Arc<JwtVerifier> {
        &self.verifier
    }

    /// The consumer's counters (they stay at zero when no consumer runs here).
    pub fn stats(&self) -> &Arc<SyncStats> {
        &self.stats
    }

    /// Whether this process runs the consumer.
    pub fn runs_consumer(&self) -> bool {
        self.consumer.is_some()
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `router` (with `/metrics` and the request metrics added) and consumes until
    /// `shutdown`; then finishes the batch in hand, closes the database and returns.
    pub async fn run_until_stopped(
        self,
        router: axum::Router,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        self.run_with(router, std::future::ready(()), shutdown)
            .await
    }

    /// [`ConsumerService::run_until_stopped`] with `also` (the service's own background work,
    /// which must end on `shutdown`) running beside the consumer.
    pub async fn run_with(
        self,
        router: axum::Router,
        also: impl std::future::Future<Output = ()> + Send + 'static,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let consumer = self.consumer.map(|c| c.run(shutdown.clone()));
        let worker = async move {
            tokio::join!(also, async {
                if let Some(consumer) = consumer {
                    consumer.await
                }
            });
        };
        let router = platform::metrics::instrument(router, &self.metrics);
        platform::http::serve_with_worker(
            self.name,
            self.listener,
            router,
            Some(worker),
            &self.db,
            shutdown,
        )
        .await
    }

    /// The service's metrics registry (for its own families).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
