//! The web portal's settings as a `clap` group (`portal web` and `portal up` flatten it), and
//! how they become its [`Config`].

use crate::Config;
use clap::Args;
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
    /// Mark the web portal's session cookie Secure (set when it is served over https, e.g.
    /// behind a TLS-terminating proxy).
    #[arg(long, env = "WEB_SECURE_COOKIES")]
    pub web_secure_cookies: bool,
    /// The clinic's offset from UTC, e.g. +02:00: the web portal takes and shows times in it.
    #[arg(long, env = "PORTAL_UTC_OFFSET", default_value = "+00:00", value_parser = parse_offset)]
    pub utc_offset: chrono::FixedOffset,
}

impl WebArgs {
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
