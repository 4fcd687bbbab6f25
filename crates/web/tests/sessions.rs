//! Anonymous visitors cost the web portal no session (issue 26): a flood of anonymous requests
//! to the login page — without a cookie, with made-up ones, posting forged forms — stores
//! nothing (`portal_web_sessions` on `/metrics` stays put), so it can push out neither a
//! signed-in user nor a login half done; both carry on afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Browser, Portal, ADMIN_EMAIL, ADMIN_PASSWORD};
use std::time::Instant;

/// Anonymous requests in the flood.
const FLOOD: usize = 5_000;
/// Sent at once.
const SENDERS: usize = 32;

/// The sessions the portal holds, as its metrics say.
async fn sessions_held(portal: &Portal) -> u64 {
    let text = reqwest::get(portal.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("portal_web_sessions "))
        .unwrap_or_else(|| panic!("portal_web_sessions in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_flood_of_anonymous_requests_stores_no_session_and_pushes_none_out() {
    let portal = Portal::start().await;
    assert_eq!(sessions_held(&portal).await, 0);

    // Someone signed in, and someone halfway through a login (the form loaded, not posted).
    let mut signed = Browser::new();
    let login = signed.log_in(&portal, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(login.status, 303, "{}", login.body);
    let mut halfway = Browser::new();
    let form = halfway.get(&portal.url("/login")).await;
    assert_eq!(form.status, 200);
    let csrf = form.csrf();
    let before = sessions_held(&portal).await;
    assert_eq!(
        before, 1,
        "the signed-in user only: a visitor is not stored"
    );

    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let url = portal.url("/login");
        senders.spawn(async move {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let mut statuses = Vec::new();
            for i in (sender..FLOOD).step_by(SENDERS) {
                let request = match i % 4 {
                    0 | 1 => client.get(&url),
                    2 => client
                        .get(&url)
                        .header("cookie", format!("portal_session=made-up-{i}")),
                    _ => client
                        .post(&url)
                        .header("cookie", format!("portal_session=v1.1.x.{i}"))
                        .form(&[("csrf", "forged"), ("email", "a@b.c"), ("password", "x")]),
                };
                statuses.push(request.send().await.unwrap().status().as_u16());
            }
            statuses
        });
    }
    let mut answered = std::collections::BTreeMap::<u16, usize>::new();
    while let Some(statuses) = senders.join_next().await {
        for status in statuses.unwrap() {
            *answered.entry(status).or_default() += 1;
        }
    }
    let took = started.elapsed();
    let after = sessions_held(&portal).await;
    println!(
        "{FLOOD} anonymous requests to /login in {took:.2?} (answers by status: {answered:?}); \
         sessions held before {before}, after {after}"
    );
    assert_eq!(
        answered.get(&200).copied().unwrap_or(0) + answered.get(&403).copied().unwrap_or(0),
        FLOOD,
        "each page served, each forged form refused"
    );
    assert_eq!(after, before, "the flood stored nothing");

    // Nobody was pushed out.
    let home = signed.get(&portal.url("/")).await;
    assert_eq!(home.status, 200, "still signed in");
    let done = halfway
        .post(
            &portal.url("/login"),
            &[
                ("csrf", csrf.as_str()),
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("next", "/"),
            ],
        )
        .await;
    assert_eq!(
        done.status, 303,
        "the login half done completes: {}",
        done.body
    );
    assert_eq!(halfway.get(&portal.url("/")).await.status, 200);
    assert_eq!(sessions_held(&portal).await, 2);
}
