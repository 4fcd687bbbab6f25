//! The auth-service: registration, login (EdDSA JWTs) and admin user management over `auth_db`,
//! and the outbox relay that publishes every user change to RabbitMQ.
//!
//! Layout:
//! - [`store`]: users and outbox rows; every user write takes the open transaction and appends
//!   its event, so a change and its event commit together.
//! - [`bulk`]: many users and their events in two statements (imports, the benchmark).
//! - [`event_store`]: the history (`event_store`, written with each outbox row): audit trails,
//!   replay pages; [`retention`]: its monthly partitions, created ahead and dropped past
//!   `EVENT_RETENTION_DAYS`.
//! - [`http`]: the API (`/api/v1/auth/*`) and health endpoints.
//! - [`relay`]: outbox → `user.events`, batched, with pipelined publisher confirms (the shared
//!   `outbox` crate), and the saga's message outbox.
//! - [`consumers`]: the consumer registry and the receipts (per consumer and user, the highest
//!   version applied); [`control`]: the queue receipts and replies arrive on.
//! - [`offboarding`]: the offboarding saga (state, steps, timer).
//! - [`erasure`]: erasing a person's data: the record, its history, the texts naming them.
//! - [`password`]: the password policy; argon2id hashing on a few dedicated threads, off the
//!   async runtime, behind a bounded queue.
//! - [`sessions`]: refresh-token families: rotation, reuse detection, revocation.
//! - [`throttle`]: login attempts per account, growing delays and a temporary lock.
//! - [`seed`]: the demo staff, written through [`store`].
//! - [`settings`]: the settings of the service, the relay and the seed as `clap` groups, and
//!   how they become a [`Config`].
//!
//! [`Application::build`] binds and migrates; [`Application::run_until_stopped`] serves (and
//! relays) until the token is cancelled. `portal up`, `portal auth-service` and the tests all
//! start the service this way.

pub mod bulk;
pub mod consumers;
pub mod control;
pub mod erasure;
pub mod event_store;
pub mod http;
pub mod mfa;
pub mod offboarding;
pub mod password;
pub mod registrations;
pub mod relay;
pub mod retention;
pub mod scim;
pub mod seed;
pub mod sessions;
pub mod settings;
pub mod store;
pub mod throttle;

use anyhow::Context;
use platform::jwt::{JwtVerifier, KeyDir, KeyRing, LOCAL_ACCESS_TTL_SECONDS};
use platform::metrics::Metrics;
use platform::privilege::{self, Identity};
use platform::service::Service;
use relay::{CleanupMetrics, Relay, RelayConfig, RelayMetrics};
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use throttle::LoginPolicy;
use tokio_util::sync::CancellationToken;

/// Everything the auth-service is configured with; the CLI fills it from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP API listens (port 0 picks a free port, for tests).
    pub http_addr: SocketAddr,
    pub database_url: String,
    pub amqp_url: String,
    /// Holds the Ed25519 key pair; created on first start.
    pub key_dir: KeyDir,
    /// Access tokens' lifetime (60 to 900 seconds): they are signed for this long, and the
    /// service's own verifier refuses a token claiming to live longer.
    pub token_ttl_seconds: i64,
    pub security: SecurityConfig,
    /// Run the outbox relay inside this process (off when relays run as their own processes).
    pub run_relay: bool,
    /// How the offboarding saga waits and retries.
    pub offboarding: offboarding::OffboardingConfig,
    /// A deactivation not confirmed by a required consumer after this long is counted for the
    /// alert.
    pub receipt_alert_after: Duration,
    /// Largest number of database connections this process opens.
    pub max_db_connections: u32,
    /// The least-privilege setup (`portal setup`) owns the schema and the broker topology: this
    /// process, under an identity that may change neither, checks the schema is current
    /// instead of migrating, and declares nothing.
    pub managed_by_setup: bool,
    pub relay: RelayConfig,
    /// Monthly partitions of the event store that end this long ago are dropped
    /// (EVENT_RETENTION_DAYS); `None` keeps every event.
    pub event_retention: Option<Duration>,
}

