//! Test harness for tests that cross PostgreSQL and RabbitMQ for real.
//!
//! Each [`TestEnv`] owns two fresh databases (`pt_<id>_auth`, `pt_<id>_user`), a private
//! RabbitMQ vhost (`pt-<id>`, so the real topology names are used without colliding with other
//! tests) and its own JWT key pair; dropping it removes them all. Services start on free ports
//! through the same `Application::build` the `portal` binary uses. [`poll_until`] waits with a
//! deadline instead of sleeping, and [`proxy::TcpProxy`] cuts a link on demand.

pub mod proxy;

use anyhow::Context;
use auth_service::relay::RelayConfig;
use contract::{Email, PersonName, Role};
use platform::jwt::KeyDir;
use sqlx::PgPool;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use user_service::consumer::ConsumerConfig;

/// The PostgreSQL server tests use (override with `TEST_DATABASE_URL`, no database name).
pub fn pg_server() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// RabbitMQ's AMQP address and management API (override with `TEST_AMQP_HOST`,
/// `TEST_RABBITMQ_MANAGEMENT_URL`).
pub fn amqp_host() -> String {
    std::env::var("TEST_AMQP_HOST").unwrap_or_else(|_| "127.0.0.1:5672".into())
}

pub fn management_url() -> String {
    std::env::var("TEST_RABBITMQ_MANAGEMENT_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:15672".into())
}

pub const TEST_PASSWORD: &str = "correct-horse-battery";

/// Everything one test owns.
pub struct TestEnv {
    pub id: String,
    pub auth_db_url: String,
    pub user_db_url: String,
    pub vhost: String,
    pub amqp_url: String,
    pub key_dir: KeyDir,
    http: reqwest::Client,
}

