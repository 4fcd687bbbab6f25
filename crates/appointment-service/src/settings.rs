//! The appointment-service's settings as `clap` groups (`portal appointment-service` and
//! `portal up` flatten them with the consumer's, the broker's and the auth-service's
//! whereabouts), and how they become its [`Config`].

use crate::Config;
use clap::Args;
use consumer::settings::ConsumerArgs;
use platform::jwt::KeySource;
use platform::settings::{AuthLocationArgs, BrokerArgs, SetupStateArgs};
use std::net::SocketAddr;

/// `appointment_db` on a development machine.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/appointment_db";
/// Where the appointment-service listens by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3003";

/// `appointment_db`: the appointment-service and the setup read it.
#[derive(Args, Debug, Clone)]
pub struct AppointmentDbArgs {
    /// appointment-service database (its value is never shown: it may hold a password).
    #[arg(
        long,
        env = "APPOINTMENT_DATABASE_URL",
        default_value = DEFAULT_DATABASE_URL,
        hide_env_values = true
    )]
    pub appointment_database_url: String,
}

/// The appointment-service's own settings.
#[derive(Args, Debug, Clone)]
pub struct AppointmentServiceArgs {
    /// Where the appointment-service listens.
    #[arg(long, env = "APPOINTMENT_ADDR", default_value = DEFAULT_ADDR)]
    pub appointment_addr: SocketAddr,
    /// RabbitMQ as the appointment-service's consumer [default: AMQP_URL].
    #[arg(long, env = "APPOINTMENT_SERVICE_AMQP_URL", hide_env_values = true)]
    pub appointment_service_amqp_url: Option<String>,
}

impl AppointmentServiceArgs {
    /// The service's configuration; `auth_service_url` is where the auth-service is when
    /// AUTH_SERVICE_URL does not say (its public keys are fetched there).
    pub fn into_config(
        &self,
        db: &AppointmentDbArgs,
        consumer: &ConsumerArgs,
        broker: &BrokerArgs,
        setup: &SetupStateArgs,
        auth: &AuthLocationArgs,
        auth_service_url: &str,
    ) -> Config {
        Config {
            http_addr: self.appointment_addr,
            database_url: db.appointment_database_url.clone(),
            amqp_url: self
                .appointment_service_amqp_url
                .clone()
                .unwrap_or_else(|| broker.amqp_url.clone()),
            keys: KeySource::Jwks(auth.jwks_url_or(auth_service_url)),
            max_db_connections: 16,
            managed_by_setup: setup.managed_by_setup,
            consumer: crate::consumer_config(consumer.into_config()),
        }
    }
}
