//! The web portal served over https behind a TLS proxy (WEB_SECURE_COOKIES=true): its session
//! cookie is `Secure` and named `__Host-portal_session` (`Path=/`, no `Domain`), is read back
//! under that name only, and every answer carries `Strict-Transport-Security`. Over plain HTTP
//! the cookie keeps its plain name and no answer claims https. Listening beyond loopback over
//! plain HTTP is announced by one warning at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Browser, Portal, ADMIN_EMAIL, ADMIN_PASSWORD};
use sandbox::Running;
use std::net::SocketAddr;

/// A portal served over https (as behind a TLS proxy) in front of `portal`'s gateway.
async fn secure_portal(portal: &Portal) -> Running {
    let mut config = web::Config::local(&portal.gateway().url());
    config.secure_cookies = true;
    Running::launch(web::Application::build(config)).await
}

/// The answer to a plain GET of `url` with `cookie` (no redirect followed): status, its
/// `Set-Cookie` and `Strict-Transport-Security` headers.
async fn raw_get(url: &str, cookie: Option<&str>) -> (u16, Option<String>, Option<String>) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client.get(url);
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let answer = req.send().await.unwrap();
    let header = |name: &str| {
        answer
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    (
        answer.status().as_u16(),
        header("set-cookie"),
        header("strict-transport-security"),
    )
}

#[tokio::test]
async fn over_https_the_session_cookie_is_host_bound_and_every_answer_carries_hsts() {
    let portal = Portal::start().await;
    let secure = secure_portal(&portal).await;
    let at = |path: &str| format!("{}{path}", secure.url());

    // The login form's visitor cookie: the `__Host-` name, Secure, Path=/, no Domain.
    let (status, set, hsts) = raw_get(&at("/login"), None).await;
    assert_eq!(status, 200);
    let set = set.expect("a visitor cookie");
    assert!(set.starts_with("__Host-portal_session=v1."), "{set}");
    let attributes: Vec<&str> = set.split(';').skip(1).map(str::trim).collect();
    assert_eq!(
        attributes,
        ["Path=/", "HttpOnly", "SameSite=Strict", "Secure"],
        "{set}"
    );
    assert_eq!(hsts.as_deref(), Some("max-age=31536000"));

    // A login through it works under that name.
    let mut browser = Browser::new();
    let form = browser.get(&at("/login")).await;
    let login = browser
        .post(
            &at("/login"),
            &[
                ("csrf", &form.csrf()),
                ("email", ADMIN_EMAIL),
                ("password", ADMIN_PASSWORD),
                ("next", "/"),
            ],
        )
        .await;
    assert_eq!(login.status, 303, "{}", login.body);
    let cookie = browser.cookie.clone().expect("the session cookie");
    let id = cookie
        .strip_prefix("__Host-portal_session=")
        .unwrap_or_else(|| panic!("the __Host- name: {cookie}"))
        .to_owned();
    let home = browser.get(&at("/")).await;
    assert_eq!(home.status, 200, "signed in: {}", home.body);

    // Every answer, whatever it is, says https from now on: a page, a redirect, the
    // stylesheet, a page that does not exist, the health check, the metrics.
    for (path, cookie) in [
        ("/", Some(cookie.as_str())),
        ("/", None),
        ("/static/portal.css", None),
        ("/no-such-page", None),
        ("/health/live", None),
        ("/metrics", None),
    ] {
        let (status, _, hsts) = raw_get(&at(path), cookie).await;
        assert_eq!(
            hsts.as_deref(),
            Some("max-age=31536000"),
            "{path} answered {status} without it"
        );
    }

    // The same id under the plain name is not a session here: only the name in use is read.
    let (status, _, _) = raw_get(&at("/"), Some(&format!("portal_session={id}"))).await;
    assert_eq!(status, 303, "sent to the login");

    // Logout clears the cookie under its own name.
    let logout = browser
        .post(&at("/logout"), &[("csrf", &home.csrf())])
        .await;
    assert_eq!(logout.status, 303);
    assert_eq!(browser.cookie, None, "the cookie is cleared");

    // The plain-HTTP portal beside it: the plain name, not Secure, no HSTS.
    let (_, set, hsts) = raw_get(&portal.url("/login"), None).await;
    let set = set.expect("a visitor cookie");
    assert!(set.starts_with("portal_session=v1."), "{set}");
    assert!(!set.contains("Secure"), "{set}");
    assert_eq!(hsts, None);
}

#[tokio::test]
async fn plain_http_beyond_loopback_is_announced_at_start() {
    let (logs, _capturing) = sandbox::logs::Captured::start();
    let warning = "served over plain HTTP off loopback: cookies are not Secure; put a TLS proxy \
                   in front and set WEB_SECURE_COOKIES=true";
    assert_eq!(web::PLAIN_HTTP_WARNING, warning);
    let build = |host: [u8; 4], secure: bool| {
        let mut config = web::Config::local("http://127.0.0.1:9");
        config.http_addr = SocketAddr::from((host, 0));
        config.secure_cookies = secure;
        web::Application::build(config)
    };
    // On loopback, or behind TLS: nothing to say.
    let quiet = [
        build([127, 0, 0, 1], false).await,
        build([0, 0, 0, 0], true).await,
    ];
    assert!(quiet.iter().all(Result::is_ok));
    assert_eq!(logs.lines_with(&[warning]), Vec::<String>::new());
    // Every address over plain HTTP: one line, a warning.
    let loud = build([0, 0, 0, 0], false).await;
    assert!(loud.is_ok());
    let lines = logs.lines_with(&[warning]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
}
