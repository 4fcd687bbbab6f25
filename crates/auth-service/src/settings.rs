//! The auth-service's settings as `clap` groups (`portal auth-service`, `portal relay`,
//! `portal seed`, `portal up` flatten the ones they use), each turned into the service's
//! configuration here, next to the code that reads it. Defaults are the constants the
//! configuration's `Default`s use.

use crate::offboarding::OffboardingConfig;
use crate::relay::RelayConfig;
use crate::throttle::LoginPolicy;
use crate::{Config, SecurityConfig};
use anyhow::Context;
use clap::Args;
use platform::duration::Interval;
use platform::jwt::KeyDir;
use platform::settings::{Link, TokenLifetimeArgs};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// `auth_db` on a development machine.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/auth_db";
/// Where the auth-service listens by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3001";
/// The seeded admin's email.
pub const DEFAULT_SEED_ADMIN_EMAIL: &str = "admin@clinic.co.zw";

/// `auth_db`: the auth-service, the relay, the seed and the setup read it.
#[derive(Args, Debug, Clone)]
pub struct AuthDbArgs {
    /// auth-service database (its value is never shown: it may hold a password).
    #[arg(
        long,
        env = "AUTH_DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true
    )]
    pub auth_database_url: String,
}

/// The JWT key pair's directory: the auth-service signs with it, `portal keys rotate` turns it.
#[derive(Args, Debug, Clone)]
pub struct KeyDirArgs {
    /// Directory of the JWT Ed25519 key pair (created by the auth-service on first start).
    #[arg(long, env = "JWT_KEY_DIR", default_value = ".portal/keys")]
    pub jwt_key_dir: PathBuf,
}

impl KeyDirArgs {
    pub fn key_dir(&self) -> KeyDir {
        KeyDir(self.jwt_key_dir.clone())
    }
}

/// SCIM provisioning (`/scim/v2`): how a directory's users map onto the portal's.
#[derive(Args, Debug, Clone)]
pub struct ScimArgs {
    /// Which SCIM `roles` values give which portal role: `value=role` pairs, comma-separated,
    /// values compared without regard to case (e.g. `Doctors=doctor,Nursing=nurse`). A role
    /// the map does not name (admin, by default) is never given or taken through SCIM.
    #[arg(long, env = "SCIM_ROLE_MAP", default_value = crate::scim::DEFAULT_ROLE_MAP, value_parser = crate::scim::parse_role_map)]
    pub scim_role_map: std::collections::BTreeMap<String, contract::Role>,
    /// The role of a user a directory creates without a `roles` value; unset: such a create
    /// is refused (400) naming the missing attribute.
    #[arg(long, env = "SCIM_DEFAULT_ROLE")]
    pub scim_default_role: Option<contract::Role>,
    /// The public URL of `/scim/v2` (e.g. `https://portal.hospital.example/scim/v2`), for the
    /// `meta.location` of each resource; unset: from the host the client asked for.
    #[arg(long, env = "SCIM_BASE_URL")]
    pub scim_base_url: Option<String>,
}

impl ScimArgs {
    pub fn config(&self) -> crate::scim::ScimConfig {
        crate::scim::ScimConfig {
            role_map: self.scim_role_map.clone(),
            default_role: self.scim_default_role,
            base_url: self.scim_base_url.clone(),
        }
    }
}

