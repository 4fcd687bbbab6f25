//! The operator's identity as a `clap` group: what `portal verify`, `reconcile`, `replay`,
//! `dlq`, `consumer add` and the sync admin API connect as. Without the least-privilege setup
//! each falls back to the service's own URL (AUTH_DATABASE_URL…), which the `portal` command
//! line resolves before these defaults apply.

use clap::Args;
use platform::settings::Link;

/// Each operator variable and the service variable it falls back to.
pub const FALLBACKS: [(&str, &str); 4] = [
    ("OPERATOR_AUTH_DATABASE_URL", "AUTH_DATABASE_URL"),
    ("OPERATOR_USER_DATABASE_URL", "USER_DATABASE_URL"),
    (
        "OPERATOR_APPOINTMENT_DATABASE_URL",
        "APPOINTMENT_DATABASE_URL",
    ),
    ("OPERATOR_AMQP_URL", "AMQP_URL"),
];

/// The operator's databases and broker.
#[derive(Args, Debug, Clone)]
pub struct OperatorArgs {
    /// auth_db as the operator's tools (verify, reconcile, replay) [default: AUTH_DATABASE_URL,
    /// else postgres://postgres@127.0.0.1:5432/auth_db] (its value is never shown).
    #[arg(
        long,
        env = "OPERATOR_AUTH_DATABASE_URL",
        default_value = auth_service::settings::DEFAULT_DATABASE_URL,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub operator_auth_database_url: String,
    /// user_db as the operator's tools (verify, reconcile) [default: USER_DATABASE_URL, else
    /// postgres://postgres@127.0.0.1:5432/user_db] (its value is never shown).
    #[arg(
        long,
        env = "OPERATOR_USER_DATABASE_URL",
        default_value = user_service::settings::DEFAULT_DATABASE_URL,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub operator_user_database_url: String,
    /// appointment_db as the operator's tools (verify, reconcile) [default:
    /// APPOINTMENT_DATABASE_URL, else postgres://postgres@127.0.0.1:5432/appointment_db] (its
    /// value is never shown).
    #[arg(
        long,
        env = "OPERATOR_APPOINTMENT_DATABASE_URL",
        default_value = appointment_service::settings::DEFAULT_DATABASE_URL,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub operator_appointment_database_url: String,
    /// RabbitMQ as the operator's tools (replay, dlq, consumer add) [default: AMQP_URL, else
    /// amqp://guest:***@127.0.0.1:5672/%2f] (its value is never shown).
    #[arg(
        long,
        env = "OPERATOR_AMQP_URL",
        default_value = platform::settings::DEFAULT_AMQP_URL,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub operator_amqp_url: String,
}

impl OperatorArgs {
    /// The broker URL the operator's tools connect with, for the plaintext rule (`amqps://` or
    /// this machine).
    pub fn broker_link(&self) -> Link {
        Link::amqp("OPERATOR_AMQP_URL", self.operator_amqp_url.as_str())
    }
}
