//! `portal setup`: the least-privilege setup ([`ops::setup`]) from the administrative
//! credentials. The credentials file it writes is read by every command through
//! [`crate::settings`].

use super::Failure;
use crate::cli::{AdminArgs, SetupArgs};
use anyhow::Context;
use appointment_service::settings::AppointmentDbArgs;
use auth_service::settings::AuthDbArgs;
use ops::setup::{Identities, SetupConfig, SetupReport};
use std::path::Path;
use user_service::settings::UserDbArgs;

/// The setup of this machine's install: the databases of AUTH_DATABASE_URL,
/// USER_DATABASE_URL and APPOINTMENT_DATABASE_URL on the server of ADMIN_DATABASE_URL, the
/// vhost of ADMIN_AMQP_URL.
pub fn config(
    admin: &AdminArgs,
    auth_db: &AuthDbArgs,
    user_db: &UserDbArgs,
    appointment_db: &AppointmentDbArgs,
) -> anyhow::Result<SetupConfig> {
    Ok(SetupConfig {
        admin_database_url: admin.admin_database_url.clone(),
        admin_amqp_url: admin.admin_amqp_url.clone(),
        management_url: admin.management_url.clone(),
        auth_db: platform::db::database_name(&auth_db.auth_database_url)
            .context("AUTH_DATABASE_URL")?,
        user_db: platform::db::database_name(&user_db.user_database_url)
            .context("USER_DATABASE_URL")?,
        appointment_db: platform::db::database_name(&appointment_db.appointment_database_url)
            .context("APPOINTMENT_DATABASE_URL")?,
        identities: Identities::standard(),
        credentials: admin.credentials.clone(),
    })
}

/// One line per change, no secret.
pub fn print_report(report: &SetupReport, credentials: &Path) {
    for role in &report.created_roles {
        println!("created PostgreSQL role {role}");
    }
    for db in &report.created_databases {
        println!("created database {db}");
    }
    for user in &report.created_users {
        println!("created RabbitMQ user {user}");
    }
    println!(
        "setup: identities, rights and topology up to date; credentials {} {} (owner-only)",
        if report.wrote_new_passwords {
            "written to"
        } else {
            "kept in"
        },
        credentials.display()
    );
}

pub async fn run(args: &SetupArgs) -> Result<(), Failure> {
    run_with(
        &args.admin,
        &args.auth_db,
        &args.user_db,
        &args.appointment_db,
    )
    .await
}

/// The setup for these databases (`portal setup`, and `portal up` before it starts anything).
pub async fn run_with(
    admin: &AdminArgs,
    auth_db: &AuthDbArgs,
    user_db: &UserDbArgs,
    appointment_db: &AppointmentDbArgs,
) -> Result<(), Failure> {
    let config = config(admin, auth_db, user_db, appointment_db).map_err(Failure::usage)?;
    let report = ops::setup::run(&config)
        .await
        .map_err(Failure::unreachable)?;
    print_report(&report, &config.credentials);
    Ok(())
}
