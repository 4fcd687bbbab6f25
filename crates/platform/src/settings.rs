//! The settings several parts read, as `clap` groups a command flattens (each part's own
//! settings live next to the part, in its crate's `settings` module): where the broker is,
//! whether the least-privilege setup manages the schema and topology, and where the
//! auth-service is for the parts that check its tokens. Every default is a constant defined
//! once, read by clap and by the code that needs it.

use clap::Args;

/// RabbitMQ on this machine as a development install has it.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The auth-service where `portal up` and a one-machine install run it.
pub const DEFAULT_AUTH_SERVICE_URL: &str = "http://127.0.0.1:3001";

/// The broker every part connects to unless it has an identity of its own.
#[derive(Args, Debug, Clone)]
pub struct BrokerArgs {
    /// RabbitMQ [default: amqp://guest:***@127.0.0.1:5672/%2f] (its value is never shown: it
    /// holds a password). A cluster: one URL per node, comma-separated; connections take the
    /// first node that answers and move to another when theirs is lost (as every *_AMQP_URL).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = DEFAULT_AMQP_URL,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: String,
}

/// Whether `portal setup` owns the schema and the broker topology.
#[derive(Args, Debug, Clone)]
pub struct SetupStateArgs {
    /// Set by `portal setup` in the credentials file: the schema and the broker topology are the
    /// setup's, so the services (under identities that may change neither) only check them.
    #[arg(long, env = "MANAGED_BY_SETUP")]
    pub managed_by_setup: bool,
}

/// Where a part finds the auth-service: its public keys (every part that checks tokens) and,
/// for the gateway, the replicas it routes to.
#[derive(Args, Debug, Clone)]
pub struct AuthLocationArgs {
    /// The auth-service as the other parts reach it; several replicas comma-separated
    /// [default: http://127.0.0.1:3001; under `portal up`, the auth-service it runs].
    #[arg(long, env = "AUTH_SERVICE_URL")]
    pub auth_service_url: Option<String>,
    /// Where the other parts fetch the auth-service's public keys
    /// [default: AUTH_SERVICE_URL/api/v1/auth/.well-known/jwks.json, each replica's in turn].
    #[arg(long, env = "JWKS_URL")]
    pub jwks_url: Option<String>,
}

impl AuthLocationArgs {
    /// AUTH_SERVICE_URL, else `fallback` (the standard address, or the one `portal up` bound).
    pub fn auth_service_url_or(&self, fallback: &str) -> String {
        self.auth_service_url
            .clone()
            .unwrap_or_else(|| fallback.to_owned())
    }

    /// Where the auth-service publishes its public keys: JWKS_URL, else each replica's of
    /// [`Self::auth_service_url_or`] in turn.
    pub fn jwks_url_or(&self, fallback: &str) -> String {
        self.jwks_url.clone().unwrap_or_else(|| {
            crate::addresses::split(&self.auth_service_url_or(fallback))
                .into_iter()
                .map(|base| format!("{}{}", base.trim_end_matches('/'), crate::jwt::JWKS_PATH))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}
