//! Who is asking: the client's address as a request extractor, taken from the peer or, behind
//! a proxy of ours on this machine, from `X-Forwarded-For`. Security log lines (`hardening`,
//! the auth-service's login log) and per-client limits (the gateway) use it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

/// The client's address: the peer, or, when the peer is a proxy on this machine (the gateway,
/// which overwrites the header), the address in `X-Forwarded-For`. Logged with security events
/// and used for per-client limits.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl ClientAddr {
    pub fn of(parts: &Parts) -> Self {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        match peer {
            Some(ip) if ip.is_loopback() => Self(forwarded_for(&parts.headers).or(Some(ip))),
            other => Self(other),
        }
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
