//! The gateway routes `/api/v1/auth/*` to the auth-service and `/api/v1/users*` to the
//! user-service, passing method, path, query, headers, body and the answer through; it answers
//! an unknown path 404, an unreachable upstream 502 and a silent one 504, each with a JSON error
//! naming the upstream (not its address), while the other upstream keeps answering through it.
//! It refuses path tricks, sets the client's address and a request id itself, drops headers
//! the `Connection` header names, limits authentication requests per address, and adds the
//! security headers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::extract::Request;
use axum::http::StatusCode;
use sandbox::http::{assert_json_error, get, post, send, Method};
use sandbox::{Running, Sandbox};
use serde_json::{json, Value};
use std::time::Duration;

async fn start_gateway(config: gateway::Config) -> Running {
    Running::launch(gateway::Application::build(config)).await
}

/// An upstream that answers every request 201 with what it received, as JSON (its own name,
/// the method, the path with the query, the headers and the body), and a header of its own.
async fn echo_upstream(name: &'static str) -> String {
    let app = axum::Router::new().fallback(move |req: Request| async move {
        let (parts, body) = req.into_parts();
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or_default())))
            .collect();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let echo = json!({
            "upstream": name, "method": parts.method.as_str(), "uri": parts.uri.to_string(),
            "headers": headers, "body": String::from_utf8_lossy(&body),
        });
        (
            StatusCode::CREATED,
            [("x-upstream", name)],
            axum::Json(echo),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    url
}

/// An upstream that takes connections and never answers.
async fn silent_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

#[tokio::test]
async fn each_path_reaches_its_upstream_and_the_answer_comes_back_as_it_was() {
    let (auth, users) = (echo_upstream("auth").await, echo_upstream("users").await);
    let gateway = start_gateway(gateway::Config::local(&auth, &users)).await;
    let gw = gateway.url();

    let resp = reqwest::Client::new()
        .get(format!("{gw}/api/v1/auth/me?x=1"))
        .bearer_auth("a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "the upstream's status");
    assert_eq!(
        resp.headers()["x-upstream"],
        "auth",
        "the upstream's headers"
    );
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(
        (echo["upstream"].as_str(), echo["uri"].as_str()),
        (Some("auth"), Some("/api/v1/auth/me?x=1"))
    );
    assert_eq!(echo["headers"]["authorization"], "Bearer a-token");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");

    let (s, echo) = post(
        &format!("{gw}/api/v1/users"),
        None,
        &json!({"role": "doctor"}),
    )
    .await;
    assert_eq!(
        (s, echo["upstream"].as_str(), echo["method"].as_str()),
        (201, Some("users"), Some("POST"))
    );
    assert_eq!(echo["body"], r#"{"role":"doctor"}"#);
    let (_, echo) = send(
        Method::PATCH,
        &format!("{gw}/api/v1/users/abc?role=doctor"),
        None,
        None,
    )
    .await;
    assert_eq!(
        (echo["upstream"].as_str(), echo["uri"].as_str()),
        (Some("users"), Some("/api/v1/users/abc?role=doctor"))
    );

    let (s, b) = get(&format!("{gw}/api/v2/users"), None).await;
    assert_json_error(s, &b, 404);
    let (s, b) = get(&format!("{gw}/health/ready"), None).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("ready")), "{b}");
}

#[tokio::test]
async fn the_gateway_answers_502_json_when_an_upstream_is_down() {
    let sb = Sandbox::for_test().await;
    let (db, amqp, keys) = (|name| sb.database_url(name), &sb.amqp_url, &sb.key_dir);
    let auth = Running::launch(auth_service::Application::build(
        auth_service::Config::local(&db("auth"), amqp, keys),
    ))
    .await;
    let users = Running::launch(user_service::Application::build(
        user_service::Config::local(&db("user"), amqp, keys),
    ))
    .await;
    let gateway = start_gateway(gateway::Config::local(&auth.url(), &users.url())).await;
    users.stop().await.unwrap();
    let (s, b) = get(&format!("{}/api/v1/users?role=doctor", gateway.url()), None).await;
    assert_json_error(s, &b, 502);
    let message = b["message"].as_str().unwrap();
    assert!(message.contains("user-service"), "{b}");
    assert!(
        !message.contains("127.0.0.1"),
        "the upstream's address stays hidden: {b}"
    );
    // The other upstream still answers through it, with its own status passed through.
    let (s, b) = get(&format!("{}/api/v1/auth/me", gateway.url()), None).await;
    assert_json_error(s, &b, 401);
}

