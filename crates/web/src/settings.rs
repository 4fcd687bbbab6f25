//! The web portal's settings as a `clap` group (`portal web` and `portal up` flatten it), and
//! how they become its [`Config`].

use crate::Config;
use clap::Args;
use platform::duration::Interval;
use platform::http::Limits;
use platform::settings::Link;
use std::net::{IpAddr, SocketAddr};

/// The gateway where `portal up` and a one-machine install run it.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:3000";

/// The web portal's own settings.
#[derive(Args, Debug, Clone)]
pub struct WebArgs {
    /// The port the web portal listens on (on WEB_HOST).
    #[arg(long, env = "WEB_PORT", default_value_t = 3100)]
    pub web_port: u16,
    /// The address the web portal listens on.
    #[arg(long, env = "WEB_HOST", default_value = "127.0.0.1")]
    pub web_host: IpAddr,
    /// The gateway as the web portal reaches it [default: http://127.0.0.1:3000; under
    /// `portal up`, the gateway it runs].
    #[arg(long, env = "GATEWAY_URL")]
    pub gateway_url: Option<String>,
    /// The web portal is served over https (behind a TLS-terminating proxy): its session cookie
    /// is then Secure and named __Host-portal_session, and every answer carries
    /// Strict-Transport-Security. Off while it listens beyond loopback, a warning is logged at
    /// start.
    #[arg(long, env = "WEB_SECURE_COOKIES")]
    pub web_secure_cookies: bool,
    /// Proxies in front of the web portal (a load balancer's addresses, comma-separated) whose
    /// `X-Forwarded-For` names the client: login limits and the security log then see each
    /// person, not the proxy [default: any address on this machine].
    #[arg(long, env = "WEB_TRUSTED_PROXIES", value_delimiter = ',')]
    pub web_trusted_proxies: Vec<IpAddr>,
    /// The clinic's offset from UTC, e.g. +02:00: the web portal takes and shows times in it.
    #[arg(long, env = "PORTAL_UTC_OFFSET", default_value = "+00:00", value_parser = parse_offset)]
    pub utc_offset: chrono::FixedOffset,
    /// How long a browser may take to send a request's line and headers, and how long an idle
    /// connection is kept; then the web portal closes the connection.
    #[arg(long, env = "WEB_HEADER_TIMEOUT", default_value_t = Interval(Limits::DEFAULT_HEADER_TIMEOUT))]
    pub web_header_timeout: Interval,
    /// How long the web portal may take to answer a request (503 after); a call to the gateway
    /// is given 5 s less.
    #[arg(long, env = "WEB_REQUEST_TIMEOUT", default_value_t = Interval(Limits::DEFAULT_REQUEST_TIMEOUT))]
    pub web_request_timeout: Interval,
    /// How long a form's body may stop arriving before the request is refused.
    #[arg(long, env = "WEB_BODY_TIMEOUT", default_value_t = Interval(Limits::DEFAULT_BODY_TIMEOUT))]
    pub web_body_timeout: Interval,
    /// Requests the web portal handles at once; more are answered 503 at once.
    #[arg(long, env = "WEB_MAX_CONCURRENT_REQUESTS", default_value_t = Limits::DEFAULT_MAX_CONCURRENT_REQUESTS, value_parser = platform::settings::positive)]
    pub web_max_concurrent_requests: usize,
    /// Connections one client address (an IPv6 client: its /64) may hold open at the web
    /// portal; more are closed at once. Its trusted proxies (without WEB_TRUSTED_PROXIES:
    /// 127.0.0.1 and ::1) are not capped.
    #[arg(long, env = "WEB_CONNECTIONS_PER_ADDRESS", default_value_t = Limits::DEFAULT_CONNECTIONS_PER_ADDRESS, value_parser = platform::settings::positive)]
    pub web_connections_per_address: usize,
}

impl WebArgs {
    /// GATEWAY_URL when set, for the plaintext rule (`https://` or this machine): unset, the
    /// gateway is on this machine (or, under `portal up`, in the same process).
    pub fn links(&self) -> Vec<Link> {
        self.gateway_url
            .iter()
            .map(|url| Link::http("GATEWAY_URL", url.as_str()))
            .collect()
    }

    /// The portal's configuration: GATEWAY_URL, else `gateway_url`.
    pub fn into_config(&self, gateway_url: &str) -> Config {
        Config {
            http_addr: SocketAddr::new(self.web_host, self.web_port),
            gateway_url: self
                .gateway_url
                .clone()
                .unwrap_or_else(|| gateway_url.to_owned()),
            secure_cookies: self.web_secure_cookies,
            utc_offset: self.utc_offset,
            limits: Limits {
                header_timeout: self.web_header_timeout.0,
                request_timeout: self.web_request_timeout.0,
                body_timeout: self.web_body_timeout.0,
                max_concurrent_requests: self.web_max_concurrent_requests,
                connections_per_address: self.web_connections_per_address,
                exempt: Vec::new(),
            },
            trusted_proxies: self.web_trusted_proxies.clone(),
            // METRICS_TOKEN is checked and set by the command ([`platform::settings::MetricsArgs`]).
            metrics_token: None,
        }
    }
}

/// `+02:00`, `-05:30`, `Z` or `+00:00`.
fn parse_offset(s: &str) -> Result<chrono::FixedOffset, String> {
    if s == "Z" {
        return Ok(chrono::FixedOffset::east_opt(0).ok_or("no UTC")?);
    }
    s.parse::<chrono::FixedOffset>()
        .map_err(|_| format!("{s:?} is not an offset from UTC such as +02:00"))
}
