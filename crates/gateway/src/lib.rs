//! The gateway: the portal's single HTTP entry point. `/api/v1/auth/*` goes to the
//! auth-service, `/api/v1/users*` to the user-service; status, headers and bodies pass through
//! (streamed), hop-by-hop headers excepted. An unreachable upstream answers 502 with JSON, a
//! slow one 504.

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures::TryStreamExt;
use platform::http::ApiError;
use platform::service::Service;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    /// Base URL of the auth-service, e.g. `http://127.0.0.1:3001`.
    pub auth_url: String,
    /// Base URL of the user-service, e.g. `http://127.0.0.1:3002`.
    pub users_url: String,
    /// How long an upstream may take to answer before the client gets 504.
    pub upstream_timeout: Duration,
}

impl Config {
    /// A gateway on a free port in front of the given services (tests and tools).
    pub fn local(auth_url: &str, users_url: &str) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth_url: auth_url.to_owned(),
            users_url: users_url.to_owned(),
            upstream_timeout: Duration::from_secs(10),
        }
    }
}

/// One routed upstream.
struct Upstream {
    name: &'static str,
    base: String,
}

#[derive(Clone)]
struct AppState {
    client: reqwest::Client,
    auth: Arc<Upstream>,
    users: Arc<Upstream>,
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

fn forwardable(headers: &HeaderMap) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()) && *name != header::HOST)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn proxy(state: &AppState, upstream: &Upstream, req: Request) -> Response {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let url = format!("{}{}", upstream.base.trim_end_matches('/'), path);
    let method = req.method().clone();
    let mut headers = forwardable(req.headers());
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    let body = reqwest::Body::wrap_stream(req.into_body().into_data_stream());
    let sent = state
        .client
        .request(method, &url)
        .headers(headers)
        .body(body)
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
            out
        }
        Err(e) if e.is_timeout() => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            format!("{} did not answer in time", upstream.name),
        )
        .into_response(),
        Err(e) => {
            tracing::warn!(upstream = upstream.name, error = %e, "upstream unreachable");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                format!("{} is unreachable at {}", upstream.name, upstream.base),
            )
            .into_response()
        }
    }
}

async fn to_auth(State(state): State<AppState>, req: Request) -> Response {
    proxy(&state, &state.auth, req).await
}

async fn to_users(State(state): State<AppState>, req: Request) -> Response {
    proxy(&state, &state.users, req).await
}

/// Ready when both upstreams answer their liveness check.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let mut down = Vec::new();
    for upstream in [&state.auth, &state.users] {
        let url = format!("{}/health/live", upstream.base.trim_end_matches('/'));
        let ok = state
            .client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ok {
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
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(config.upstream_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let state = AppState {
            client,
            auth: Arc::new(Upstream {
                name: "auth-service",
                base: config.auth_url,
            }),
            users: Arc::new(Upstream {
                name: "user-service",
                base: config.users_url,
            }),
        };
        let router = Router::new()
            .route("/api/v1/auth/{*rest}", any(to_auth))
            .route("/api/v1/users", any(to_users))
            .route("/api/v1/users/{*rest}", any(to_users))
            .route("/health/live", get(platform::http::live))
            .route("/health/ready", get(ready))
            .fallback(platform::http::fallback_not_found)
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_addr))?;
        Ok(Self { listener, router })
    }
}

impl Service for Application {
    const NAME: &'static str = "gateway";

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!("gateway listening on http://{}", self.local_addr()?);
        platform::http::serve(self.listener, self.router, shutdown)
            .await
            .context("gateway HTTP server failed")
    }
}