/// The auth-service's own settings: where it listens, tokens, sessions, login protection.
#[derive(Args, Debug, Clone)]
pub struct AuthServiceArgs {
    /// Where the auth-service listens.
    #[arg(long, env = "AUTH_ADDR", default_value = DEFAULT_ADDR)]
    pub auth_addr: SocketAddr,
    #[command(flatten)]
    pub scim: ScimArgs,
    /// TOKEN_TTL_SECONDS: shared with every part that checks the tokens, which refuse longer.
    #[command(flatten)]
    pub tokens: TokenLifetimeArgs,
    /// How long a login lasts at most, renewed or not (its refresh tokens' absolute expiry).
    #[arg(long, env = "SESSION_TTL", default_value_t = Interval(crate::DEFAULT_SESSION_TTL))]
    pub session_ttl: Interval,
    /// How long a temporary password (account creation, reset, import) logs in; it must be
    /// changed at first use.
    #[arg(long, env = "TEMPORARY_PASSWORD_TTL", default_value_t = Interval(crate::password::temporary::DEFAULT_TTL))]
    pub temporary_password_ttl: Interval,
    /// Whether anyone may ask for an account (`POST /api/v1/auth/register`): a request with no
    /// role and no password that an admin approves with a role and a temporary password.
    #[arg(long, env = "REGISTRATION_ENABLED", default_value_t = false, action = clap::ArgAction::Set)]
    pub registration_enabled: bool,
    /// Failed logins of one account from one address within a minute before that pair (not
    /// the account) is locked.
    #[arg(long, env = "LOGIN_MAX_FAILURES", default_value_t = LoginPolicy::DEFAULT_MAX_FAILURES, value_parser = clap::value_parser!(i32).range(3..=1000))]
    pub login_max_failures: i32,
    /// How long a locked account-and-address pair stays locked.
    #[arg(long, env = "LOGIN_LOCK", default_value_t = Interval(LoginPolicy::DEFAULT_LOCK))]
    pub login_lock: Interval,
    /// Login attempts from one address (IPv6: one /64) at any accounts within ten minutes
    /// before the address is locked for 15 minutes at accounts it never signed in to.
    #[arg(long, env = "LOGIN_SOURCE_MAX_FAILURES", default_value_t = LoginPolicy::DEFAULT_SOURCE_MAX_FAILURES, value_parser = clap::value_parser!(i32).range(10..=100_000))]
    pub login_source_max_failures: i32,
    /// Attempts at one account from anywhere within 15 minutes before attempts from addresses
    /// it never signed in from are slowed (0.5 s, doubling, at most 16 s; never locked).
    #[arg(long, env = "LOGIN_ACCOUNT_SLOW_AFTER", default_value_t = LoginPolicy::DEFAULT_ACCOUNT_SLOW_AFTER, value_parser = clap::value_parser!(i32).range(5..=100_000))]
    pub login_account_slow_after: i32,
    /// Who must sign in with a second factor (TOTP): `required` (admins without one enrol at
    /// their next sign-in), `optional` (anyone may enrol, and is then asked for a code) or `off`
    /// [default: required; `portal up`, the development system: optional].
    #[arg(long, env = "ADMIN_MFA", value_enum)]
    pub admin_mfa: Option<crate::mfa::MfaPolicy>,
    /// Proxies in front of the auth-service (the gateway's addresses, comma-separated) whose
    /// `X-Forwarded-For` names the client the login throttle counts [default: any address on
    /// this machine].
    #[arg(long, env = "AUTH_TRUSTED_PROXIES", value_delimiter = ',')]
    pub auth_trusted_proxies: Vec<std::net::IpAddr>,
    /// Password hashes that may wait or run at once before logins are answered 503
    /// [default: 16 per core].
    #[arg(long, env = "HASH_QUEUE_LIMIT", value_parser = clap::value_parser!(u32).range(1..))]
    pub hash_queue_limit: Option<u32>,
    /// How long an offboarding waits for each required consumer's receipt (and then for the
    /// appointment-service's reply) before sending again.
    #[arg(long, env = "OFFBOARDING_TIMEOUT", default_value_t = Interval(OffboardingConfig::DEFAULT_TIMEOUT))]
    pub offboarding_timeout: Interval,
    /// How many times an offboarding sends again before it shows as stalled (it still goes on
    /// when the answer comes).
    #[arg(long, env = "OFFBOARDING_RESENDS", default_value_t = OffboardingConfig::DEFAULT_RESENDS, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub offboarding_resends: u32,
    /// While an offboarding is stalled, how often it sends again what it waits for.
    #[arg(long, env = "OFFBOARDING_STALLED_EVERY", default_value_t = Interval(OffboardingConfig::DEFAULT_STALLED_EVERY))]
    pub offboarding_stalled_every: Interval,
    /// Finished offboardings and their steps are deleted this many days after they ended.
    #[arg(long, env = "OFFBOARDING_RETENTION_DAYS", default_value_t = OffboardingConfig::DEFAULT_RETENTION_DAYS, value_parser = clap::value_parser!(u64).range(1..))]
    pub offboarding_retention_days: u64,
    /// A deactivation a required consumer has not confirmed after this long counts in
    /// `portal_unconfirmed_deactivations` (the alert `DeactivationNotConfirmed`).
    #[arg(long, env = "RECEIPT_ALERT_AFTER", default_value_t = Interval(crate::DEFAULT_RECEIPT_ALERT_AFTER))]
    pub receipt_alert_after: Interval,
    /// Keep this many days of the event store: monthly partitions that end longer ago are
    /// dropped whole (checked hourly) [default: keep every event]. The users table, the
    /// security log and the erasure records are never expired.
    #[arg(long, env = "EVENT_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub event_retention_days: Option<u32>,
}