impl Config {
    /// One machine's defaults around the given database, broker and keys: a free port, the
    /// relay in this process, a small pool (tests and tools start services this way).
    pub fn local(database_url: &str, amqp_url: &str, key_dir: &KeyDir) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: database_url.to_owned(),
            amqp_url: amqp_url.to_owned(),
            key_dir: key_dir.clone(),
            token_ttl_seconds: LOCAL_ACCESS_TTL_SECONDS,
            security: SecurityConfig::default(),
            run_relay: true,
            offboarding: offboarding::OffboardingConfig::default(),
            receipt_alert_after: DEFAULT_RECEIPT_ALERT_AFTER,
            max_db_connections: 6,
            managed_by_setup: false,
            relay: RelayConfig::default(),
            event_retention: None,
        }
    }
}

/// How long a required consumer may take to confirm a deactivation before the alert counts it,
/// unless RECEIPT_ALERT_AFTER says otherwise.
pub const DEFAULT_RECEIPT_ALERT_AFTER: Duration = Duration::from_secs(60);

/// How long a login lasts at most unless SESSION_TTL says otherwise.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Sessions and login protection.
#[derive(Debug, Clone)]
pub struct SecurityConfig {
    /// How long a login lasts at most, renewed or not.
    pub session_ttl: Duration,
    pub login: LoginPolicy,
    /// Whether `POST /register` takes requests for an account (an admin approves them).
    pub registration_enabled: bool,
    /// Password hashes that may wait or run at once; more are answered 503.
    pub hash_queue_limit: Option<usize>,
    /// How long a temporary password (creation, reset, import) logs in.
    pub temporary_password_ttl: Duration,
    /// Proxies whose `X-Forwarded-For` is believed; empty: any on this machine.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Who must sign in with a second factor. The default here (tests and tools) is
    /// `optional`; ADMIN_MFA's default for an install is `required`.
    pub mfa: mfa::MfaPolicy,
    /// How SCIM maps a directory's users onto the portal's.
    pub scim: scim::ScimConfig,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            session_ttl: DEFAULT_SESSION_TTL,
            login: LoginPolicy::default(),
            registration_enabled: false,
            hash_queue_limit: None,
            temporary_password_ttl: password::temporary::DEFAULT_TTL,
            trusted_proxies: Vec::new(),
            mfa: mfa::MfaPolicy::Optional,
            scim: scim::ScimConfig::default(),
        }
    }
}

