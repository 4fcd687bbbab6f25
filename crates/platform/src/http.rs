//! HTTP building blocks shared by the services: one error type that always answers JSON
//! `{"error", "message"}`, a JSON body extractor whose rejections are JSON too, the bearer-token
//! extractor, the caller who is still active in the service's own copy of the users
//! ([`ActiveCaller`]), and serving until shutdown within [`Limits`].

use crate::jwt::{Claims, JwtVerifier};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use contract::api::ErrorBody;
use contract::{Role, UserId, ValidationError};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// An error answer. Constructors name the HTTP meaning; `internal` logs the cause and hides it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// 429 with `Retry-After` (whole seconds, at least 1).
    pub fn too_many_requests(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
            .retry_after(retry_after)
    }

    /// Adds `Retry-After` (whole seconds, rounded up, at least 1).
    pub fn retry_after(mut self, after: std::time::Duration) -> Self {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// An unexpected failure: logged with its cause, answered without it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the cause is in the service log",
        )
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            message: e.to_string(),
            field: Some(e.field),
            retry_after: None,
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            Self::unavailable("database unavailable, try again shortly")
        } else {
            Self::internal(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
            field: self.field.map(str::to_owned),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s: bad syntax 400, wrong shape 422 (serde's message
/// names the field), missing content type 415.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                e.body_text(),
            )),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            )),
            Err(e) if body_timed_out(&e) => Err(body_timeout_error()),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            )),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// The verified claims of the caller's bearer token; 401 when absent or invalid, 403
/// `password_change_required` when the account must change its password first (the token says
/// so; only [`PendingPasswordChange`]'s routes accept such a token).
pub struct Authenticated(pub Claims);

/// Like [`Authenticated`], but also accepting the token of an account that must change its
/// password: for reading the account and changing the password, nothing else.
pub struct PendingPasswordChange(pub Claims);

/// The bearer token of a request, verified.
async fn verified_claims<S>(parts: &Parts, state: &S) -> Result<Claims, ApiError>
where
    Arc<JwtVerifier>: FromRef<S>,
{
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <token>"))?;
    let verifier = Arc::<JwtVerifier>::from_ref(state);
    verifier
        .verify(token.trim())
        .await
        .map_err(|_| ApiError::unauthorized("invalid or expired token"))
}

impl<S> FromRequestParts<S> for PendingPasswordChange
where
    Arc<JwtVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        verified_claims(parts, state).await.map(Self)
    }
}

impl Authenticated {
    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.role == Role::Admin {
            Ok(())
        } else {
            Err(ApiError::forbidden("this action needs the admin role"))
        }
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<JwtVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let claims = verified_claims(parts, state).await?;
        if claims.mcp {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "password_change_required",
                "this account must change its password first: POST /api/v1/auth/change-password",
            ));
        }
        Ok(Self(claims))
    }
}

/// Where a service checks that the caller of a request is still active: its own copy of the
/// users (a consumer's copy, or `auth_db` itself). Implemented by the service's state; see
/// [`ActiveCaller`].
pub trait CallerCopy: Send + Sync {
    /// One statement with the user's id as `$1` answering `(is_active bool, role text)` from
    /// the copy, e.g. `SELECT is_active, role FROM users WHERE id = $1`.
    const LOOKUP: &'static str;
    /// How a user the copy does not hold is answered.
    const UNKNOWN: UnknownCaller = UnknownCaller::TakenAtTheirToken;
    /// The 503 message when the copy's database cannot be reached; `None`: the answer every
    /// database error gets ([`ApiError`]'s `From<sqlx::Error>`).
    const UNREACHABLE: Option<&'static str> = None;

    /// The database that holds the copy.
    fn copy_db(&self) -> &sqlx::PgPool;
}

