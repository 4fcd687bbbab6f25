//! The sync admin API's settings as a `clap` group (`portal sync-admin` and `portal up`
//! flatten it with the operator's identity and the auth-service's whereabouts), and how they
//! become its [`Config`]. The scheduled reconcile runs here: this is the part that runs under
//! the operator's identity, the one allowed to read every copy.

use crate::Config;
use clap::Args;
use ops::settings::OperatorArgs;
use platform::settings::TokenChecks;
use std::net::SocketAddr;

/// Where the sync admin API listens by default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:3004";

/// The sync admin API's own settings.
#[derive(Args, Debug, Clone)]
pub struct SyncAdminArgs {
    /// Where the sync admin API listens.
    #[arg(long, env = "SYNC_ADMIN_ADDR", default_value = DEFAULT_ADDR)]
    pub sync_admin_addr: SocketAddr,
    /// Run `reconcile` inside the sync admin API (`portal sync-admin`, `portal up`) every so
    /// often, e.g. 15m or 1h 30m [default: off].
    #[arg(long, env = "RECONCILE_INTERVAL", value_parser = platform::duration::parse_interval)]
    pub reconcile_interval: Option<std::time::Duration>,
}

impl SyncAdminArgs {
    /// The API's configuration under the operator's identity; `auth_service_url` is where the
    /// auth-service is when AUTH_SERVICE_URL does not say (its public keys are fetched there; a
    /// key-set URL neither HTTPS nor this machine is refused, see [`TokenChecks::verifier`]).
    /// `trusted_publishers` is `TRUSTED_PUBLISHERS`, as the consumers read it.
    pub fn into_config(
        &self,
        operator: &OperatorArgs,
        tokens: TokenChecks<'_>,
        trusted_publishers: &[String],
        auth_service_url: &str,
    ) -> anyhow::Result<Config> {
        let mut config = Config::standard(
            self.sync_admin_addr,
            &operator.operator_auth_database_url,
            &operator.operator_user_database_url,
            &operator.operator_appointment_database_url,
            &operator.operator_amqp_url,
            tokens.verifier(auth_service_url)?,
        );
        config.reconcile_interval = self.reconcile_interval;
        config.trusted_publishers = trusted_publishers.to_vec();
        Ok(config)
    }
}
