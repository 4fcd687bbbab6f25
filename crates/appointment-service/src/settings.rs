//! The appointment-service's settings as `clap` groups (`portal appointment-service` and
//! `portal up` flatten them with the consumer's, the broker's, the auth-service's whereabouts
//! and the token checks'), and how they become its [`Config`].

use crate::Config;
use clap::Args;
use consumer::settings::ConsumerArgs;
use contract::Role;
use platform::settings::{BrokerArgs, Link, SetupStateArgs, TokenChecks};
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
    /// Roles that read every appointment besides nurses and admins, comma-separated:
    /// pharmacist, consultant (they never book or change one) [default: none; doctors see their
    /// own, pharmacists and consultants none].
    #[arg(long, env = "APPOINTMENTS_VISIBLE_TO", value_parser = visible_to)]
    pub appointments_visible_to: Option<VisibleTo>,
}

/// The roles `APPOINTMENTS_VISIBLE_TO` lets read every appointment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VisibleTo(pub Vec<Role>);

/// `pharmacist,consultant`, either, or nothing (empty, or `none`). Only the roles that see no
/// appointment otherwise may be named; another is refused (exit 64) rather than ignored:
/// "doctor" would read as "doctors see every appointment", which this setting does not do.
fn visible_to(value: &str) -> Result<VisibleTo, String> {
    if value.trim() == "none" {
        return Ok(VisibleTo::default());
    }
    let mut roles = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let role = match name.parse::<Role>() {
            Ok(role @ (Role::Pharmacist | Role::Consultant)) => role,
            Ok(Role::Doctor) => {
                return Err(
                    "a doctor sees their own appointments only; this setting names \
                            pharmacist or consultant"
                        .to_owned(),
                )
            }
            Ok(role) => {
                return Err(format!(
                    "a {role} sees every appointment already; this setting names pharmacist or \
                     consultant"
                ))
            }
            Err(_) => {
                return Err(format!(
                    "{name:?} is not a role; this setting names pharmacist or consultant"
                ))
            }
        };
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    Ok(VisibleTo(roles))
}

impl AppointmentServiceArgs {
    /// The broker URL the consumer connects with (APPOINTMENT_SERVICE_AMQP_URL, else AMQP_URL)
    /// and the setting that gave it, for the plaintext rule (`amqps://` or this machine).
    pub fn broker_link(&self, broker: &BrokerArgs) -> Link {
        match &self.appointment_service_amqp_url {
            Some(url) => Link::amqp("APPOINTMENT_SERVICE_AMQP_URL", url.as_str()),
            None => Link::amqp("AMQP_URL", broker.amqp_url.as_str()),
        }
    }

    /// The service's configuration; `auth_service_url` is where the auth-service is when
    /// AUTH_SERVICE_URL does not say (its public keys are fetched there). A key-set URL that is
    /// neither HTTPS nor this machine is refused (see [`TokenChecks::verifier`]).
    pub fn into_config(
        &self,
        db: &AppointmentDbArgs,
        consumer: &ConsumerArgs,
        broker: &BrokerArgs,
        setup: &SetupStateArgs,
        tokens: TokenChecks<'_>,
        auth_service_url: &str,
    ) -> anyhow::Result<Config> {
        Ok(Config {
            http_addr: self.appointment_addr,
            database_url: db.appointment_database_url.clone(),
            amqp_url: self
                .appointment_service_amqp_url
                .clone()
                .unwrap_or_else(|| broker.amqp_url.clone()),
            keys: tokens.verifier(auth_service_url)?,
            max_db_connections: 16,
            managed_by_setup: setup.managed_by_setup,
            consumer: crate::consumer_config(consumer.into_config()),
            visible_to: self.appointments_visible_to.clone().unwrap_or_default().0,
            // OUTBOX_KEEP_PUBLISHED_SECS is the command's (shared with the auth-service's
            // relays under `portal up`): the caller sets it.
            outbox_cleanup: outbox::CleanupConfig::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cmd {
        #[command(flatten)]
        args: AppointmentServiceArgs,
    }

    fn parse(args: &[&str]) -> Result<Vec<Role>, clap::Error> {
        Cmd::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map(|c| c.args.appointments_visible_to.unwrap_or_default().0)
    }

    #[test]
    fn only_the_roles_that_see_none_may_be_let_read_every_appointment() {
        assert_eq!(parse(&[]).unwrap(), []);
        for none in ["", " ", "none", ","] {
            assert_eq!(
                parse(&["--appointments-visible-to", none]).unwrap(),
                [],
                "{none:?}"
            );
        }
        assert_eq!(
            parse(&[
                "--appointments-visible-to",
                "pharmacist, consultant,pharmacist"
            ])
            .unwrap(),
            [Role::Pharmacist, Role::Consultant]
        );
        for (refused, says) in [
            ("doctor", "their own"),
            ("nurse", "already"),
            ("admin", "already"),
            ("pharmacists", "not a role"),
        ] {
            let error = parse(&["--appointments-visible-to", refused])
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{refused}: {error}");
        }
    }
}