impl AuthServiceArgs {
    /// The service's configuration: these settings, `auth_db`, the keys, the relay's broker
    /// identity and settings (`run_relay`: inside this process).
    pub fn into_config(
        &self,
        db: &AuthDbArgs,
        keys: &KeyDirArgs,
        relay: &RelayArgs,
        amqp_url: &str,
        managed_by_setup: bool,
        run_relay: bool,
    ) -> Config {
        Config {
            http_addr: self.auth_addr,
            database_url: db.auth_database_url.clone(),
            amqp_url: relay.amqp_url_or(amqp_url).to_owned(),
            key_dir: keys.key_dir(),
            token_ttl_seconds: self.tokens.token_ttl_seconds,
            security: SecurityConfig {
                session_ttl: self.session_ttl.0,
                login: LoginPolicy {
                    max_failures: self.login_max_failures,
                    lock: self.login_lock.0,
                    source_max_failures: self.login_source_max_failures,
                    account_slow_after: self.login_account_slow_after,
                    ..LoginPolicy::default()
                },
                registration_enabled: self.registration_enabled,
                trusted_proxies: self.auth_trusted_proxies.clone(),
                mfa: self.admin_mfa.unwrap_or(crate::mfa::MfaPolicy::Required),
                hash_queue_limit: self.hash_queue_limit.map(|n| n as usize),
                temporary_password_ttl: self.temporary_password_ttl.0,
                scim: self.scim.config(),
            },
            run_relay,
            offboarding: OffboardingConfig {
                timeout: self.offboarding_timeout.0,
                resends: self.offboarding_resends,
                stalled_every: self.offboarding_stalled_every.0,
                retention: std::time::Duration::from_secs(self.offboarding_retention_days * 86_400),
                ..OffboardingConfig::default()
            },
            receipt_alert_after: self.receipt_alert_after.0,
            max_db_connections: 16,
            managed_by_setup,
            relay: relay.into_config(managed_by_setup),
            event_retention: self
                .event_retention_days
                .map(|days| Duration::from_secs(u64::from(days) * 86_400)),
        }
    }
}

/// The outbox relay's settings, inside the auth-service or alone (`portal relay`).
#[derive(Args, Debug, Clone)]
pub struct RelayArgs {
    /// RabbitMQ as the outbox relay (`portal auth-service`, `portal relay`) [default: AMQP_URL].
    #[arg(long, env = "RELAY_AMQP_URL", hide_env_values = true)]
    pub relay_amqp_url: Option<String>,
    #[command(flatten)]
    pub tuning: RelayTuningArgs,
    /// OUTBOX_KEEP_PUBLISHED_SECS: also read by the appointment-service's relay.
    #[command(flatten)]
    pub outbox: outbox::settings::OutboxArgs,
}