/// The migrations of `auth_db`, which the least-privilege setup runs as the schema's owner.
pub static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates `auth_db` if absent, opens a pool and applies the migrations (a role that may change
/// the schema: development, tests, tools).
pub async fn prepare_database(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    platform::db::prepare(url, max_connections, &MIGRATIONS, "auth_db").await
}

/// The table rights of `auth_db` the least-privilege setup grants, as SQL run by the schema's
/// owner: the auth-service's role (`service`: users and their events in the outbox and the event
/// store, relaying and cleaning up the outbox, the store's partitions through the owner's
/// functions) and the operator's (`operator`: verify and replay read; reconcile appends repair
/// events and moves a version past a forged copy).
/// What a relay of its own (`portal relay`, role `relay`) may do in auth_db: claim unpublished
/// rows of the outbox (`FOR UPDATE SKIP LOCKED` needs an UPDATE right), mark them published,
/// remove published ones (its cleanup), declare itself waiting (`relay_wakeup`), and read the
/// schema's version. No right on `users`, the event store or any other table.
pub fn relay_grants(relay: &str) -> Vec<String> {
    vec![
        format!("GRANT SELECT, UPDATE (published_at), DELETE ON outbox TO \"{relay}\""),
        format!("GRANT SELECT, UPDATE ON relay_wakeup TO \"{relay}\""),
        format!("GRANT SELECT ON _sqlx_migrations TO \"{relay}\""),
    ]
}

pub fn grants(service: &str, operator: &str) -> Vec<String> {
    vec![
        format!("GRANT SELECT, INSERT, UPDATE ON users TO \"{service}\""),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO \"{service}\""),
        format!("GRANT USAGE, SELECT ON SEQUENCE outbox_seq_seq TO \"{service}\""),
        // The history: written with each outbox row, read for audit trails; its partitions are
        // made and dropped only through the schema owner's functions (`retention`).
        format!("GRANT SELECT, INSERT, UPDATE ON event_store TO \"{service}\""),
        format!(
            "GRANT EXECUTE ON FUNCTION event_store_maintain(integer), \
             event_store_expire(timestamptz) TO \"{service}\""
        ),
        format!("GRANT SELECT ON _sqlx_migrations TO \"{service}\""),
        format!("GRANT SELECT, UPDATE ON relay_wakeup TO \"{service}\""),
        format!("GRANT SELECT ON relay_wakeup TO \"{operator}\""),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON refresh_tokens, login_throttle, login_known_sources, registration_requests, \
             second_factors, recovery_codes, login_challenges TO \"{service}\""
        ),
        format!("GRANT SELECT, INSERT ON security_events TO \"{service}\""),
        // Erasure: its record, and the details of security events that named the person.
        format!("GRANT UPDATE (detail) ON security_events TO \"{service}\""),
        format!("GRANT SELECT, INSERT ON erasures TO \"{service}\""),
        // `portal erasure verify` reads the record's fingerprints; `purge` says when it ran.
        format!("GRANT SELECT, UPDATE (queues_purged_at) ON erasures TO \"{operator}\""),
        // ... and searches every table that may name the person.
        format!(
            "GRANT SELECT ON message_outbox, security_events, scim_users, registration_requests, \
             login_throttle, login_known_sources TO \"{operator}\""
        ),
        // Receipts, the saga and its message outbox; the registry is written by the setup and
        // the operator (`portal consumer add`), read here.
        format!("GRANT SELECT ON consumers TO \"{service}\""),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON consumer_versions, message_outbox, \
             offboardings, offboarding_steps, processed_messages TO \"{service}\""
        ),
        format!("GRANT SELECT, UPDATE ON message_relay_wakeup TO \"{service}\""),
        // SCIM: its clients' tokens and what it keeps of users.
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON scim_tokens, scim_users TO \"{service}\""
        ),
        format!(
            "GRANT USAGE, SELECT ON SEQUENCE message_outbox_seq_seq, offboarding_steps_id_seq \
             TO \"{service}\""
        ),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON consumers TO \"{operator}\""),
        format!(
            "GRANT SELECT, DELETE ON consumer_versions TO \"{operator}\""
        ),
        format!("GRANT SELECT ON offboardings, offboarding_steps TO \"{operator}\""),
        format!("GRANT USAGE, SELECT ON SEQUENCE security_events_id_seq TO \"{service}\""),
        // Every column but the password hash: the operator compares and repairs copies, which
        // hold no hash. (Revoked first: an install set up before had the whole table.)
        format!("REVOKE SELECT ON users FROM \"{operator}\""),
        format!(
            "GRANT SELECT (id, email, first_name, last_name, role, phone_number, is_active, \
             must_change_password, user_version, created_at, updated_at, erased_at) ON users \
             TO \"{operator}\""
        ),
        format!("GRANT SELECT ON outbox, _sqlx_migrations TO \"{operator}\""),
        format!("GRANT UPDATE (user_version) ON users TO \"{operator}\""),
        format!("GRANT INSERT ON outbox TO \"{operator}\""),
        // Replays and backfills read the history; repairs are appended to it.
        format!("GRANT SELECT, INSERT ON event_store TO \"{operator}\""),
        format!("GRANT USAGE, SELECT ON SEQUENCE outbox_seq_seq TO \"{operator}\""),
    ]
}

/// The service's pool: migrating when it may, or, when the setup manages the schema
/// (`managed_by_setup`), checking that every migration is applied.
pub async fn open_database(
    url: &str,
    max_connections: u32,
    managed_by_setup: bool,
) -> anyhow::Result<PgPool> {
    platform::db::open(
        url,
        max_connections,
        managed_by_setup,
        &MIGRATIONS,
        "auth_db",
    )
    .await
}

