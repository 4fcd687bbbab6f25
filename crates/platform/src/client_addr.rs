//! Who is asking: the client's address as a request extractor, taken from the peer or, behind
//! a trusted proxy, from `X-Forwarded-For`. Security log lines (`hardening`,
//! the auth-service's login log) and per-client limits (the gateway) use it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The client's address: the peer, or, when the peer is a trusted proxy, the address in
/// `X-Forwarded-For`. Trusted are the addresses of a [`TrustedProxies`] extension on the
/// router (WEB_TRUSTED_PROXIES, AUTH_TRUSTED_PROXIES), else any proxy on this machine (the
/// gateway, which overwrites the header). Logged with security events and used for per-client
/// limits.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl ClientAddr {
    pub fn of(parts: &Parts) -> Self {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let trusted = |ip: std::net::IpAddr| match parts.extensions.get::<TrustedProxies>() {
            Some(list) => list.0.contains(&ip),
            None => ip.is_loopback(),
        };
        match peer {
            Some(ip) if trusted(ip) => Self(forwarded_for(&parts.headers).or(Some(ip))),
            other => Self(other),
        }
    }
}

/// The proxies in front of a service whose `X-Forwarded-For` it believes, instead of "any
/// address on this machine". Set on a router with [`TrustedProxies::layer`]; an empty list
/// keeps the default.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub std::sync::Arc<Vec<std::net::IpAddr>>);

impl TrustedProxies {
    /// `router` believing `X-Forwarded-For` from `proxies` only (from this machine's proxies
    /// when the list is empty).
    pub fn layer(router: axum::Router, proxies: &[std::net::IpAddr]) -> axum::Router {
        if proxies.is_empty() {
            return router;
        }
        router.layer(axum::Extension(Self(std::sync::Arc::new(proxies.to_vec()))))
    }
}

/// The address the nearest proxy put last in `X-Forwarded-For` (the only entry a proxy of ours
/// wrote; earlier ones are the client's own claims).
pub fn forwarded_for(headers: &axum::http::HeaderMap) -> Option<std::net::IpAddr> {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next_back())
        .and_then(|v| v.trim().parse().ok())
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("unknown"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

/// The key per-client limits count `ip` under: an IPv4 address as it is (an IPv4-mapped IPv6
/// address as its IPv4 address), an IPv6 address by its /64 — the smallest block one
/// subscriber is given, whose host can pick a fresh address from it for every request.
pub fn limit_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(v4) => std::net::IpAddr::V4(v4),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !u128::from(u64::MAX),
            )),
        },
    }
}
