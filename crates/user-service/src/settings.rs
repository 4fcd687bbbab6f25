//! The user-service's settings as `clap` groups (`portal user-service` and `portal up` flatten
//! them with the consumer's, the broker's, the auth-service's whereabouts and the token checks'),
//! and how they become its [`Config`].

use crate::Config;
use clap::Args;
use consumer::settings::ConsumerArgs;
use platform::settings::{BrokerArgs, Link, SetupStateArgs, TokenChecks};
use std::net::SocketAddr;

/// `user_db` on a development machine.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/user_db";
/// Where the user-service listens by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3002";

/// `user_db`: the user-service and the setup read it.
#[derive(Args, Debug, Clone)]
pub struct UserDbArgs {
    /// user-service database (its value is never shown: it may hold a password).
    #[arg(
        long,
        env = "USER_DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true
    )]
    pub user_database_url: String,
}

/// The user-service's own settings.
#[derive(Args, Debug, Clone)]
pub struct UserServiceArgs {
    /// Where the user-service listens.
    #[arg(long, env = "USER_ADDR", default_value = DEFAULT_ADDR)]
    pub user_addr: SocketAddr,
    /// RabbitMQ as the user-service's consumer [default: AMQP_URL].
    #[arg(long, env = "USER_SERVICE_AMQP_URL", hide_env_values = true)]
    pub user_service_amqp_url: Option<String>,
}

impl UserServiceArgs {
    /// The broker URL the consumer connects with (USER_SERVICE_AMQP_URL, else AMQP_URL) and the
    /// setting that gave it, for the plaintext rule (`amqps://` or this machine).
    pub fn broker_link(&self, broker: &BrokerArgs) -> Link {
        match &self.user_service_amqp_url {
            Some(url) => Link::amqp("USER_SERVICE_AMQP_URL", url.as_str()),
            None => Link::amqp("AMQP_URL", broker.amqp_url.as_str()),
        }
    }

    /// The service's configuration; `auth_service_url` is where the auth-service is when
    /// AUTH_SERVICE_URL does not say (its public keys are fetched there). A key-set URL that is
    /// neither HTTPS nor this machine is refused (see [`TokenChecks::verifier`]).
    #[allow(clippy::too_many_arguments)]
    pub fn into_config(
        &self,
        db: &UserDbArgs,
        consumer: &ConsumerArgs,
        broker: &BrokerArgs,
        setup: &SetupStateArgs,
        tokens: TokenChecks<'_>,
        auth_service_url: &str,
        run_consumer: bool,
    ) -> anyhow::Result<Config> {
        Ok(Config {
            http_addr: self.user_addr,
            database_url: db.user_database_url.clone(),
            amqp_url: self
                .user_service_amqp_url
                .clone()
                .unwrap_or_else(|| broker.amqp_url.clone()),
            keys: tokens.verifier(auth_service_url)?,
            run_consumer,
            max_db_connections: 16,
            managed_by_setup: setup.managed_by_setup,
            consumer: consumer.into_config(),
        })
    }
}