pub struct Application {
    listener: tokio::net::TcpListener,
    state: http::AppState,
    relay: Option<Relay>,
    /// The saga's outbox, its control queue and its timer: always in this process.
    messages: Relay,
    control: control::Control,
    runner: offboarding::runner::Runner,
    metrics: Arc<Metrics>,
    /// EVENT_RETENTION_DAYS, for the event store's maintenance.
    event_retention: Option<Duration>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = open_database(
            &config.database_url,
            config.max_db_connections,
            config.managed_by_setup,
        )
        .await?;
        let keys = KeyRing::open(&config.key_dir, config.token_ttl_seconds)?;
        let verifier = JwtVerifier::from_key_dir(&config.key_dir, config.token_ttl_seconds)?;
        if let Some(limit) = config.security.hash_queue_limit {
            password::set_queue_limit(limit);
        }
        let dummy_hash = password::hash(password::temporary()).await?;
        let relay_config = RelayConfig {
            declare_topology: !config.managed_by_setup,
            ..config.relay.clone()
        };
        let metrics = Metrics::new(Self::NAME)?;
        metrics.watch_pool(db.clone(), "auth_db")?;
        let broker = config
            .run_relay
            .then(|| Identity::rabbitmq("RELAY_AMQP_URL", &config.amqp_url));
        privilege::watch(
            Self::NAME,
            &metrics,
            config.managed_by_setup,
            [Identity::postgres("AUTH_DATABASE_URL", &db)]
                .into_iter()
                .chain(broker),
        )?;
        let runner = offboarding::runner::Runner::new(db.clone(), config.offboarding.clone());
        // The tables this service owns that grow with the traffic; their sizes and dead tuples
        // are what the retention alerts watch.
        metrics.watch_tables(
            db.clone(),
            "auth_db",
            &["outbox", "message_outbox", "event_store"],
        )?;
        let cleanup = CleanupMetrics::register(&metrics)?;
        let relay = match config.run_relay {
            true => Some(
                Relay::new(
                    relay::user_events(),
                    db.clone(),
                    config.amqp_url.clone(),
                    relay_config.clone(),
                )
                .with_metrics(RelayMetrics::register(
                    &metrics,
                    &relay::user_events(),
                    db.clone(),
                )?)
                .with_cleanup_metrics(cleanup.clone()),
            ),
            false => None,
        };
        // Saga messages are few: small batches; published ones are cleaned up as the user
        // outbox's are (they are no history: the saga's steps are).
        let messages = Relay::new(
            relay::messages(),
            db.clone(),
            config.amqp_url.clone(),
            RelayConfig {
                batch_size: 100,
                in_flight: 1,
                ..relay_config
            },
        )
        .with_cleanup_metrics(cleanup);
        let control = control::Control::new(
            db.clone(),
            config.amqp_url.clone(),
            !config.managed_by_setup,
            runner.clone(),
            Some(control::ControlMetrics::register(&metrics)?),
        );
        register_saga_metrics(&metrics, db.clone(), config.receipt_alert_after)?;
        // Its control queue and what it sets aside there (PortalDeadLetters covers it).
        let control_queue = contract::topology::ControlQueue::of(contract::topology::AUTH_SERVICE);
        metrics.watch_queues(
            &config.amqp_url,
            vec![control_queue.main.clone(), control_queue.dead_letter],
            vec![control_queue.main],
        )?;
        let listener = tokio::net::TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.http_addr))?;
        let state = http::AppState {
            db,
            keys: Arc::new(keys),
            verifier: Arc::new(verifier),
            dummy_hash: Arc::new(dummy_hash),
            broker_up: relay.as_ref().map(Relay::broker_up),
            security: Arc::new(config.security.clone()),
            bulk_turn: Arc::new(tokio::sync::Semaphore::new(1)),
            tag_key: password::temporary::TagKey::load_or_create(&config.key_dir.0)?,
            login_decisions: metrics.counter_vec(
                "portal_login_decisions_total",
                "Login attempts by the throttle's decision: allowed, slowed, pair_locked, source_locked.",
                &["decision"],
            )?,
            offboarding: runner.clone(),
        };
        Ok(Self {
            listener,
            state,
            relay,
            messages,
            control,
            runner,
            metrics,
            event_retention: config.event_retention,
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.state.db
    }
}