impl TestEnv {
    pub async fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let vhost = format!("pt-{id}");
        let http = reqwest::Client::new();
        let mgmt = management_url();
        http.put(format!("{mgmt}/api/vhosts/{vhost}"))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("create RabbitMQ vhost (is the management plugin enabled?)");
        http.put(format!("{mgmt}/api/permissions/{vhost}/guest"))
            .basic_auth("guest", Some("guest"))
            .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("grant guest on the test vhost");
        let key_dir = KeyDir(std::env::temp_dir().join(format!("portal-test-keys-{id}")));
        key_dir.ensure_key_pair().expect("create test key pair");
        let server = pg_server();
        Self {
            auth_db_url: format!("{server}/pt_{id}_auth"),
            user_db_url: format!("{server}/pt_{id}_user"),
            amqp_url: format!("amqp://guest:guest@{}/{vhost}", amqp_host()),
            vhost,
            id,
            key_dir,
            http,
        }
    }

    pub fn auth_config(&self) -> auth_service::Config {
        auth_service::Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: self.auth_db_url.clone(),
            amqp_url: self.amqp_url.clone(),
            key_dir: self.key_dir.clone(),
            token_ttl_seconds: 600,
            run_relay: true,
            max_db_connections: 6,
            relay: RelayConfig::default(),
        }
    }

    pub fn user_config(&self) -> user_service::Config {
        user_service::Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: self.user_db_url.clone(),
            amqp_url: self.amqp_url.clone(),
            key_dir: self.key_dir.clone(),
            run_consumer: true,
            max_db_connections: 6,
            consumer: ConsumerConfig::default(),
        }
    }

    /// Starts an auth-service (with relay) built from `config`.
    pub async fn start_auth_with(&self, config: auth_service::Config) -> Running {
        let app = auth_service::Application::build(config)
            .await
            .expect("build auth-service");
        let addr = app.local_addr().expect("auth-service address");
        Running::spawn(addr, |t| app.run_until_stopped(t))
    }

    pub async fn start_auth(&self) -> Running {
        self.start_auth_with(self.auth_config()).await
    }

    pub async fn start_users_with(&self, config: user_service::Config) -> Running {
        let app = user_service::Application::build(config)
            .await
            .expect("build user-service");
        let addr = app.local_addr().expect("user-service address");
        Running::spawn(addr, |t| app.run_until_stopped(t))
    }

    pub async fn start_users(&self) -> Running {
        self.start_users_with(self.user_config()).await
    }

    pub async fn start_gateway(&self, auth: &Running, users: &Running) -> Running {
        let app = gateway::Application::build(gateway::Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth_url: auth.url(),
            users_url: users.url(),
            upstream_timeout: Duration::from_secs(10),
        })
        .await
        .expect("build gateway");
        let addr = app.local_addr().expect("gateway address");
        Running::spawn(addr, |t| app.run_until_stopped(t))
    }

    /// auth-service, user-service and gateway, all running.
    pub async fn start_system(&self) -> System {
        let auth = self.start_auth().await;
        let users = self.start_users().await;
        let gateway = self.start_gateway(&auth, &users).await;
        System {
            auth,
            users,
            gateway,
        }
    }

    pub async fn auth_pool(&self) -> PgPool {
        auth_service::prepare_database(&self.auth_db_url, 4)
            .await
            .expect("auth_db")
    }

    pub async fn user_pool(&self) -> PgPool {
        user_service::prepare_database(&self.user_db_url, 4)
            .await
            .expect("user_db")
    }

    /// Writes an active user with [`TEST_PASSWORD`] through the auth-service's store (so it has
    /// its outbox event) and returns its id.
    pub async fn create_user(&self, pool: &PgPool, email: &str, role: Role) -> uuid::Uuid {
        let new = auth_service::store::NewUser {
            email: Email::parse(email).expect("test email"),
            password_hash: auth_service::password::hash(TEST_PASSWORD.into())
                .await
                .expect("hash"),
            first_name: PersonName::parse("firstName", "Test").expect("name"),
            last_name: PersonName::parse("lastName", email).expect("name"),
            role,
            phone_number: None,
            is_active: true,
            must_change_password: false,
        };
        let mut tx = pool.begin().await.expect("begin");
        let row = auth_service::store::create_user(&mut tx, new)
            .await
            .expect("create user");
        tx.commit().await.expect("commit");
        row.id
    }

    /// Creates an admin and logs in through `base_url` (a service or the gateway).
    pub async fn admin_token(&self, base_url: &str) -> String {
        let pool = self.auth_pool().await;
        let email = format!("admin-{}@test.example", uuid::Uuid::new_v4().simple());
        self.create_user(&pool, &email, Role::Admin).await;
        self.login(base_url, &email, TEST_PASSWORD).await
    }

    pub async fn login(&self, base_url: &str, email: &str, password: &str) -> String {
        let resp: serde_json::Value = self
            .http
            .post(format!("{base_url}/api/v1/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("login")
            .json()
            .await
            .expect("login JSON");
        resp["accessToken"]
            .as_str()
            .expect("accessToken")
            .to_owned()
    }

    /// Messages ready in a queue of this test's vhost (a passive declare: exact, unlike the
    /// management API's sampled statistics).
    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(platform::amqp::ready_messages(&self.amqp_url, queue).await?)
    }

    /// Publishes `bodies`, in this order, straight to the user-service's queue (bypassing the
    /// exchange), with confirms; used to deliver events duplicated, reordered or malformed.
    pub async fn publish_to_user_service_queue(&self, bodies: &[Vec<u8>]) -> anyhow::Result<()> {
        use lapin::options::ConfirmSelectOptions;
        let conn = platform::amqp::connect(&self.amqp_url, "test publisher").await?;
        let ch = conn.create_channel().await?;
        platform::amqp::declare_topology(
            &ch,
            &[contract::topology::ConsumerQueues::for_consumer(
                contract::topology::USER_SERVICE,
            )],
        )
        .await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let queue =
            contract::topology::ConsumerQueues::for_consumer(contract::topology::USER_SERVICE).main;
        let messages: Vec<_> = bodies
            .iter()
            .map(|body| platform::amqp::Outgoing {
                exchange: "",
                routing_key: &queue,
                body,
                properties: platform::amqp::persistent(),
            })
            .collect();
        platform::amqp::publish_confirmed(&ch, messages)
            .await
            .require_all()?;
        conn.close(200, "done").await.ok();
        Ok(())
    }

    /// The outbox bodies in sequence order, as the relay would publish them.
    pub async fn outbox_bodies(&self, pool: &PgPool) -> anyhow::Result<Vec<Vec<u8>>> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT body::text FROM outbox ORDER BY seq")
            .fetch_all(pool)
            .await?;
        Ok(rows.into_iter().map(String::into_bytes).collect())
    }

    /// Removes the databases, the vhost and the keys. Runs on drop too; calling it is optional.
    fn cleanup(&self) {
        let (id, vhost, server) = (self.id.clone(), self.vhost.clone(), pg_server());
        let key_dir = self.key_dir.0.clone();
        // Drop runs outside async context: clean up on a thread with its own small runtime.
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(pool) = platform::db::lazy_pool(&format!("{server}/postgres"), 1) {
                    for db in [format!("pt_{id}_auth"), format!("pt_{id}_user")] {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                                .execute(&pool)
                                .await;
                    }
                    pool.close().await;
                }
                let _ = reqwest::Client::new()
                    .delete(format!("{}/api/vhosts/{vhost}", management_url()))
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await;
            });
            let _ = std::fs::remove_dir_all(key_dir);
        });
        let _ = done.join();
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A service running in this test process.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    fn spawn<F, Fut>(addr: SocketAddr, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(run(shutdown.clone()));
        Self {
            addr,
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the service the way SIGTERM does and waits until it has finished.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(h) => h.await.context("service task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct System {
    pub auth: Running,
    pub users: Running,
    pub gateway: Running,
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `user_db` holds `id` at `version` or newer.
pub async fn wait_for_user_version(pool: &PgPool, id: uuid::Uuid, version: i64, timeout: Duration) {
    poll_until(
        timeout,
        &format!("user {id} at version {version} in user_db"),
        || async {
            let v: Option<Option<i64>> =
                sqlx::query_scalar("SELECT user_version FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .ok()?;
            (v.flatten()? >= version).then_some(())
        },
    )
    .await
}
