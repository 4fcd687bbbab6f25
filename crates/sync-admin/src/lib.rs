//! The sync admin API (`portal sync-admin`, 127.0.0.1:3004, behind the gateway at
//! `/api/v1/admin/sync`): the state of the synchronisation for admins — the outbox backlog,
//! each consumer's queue, retries and dead letters (listed without loss, requeued with
//! confirms, an untrusted publisher's kept back and only discarded), and `verify` run in the
//! background with its progress. The web portal's `/admin/sync` page reads it.
//!
//! It runs under the operator's identity (the one `portal verify`, `replay` and `dlq` use): the
//! only service that reads every database, as the ops commands do, and so a service of its
//! own rather than a part of the auth-service, which must not read the consumers' copies. It
//! owns nothing and migrates nothing.
//!
//! Layout:
//! - [`http`]: the routes, and the admin check (the token, and `auth_db` now).
//! - [`settings`]: its settings, and how they become a [`Config`].
//! - [`verify_job`]: one verify run at a time, in the background, with live progress.

pub mod http;
pub mod settings;
pub mod verify_job;

use anyhow::Context;
use ops::verify::CopySpec;
use platform::jwt::{JwtVerifier, KeyDir, VerifierConfig};
use platform::privilege::Identity;
use platform::service::Service;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    /// `auth_db` as the operator reads it (users and outbox).
    pub auth_database_url: String,
    /// Each consumer's copy and its database as the operator reads it.
    pub copies: Vec<(&'static CopySpec, String)>,
    /// The broker as the operator reaches it (passive declares, dead-letter queues).
    pub amqp_url: String,
    /// `TRUSTED_PUBLISHERS`, as the consumers have it: a dead letter first published by anyone
    /// they do not trust is never requeued.
    pub trusted_publishers: Vec<String>,
    /// How the auth-service's tokens are checked: where its public keys are, how long a token
    /// may live, how often the keys are fetched again.
    pub keys: VerifierConfig,
    /// Reconcile every copy this often (`RECONCILE_INTERVAL`); `None`: never by itself.
    pub reconcile_interval: Option<std::time::Duration>,
    /// The least-privilege setup manages the install: the operator's identity is checked at
    /// start, and a superuser or broker administrator in its place is said loudly
    /// (`platform::privilege`).
    pub managed_by_setup: bool,
}

impl Config {
    /// The standard consumers (user-service, appointment-service) and their copies.
    pub fn standard(
        http_addr: SocketAddr,
        auth_database_url: &str,
        user_database_url: &str,
        appointment_database_url: &str,
        amqp_url: &str,
        keys: VerifierConfig,
    ) -> Self {
        Self {
            http_addr,
            auth_database_url: auth_database_url.to_owned(),
            copies: vec![
                (&ops::verify::USER_SERVICE, user_database_url.to_owned()),
                (
                    &ops::verify::APPOINTMENT_SERVICE,
                    appointment_database_url.to_owned(),
                ),
            ],
            amqp_url: amqp_url.to_owned(),
            trusted_publishers: Vec::new(),
            keys,
            reconcile_interval: None,
            managed_by_setup: false,
        }
    }

    /// On a free port of this machine, with the auth-service's key directory (tests and tools).
    pub fn local(
        auth_database_url: &str,
        user_database_url: &str,
        appointment_database_url: &str,
        amqp_url: &str,
        key_dir: &KeyDir,
    ) -> Self {
        Self::standard(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            auth_database_url,
            user_database_url,
            appointment_database_url,
            amqp_url,
            VerifierConfig::local(key_dir),
        )
    }
}

pub struct Application {
    listener: tokio::net::TcpListener,
    state: http::AppState,
    metrics: Arc<platform::metrics::Metrics>,
    /// The scheduled reconcile, when it runs.
    schedule: Option<Schedule>,
}

/// The scheduled reconcile's `auth_db` URL, copies and interval.
struct Schedule {
    auth_database_url: String,
    copies: Vec<(&'static CopySpec, String)>,
    every: std::time::Duration,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Requeues go out under the operator's broker user, which must be named, never guessed
        // (`platform::amqp::NoBrokerUser`: a configuration error).
        platform::amqp::broker_user_of(&config.amqp_url)?;
        // Lazy pools: the page must come up, and say what is down, while a database is.
        let auth = platform::db::lazy_pool(&config.auth_database_url, 4)?;
        let mut copies = Vec::new();
        for (spec, url) in &config.copies {
            copies.push((*spec, platform::db::lazy_pool(url, 2)?));
        }
        let identities = identities(&config.amqp_url, &auth, &copies);
        let verifier = JwtVerifier::new(config.keys.clone())?;
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_addr))?;
        let state = http::AppState {
            verify: verify_job::VerifyJobs::new(auth.clone(), copies),
            auth,
            amqp_url: config.amqp_url.into(),
            trusted_publishers: Arc::new(config.trusted_publishers),
            verifier: Arc::new(verifier),
        };
        let metrics = platform::metrics::Metrics::new(Self::NAME)?;
        platform::privilege::watch(Self::NAME, &metrics, config.managed_by_setup, identities)?;
        let schedule = config.reconcile_interval.map(|every| Schedule {
            auth_database_url: config.auth_database_url.clone(),
            copies: config.copies.clone(),
            every,
        });
        Ok(Self {
            listener,
            state,
            metrics,
            schedule,
        })
    }
}

/// The operator's identities this API connects as, each named by its setting.
fn identities(amqp_url: &str, auth: &sqlx::PgPool, copies: &verify_job::Copies) -> Vec<Identity> {
    let mut identities = vec![Identity::postgres("OPERATOR_AUTH_DATABASE_URL", auth)];
    for (spec, pool) in copies {
        // OPERATOR_USER_DATABASE_URL for user_db, as `ops::settings::OperatorArgs` names them.
        let name = spec.database.trim_end_matches("_db").to_uppercase();
        identities.push(Identity::postgres(
            format!("OPERATOR_{name}_DATABASE_URL"),
            pool,
        ));
    }
    identities.push(Identity::rabbitmq("OPERATOR_AMQP_URL", amqp_url));
    identities
}

impl Service for Application {
    const NAME: &'static str = "sync-admin";

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!("sync admin API listening on http://{}", self.local_addr()?);
        let router = platform::metrics::instrument(http::router(self.state), &self.metrics);
        // The schedule ends with the API, whatever ended it (not the caller's other parts).
        let schedule_stop = shutdown.child_token();
        let scheduled = self.schedule.map(|s| {
            ops::reconcile::spawn_schedule(
                s.auth_database_url,
                s.copies,
                s.every,
                schedule_stop.clone(),
            )
        });
        let served = platform::http::serve(self.listener, router, shutdown)
            .await
            .context("sync admin HTTP server failed");
        schedule_stop.cancel();
        if let Some(task) = scheduled {
            task.await.ok();
        }
        served
    }
}
