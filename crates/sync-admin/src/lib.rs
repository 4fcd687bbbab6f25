//! The sync admin API (`portal sync-admin`, 127.0.0.1:3004, behind the gateway at
//! `/api/v1/admin/sync`): the state of the synchronisation for admins — the outbox backlog,
//! each consumer's queue, retries and dead letters (listed without loss, requeued with
//! confirms), and `verify` run in the background with its progress. The web portal's
//! `/admin/sync` page reads it.
//!
//! It runs under the operator's identity (the one `portal verify`, `replay` and `dlq` use): the
//! only service that reads every database, as the ops commands do, and so a service of its
//! own rather than a part of the auth-service, which must not read the consumers' copies. It
//! owns nothing and migrates nothing.
//!
//! Layout:
//! - [`http`]: the routes, and the admin check (the token, and `auth_db` now).
//! - [`verify_job`]: one verify run at a time, in the background, with live progress.

pub mod http;
pub mod verify_job;

use anyhow::Context;
use contract::topology::{self, ConsumerQueues};
use ops::verify::CopySpec;
use platform::jwt::{JwtVerifier, KeyDir, KeySource};
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
    /// The consumers whose queues are shown.
    pub consumers: Vec<ConsumerQueues>,
    /// Where the auth-service's public keys are.
    pub keys: KeySource,
}

impl Config {
    /// The standard consumers (user-service, appointment-service) and their copies.
    pub fn standard(
        http_addr: SocketAddr,
        auth_database_url: &str,
        user_database_url: &str,
        appointment_database_url: &str,
        amqp_url: &str,
        keys: KeySource,
    ) -> Self {
        Self {
            http_addr,
            auth_database_url: auth_database_url.to_owned(),
            copies: vec![
                (&ops::verify::USERS, user_database_url.to_owned()),
                (
                    &ops::verify::CLINICIANS,
                    appointment_database_url.to_owned(),
                ),
            ],
            amqp_url: amqp_url.to_owned(),
            consumers: vec![
                ConsumerQueues::for_consumer(topology::USER_SERVICE),
                ConsumerQueues::for_consumer(topology::APPOINTMENT_SERVICE),
            ],
            keys,
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
            KeySource::Dir(key_dir.clone()),
        )
    }
}

pub struct Application {
    listener: tokio::net::TcpListener,
    state: http::AppState,
    metrics: Arc<platform::metrics::Metrics>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Lazy pools: the page must come up, and say what is down, while a database is.
        let auth = platform::db::lazy_pool(&config.auth_database_url, 4)?;
        let mut copies = Vec::new();
        for (spec, url) in &config.copies {
            copies.push((*spec, platform::db::lazy_pool(url, 2)?));
        }
        let verifier = JwtVerifier::new(config.keys.clone())?;
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_addr))?;
        let state = http::AppState {
            verify: verify_job::VerifyJobs::new(auth.clone(), copies),
            auth,
            amqp_url: config.amqp_url.into(),
            consumers: Arc::new(config.consumers),
            verifier: Arc::new(verifier),
        };
        let metrics = platform::metrics::Metrics::new(Self::NAME)?;
        Ok(Self {
            listener,
            state,
            metrics,
        })
    }
}

impl Service for Application {
    const NAME: &'static str = "sync-admin";

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!("sync admin API listening on http://{}", self.local_addr()?);
        let router = platform::metrics::instrument(http::router(self.state), &self.metrics);
        platform::http::serve(self.listener, router, shutdown)
            .await
            .context("sync admin HTTP server failed")
    }
}