impl Service for Application {
    const NAME: &'static str = "auth-service";

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`; then stops taking requests, lets in-flight ones and the relay's
    /// current batch finish, and returns.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let relay = self.relay.map(|w| w.run(shutdown.clone()));
        let saga = {
            let (messages, control, runner) = (
                self.messages.run(shutdown.clone()),
                self.control.run(shutdown.clone()),
                self.runner.run(shutdown.clone()),
            );
            async move {
                tokio::join!(messages, control, runner, async {
                    if let Some(relay) = relay {
                        relay.await
                    }
                });
            }
        };
        tokio::spawn(housekeeping(self.state.clone(), shutdown.clone()));
        tokio::spawn(retention::run(
            self.state.db.clone(),
            self.event_retention,
            shutdown.clone(),
        ));
        let router = platform::metrics::instrument(http::router(self.state.clone()), &self.metrics);
        platform::http::serve_with_worker(
            Self::NAME,
            self.listener,
            router,
            Some(saga),
            &self.state.db,
            shutdown,
        )
        .await
    }
}

/// The saga's figures, read at each scrape: running offboardings by state, the stalled ones,
/// and per required consumer the deactivations it has not confirmed after `alert_after`.
fn register_saga_metrics(
    metrics: &Metrics,
    db: PgPool,
    alert_after: Duration,
) -> prometheus::Result<()> {
    let running = metrics.int_gauge_vec(
        "portal_offboardings_running",
        "Offboardings not finished, by state (awaiting-receipts, resolving-appointments).",
        &["state"],
    )?;
    let stalled = metrics.int_gauge(
        "portal_offboardings_stalled",
        "Offboardings waiting longer than their re-sends allow (the alert OffboardingStalled).",
    )?;
    let unconfirmed = metrics.int_gauge_vec(
        "portal_unconfirmed_deactivations",
        "Deactivations a required consumer has not confirmed after RECEIPT_ALERT_AFTER (the alert DeactivationNotConfirmed).",
        &["consumer"],
    )?;
    for state in ["awaiting-receipts", "resolving-appointments"] {
        running.with_label_values(&[state]);
    }
    metrics.on_scrape(move || {
        let (db, running, stalled, unconfirmed) = (
            db.clone(),
            running.clone(),
            stalled.clone(),
            unconfirmed.clone(),
        );
        async move {
            if let Ok((by_state, n)) = offboarding::store::counts(&db).await {
                for state in ["awaiting-receipts", "resolving-appointments"] {
                    let count = by_state
                        .iter()
                        .find(|(s, _)| {
                            offboarding::parse_stored(s).map(|s| s.as_str()) == Some(state)
                        })
                        .map_or(0, |(_, n)| *n);
                    running.with_label_values(&[state]).set(count);
                }
                stalled.set(n);
            }
            if let Ok(rows) = consumers::unconfirmed_deactivations(&db, alert_after).await {
                for (consumer, n) in rows {
                    unconfirmed.with_label_values(&[&consumer]).set(n);
                }
            }
        }
    });
    Ok(())
}

/// Every few seconds: picks up a key rotation (`portal keys rotate`) without a restart and
/// removes the retired keys past their kept time (`KeyRing::reload`); every
/// hour: deletes expired sessions, old throttle rows and requests for an account.
async fn housekeeping(state: http::AppState, shutdown: CancellationToken) {
    let mut keys = tokio::time::interval(Duration::from_secs(5));
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = keys.tick() => match state.keys.reload() {
                Ok(true) => tracing::info!(kid = %state.keys.kid(), "signing with a rotated key"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot re-read the JWT keys"),
            },
            _ = prune.tick() => {
                let pruned = async {
                    Ok::<_, sqlx::Error>((
                        sessions::prune(&state.db).await?,
                        throttle::prune(&state.db).await?,
                        registrations::prune(&state.db).await?
                            + mfa::prune(&state.db).await?,
                    ))
                };
                match pruned.await {
                    Ok((0, 0, 0)) => {}
                    Ok((tokens, rows, requests)) => tracing::info!(
                        tokens,
                        throttle_rows = rows,
                        registration_requests = requests,
                        "pruned expired sessions, throttle rows and requests for an account"
                    ),
                    Err(e) => tracing::debug!(error = %e, "cannot prune sessions now"),
                }
            }
        }
    }
}
