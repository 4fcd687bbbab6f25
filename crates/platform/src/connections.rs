//! The accept loop every service serves through ([`crate::http::serve_with`]), within
//! [`Limits`].
//!
//! axum's own `serve` gives hyper no timer, so hyper's header-read timeout never fires: a
//! client that sends half a request line holds its connection (a file descriptor, a task) for
//! ever, and a few thousand such clients hold the service. Here hyper's HTTP/1 connection
//! builder runs with tokio's timer and [`Limits::header_timeout`], which also closes a
//! keep-alive connection left idle that long. Around the router, outermost first:
//! - the security headers and refusal log ([`crate::hardening`]), so the answers below carry
//!   them too;
//! - load shedding in front of a concurrency limit: past [`Limits::max_concurrent_requests`]
//!   a request is answered 503 (JSON, `Retry-After`) at once instead of waiting in a queue
//!   without bound;
//! - the request timeout (503 JSON);
//! - the body timeout: a body that pauses longer than [`Limits::body_timeout`] fails the read
//!   of the handler reading it, which answers 408 ([`crate::http::body_timeout_error`]).
//!
//! And per client address (an IPv6 client by its /64: [`limit_key`]) at most
//! [`Limits::connections_per_address`] connections: more are closed as soon as they are
//! accepted, with one `security` log line per address per minute, not one per connection.

use crate::client_addr::limit_key;
use crate::http::{ApiError, Limits};
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_http::timeout::RequestBodyTimeoutLayer;

/// How often a repeated event is logged: once a minute per key.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Keys a [`OncePerMinute`] remembers at most: a flood from many addresses must not grow it
/// without bound (past it, an address not yet remembered is not logged until room is made).
const LOG_KEYS: usize = 4096;

/// The router behind its limits, as one service every connection clones.
type Stack = BoxCloneService<Request, Response, Infallible>;

/// See the module's documentation.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: &Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let stack = stack(router, limits);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let per_address = Arc::new(PerAddress::new(limits));
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(e, &shutdown).await;
                continue;
            }
        };
        let Some(slot) = PerAddress::admit(&per_address, peer.ip()) else {
            // Closed at once: the client holds nothing here.
            drop(stream);
            continue;
        };
        let service = stack
            .clone()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                // What `ClientAddr` and axum's `ConnectInfo` extractor read.
                req.extensions_mut().insert(ConnectInfo(peer));
                req.map(Body::new)
            });
        let connection = graceful
            .watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        tokio::spawn(async move {
            // A header timeout, a client that went away, bytes that are not HTTP: the
            // connection's own business, not the service's.
            if let Err(e) = connection.await {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    // No new connections from here; the open ones finish the request in hand (idle ones close
    // at once) and are waited for.
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// An accept that failed. A connection that ended between the kernel's accept and ours needs
/// nothing; anything else (out of file descriptors, of memory) would fail again at once, so
/// the loop waits a second for connections to end rather than spin.
async fn accept_failed(e: std::io::Error, shutdown: &CancellationToken) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "cannot accept a connection; trying again in a second");
    crate::shutdown::sleep_unless_cancelled(Duration::from_secs(1), shutdown).await;
}

/// The router within `limits` (see the module's documentation for the order).
fn stack(router: axum::Router, limits: &Limits) -> Stack {
    let overloads = Arc::new(OncePerMinute::default());
    let limit = limits.max_concurrent_requests;
    let refuse = move |error: BoxError| {
        let overloads = overloads.clone();
        async move { refused(&error, &overloads, limit) }
    };
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(axum::middleware::from_fn(crate::hardening::harden))
            .layer(HandleErrorLayer::new(refuse))
            .load_shed()
            .concurrency_limit(limits.max_concurrent_requests)
            .timeout(limits.request_timeout)
            .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
            .service(router),
    )
}

/// The answer to a request the limits stopped: 503 when the service is at its concurrency
/// limit (logged once a minute) or the request took longer than the request timeout.
fn refused(error: &BoxError, overloads: &OncePerMinute<()>, limit: usize) -> Response {
    if error.is::<tower::load_shed::error::Overloaded>() {
        if overloads.due(()) {
            tracing::warn!(
                limit,
                "requests refused: as many as the limit are being handled (logged once a minute)"
            );
        }
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the service is handling as many requests as it can; try again shortly",
        )
        .retry_after(Duration::from_secs(1))
        .into_response();
    }
    if error.is::<tower::timeout::error::Elapsed>() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "the request took too long to answer; try again shortly",
        )
        .into_response();
    }
    ApiError::internal(error).into_response()
}

/// Whether an event of `key` is to be logged: once a minute per key.
struct OncePerMinute<K> {
    last: Mutex<HashMap<K, Instant>>,
}