/// How the relay batches: also what the chaos run gives the relays it starts.
#[derive(Args, Debug, Clone)]
pub struct RelayTuningArgs {
    /// Outbox rows the relay publishes per batch (1 = naive, one confirm awaited per event).
    #[arg(long, env = "RELAY_BATCH_SIZE", default_value_t = RelayConfig::DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub relay_batch_size: i64,
    /// Relay batches whose confirms may be outstanding at once (1 = wait for each batch).
    #[arg(long, env = "RELAY_IN_FLIGHT", default_value_t = RelayConfig::DEFAULT_IN_FLIGHT, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub relay_in_flight: u16,
}

impl RelayTuningArgs {
    /// The variables a relay process is started with to run this way.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("RELAY_BATCH_SIZE", self.relay_batch_size.to_string()),
            ("RELAY_IN_FLIGHT", self.relay_in_flight.to_string()),
        ]
    }
}

impl RelayArgs {
    /// RELAY_AMQP_URL, else the shared `amqp_url`.
    pub fn amqp_url_or<'a>(&'a self, amqp_url: &'a str) -> &'a str {
        self.relay_amqp_url.as_deref().unwrap_or(amqp_url)
    }

    /// The broker URL the relay connects with ([`Self::amqp_url_or`]) and the setting that
    /// gave it, for the plaintext rule (`amqps://` or this machine).
    pub fn broker_link(&self, amqp_url: &str) -> Link {
        match &self.relay_amqp_url {
            Some(url) => Link::amqp("RELAY_AMQP_URL", url.as_str()),
            None => Link::amqp("AMQP_URL", amqp_url),
        }
    }

    pub fn into_config(&self, managed_by_setup: bool) -> RelayConfig {
        RelayConfig {
            batch_size: self.tuning.relay_batch_size,
            in_flight: usize::from(self.tuning.relay_in_flight),
            cleanup: self.outbox.cleanup(),
            declare_topology: !managed_by_setup,
            ..RelayConfig::default()
        }
    }
}

/// Where a relay running alone serves its health and metrics.
#[derive(Args, Debug, Clone)]
pub struct RelayHttpArgs {
    /// The port of a standalone relay's health and metrics (`portal relay`), on
    /// RELAY_HTTP_HOST.
    #[arg(long, env = "RELAY_HTTP_PORT", default_value_t = 3005)]
    pub relay_http_port: u16,
    /// The address a standalone relay's health and metrics listen on.
    #[arg(long, env = "RELAY_HTTP_HOST", default_value = "127.0.0.1")]
    pub relay_http_host: IpAddr,
}

impl RelayHttpArgs {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.relay_http_host, self.relay_http_port)
    }
}

/// The demo staff `portal seed` and `portal up` create in an empty `auth_db`.
#[derive(Args, Debug, Clone)]
pub struct SeedArgs {
    /// Seeded admin's email.
    #[arg(long, env = "SEED_ADMIN_EMAIL", default_value = DEFAULT_SEED_ADMIN_EMAIL)]
    pub seed_admin_email: String,
    /// Seeded admin's password [default: random, printed once].
    #[arg(long, env = "SEED_ADMIN_PASSWORD", hide_env_values = true)]
    pub seed_admin_password: Option<String>,
    /// Password of the 9 seeded staff [default: random and unknown; an admin resets them:
    /// `portal users reset-password <email>`].
    #[arg(long, env = "SEED_STAFF_PASSWORD", hide_env_values = true)]
    pub seed_staff_password: Option<String>,
}

impl SeedArgs {
    /// The seed's options; a malformed SEED_ADMIN_EMAIL is named.
    pub fn into_options(&self) -> anyhow::Result<crate::seed::SeedOptions> {
        Ok(crate::seed::SeedOptions {
            admin_email: contract::Email::parse(&self.seed_admin_email)
                .context("SEED_ADMIN_EMAIL")?,
            admin_password: self.seed_admin_password.clone(),
            staff_password: self.seed_staff_password.clone(),
        })
    }
}
