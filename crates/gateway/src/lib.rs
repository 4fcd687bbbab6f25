//! The gateway: the portal's single HTTP entry point. `/api/v1/auth/*` and `/scim/v2*` (SCIM
//! provisioning) go to the auth-service, `/api/v1/users*` to the user-service, `/api/v1/appointments*` to the
//! appointment-service, `/api/v1/admin/sync*` to the sync admin API; status, headers and bodies pass through
//! (answers streamed), hop-by-hop headers excepted. Each service may have several replicas,
//! spread and checked as [`upstream`] says. An unreachable upstream answers 502 with JSON, a
//! slow one 504, neither naming the upstream's address.
//!
//! It is also the first line of defence: paths with `..`, encoded dots or slashes, or empty
//! segments are refused (400); `X-Forwarded-For` is set to the client's address (kept from a
//! trusted proxy only, e.g. the web portal); every request gets an `X-Request-Id` and a W3C
//! `traceparent` (valid incoming ones are kept); and login, register, refresh and change-password are limited per
//! client address (429 with `Retry-After`; an IPv6 client by its /64). Connections and requests
//! are bounded as [`Config::limits`] says (header, request and body timeouts, requests at once,
//! connections per address; the web portal, a trusted proxy, is not capped per address).
//!
//! Its settings, and how they become a [`Config`], are [`settings`].

use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures::TryStreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use platform::http::ApiError;
use platform::service::Service;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use upstream::Upstream;

pub mod settings;
mod upstream;

/// The largest request body the gateway takes. Bodies are held until an upstream has them, so
/// that a request no replica received can go to another; the services' own limit is the same.
const MAX_BODY: usize = 2 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    /// Base URL of the auth-service, e.g. `http://127.0.0.1:3001`; several replicas as a
    /// comma-separated list (as for every upstream below).
    pub auth_url: String,
    /// Base URL of the user-service, e.g. `http://127.0.0.1:3002`.
    pub users_url: String,
    /// Base URL of the appointment-service, e.g. `http://127.0.0.1:3003`; without it
    /// `/api/v1/appointments` is not routed.
    pub appointments_url: Option<String>,
    /// Base URL of the sync admin API, e.g. `http://127.0.0.1:3004`; without it
    /// `/api/v1/admin/sync` is not routed.
    pub sync_admin_url: Option<String>,
    /// How long an upstream may take to answer before the client gets 504; the gateway
    /// shortens it to end within the request timeout ([`platform::http::Limits::upstream_timeout`]).
    pub upstream_timeout: Duration,
    /// How often each replica's readiness is checked.
    pub health_interval: Duration,
    pub auth_rate_limit: AuthRateLimit,
    /// Proxies in front of the gateway (the web portal) whose `X-Forwarded-For` is believed;
    /// anyone else's is replaced by their own address.
    pub trusted_proxies: Vec<IpAddr>,
    /// Timeouts and caps on clients' connections and requests.
    pub limits: platform::http::Limits,
    /// The bearer token that opens `/metrics` to a scraper on another machine (METRICS_TOKEN);
    /// without it only this machine reads them ([`platform::metrics`]).
    pub metrics_token: Option<platform::metrics::MetricsToken>,
}

impl Config {
    /// A gateway on a free port in front of the given services (tests and tools).
    pub fn local(auth_url: &str, users_url: &str) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth_url: auth_url.to_owned(),
            users_url: users_url.to_owned(),
            appointments_url: None,
            sync_admin_url: None,
            upstream_timeout: Duration::from_secs(10),
            health_interval: Duration::from_secs(2),
            auth_rate_limit: AuthRateLimit::default(),
            trusted_proxies: Vec::new(),
            limits: platform::http::Limits::default(),
            metrics_token: None,
        }
    }
}

/// How often one client address may call the login, register, refresh and change-password
/// routes, together.
#[derive(Debug, Clone, Copy)]
pub struct AuthRateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

impl AuthRateLimit {
    /// Requests per minute per address unless GATEWAY_AUTH_RATE says otherwise.
    pub const DEFAULT_PER_MINUTE: u32 = 30;
    /// Requests at once per address unless GATEWAY_AUTH_BURST says otherwise.
    pub const DEFAULT_BURST: u32 = 10;
}

impl Default for AuthRateLimit {
    fn default() -> Self {
        Self {
            per_minute: Self::DEFAULT_PER_MINUTE,
            burst: Self::DEFAULT_BURST,
        }
    }
}

