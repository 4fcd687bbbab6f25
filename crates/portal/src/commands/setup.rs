//! `portal setup`: the least-privilege setup ([`ops::setup`]) from the administrative
//! credentials. The credentials file it writes is read by every command through
//! [`crate::settings`].

use super::{check_links, Failure};
use crate::cli::{AdminArgs, SetupArgs};
use anyhow::Context;
use appointment_service::settings::AppointmentDbArgs;
use auth_service::settings::AuthDbArgs;
use ops::settings::OperatorArgs;
use ops::setup::{Credentials, Identities, PartFiles, SetupConfig, SetupReport, GUEST};
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
        auth_db: name_or(&admin.auth_database_name, &auth_db.auth_database_url)
            .context("AUTH_DATABASE_URL")?,
        user_db: name_or(&admin.user_database_name, &user_db.user_database_url)
            .context("USER_DATABASE_URL")?,
        appointment_db: name_or(
            &admin.appointment_database_name,
            &appointment_db.appointment_database_url,
        )
        .context("APPOINTMENT_DATABASE_URL")?,
        identities: Identities::standard(),
        credentials: admin.credentials.clone(),
        part_files: None,
        disable_guest: false,
    })
}

/// A database's name: its own setting (`*_DATABASE_NAME`), else the database of the part's URL
/// (a development machine names them there).
fn name_or(name: &Option<String>, url: &str) -> anyhow::Result<String> {
    match name {
        Some(name) => Ok(name.clone()),
        None => platform::db::database_name(url),
    }
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
    for (path, owner) in &report.part_files {
        println!(
            "credentials of one part: {} (owner {owner}, 0400)",
            path.display()
        );
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

/// `portal setup`: the identities, then what an install needs before anyone can book: the
/// appointment-service's new copy backfilled. (The first admin is `portal admin bootstrap`'s:
/// a password printed here would go to the setup unit's journal.)
pub async fn run(args: &SetupArgs) -> Result<(), Failure> {
    let part_files = args.part_credentials_dir.clone().map(|dir| PartFiles {
        dir,
        owner_prefix: args.part_user_prefix.clone(),
    });
    let config = run_with(
        &args.admin,
        &args.auth_db,
        &args.user_db,
        &args.appointment_db,
        &args.network,
        args.setup_disable_guest,
        part_files,
    )
    .await?;
    let creds = Credentials::load(&config.credentials).map_err(Failure::usage)?;
    let from_file = |key: &str| {
        creds
            .get(key)
            .map(str::to_owned)
            .ok_or_else(|| Failure::usage(anyhow::anyhow!("the setup wrote no {key}")))
    };
    let operator = OperatorArgs {
        operator_auth_database_url: from_file("OPERATOR_AUTH_DATABASE_URL")?,
        operator_user_database_url: from_file("OPERATOR_USER_DATABASE_URL")?,
        operator_appointment_database_url: from_file("OPERATOR_APPOINTMENT_DATABASE_URL")?,
        operator_amqp_url: from_file("OPERATOR_AMQP_URL")?,
    };
    let appointments = platform::db::lazy_pool(&operator.operator_appointment_database_url, 1)?;
    let backfilled = super::replay::backfill_new_copy(&operator, &appointments).await;
    appointments.close().await;
    backfilled
}

/// The setup for these databases (`portal setup`, and `portal up` before it starts anything);
/// `disable_guest`: SETUP_DISABLE_GUEST; `part_files`: where an install's per-part credentials
/// files go (`None`: the one file only). A configuration it cannot run with (a plaintext
/// administrative URL to another machine, deleting the guest it logs in as) exits 64 before
/// anything is touched. Returns the setup's configuration (where it wrote the credentials).
pub async fn run_with(
    admin: &AdminArgs,
    auth_db: &AuthDbArgs,
    user_db: &UserDbArgs,
    appointment_db: &AppointmentDbArgs,
    network: &NetworkArgs,
    disable_guest: bool,
    part_files: Option<PartFiles>,
) -> Result<SetupConfig, Failure> {
    check_links(network, &admin.links())?;
    let mut config = config(admin, auth_db, user_db, appointment_db).map_err(Failure::usage)?;
    config.disable_guest = disable_guest;
    config.part_files = part_files;
    ops::setup::check_disable_guest(&config).map_err(Failure::usage)?;
    let report = ops::setup::run(&config)
        .await
        .map_err(Failure::unreachable)?;
    print_report(&report, &config.credentials);
    Ok(config)
}
