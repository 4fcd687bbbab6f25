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
//! - [`pages`]: one module per group of pages (login, home, appointments, account, the admin
//!   pages: users, offboarding, sync).

pub mod page;
pub mod pages;
pub mod session;
pub mod settings;
pub mod staff;

use anyhow::Context;
use chrono::{FixedOffset, Offset};
use platform::service::Service;
use session::Sessions;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest one call to the gateway may take (less when the request timeout is short).
const API_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    /// The gateway, e.g. `http://127.0.0.1:3000`.
    pub gateway_url: String,
    /// The portal is served over https (behind a TLS proxy): the session cookie is `Secure` and
    /// `__Host-`, and every answer carries `Strict-Transport-Security`.
    pub secure_cookies: bool,
    /// The clinic's offset from UTC: times are entered and shown in it.
    pub utc_offset: FixedOffset,
    /// Proxies in front of the portal (a load balancer) whose `X-Forwarded-For` names the
    /// client; empty: any proxy on this machine.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Timeouts and caps on browsers' connections and requests.
    pub limits: platform::http::Limits,
    /// The bearer token that opens `/metrics` to a scraper on another machine (METRICS_TOKEN);
    /// without it only this machine reads them ([`platform::metrics`]).
    pub metrics_token: Option<platform::metrics::MetricsToken>,
}

impl Config {
    /// A portal on a free port in front of `gateway_url` (tests and tools).
    pub fn local(gateway_url: &str) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            gateway_url: gateway_url.to_owned(),
            secure_cookies: false,
            utc_offset: chrono::Utc.fix(),
            trusted_proxies: Vec::new(),
            limits: platform::http::Limits::default(),
            metrics_token: None,
        }
    }
}

/// What `Strict-Transport-Security` says when the portal is served over https: a year, the
/// usual value, so a browser that has seen the portal once never tries plain http for it again
/// (where a network attacker could strip TLS).
pub const HSTS: &str = "max-age=31536000";

/// The line logged at start when browsers reach the portal over plain HTTP from other machines.
pub const PLAIN_HTTP_WARNING: &str =
    "served over plain HTTP off loopback: cookies are not Secure; \
                                      put a TLS proxy in front and set WEB_SECURE_COOKIES=true";

/// Adds [`HSTS`] to an answer.
async fn strict_transport(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static(HSTS),
    );
    response
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
    trusted_proxies: Vec<std::net::IpAddr>,
    limits: platform::http::Limits,
    metrics: Arc<platform::metrics::Metrics>,
    metrics_token: Option<platform::metrics::MetricsToken>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        // Over plain HTTP from other machines, the session cookie crosses the network readable
        // and the browser would send it to anyone posing as the portal: say so, loudly, once.
        if !config.secure_cookies && !config.http_addr.ip().to_canonical().is_loopback() {
            tracing::warn!(host = %config.http_addr.ip(), "{PLAIN_HTTP_WARNING}");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            // Within the request timeout, so a slow gateway gets the portal's own error page.
            .timeout(API_TIMEOUT.min(config.limits.upstream_timeout()))
            // The gateway closes a connection idle for its header timeout; the pool lets go of
            // it first, so no request is sent on a connection being closed.
            .pool_idle_timeout(platform::http::CLIENT_IDLE_TIMEOUT)
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
        let held = metrics.int_gauge(
            "portal_web_sessions",
            "Sessions the web portal holds: signed-in users (a visitor holds none).",
        )?;
        let sessions = Arc::downgrade(&state.sessions);
        metrics.on_scrape(move || {
            let count = sessions
                .upgrade()
                .map_or(0, |s| i64::try_from(s.len()).unwrap_or(i64::MAX));
            held.set(count);
            async {}
        });
        // A proxy in front of the portal (a TLS terminator, a load balancer) carries every
        // browser's connections: capping it per address would cap them all together.
        let mut limits = config.limits.clone();
        if config.trusted_proxies.is_empty() {
            limits.exempt.extend([
                IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ]);
        } else {
            limits.exempt.extend(config.trusted_proxies.iter().copied());
        }
        Ok(Self {
            listener,
            state,
            trusted_proxies: config.trusted_proxies.clone(),
            limits,
            metrics,
            metrics_token: config.metrics_token,
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
        let secure = self.state.secure_cookies;
        let mut router = platform::client_addr::TrustedProxies::layer(
            platform::metrics::instrument_with(
                pages::router(self.state),
                &self.metrics,
                self.metrics_token,
            ),
            &self.trusted_proxies,
        );
        if secure {
            router = router.layer(axum::middleware::map_response(strict_transport));
        }
        platform::http::serve_with(self.listener, router, &self.limits, shutdown)
            .await
            .context("web portal HTTP server failed")
    }
}
