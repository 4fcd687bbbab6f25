//! The whole system for the web portal's tests, started in this process on a test's sandbox by
//! `sandbox::System`: the auth-service (with its relay) seeded with the 10 demo users, the
//! user-service, the appointment-service (backfilled), the sync admin API, the gateway in front
//! of them and the portal in front of the gateway; and a small browser-like HTTP client that
//! keeps the session cookie.
#![allow(dead_code)] // each test binary uses a part

use auth_service::seed::SeedOptions;
use sandbox::{Sandbox, System};
use sqlx::PgPool;
use std::ops::{Deref, DerefMut};

/// The seeded admin's login.
pub const ADMIN_EMAIL: &str = "admin@clinic.co.zw";
pub const ADMIN_PASSWORD: &str = "evening handover at the desk";
/// The seeded staff's password (every seeded non-admin).
pub const STAFF_PASSWORD: &str = "ward round at seven";

/// The system on its own sandbox (removed when dropped); its parts are reached through
/// [`System`] (`portal.gateway()`, `portal.auth_db`, …).
pub struct Portal {
    pub sb: Sandbox,
    pub system: System,
}

impl Deref for Portal {
    type Target = System;

    fn deref(&self) -> &System {
        &self.system
    }
}

impl DerefMut for Portal {
    fn deref_mut(&mut self) -> &mut System {
        &mut self.system
    }
}

impl Portal {
    /// The whole system, seeded, backfilled and ready: the appointment-service knows every
    /// seeded doctor and the directory lists them.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`Portal::start`] with the gateway's configuration adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut gateway::Config) + Send) -> Self {
        Self::start_configured(|_| {}, adjust).await
    }

    /// [`Portal::start`] with the auth-service's and the gateway's configurations adjusted.
    pub async fn start_configured(
        auth: impl FnOnce(&mut auth_service::Config) + Send,
        adjust: impl FnOnce(&mut gateway::Config) + Send,
    ) -> Self {
        let sb = Sandbox::for_test().await;
        let system = System::builder(&sb)
            .auth_with(auth)
            .users()
            .sync_admin()
            .gateway_with(|config| {
                // The portal logs many people in from one address in these tests.
                config.auth_rate_limit = gateway::AuthRateLimit {
                    per_minute: 10_000,
                    burst: 10_000,
                };
                // The portal is the proxy in front of the gateway (as `portal up` sets it).
                config.trusted_proxies = vec![std::net::Ipv4Addr::LOCALHOST.into()];
                adjust(config);
            })
            .web()
            .seeded(SeedOptions {
                admin_email: contract::Email::parse(ADMIN_EMAIL).expect("email"),
                admin_password: Some(ADMIN_PASSWORD.into()),
                staff_password: Some(STAFF_PASSWORD.into()),
            })
            .backfilled()
            .start()
            .await;
        Self { sb, system }
    }

    /// `path` on the web portal.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.web().url())
    }

    /// Stops the sync admin API.
    pub async fn stop_sync_admin(&mut self) {
        if let Some(sync_admin) = self.system.sync_admin.take() {
            sync_admin.stop().await.expect("stop the sync admin API");
        }
    }

    /// Stops the user-service (the directory goes away).
    pub async fn stop_directory(&mut self) {
        if let Some(users) = self.system.users.take() {
            users.stop().await.expect("stop the user-service");
        }
    }
}

/// A browser-like client: no redirects followed, the session cookie kept.
pub struct Browser {
    http: reqwest::Client,
    /// The session cookie (`portal_session=…`) the portal last set.
    pub cookie: Option<String>,
    /// The address this browser claims to come from (as a proxy in front of the portal says).
    from: Option<String>,
}

/// An answer: status, `Location`, body.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Page {
    /// The value of the hidden `csrf` field.
    pub fn csrf(&self) -> String {
        let start = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a csrf field")
            + r#"name="csrf" value=""#.len();
        let end = self.body[start..].find('"').expect("end of the value") + start;
        self.body[start..end].to_owned()
    }
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            cookie: None,
            from: None,
        }
    }

    /// A browser at `address` (sent as `X-Forwarded-For`, which the portal believes from a
    /// local proxy).
    pub fn at(address: &str) -> Self {
        Self {
            from: Some(address.to_owned()),
            ..Self::new()
        }
    }

    /// A browser whose connections really come from `local` (a loopback address such as
    /// 127.0.0.2): no header claims anything, the portal sees the peer.
    pub fn bound(local: std::net::IpAddr) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(local)
                .build()
                .expect("client"),
            cookie: None,
            from: None,
        }
    }

    async fn read(&mut self, response: reqwest::Response) -> Page {
        if let Some(set) = response.headers().get("set-cookie") {
            let set = set.to_str().expect("cookie").to_owned();
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Strict"),
                "{set}"
            );
            let pair = set.split(';').next().expect("pair").to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        Page {
            status: response.status().as_u16(),
            location: response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .map(str::to_owned),
            body: response.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let mut req = self.http.get(url);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(from) = &self.from {
            req = req.header("x-forwarded-for", from);
        }
        let response = req.send().await.expect("GET");
        self.read(response).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let mut req = self.http.post(url).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if let Some(from) = &self.from {
            req = req.header("x-forwarded-for", from);
        }
        let response = req.send().await.expect("POST");
        self.read(response).await
    }

    /// Logs in through the login form; returns the answer to the POST.
    pub async fn log_in(&mut self, portal: &Portal, email: &str, password: &str) -> Page {
        let form = self.get(&portal.url("/login")).await;
        let csrf = form.csrf();
        self.post(
            &portal.url("/login"),
            &[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("next", "/"),
            ],
        )
        .await
    }
}

/// The seeded doctors, as the Doctor list shows them (sorted by last name).
pub async fn seeded_doctors(auth_db: &PgPool) -> Vec<String> {
    let names: Vec<(String, String)> = sqlx::query_as(
        "SELECT first_name, last_name FROM users WHERE role = 'doctor' AND is_active \
         ORDER BY lower(last_name), lower(first_name)",
    )
    .fetch_all(auth_db)
    .await
    .expect("doctors");
    names
        .into_iter()
        .map(|(f, l)| format!("Dr {f} {l}"))
        .collect()
}
