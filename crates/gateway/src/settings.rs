//! The gateway's settings as a `clap` group (`portal gateway` and `portal up` flatten it with
//! the auth-service's whereabouts), and how they become its [`Config`].

use crate::{AuthRateLimit, Config};
use clap::Args;
use platform::duration::Interval;
use platform::http::Limits;
use platform::settings::{AuthLocationArgs, Link};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Where the gateway listens by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3000";
/// How often each replica's readiness is checked unless GATEWAY_HEALTH_INTERVAL says.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);

/// The gateway's own settings.
#[derive(Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Where the gateway listens.
    #[arg(long, env = "GATEWAY_ADDR", default_value = DEFAULT_ADDR)]
    pub gateway_addr: SocketAddr,
    /// The user-service as the gateway reaches it; several replicas comma-separated
    /// [default: http://127.0.0.1:3002; under `portal up`, the user-service it runs].
    #[arg(long, env = "USER_SERVICE_URL")]
    pub user_service_url: Option<String>,
    /// The appointment-service as the gateway reaches it [default: http://127.0.0.1:3003;
    /// under `portal up`, the one it runs]; `none` routes nothing to it (a system without the
    /// appointment-service).
    #[arg(long, env = "APPOINTMENT_SERVICE_URL")]
    pub appointment_service_url: Option<String>,
    /// The sync admin API as the gateway reaches it [default: http://127.0.0.1:3004; under
    /// `portal up`, the one it runs]; `none` routes nothing to it.
    #[arg(long, env = "SYNC_ADMIN_URL")]
    pub sync_admin_url: Option<String>,
    /// Login, register, refresh and change-password requests one client address may make per
    /// minute at the gateway, together.
    #[arg(long, env = "GATEWAY_AUTH_RATE", default_value_t = AuthRateLimit::DEFAULT_PER_MINUTE, value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_auth_rate: u32,
    /// How many of those one address may make at once before the rate applies.
    #[arg(long, env = "GATEWAY_AUTH_BURST", default_value_t = AuthRateLimit::DEFAULT_BURST, value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_auth_burst: u32,
    /// How often the gateway checks each replica's readiness (it leaves out those that fail
    /// and takes them back when they pass).
    #[arg(long, env = "GATEWAY_HEALTH_INTERVAL", default_value_t = Interval(DEFAULT_HEALTH_INTERVAL))]
    pub gateway_health_interval: Interval,
    /// Proxies in front of the gateway whose X-Forwarded-For it believes (e.g. the web
    /// portal's address), comma-separated; every other client's header is replaced.
    #[arg(long, env = "GATEWAY_TRUSTED_PROXIES", value_delimiter = ',')]
    pub gateway_trusted_proxies: Vec<IpAddr>,
    /// How long a client may take to send a request's line and headers, and how long an idle
    /// connection is kept; then the gateway closes the connection.
    #[arg(long, env = "GATEWAY_HEADER_TIMEOUT", default_value_t = Interval(Limits::DEFAULT_HEADER_TIMEOUT))]
    pub gateway_header_timeout: Interval,
    /// How long the gateway may take to answer a request (503 after); an upstream is given 5 s
    /// less, and answered 504 past that.
    #[arg(long, env = "GATEWAY_REQUEST_TIMEOUT", default_value_t = Interval(Limits::DEFAULT_REQUEST_TIMEOUT))]
    pub gateway_request_timeout: Interval,
    /// How long a request body may stop arriving before the request is answered 408.
    #[arg(long, env = "GATEWAY_BODY_TIMEOUT", default_value_t = Interval(Limits::DEFAULT_BODY_TIMEOUT))]
    pub gateway_body_timeout: Interval,
    /// Requests the gateway handles at once; more are answered 503 at once.
    #[arg(long, env = "GATEWAY_MAX_CONCURRENT_REQUESTS", default_value_t = Limits::DEFAULT_MAX_CONCURRENT_REQUESTS, value_parser = platform::settings::positive)]
    pub gateway_max_concurrent_requests: usize,
    /// Connections one client address (an IPv6 client: its /64) may hold open at the gateway;
    /// more are closed at once. Trusted proxies are not capped.
    #[arg(long, env = "GATEWAY_CONNECTIONS_PER_ADDRESS", default_value_t = Limits::DEFAULT_CONNECTIONS_PER_ADDRESS, value_parser = platform::settings::positive)]
    pub gateway_connections_per_address: usize,
}

/// Where the services are when the settings do not say: the standard addresses, or those of
/// the services `portal up` runs beside the gateway.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub auth: String,
    pub users: String,
    pub appointments: String,
    pub sync_admin: String,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self {
            auth: platform::settings::DEFAULT_AUTH_SERVICE_URL.to_owned(),
            users: "http://127.0.0.1:3002".to_owned(),
            appointments: "http://127.0.0.1:3003".to_owned(),
            sync_admin: "http://127.0.0.1:3004".to_owned(),
        }
    }
}

impl GatewayArgs {
    /// The upstream URLs the settings give (AUTH_SERVICE_URL, USER_SERVICE_URL,
    /// APPOINTMENT_SERVICE_URL, SYNC_ADMIN_URL; `none` is no upstream), for the plaintext rule
    /// (`https://` or this machine). An unset one is this machine's standard address, or under
    /// `portal up` the part running in the same process: nothing crosses the network.
    pub fn links(&self, auth: &AuthLocationArgs) -> Vec<Link> {
        [
            ("AUTH_SERVICE_URL", &auth.auth_service_url),
            ("USER_SERVICE_URL", &self.user_service_url),
            ("APPOINTMENT_SERVICE_URL", &self.appointment_service_url),
            ("SYNC_ADMIN_URL", &self.sync_admin_url),
        ]
        .into_iter()
        .filter_map(|(setting, url)| match url.as_deref() {
            None | Some("none") => None,
            Some(url) => Some(Link::http(setting, url)),
        })
        .collect()
    }

    /// The gateway's configuration: each upstream as its setting says, else `fallback`'s.
    pub fn into_config(&self, auth: &AuthLocationArgs, fallback: &Upstreams) -> Config {
        // `none`: a system without that service (the benchmark's) routes nothing there and
        // does not wait for it to be ready.
        let optional = |set: &Option<String>, fallback: &str| match set.as_deref() {
            Some("none") => None,
            Some(url) => Some(url.to_owned()),
            None => Some(fallback.to_owned()),
        };
        let limits = Limits {
            header_timeout: self.gateway_header_timeout.0,
            request_timeout: self.gateway_request_timeout.0,
            body_timeout: self.gateway_body_timeout.0,
            max_concurrent_requests: self.gateway_max_concurrent_requests,
            connections_per_address: self.gateway_connections_per_address,
            exempt: Vec::new(),
        };
        Config {
            http_addr: self.gateway_addr,
            auth_url: auth.auth_service_url_or(&fallback.auth),
            users_url: self
                .user_service_url
                .clone()
                .unwrap_or_else(|| fallback.users.clone()),
            appointments_url: optional(&self.appointment_service_url, &fallback.appointments),
            sync_admin_url: optional(&self.sync_admin_url, &fallback.sync_admin),
            upstream_timeout: limits.upstream_timeout(),
            health_interval: self.gateway_health_interval.0,
            auth_rate_limit: AuthRateLimit {
                per_minute: self.gateway_auth_rate,
                burst: self.gateway_auth_burst,
            },
            trusted_proxies: self.gateway_trusted_proxies.clone(),
            limits,
            // METRICS_TOKEN is checked and set by the command ([`platform::settings::MetricsArgs`]).
            metrics_token: None,
        }
    }
}
