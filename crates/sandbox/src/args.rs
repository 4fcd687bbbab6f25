//! The settings every tool that builds its own sandbox takes (`portal-bench`, `portal-chaos`):
//! which servers to use and which `portal` binary to run. Environment first, flags override.
//! The database and broker settings are the parts' own groups, read for their servers only.

use crate::world::Servers;
use auth_service::settings::AuthDbArgs;
use clap::Args;
use platform::settings::BrokerArgs;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[command(
    next_help_heading = "Servers: the run's own databases and vhost are made on those of these URLs (environment variable, default)"
)]
pub struct ServerArgs {
    /// PostgreSQL: the server of AUTH_DATABASE_URL (its database part is replaced).
    #[command(flatten)]
    pub database: AuthDbArgs,
    /// RabbitMQ: the broker of AMQP_URL (its vhost part is replaced).
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// RabbitMQ management API (vhost creation); called with AMQP_URL's credentials.
    #[arg(
        long,
        env = "RABBITMQ_MANAGEMENT_URL",
        default_value = "http://127.0.0.1:15672"
    )]
    pub management_url: String,
    /// The `portal` binary that runs the services [default: the one beside this program].
    #[arg(long, env = "PORTAL_BIN")]
    pub portal_bin: Option<PathBuf>,
}

impl ServerArgs {
    pub fn servers(&self) -> Servers {
        Servers {
            postgres: self.database.auth_database_url.clone(),
            amqp: self.broker.amqp_url.clone(),
            management: self.management_url.clone(),
        }
    }

    /// `--portal-bin`, else [`crate::process::portal_bin`].
    pub fn portal_bin(&self) -> anyhow::Result<PathBuf> {
        match &self.portal_bin {
            Some(path) => Ok(path.clone()),
            None => crate::process::portal_bin(),
        }
    }
}