impl<K> Default for OncePerMinute<K> {
    fn default() -> Self {
        Self {
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> OncePerMinute<K> {
    fn due(&self, key: K) -> bool {
        // A panic while holding the lock leaves at worst a stale instant: still sound.
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < LOG_EVERY)
        {
            return false;
        }
        if last.len() >= LOG_KEYS && !last.contains_key(&key) {
            last.retain(|_, at| now.duration_since(*at) < LOG_EVERY);
            if last.len() >= LOG_KEYS {
                return false;
            }
        }
        last.insert(key, now);
        true
    }
}

/// Connections open per client address (keyed by [`limit_key`]).
struct PerAddress {
    max: usize,
    exempt: Vec<IpAddr>,
    open: Mutex<HashMap<IpAddr, usize>>,
    refusals: OncePerMinute<IpAddr>,
}

/// One admitted connection: counted against its address until dropped.
struct Slot {
    counts: Arc<PerAddress>,
    /// `None` for an exempt address, which is not counted.
    key: Option<IpAddr>,
}

impl PerAddress {
    fn new(limits: &Limits) -> Self {
        Self {
            max: limits.connections_per_address,
            exempt: limits.exempt.clone(),
            open: Mutex::new(HashMap::new()),
            refusals: OncePerMinute::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Counts are changed in one statement each: a poisoned map is still sound.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a connection from `ip`, or `None` when its address has as many open as
    /// allowed (logged once a minute per address).
    fn admit(this: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        if this.exempt.iter().any(|e| e.to_canonical() == ip) {
            return Some(Slot {
                counts: this.clone(),
                key: None,
            });
        }
        let key = limit_key(ip);
        {
            let mut open = this.lock();
            let count = open.entry(key).or_insert(0);
            if *count < this.max {
                *count += 1;
                return Some(Slot {
                    counts: this.clone(),
                    key: Some(key),
                });
            }
        }
        if this.refusals.due(key) {
            tracing::warn!(
                target: "security",
                event = "connection_limit",
                client = %key,
                limit = this.max,
                "too many connections from one address; the excess are closed (logged once a minute per address)"
            );
        }
        None
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = self.counts.lock();
        if let Some(count) = open.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Only addresses with open connections are remembered.
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_key(a), limit_key(b));
        assert_eq!(limit_key(a), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_ne!(limit_key(a), limit_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(limit_key(mapped), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(limit_key(v4), v4);
        assert_eq!(
            limit_key(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        );
    }

    #[test]
    fn an_address_gets_its_cap_of_connections_and_each_that_ends_frees_one() {
        let limits = Limits {
            connections_per_address: 2,
            exempt: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9))],
            ..Limits::default()
        };
        let counts = Arc::new(PerAddress::new(&limits));
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::2".parse().unwrap();
        let first = PerAddress::admit(&counts, one).unwrap();
        let _second = PerAddress::admit(&counts, same_64).unwrap();
        assert!(PerAddress::admit(&counts, one).is_none(), "the /64 is full");
        assert!(PerAddress::admit(&counts, "2001:db8:0:1::1".parse().unwrap()).is_some());
        drop(first);
        assert!(PerAddress::admit(&counts, same_64).is_some());
        let exempt: Vec<Slot> = (0..5)
            .filter_map(|_| PerAddress::admit(&counts, "::ffff:10.0.0.9".parse().unwrap()))
            .collect();
        assert_eq!(exempt.len(), 5, "an exempt proxy is not counted");
        drop(exempt);
        assert!(counts.lock().len() <= 2, "only addresses with connections");
    }

    /// A service on a free port within `limits`: `/hold` answers when `release` is notified
    /// (after telling `started`), `/quick` at once. Returns its URL and the serving task.
    async fn holding_service(
        limits: Limits,
        started: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    ) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
        let router = axum::Router::new()
            .route(
                "/hold",
                axum::routing::get(move || async move {
                    started.notify_one();
                    release.notified().await;
                    "released"
                }),
            )
            .route("/quick", axum::routing::get(|| async { "quick" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = tokio::spawn(async move {
            crate::http::serve_with(listener, router, &limits, shutdown).await
        });
        (url, served)
    }

    #[tokio::test]
    async fn past_the_limit_or_the_timeout_a_request_is_answered_503_json_with_the_headers() {
        let limits = Limits {
            max_concurrent_requests: 1,
            request_timeout: Duration::from_millis(1500),
            ..Limits::default()
        };
        let (started, release) = (Arc::default(), Arc::default());
        let shutdown = CancellationToken::new();
        let (url, _served) =
            holding_service(limits, Arc::clone(&started), release, shutdown.clone()).await;
        let client = reqwest::Client::new();
        let held = tokio::spawn(client.get(format!("{url}/hold")).send());
        started.notified().await;

        let shed = client.get(format!("{url}/quick")).send().await.unwrap();
        assert_eq!(shed.status(), 503);
        assert_eq!(shed.headers()["retry-after"], "1");
        assert_eq!(shed.headers()["x-content-type-options"], "nosniff");
        let body: serde_json::Value = shed.json().await.unwrap();
        assert_eq!(body["error"], "overloaded", "{body}");

        let timed_out = held.await.unwrap().unwrap();
        assert_eq!(timed_out.status(), 503);
        let body: serde_json::Value = timed_out.json().await.unwrap();
        assert_eq!(body["error"], "timeout", "{body}");
        // The held request's permit went with it.
        let quick = client.get(format!("{url}/quick")).send().await.unwrap();
        assert_eq!(quick.status(), 200);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn on_shutdown_no_connection_is_taken_and_the_request_in_hand_is_answered() {
        let (started, release) = (Arc::default(), Arc::new(tokio::sync::Notify::new()));
        let shutdown = CancellationToken::new();
        let (url, served) = holding_service(
            Limits::default(),
            Arc::clone(&started),
            Arc::clone(&release),
            shutdown.clone(),
        )
        .await;
        let in_hand = tokio::spawn(reqwest::get(format!("{url}/hold")));
        started.notified().await;
        shutdown.cancel();
        let addr = url.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting after shutdown");
            tokio::task::yield_now().await;
        }
        assert!(!served.is_finished(), "waits for the request in hand");
        release.notify_one();
        let answer = in_hand.await.unwrap().unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), "released");
        tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("serving ends once the request is answered")
            .unwrap()
            .unwrap();
    }

    #[test]
    fn a_repeated_event_is_due_once_a_minute_per_key() {
        let log = OncePerMinute::default();
        assert!(log.due(1));
        assert!(!log.due(1));
        assert!(log.due(2));
    }
}
