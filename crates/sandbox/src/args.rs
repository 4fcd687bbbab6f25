//! The settings every tool that builds its own sandbox takes (`portal-bench`, `portal-chaos`):
//! which servers to use and which `portal` binary to run. Environment first, flags override.

use crate::world::Servers;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Servers (environment variable, default)")]
pub struct ServerArgs {
    /// PostgreSQL: the server of this URL (its database part is replaced by the run's own).
    #[arg(
        long,
        env = "AUTH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/auth_db",
        hide_env_values = true
    )]
    pub auth_database_url: String,
    /// RabbitMQ: the broker of this URL (its vhost part is replaced by the run's own)
    /// [default: amqp://guest:***@127.0.0.1:5672/%2f].
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: String,
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
            postgres: self.auth_database_url.clone(),
            amqp: self.amqp_url.clone(),
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
