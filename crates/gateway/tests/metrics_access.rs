//! `/metrics` of a gateway listening on every address (0.0.0.0): this machine reads it as
//! before (Prometheus beside it); a request from another address, or relayed by a proxy on this
//! machine, gets the 404 of a route that does not exist unless it carries
//! `Authorization: Bearer <METRICS_TOKEN>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use platform::metrics::MetricsToken;
use sandbox::Running;
use std::net::{IpAddr, SocketAddr};

const TOKEN: &str = "b5f0c3e1a2d94f6e8c7b0a1d2e3f4a5b";

/// An address of this machine other than loopback: the one the kernel would send from towards
/// a documentation address (a UDP "connect" only picks the route; nothing is sent).
fn other_address_of_this_machine() -> IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .connect("192.0.2.1:9")
        .and_then(|()| socket.local_addr())
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .expect("this test needs an address of this machine besides loopback (a network interface)")
}

/// `GET url` from `from` (the client's own address), with `headers`: status and body.
async fn scrape(from: IpAddr, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::Client::builder()
        .local_address(from)
        .build()
        .unwrap();
    let mut req = client.get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let answer = req.send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap())
}

#[tokio::test]
async fn metrics_on_every_address_answer_this_machine_and_the_token_only() {
    let mut config = gateway::Config::local("http://127.0.0.1:9", "http://127.0.0.1:9");
    config.http_addr = SocketAddr::from(([0, 0, 0, 0], 0));
    config.metrics_token = Some(MetricsToken::new(TOKEN).unwrap());
    let gw = Running::launch(gateway::Application::build(config)).await;
    let port = gw.url().rsplit(':').next().unwrap().to_owned();
    let loopback: IpAddr = [127, 0, 0, 1].into();
    let other = other_address_of_this_machine();
    let at = |host: IpAddr, path: &str| {
        format!(
            "http://{}{path}",
            SocketAddr::new(host, port.parse().unwrap())
        )
    };
    let bearer = format!("Bearer {TOKEN}");

    // This machine: open, as for Prometheus beside the gateway.
    let (status, text) = scrape(loopback, &at(loopback, "/metrics"), &[]).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("portal_build_info"), "{text}");

    // Another address, or a proxy on this machine relaying someone: what an unknown route
    // answers, JSON, nothing more.
    let (status, absent) = scrape(other, &at(other, "/no-such-route"), &[]).await;
    assert_eq!(status, 404, "{absent}");
    let error: serde_json::Value = serde_json::from_str(&absent).unwrap();
    assert_eq!(error["error"], "not_found", "{absent}");
    for (from, headers) in [
        (other, vec![]),
        (other, vec![("authorization", "Bearer not-the-token")]),
        (loopback, vec![("x-forwarded-for", "198.51.100.9")]),
    ] {
        let host = if from == loopback { loopback } else { other };
        let (status, text) = scrape(from, &at(host, "/metrics"), &headers).await;
        assert_eq!(
            (status, text.as_str()),
            (404, absent.as_str()),
            "{from} {headers:?}"
        );
    }

    // With the token: served, from anywhere.
    for (from, headers) in [
        (other, vec![("authorization", bearer.as_str())]),
        (
            loopback,
            vec![
                ("x-forwarded-for", "198.51.100.9"),
                ("authorization", bearer.as_str()),
            ],
        ),
    ] {
        let host = if from == loopback { loopback } else { other };
        let (status, text) = scrape(from, &at(host, "/metrics"), &headers).await;
        assert_eq!(status, 200, "{from}: {text}");
        assert!(text.contains("portal_build_info"), "{text}");
        assert!(!text.contains(TOKEN), "the token is not echoed");
    }
}