#[tokio::test]
async fn the_gateway_answers_504_json_when_an_upstream_does_not_answer_in_time() {
    let users = echo_upstream("users").await;
    let mut config = gateway::Config::local(&silent_upstream().await, &users);
    config.upstream_timeout = Duration::from_millis(300);
    let gateway = start_gateway(config).await;

    let (s, b) = get(&format!("{}/api/v1/auth/me", gateway.url()), None).await;
    assert_json_error(s, &b, 504);
    assert_eq!(b["error"], "gateway_timeout");
    assert!(
        b["message"].as_str().unwrap().contains("auth-service"),
        "{b}"
    );
    let (s, echo) = get(&format!("{}/api/v1/users", gateway.url()), None).await;
    assert_eq!((s, echo["upstream"].as_str()), (201, Some("users")));
}

/// Sends `raw` (a whole HTTP/1.1 request) as bytes, so no client library normalises the path,
/// and returns the status line's code.
async fn raw_status(gateway: &str, raw: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gateway.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer}"))
}

#[tokio::test]
async fn paths_with_dot_segments_encoded_dots_or_empty_segments_are_refused() {
    let (auth, users) = (echo_upstream("auth").await, echo_upstream("users").await);
    let gateway = start_gateway(gateway::Config::local(&auth, &users)).await;
    let gw = gateway.url();
    for path in [
        "/api/v1/auth/../users",
        "/api/v1/auth/./me",
        "/api/v1/auth/%2e%2e/admin",
        "/api/v1/auth/%2E%2E%2Fadmin",
        "/api/v1/users//x",
        "/api/v1/users/a%2fb",
        "/api/v1/users/a%5cb",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(raw_status(&gw, &raw).await, 400, "{path}");
    }
    let ok = "GET /api/v1/users/abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(&gw, ok).await, 201, "a plain path still passes");
}

#[tokio::test]
async fn the_gateway_sets_the_client_address_and_request_id_and_drops_connection_headers() {
    let (auth, users) = (echo_upstream("auth").await, echo_upstream("users").await);
    let gateway = start_gateway(gateway::Config::local(&auth, &users)).await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/api/v1/users", gateway.url()))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-request-id", "ward-7.req_1")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "for this hop only")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "ward-7.req_1");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        assert_eq!(resp.headers()[name], value, "{name}");
    }
    assert!(resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-forwarded-for"], "127.0.0.1",
        "the client's own header is replaced: {echo}"
    );
    assert_eq!(echo["headers"]["x-request-id"], "ward-7.req_1");
    assert!(echo["headers"].get("x-secret").is_none(), "{echo}");

    // An id that is too long or carries other characters is replaced by a new one.
    let resp = client
        .get(format!("{}/api/v1/users", gateway.url()))
        .header("x-request-id", "x".repeat(65))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["headers"]["x-request-id"], id.as_str());
}

#[tokio::test]
async fn authentication_routes_are_limited_per_client_address() {
    let (auth, users) = (echo_upstream("auth").await, echo_upstream("users").await);
    let mut config = gateway::Config::local(&auth, &users);
    config.auth_rate_limit = gateway::AuthRateLimit {
        per_minute: 1,
        burst: 3,
    };
    let gateway = start_gateway(config).await;
    let gw = gateway.url();
    let body = json!({"email": "a@clinic.test", "password": "x"});
    for path in ["login", "refresh", "register"] {
        let (s, _) = post(&format!("{gw}/api/v1/auth/{path}"), None, &body).await;
        assert_eq!(s, 201, "{path} within the burst");
    }
    let resp = reqwest::Client::new()
        .post(format!("{gw}/api/v1/auth/change-password"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error"], "too_many_requests");
    // Other routes are not limited.
    let (s, _) = get(&format!("{gw}/api/v1/auth/me"), None).await;
    assert_eq!(s, 201);
}
