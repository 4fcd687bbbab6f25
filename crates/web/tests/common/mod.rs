//! The whole system for the web portal's tests, in this process on a test's sandbox: the
//! auth-service (with its relay) seeded with the 10 demo users, the user-service, the
//! appointment-service (backfilled), the sync admin API, the gateway in front of them and the
//! portal in front of the gateway; and a small browser-like HTTP client that keeps the session cookie.
#![allow(dead_code)] // each test binary uses a part

use contract::topology::{ConsumerQueues, APPOINTMENT_SERVICE};
use sandbox::{poll_until, Running, Sandbox, SETTLE};
use sqlx::PgPool;

/// The seeded admin's login.
pub const ADMIN_EMAIL: &str = "admin@clinic.co.zw";
pub const ADMIN_PASSWORD: &str = "evening handover at the desk";
/// The seeded staff's password (every seeded non-admin).
pub const STAFF_PASSWORD: &str = "ward round at seven";

pub struct Portal {
    pub sb: Sandbox,
    pub auth: Running,
    pub users: Option<Running>,
    pub appointments: Running,
    pub sync_admin: Option<Running>,
    pub gateway: Running,
    pub web: Running,
    pub auth_db: PgPool,
}

impl Portal {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`Portal::start`] with the gateway's configuration adjusted by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut gateway::Config)) -> Self {
        let sb = Sandbox::for_test().await;
        let auth = Running::launch(auth_service::Application::build(
            auth_service::Config::local(&sb.database_url("auth"), &sb.amqp_url, &sb.key_dir),
        ))
        .await;
        let users = Running::launch(user_service::Application::build(
            user_service::Config::local(&sb.database_url("user"), &sb.amqp_url, &sb.key_dir),
        ))
        .await;
        let appointments = Running::launch(appointment_service::Application::build(
            appointment_service::Config::local(
                &sb.database_url("appointment"),
                &sb.amqp_url,
                &sb.key_dir,
            ),
        ))
        .await;
        let sync_admin =
            Running::launch(sync_admin::Application::build(sync_admin::Config::local(
                &sb.database_url("auth"),
                &sb.database_url("user"),
                &sb.database_url("appointment"),
                &sb.amqp_url,
                &sb.key_dir,
            )))
            .await;
        let mut gateway_config = gateway::Config::local(&auth.url(), &users.url());
        gateway_config.appointments_url = Some(appointments.url());
        gateway_config.sync_admin_url = Some(sync_admin.url());
        // The portal logs many people in from one address in these tests.
        gateway_config.auth_rate_limit = gateway::AuthRateLimit {
            per_minute: 10_000,
            burst: 10_000,
        };
        // The portal is the proxy in front of the gateway (as `portal up` sets it).
        gateway_config.trusted_proxies = vec![std::net::Ipv4Addr::LOCALHOST.into()];
        adjust(&mut gateway_config);
        let gateway = Running::launch(gateway::Application::build(gateway_config)).await;
        let web =
            Running::launch(web::Application::build(web::Config::local(&gateway.url()))).await;
        let auth_db = auth_service::prepare_database(&sb.database_url("auth"), 4)
            .await
            .expect("auth_db");
        // Both consumers' queues exist before the seed's events are published.
        platform::amqp::ensure_topology(
            &sb.amqp_url,
            &[
                ConsumerQueues::for_consumer(contract::topology::USER_SERVICE),
                ConsumerQueues::for_consumer(APPOINTMENT_SERVICE),
            ],
        )
        .await
        .expect("topology");
        auth_service::seed::seed(
            &auth_db,
            &auth_service::seed::SeedOptions {
                admin_email: contract::Email::parse(ADMIN_EMAIL).expect("email"),
                admin_password: Some(ADMIN_PASSWORD.into()),
                staff_password: Some(STAFF_PASSWORD.into()),
            },
        )
        .await
        .expect("seed");
        ops::replay::backfill(
            &auth_db,
            &sb.amqp_url,
            &ConsumerQueues::for_consumer(APPOINTMENT_SERVICE).main,
            |_| {},
        )
        .await
        .expect("backfill");
        let portal = Self {
            sb,
            auth,
            users: Some(users),
            appointments,
            sync_admin: Some(sync_admin),
            gateway,
            web,
            auth_db,
        };
        portal.wait_ready().await;
        portal
    }

    /// Waits until the appointment-service is ready (it knows every seeded doctor) and the
    /// directory lists the 6 seeded doctors.
    pub async fn wait_ready(&self) {
        let ready = format!("{}/health/ready", self.appointments.url());
        poll_until(SETTLE, "the appointment-service ready", || async {
            (sandbox::http::get(&ready, None).await.0 == 200).then_some(())
        })
        .await;
        let user_db = platform::db::lazy_pool(&self.sb.database_url("user"), 1).expect("pool");
        poll_until(SETTLE, "the seed in user_db", || async {
            (sandbox::db::count(&user_db, "SELECT count(*) FROM users").await == 10).then_some(())
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.web.url())
    }

    /// Stops the sync admin API.
    pub async fn stop_sync_admin(&mut self) {
        if let Some(sync_admin) = self.sync_admin.take() {
            sync_admin.stop().await.expect("stop the sync admin API");
        }
    }

    /// Stops the user-service (the directory goes away).
    pub async fn stop_directory(&mut self) {
        if let Some(users) = self.users.take() {
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

/// The `Dr …` options of the Doctor list in `body`.
pub fn doctor_options(body: &str) -> Vec<String> {
    let Some(start) = body.find(r#"<select id="doctorId""#) else {
        return Vec::new();
    };
    let end = body[start..]
        .find("</select>")
        .map_or(body.len(), |e| e + start);
    body[start..end]
        .split("<option")
        .filter_map(|o| o.split_once('>').map(|(_, rest)| rest))
        .filter_map(|rest| rest.split("</option>").next())
        .filter(|text| text.starts_with("Dr "))
        .map(str::to_owned)
        .collect()
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