#[derive(Clone)]
struct AppState {
    client: reqwest::Client,
    auth: Arc<Upstream>,
    users: Arc<Upstream>,
    appointments: Option<Arc<Upstream>>,
    sync_admin: Option<Arc<Upstream>>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// One `rate_limited` log line per address per minute: a flood would otherwise write one
    /// per refused request.
    log_limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    trusted_proxies: Arc<Vec<IpAddr>>,
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1); never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The headers to pass on: not hop-by-hop ones, not `Host`, and not those the `Connection`
/// header names (RFC 9110 §7.6.1: they describe this hop only).
fn forwardable(headers: &HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            !HOP_BY_HOP.contains(&name.as_str())
                && *name != header::HOST
                && !named.iter().any(|n| n == name.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Why a path is refused: `..` or `.` segments, dots or slashes percent-encoded, backslashes or
/// empty segments (`//`) could reach another route than the one the gateway matched.
fn unsafe_path(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c") {
        return Some("encoded dots and slashes are not allowed in paths");
    }
    if path.contains('\\') {
        return Some("backslashes are not allowed in paths");
    }
    if path.contains("//") {
        return Some("empty path segments are not allowed");
    }
    if path.split('/').any(|seg| seg == ".." || seg == ".") {
        return Some("dot segments are not allowed in paths");
    }
    None
}

const REQUEST_ID: &str = "x-request-id";

/// A client's request id kept when it is short and plain, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            (1..=64).contains(&b.len())
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}

/// Gives every request a request id and a W3C `traceparent` (keeping valid incoming ones)
/// before anything else sees it, so its access line, the upstream's, the outbox row it may
/// write and the events that follow share them.
async fn identify(mut req: Request, next: axum::middleware::Next) -> Response {
    let id = request_id(req.headers());
    req.headers_mut().insert(REQUEST_ID, id);
    let valid = req
        .headers()
        .get(platform::trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| platform::trace::trace_id_of(t).is_some());
    if !valid {
        if let Ok(fresh) = HeaderValue::from_str(&platform::trace::new_traceparent()) {
            req.headers_mut()
                .insert(platform::trace::TRACEPARENT, fresh);
        }
    }
    next.run(req).await
}

/// The client's address: the peer's, or the address a trusted proxy forwarded.
fn client_address(state: &AppState, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer?;
    if state.trusted_proxies.contains(&peer) {
        return Some(platform::client_addr::forwarded_for(headers).unwrap_or(peer));
    }
    Some(peer)
}

/// True for the routes an attacker would hammer: guessing passwords, creating accounts,
/// replaying refresh tokens.
fn rate_limited(method: &Method, path: &str) -> bool {
    *method == Method::POST
        && matches!(
            path.trim_end_matches('/'),
            "/api/v1/auth/login"
                | "/api/v1/auth/register"
                | "/api/v1/auth/refresh"
                | "/api/v1/auth/change-password"
        )
}

/// The checks every proxied request passes first; the answer when it does not.
fn screen(state: &AppState, client: Option<IpAddr>, req: &Request) -> Option<Response> {
    if let Some(why) = unsafe_path(req.uri().path()) {
        return Some(ApiError::bad_request(why).into_response());
    }
    if rate_limited(req.method(), req.uri().path()) {
        // An IPv6 client by its /64: it could take a fresh address for every attempt.
        if let Some(ip) = client.map(platform::client_addr::limit_key) {
            if let Err(not_until) = state.limiter.check_key(&ip) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                if state.log_limiter.check_key(&ip).is_ok() {
                    tracing::warn!(target: "security", event = "rate_limited", client = %ip, path = req.uri().path(), "too many authentication requests from one address (logged once a minute per address)");
                } else {
                    tracing::debug!(target: "security", event = "rate_limited", client = %ip, path = req.uri().path(), "too many authentication requests from one address");
                }
                return Some(
                    ApiError::too_many_requests(
                        "too many authentication requests from this address; try again later",
                        wait,
                    )
                    .into_response(),
                );
            }
        }
    }
    None
}

async fn proxy(
    state: &AppState,
    upstream: &Upstream,
    peer: Option<IpAddr>,
    req: Request,
) -> Response {
    let client = client_address(state, peer, req.headers());
    let id = request_id(req.headers());
    if let Some(mut refused) = screen(state, client, &req) {
        refused.headers_mut().insert(REQUEST_ID, id);
        return refused;
    }
    let mut out = forward(state, upstream, client, id.clone(), req).await;
    out.headers_mut().insert(REQUEST_ID, id);
    out
}