/// How [`ActiveCaller`] answers a user the copy does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownCaller {
    /// A consumer's copy: a user created a moment ago may not be copied yet, and the
    /// auth-service checked the account when it issued the token.
    TakenAtTheirToken,
    /// The source of truth: a user it does not hold does not exist (401, as deactivated).
    Deactivated,
}

/// The caller of a request: a valid token whose user is not inactive in the service's copy
/// ([`CallerCopy`]), with the role that copy knows. A deactivated user's unexpired token stops
/// working as soon as the deactivation reaches the copy, not when the token expires: 401 `this
/// account is deactivated`.
#[derive(Debug, Clone)]
pub struct ActiveCaller {
    pub id: UserId,
    /// The copy's role (the token's while the copy does not hold the user).
    pub role: Role,
}

impl ActiveCaller {
    /// `claims` (already verified) checked against `copy`.
    pub async fn check<C: CallerCopy>(claims: Claims, copy: &C) -> Result<Self, ApiError> {
        let held: Option<(bool, String)> = sqlx::query_as(C::LOOKUP)
            .bind(claims.sub)
            .fetch_optional(copy.copy_db())
            .await
            .map_err(|e| match C::UNREACHABLE {
                Some(message) if crate::db::is_unavailable(&e) => ApiError::unavailable(message),
                _ => ApiError::from(e),
            })?;
        let deactivated = || ApiError::unauthorized("this account is deactivated");
        let role = match held {
            Some((false, _)) => return Err(deactivated()),
            // A role the copy spells in a way this build does not know: the token's.
            Some((true, role)) => role.parse().unwrap_or(claims.role),
            None if C::UNKNOWN == UnknownCaller::Deactivated => return Err(deactivated()),
            None => claims.role,
        };
        Ok(Self {
            id: UserId(claims.sub),
            role,
        })
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

impl<S> FromRequestParts<S> for ActiveCaller
where
    Arc<JwtVerifier>: FromRef<S>,
    S: CallerCopy,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        Self::check(claims, state).await
    }
}

/// Answers JSON 404 for unknown routes instead of an empty body.
pub async fn fallback_not_found() -> ApiError {
    ApiError::not_found("no such route")
}

/// `GET /health/live` (the process is up) and `GET /health/ready`, answered by `ready`.
pub fn health_routes<S, H, T>(ready: H) -> axum::Router<S>
where
    H: axum::handler::Handler<T, S>,
    T: 'static,
    S: Clone + Send + Sync + 'static,
{
    axum::Router::new()
        .route("/health/live", axum::routing::get(live))
        .route("/health/ready", axum::routing::get(ready))
}

/// `GET /health/live`: the process is up.
pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The answer of `GET /health/ready` for a service that owns the database `db` (named
/// `database`) and, when `broker_up` is `Some`, holds a broker connection: 200 when everything
/// answers, 503 naming what does not. `extra` adds one field (a consumer's counters).
pub async fn readiness(
    db: &sqlx::PgPool,
    database: &'static str,
    broker_up: Option<bool>,
    extra: Option<(&str, serde_json::Value)>,
) -> (StatusCode, Json<serde_json::Value>) {
    let db_ok = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(db),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let mut down = Vec::new();
    if !db_ok {
        down.push(database);
    }
    if broker_up == Some(false) {
        down.push("rabbitmq");
    }
    let status = if down.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "status": if down.is_empty() { "ready" } else { "unavailable" },
        "unavailable": down,
        "checks": { "database": db_ok, "broker": broker_up },
    });
    if let Some((key, value)) = extra {
        body[key] = value;
    }
    (status, Json(body))
}

