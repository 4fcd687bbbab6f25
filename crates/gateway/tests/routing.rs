//! The gateway routes `/api/v1/auth/*` to the auth-service and `/api/v1/users*` to the
//! user-service, passing method, path, query, headers, body and the answer through; it answers
//! an unknown path 404, an unreachable upstream 502 and a silent one 504, each with a JSON error
//! naming the upstream, while the other upstream keeps answering through it.
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
    assert!(
        b["message"].as_str().unwrap().contains("user-service"),
        "{b}"
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
