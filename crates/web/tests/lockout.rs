//! The lockout check on the system as shipped (the gateway's default per-address
//! limits, the web portal in front of it): a thousand wrong passwords for the seeded admin from
//! 127.0.0.2 — through the gateway, then through the web portal's login form — and the admin
//! still signs in at once from 127.0.0.1, through either. The stranger's address is refused;
//! the admin's account is not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Browser, Portal, ADMIN_EMAIL, ADMIN_PASSWORD};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const ADMIN_DESK: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

fn tally(statuses: &[u16]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for s in statuses {
        *counts.entry(*s).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn a_thousand_wrong_passwords_from_a_stranger_never_keep_the_admin_out() {
    let portal = Portal::start_with(|gateway| {
        gateway.auth_rate_limit = gateway::AuthRateLimit::default();
    })
    .await;
    let login = format!("{}/api/v1/auth/login", portal.gateway().url());

    // Through the gateway, from a real second address.
    let stranger = reqwest::Client::builder()
        .local_address(STRANGER)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..1000 {
        let resp = stranger
            .post(&login)
            .json(&json!({"email": ADMIN_EMAIL, "password": format!("guess number {i}")}))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    let counts = tally(&statuses);
    println!(
        "through the gateway: 1000 wrong passwords for the admin from 127.0.0.2 in {:.1} s: {counts:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(counts.keys().all(|s| *s == 401 || *s == 429), "{counts:?}");
    let admin = reqwest::Client::builder()
        .local_address(ADMIN_DESK)
        .build()
        .unwrap();
    let started = Instant::now();
    let resp = admin
        .post(&login)
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    println!(
        "the admin from 127.0.0.1 through the gateway: {status} in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());

    // Through the web portal's login form, from the same stranger.
    let mut browser = Browser::bound(STRANGER);
    let form = browser.get(&portal.url("/login")).await;
    let csrf = form.csrf();
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..1000 {
        let page = browser
            .post(
                &portal.url("/login"),
                &[
                    ("csrf", csrf.as_str()),
                    ("email", ADMIN_EMAIL),
                    ("password", &format!("web guess {i}")),
                    ("next", "/"),
                ],
            )
            .await;
        statuses.push(page.status);
    }
    let counts = tally(&statuses);
    println!(
        "through the web portal: 1000 wrong passwords for the admin from 127.0.0.2 in {:.1} s: {counts:?}",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        counts.get(&401).copied().unwrap_or(0),
        1000,
        "each refused: {counts:?}"
    );
    let started = Instant::now();
    let mut desk = Browser::bound(ADMIN_DESK);
    let page = desk.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    println!(
        "the admin from 127.0.0.1 through the web portal: {} to {:?} in {} ms",
        page.status,
        page.location,
        started.elapsed().as_millis()
    );
    assert_eq!(
        (page.status, page.location.as_deref()),
        (303, Some("/")),
        "signed in: {}",
        page.body
    );
}