/// How much of a service one client, and all of them together, may hold: how long each part
/// of a request may take and how many requests and connections may be open. The gateway and
/// the web portal, which face people, take these from their settings; the services behind them
/// use the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request's line and headers, and how long an idle
    /// keep-alive connection is kept waiting for the next request; then the connection closes.
    pub header_timeout: std::time::Duration,
    /// How long a request may take from its headers to the answer's headers (503 after).
    pub request_timeout: std::time::Duration,
    /// How long a request body may pause between two pieces (408 after).
    pub body_timeout: std::time::Duration,
    /// Requests handled at once; more are answered 503 at once rather than queued.
    pub max_concurrent_requests: usize,
    /// Connections open at once from one address (an IPv6 client: its /64); more are closed
    /// as soon as they are accepted.
    pub connections_per_address: usize,
    /// Addresses the per-address cap does not apply to: proxies of ours that carry many
    /// people's connections (the web portal in front of the gateway).
    pub exempt: Vec<std::net::IpAddr>,
}

impl Limits {
    /// Enough for a person on a slow mobile link; a connection that sent half a request line
    /// is closed after it.
    pub const DEFAULT_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    /// Longer than any answer of the system should take (the slowest, a bulk import of 1,000
    /// users, hashes nothing and takes a few seconds).
    pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
    pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
    pub const DEFAULT_CONNECTIONS_PER_ADDRESS: usize = 256;
    /// What a call to another service leaves of the request timeout: time for the client's
    /// body to arrive first and for the answer to go out.
    pub const UPSTREAM_MARGIN: std::time::Duration = std::time::Duration::from_secs(5);

    /// The longest a call to another service may take while a request waits: the request
    /// timeout less [`Self::UPSTREAM_MARGIN`] (at least half of it), so the caller's own answer
    /// (the gateway's 504 naming the service, the web portal's error page) goes out before the
    /// request timeout's 503, which names nothing.
    pub fn upstream_timeout(&self) -> std::time::Duration {
        self.request_timeout
            .saturating_sub(Self::UPSTREAM_MARGIN)
            .max(self.request_timeout / 2)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            body_timeout: Self::DEFAULT_BODY_TIMEOUT,
            max_concurrent_requests: Self::DEFAULT_MAX_CONCURRENT_REQUESTS,
            connections_per_address: Self::DEFAULT_CONNECTIONS_PER_ADDRESS,
            exempt: Vec::new(),
        }
    }
}

/// How long a service's HTTP client keeps an idle connection to another service: below
/// [`Limits::DEFAULT_HEADER_TIMEOUT`], after which the other side closes it, so the client
/// never picks a connection the server is closing at that moment.
pub const CLIENT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `error`, or an error it was caused by, is a request body that paused longer than
/// [`Limits::body_timeout`].
pub fn body_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// The answer to a request whose body paused longer than [`Limits::body_timeout`]: 408.
pub fn body_timeout_error() -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request body stopped arriving before it was complete; send it again",
    )
}

/// Serves `router` on `listener` with the default [`Limits`] until `shutdown` is cancelled,
/// then lets in-flight requests end.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, &Limits::default(), shutdown).await
}

/// Serves `router` on `listener` within `limits` until `shutdown` is cancelled: then stops
/// accepting connections, lets in-flight requests end (idle connections close) and returns.
/// Every answer carries the security headers ([`crate::hardening`]).
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: &Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::connections::serve(listener, router, limits, shutdown).await
}

/// Serves `router` on `listener`, with `worker` (the relay, the consumer) running beside it,
/// until `shutdown`; then stops taking requests, lets in-flight ones and the worker's batch in
/// hand finish, closes `db` and returns. What every service's `run_until_stopped` does.
pub async fn serve_with_worker(
    name: &str,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    worker: Option<impl std::future::Future<Output = ()> + Send + 'static>,
    db: &sqlx::PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let worker = worker.map(tokio::spawn);
    tracing::info!("{name} listening on http://{addr}");
    let served = serve(listener, router, shutdown.clone()).await;
    shutdown.cancel();
    if let Some(worker) = worker {
        worker.await.ok();
    }
    db.close().await;
    served.map_err(|e| anyhow::anyhow!("{name} HTTP server failed: {e}"))
}

/// `Query<T>` whose rejection is an [`ApiError`] (400, JSON) rather than axum's plain text.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}
