//! `portal setup`: the least-privilege setup ([`ops::setup`]) from the administrative
//! credentials. The credentials file it writes is read by every command through
//! [`crate::settings`].

use super::{check_links, Failure};
use crate::cli::{AdminArgs, SetupArgs};
use anyhow::Context;
use appointment_service::settings::AppointmentDbArgs;
use auth_service::settings::AuthDbArgs;
use ops::setup::{Identities, SetupConfig, SetupReport, GUEST};
use platform::settings::NetworkArgs;
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
        disable_guest: false,
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
    match report.deleted_guest {
        Some(true) => println!("deleted RabbitMQ user {GUEST} (SETUP_DISABLE_GUEST)"),
        Some(false) => println!("RabbitMQ user {GUEST}: absent (SETUP_DISABLE_GUEST)"),
        None => {}
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
        &args.network,
        args.setup_disable_guest,
    )
    .await
}

/// The setup for these databases (`portal setup`, and `portal up` before it starts anything);
/// `disable_guest`: SETUP_DISABLE_GUEST. A configuration it cannot run with (a plaintext
/// administrative URL to another machine, deleting the guest it logs in as) exits 64 before
/// anything is touched.
pub async fn run_with(
    admin: &AdminArgs,
    auth_db: &AuthDbArgs,
    user_db: &UserDbArgs,
    appointment_db: &AppointmentDbArgs,
    network: &NetworkArgs,
    disable_guest: bool,
) -> Result<(), Failure> {
    check_links(network, &admin.links())?;
    let mut config = config(admin, auth_db, user_db, appointment_db).map_err(Failure::usage)?;
    config.disable_guest = disable_guest;
    ops::setup::check_disable_guest(&config).map_err(Failure::usage)?;
    let report = ops::setup::run(&config)
        .await
        .map_err(Failure::unreachable)?;
    print_report(&report, &config.credentials);
    Ok(())
}
