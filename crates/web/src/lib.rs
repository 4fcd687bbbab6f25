//! The web portal clinic staff use (:3100): server-rendered HTML over the gateway's HTTP API,
//! with the signed-in user's token. It never opens a database. Every page works without
//! JavaScript (forms post and redirect); one stylesheet of its own, nothing from the internet.
//!
//! Layout:
//! - [`session`]: the session cookie, CSRF tokens, the signed-in user's API tokens.
//! - [`staff`]: who is asking (a visitor, or a signed-in user whose token is renewed when due),
//!   the CSRF check, the API client with the user's token.
//! - [`page`]: the page layout, error pages and how API failures become them.
//! - [`settings`]: its command-line and environment settings, and how they become a
//!   [`Config`].
//! - [`pages`]: one module per group of pages (login, home, appointments, account).

pub mod page;
pub mod pages;
pub mod session;
pub mod settings;
pub mod staff;

use anyhow::Context;
use chrono::{FixedOffset, Offset};
use platform::service::Service;
use session::Sessions;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    /// The gateway, e.g. `http://127.0.0.1:3000`.
    pub gateway_url: String,
    /// Mark the session cookie `Secure` (the portal is served over https).
    pub secure_cookies: bool,
    /// The clinic's offset from UTC: times are entered and shown in it.
    pub utc_offset: FixedOffset,
}

impl Config {
    /// A portal on a free port in front of `gateway_url` (tests and tools).
    pub fn local(gateway_url: &str) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            gateway_url: gateway_url.to_owned(),
            secure_cookies: false,
            utc_offset: chrono::Utc.fix(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub sessions: Arc<Sessions>,
    /// The gateway's API, unauthenticated: one connection pool for every user's calls (each
    /// call adds the user's token).
    pub api: api_client::ApiClient,
    /// The same pool, for the portal's own checks (readiness).
    pub http: reqwest::Client,
    pub secure_cookies: bool,
    pub utc_offset: FixedOffset,
}

pub struct Application {
    listener: tokio::net::TcpListener,
    state: AppState,
    metrics: Arc<platform::metrics::Metrics>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let api = api_client::ApiClient::with_http(http.clone(), &config.gateway_url)
            .map_err(|e| anyhow::anyhow!("GATEWAY_URL: {e}"))?;
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_addr))?;
        let state = AppState {
            sessions: Arc::new(Sessions::default()),
            api,
            http,
            secure_cookies: config.secure_cookies,
            utc_offset: config.utc_offset,
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
    const NAME: &'static str = "web";

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!("web portal listening on http://{}", self.local_addr()?);
        let router = platform::metrics::instrument(pages::router(self.state), &self.metrics);
        platform::http::serve(self.listener, router, shutdown)
            .await
            .context("web portal HTTP server failed")
    }
}
