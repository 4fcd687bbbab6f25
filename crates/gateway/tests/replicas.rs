//! Several replicas of one service behind the gateway: requests are spread over them; a
//! replica that refuses connections or fails its readiness check is left out and taken back
//! when it passes again; a request no replica received goes to another, whatever its method;
//! a change that may have reached a replica is never sent twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::extract::Request;
use axum::http::StatusCode;
use sandbox::http::{get, post};
use sandbox::Running;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// An upstream answering every request 201 with its name, counting the API requests (not
/// health checks) it received; its readiness answers 503 while `ready` is false.
struct Echo {
    url: String,
    received: Arc<AtomicUsize>,
    ready: Arc<AtomicBool>,
}

async fn echo_on(listener: tokio::net::TcpListener, name: &'static str) -> Echo {
    let received = Arc::new(AtomicUsize::new(0));
    let ready = Arc::new(AtomicBool::new(true));
    let (count, is_ready) = (received.clone(), ready.clone());
    let app = axum::Router::new().fallback(move |req: Request| {
        let (count, is_ready) = (count.clone(), is_ready.clone());
        async move {
            if req.uri().path() == "/health/ready" {
                return if is_ready.load(Ordering::SeqCst) {
                    (StatusCode::OK, axum::Json(json!({"status": "ready"})))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        axum::Json(json!({"status": "unavailable"})),
                    )
                };
            }
            count.fetch_add(1, Ordering::SeqCst);
            (
                StatusCode::CREATED,
                axum::Json(json!({"upstream": name, "method": req.method().as_str()})),
            )
        }
    });
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    Echo {
        url,
        received,
        ready,
    }
}

async fn echo(name: &'static str) -> Echo {
    echo_on(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        name,
    )
    .await
}

/// An address nothing listens on (bound, then let go).
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// An upstream that reads each request and hangs up without answering, as a replica does when
/// it dies in the middle of a request.
async fn hanging_up() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let taken = Arc::new(AtomicUsize::new(0));
    let count = taken.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if let Ok(n) = socket.read(&mut buf).await {
                    if buf[..n].starts_with(b"GET /health/") {
                        return; // its checks fail too: it never answers
                    }
                    if n > 0 {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (url, taken)
}

async fn gateway(auth: &str, users: &str) -> Running {
    let mut config = gateway::Config::local(auth, users);
    config.health_interval = Duration::from_millis(100);
    Running::launch(gateway::Application::build(config)).await
}

/// Polls `check` every 50 ms until it holds, for at most 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn requests_are_spread_over_every_replica() {
    let (a, b) = (echo("a").await, echo("b").await);
    let users = echo("users").await;
    let gw = gateway(&format!("{},{}", a.url, b.url), &users.url).await;
    for _ in 0..10 {
        let (s, _) = get(&format!("{}/api/v1/auth/me", gw.url()), None).await;
        assert_eq!(s, 201);
    }
    let (ra, rb) = (
        a.received.load(Ordering::SeqCst),
        b.received.load(Ordering::SeqCst),
    );
    assert_eq!(ra + rb, 10);
    assert!(ra >= 3 && rb >= 3, "spread in turn: a {ra}, b {rb}");
}