async fn forward(
    state: &AppState,
    upstream: &Upstream,
    client: Option<IpAddr>,
    id: HeaderValue,
    req: Request,
) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let method = req.method().clone();
    let host = req.headers().get(header::HOST).cloned();
    let mut headers = forwardable(req.headers());
    // The host the client asked for, so an upstream can say where its resources are (SCIM's
    // `meta.location`); replaced, never appended.
    headers.remove("x-forwarded-host");
    if let Some(host) = host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    // Replaced, never appended: a client cannot choose the address the services log.
    headers.remove("x-forwarded-for");
    if let Some(ip) = client.and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok()) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), ip);
    }
    headers.insert(HeaderName::from_static(REQUEST_ID), id);
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(body) => body,
        // The client stopped sending in the middle: nothing is sent upstream.
        Err(e) if platform::http::body_timed_out(&e) => {
            return platform::http::body_timeout_error().into_response()
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the request body could not be read or is larger than {} MiB",
                    MAX_BODY / 1024 / 1024
                ),
            )
            .into_response()
        }
    };
    // Safe methods change nothing, so a failure after sending is retried too.
    let safe = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    for member in upstream.order() {
        let sent = state
            .client
            .request(method.clone(), format!("{}{path}", member.base))
            .headers(headers.clone())
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(resp) => {
                let status = resp.status();
                let headers = forwardable(resp.headers());
                let stream = resp.bytes_stream().map_err(std::io::Error::other);
                let mut out = Response::new(Body::from_stream(stream));
                *out.status_mut() = status;
                *out.headers_mut() = headers;
                return out;
            }
            Err(e) if e.is_connect() => {
                // Nothing reached it (refused, or no connection within the connect timeout):
                // another replica may take the request, whatever it is.
                upstream.mark(member, false, "could not connect");
                tracing::debug!(upstream = upstream.name, replica = %member.base, error = %e, "replica unreachable; trying the next");
            }
            Err(e) if e.is_timeout() => {
                return ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "gateway_timeout",
                    format!("{} did not answer in time", upstream.name),
                )
                .into_response()
            }
            Err(e) if safe => {
                tracing::warn!(upstream = upstream.name, replica = %member.base, error = %e, "replica failed a safe request; trying the next");
            }
            Err(e) => {
                // It may have reached the replica: sending it again could apply it twice.
                tracing::warn!(upstream = upstream.name, replica = %member.base, error = %e, "replica failed during a request that changes data; not retried");
                return unreachable(upstream);
            }
        }
    }
    tracing::warn!(upstream = upstream.name, "upstream unreachable");
    unreachable(upstream)
}

fn unreachable(upstream: &Upstream) -> Response {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "bad_gateway",
        format!("{} is unreachable; try again shortly", upstream.name),
    )
    .into_response()
}

fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

async fn to_auth(State(state): State<AppState>, req: Request) -> Response {
    proxy(&state, &state.auth, peer(&req), req).await
}

async fn to_users(State(state): State<AppState>, req: Request) -> Response {
    proxy(&state, &state.users, peer(&req), req).await
}

/// `GET /api-docs/openapi.json`: the API's OpenAPI 3.1 document (`contracts/openapi.json`,
/// which a test keeps equal to what the code generates).
async fn openapi() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        include_str!("../../../contracts/openapi.json"),
    )
        .into_response()
}

/// Ready when the upstreams staff depend on answer their liveness check. The sync admin API
/// is not among them: an operator's page being down must not take the gateway out of a load
/// balancer.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut down = Vec::new();
    let upstreams = [
        Some(&state.auth),
        Some(&state.users),
        state.appointments.as_ref(),
    ];
    for upstream in upstreams.into_iter().flatten() {
        // Ready while any replica of each answers.
        let mut any = false;
        for member in upstream.members() {
            any = state
                .client
                .get(format!("{}/health/live", member.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if any {
                break;
            }
        }
        if !any {
            down.push(upstream.name);
        }
    }
    let status = if down.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(
            json!({ "status": if down.is_empty() { "ready" } else { "unavailable" }, "unavailable": down }),
        ),
    )
}

pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    limits: platform::http::Limits,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let within = config.limits.upstream_timeout();
        if config.upstream_timeout > within {
            tracing::info!(
                upstream_timeout = ?within,
                request_timeout = ?config.limits.request_timeout,
                "the upstream timeout is shortened to end before the request timeout"
            );
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(config.upstream_timeout.min(within))
            // The services close a connection idle for their header timeout; the pool lets go
            // of it first, so no request is sent on a connection being closed.
            .pool_idle_timeout(platform::http::CLIENT_IDLE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let metrics = platform::metrics::Metrics::new(Self::NAME)?;
        let healthy = metrics.int_gauge_vec(
            "portal_gateway_upstream_healthy",
            "1 while the gateway sends requests to a replica, 0 while it leaves it out; \
             replicas by their place in the service's list (0 first), never by address.",
            &["upstream", "replica"],
        )?;
        let limit = config.auth_rate_limit;
        let quota = Quota::per_minute(NonZeroU32::new(limit.per_minute).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN));
        let limiter = Arc::new(RateLimiter::keyed(quota));
        let log_limiter = Arc::new(RateLimiter::keyed(Quota::per_minute(NonZeroU32::MIN)));
        // Forget addresses whose allowance is full again, so memory follows live clients only.
        let pruned = [Arc::downgrade(&limiter), Arc::downgrade(&log_limiter)];
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(60));
            loop {
                ticks.tick().await;
                for limiter in &pruned {
                    match limiter.upgrade() {
                        Some(limiter) => limiter.retain_recent(),
                        None => return,
                    }
                }
            }
        });
        let state = AppState {
            limiter,
            log_limiter,
            trusted_proxies: Arc::new(config.trusted_proxies.clone()),
            client,
            auth: Arc::new(Upstream::new(
                "auth-service",
                &config.auth_url,
                Some(healthy.clone()),
            )),
            users: Arc::new(Upstream::new(
                "user-service",
                &config.users_url,
                Some(healthy.clone()),
            )),
            appointments: config.appointments_url.map(|list| {
                Arc::new(Upstream::new(
                    "appointment-service",
                    &list,
                    Some(healthy.clone()),
                ))
            }),
            sync_admin: config
                .sync_admin_url
                .map(|list| Arc::new(Upstream::new("sync-admin", &list, Some(healthy.clone())))),
        };
        let watched: Vec<Arc<Upstream>> = [Some(&state.auth), Some(&state.users)]
            .into_iter()
            .chain([state.appointments.as_ref(), state.sync_admin.as_ref()])
            .flatten()
            .cloned()
            .collect();
        upstream::watch(state.client.clone(), &watched, config.health_interval);
        let mut router = Router::new();
        // Routed only when configured: without it, the fallback's 404 answers.
        let optional = [
            ("/api/v1/appointments", state.appointments.clone()),
            ("/api/v1/admin/sync", state.sync_admin.clone()),
        ];
        for (prefix, upstream) in optional {
            let Some(upstream) = upstream else { continue };
            let to_upstream = move |State(state): State<AppState>, req: Request| {
                let upstream = upstream.clone();
                async move { proxy(&state, &upstream, peer(&req), req).await }
            };
            router = router
                .route(prefix, any(to_upstream.clone()))
                .route(&format!("{prefix}/{{*rest}}"), any(to_upstream));
        }
        let router = router
            .route("/api/v1/auth/{*rest}", any(to_auth))
            // SCIM provisioning is the auth-service's (its own bearer tokens, its own errors).
            .route("/scim/v2", any(to_auth))
            .route("/scim/v2/{*rest}", any(to_auth))
            .route("/api/v1/users", any(to_users))
            .route("/api/v1/users/{*rest}", any(to_users))
            .route("/api-docs/openapi.json", get(openapi))
            .route("/health/live", get(platform::http::live))
            .route("/health/ready", get(ready))
            .fallback(platform::http::fallback_not_found)
            .with_state(state);
        // Outermost: the ids are set before the access line and the upstream see the request.
        let router = platform::metrics::instrument_with(router, &metrics, config.metrics_token)
            .layer(axum::middleware::from_fn(identify));
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_addr))?;
        // A trusted proxy carries many people's connections: capping it per address would cap
        // them all together (each person's own address is limited where it matters, at login).
        let mut limits = config.limits;
        limits.exempt.extend(config.trusted_proxies.iter().copied());
        Ok(Self {
            listener,
            router,
            limits,
        })
    }
}

impl Service for Application {
    const NAME: &'static str = "gateway";

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!("gateway listening on http://{}", self.local_addr()?);
        platform::http::serve_with(self.listener, self.router, &self.limits, shutdown)
            .await
            .context("gateway HTTP server failed")
    }
}