#[tokio::test]
async fn a_replica_that_refuses_connections_is_skipped_even_for_a_post() {
    let b = echo("b").await;
    let users = echo("users").await;
    let gw = gateway(&format!("{},{}", closed_port().await, b.url), &users.url).await;
    for i in 0..6 {
        let (s, body) = post(
            &format!("{}/api/v1/auth/admin/users", gw.url()),
            None,
            &json!({ "n": i }),
        )
        .await;
        assert_eq!((s, body["upstream"].as_str()), (201, Some("b")), "{body}");
    }
    assert_eq!(b.received.load(Ordering::SeqCst), 6, "each POST once");
    let metrics = reqwest::get(format!("{}/metrics", gw.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Replicas by their place in the list, never by address (the metrics may be read from
    // afar: METRICS_TOKEN).
    assert!(
        metrics.contains(
            "portal_gateway_upstream_healthy{replica=\"0\",upstream=\"auth-service\"} 0\n"
        ),
        "the refused replica, first in the list, is shown down:\n{metrics}"
    );
    assert!(
        metrics.contains(
            "portal_gateway_upstream_healthy{replica=\"1\",upstream=\"auth-service\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("127.0.0.1"),
        "no upstream address in the metrics:\n{metrics}"
    );
}

#[tokio::test]
async fn a_replica_failing_its_readiness_is_left_out_and_taken_back_when_it_passes() {
    let (a, b) = (echo("a").await, echo("b").await);
    let users = echo("users").await;
    let gw = gateway(&format!("{},{}", a.url, b.url), &users.url).await;
    let url = format!("{}/api/v1/auth/me", gw.url());
    a.ready.store(false, Ordering::SeqCst);
    // Once a check has seen it, a stays out.
    eventually("a is left out", || async {
        let before = a.received.load(Ordering::SeqCst);
        for _ in 0..4 {
            get(&url, None).await;
        }
        a.received.load(Ordering::SeqCst) == before
    })
    .await;
    let before = (
        a.received.load(Ordering::SeqCst),
        b.received.load(Ordering::SeqCst),
    );
    for _ in 0..8 {
        let (s, body) = get(&url, None).await;
        assert_eq!((s, body["upstream"].as_str()), (201, Some("b")));
    }
    assert_eq!(a.received.load(Ordering::SeqCst), before.0);
    assert_eq!(b.received.load(Ordering::SeqCst), before.1 + 8);

    a.ready.store(true, Ordering::SeqCst);
    eventually("a is taken back", || async {
        let before = a.received.load(Ordering::SeqCst);
        for _ in 0..4 {
            get(&url, None).await;
        }
        a.received.load(Ordering::SeqCst) > before
    })
    .await;
}

#[tokio::test]
async fn a_replica_started_later_is_taken_in() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let late_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let b = echo("b").await;
    let users = echo("users").await;
    let gw = gateway(&format!("{late_url},{}", b.url), &users.url).await;
    let url = format!("{}/api/v1/auth/me", gw.url());
    let (s, _) = get(&url, None).await;
    assert_eq!(s, 201, "the live replica answers meanwhile");
    let late = echo_on(
        tokio::net::TcpListener::bind(late_url.trim_start_matches("http://"))
            .await
            .unwrap(),
        "late",
    )
    .await;
    eventually("the late replica gets requests", || async {
        get(&url, None).await;
        late.received.load(Ordering::SeqCst) > 0
    })
    .await;
}

#[tokio::test]
async fn a_change_that_may_have_reached_a_replica_is_not_sent_again_but_a_read_is() {
    let (hang_url, taken) = hanging_up().await;
    let b = echo("b").await;
    let users = echo("users").await;
    // A long check interval: the hanging replica stays "healthy" for the whole test, so each
    // request tries it first in its turn.
    let mut config = gateway::Config::local(&format!("{hang_url},{}", b.url), &users.url);
    config.health_interval = Duration::from_secs(3600);
    let gw = Running::launch(gateway::Application::build(config)).await;

    let mut refused = 0;
    for _ in 0..4 {
        let (s, body): (u16, Value) = post(
            &format!("{}/api/v1/auth/admin/users", gw.url()),
            None,
            &json!({}),
        )
        .await;
        match s {
            201 => assert_eq!(body["upstream"], "b"),
            502 => {
                assert_eq!(body["error"], "bad_gateway");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let hung = taken.load(Ordering::SeqCst);
    assert!(hung >= 1, "the hanging replica had its turn");
    assert_eq!(refused, hung, "each POST it took answered 502, none resent");
    assert_eq!(b.received.load(Ordering::SeqCst), 4 - hung);

    for _ in 0..4 {
        let (s, body) = get(&format!("{}/api/v1/auth/me", gw.url()), None).await;
        assert_eq!(
            (s, body["upstream"].as_str()),
            (201, Some("b")),
            "a read is retried"
        );
    }
}
