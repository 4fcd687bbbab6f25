//! `portal setup`: the least-privilege setup ([`ops::setup`]) from the administrative
//! credentials, and the loading of the credentials file it writes, which every command does
//! before it reads its settings.

use super::Failure;
use crate::cli::{AdminArgs, Settings};
use anyhow::Context;
use ops::setup::{Credentials, Identities, SetupConfig, SetupReport};
use std::path::{Path, PathBuf};

/// The credentials file every command reads: `PORTAL_CREDENTIALS`, else
/// `.portal/credentials.env`; `none` (or empty) reads none.
pub fn credentials_path() -> Option<PathBuf> {
    match std::env::var("PORTAL_CREDENTIALS") {
        Ok(p) if p.is_empty() || p == "none" => None,
        Ok(p) => Some(PathBuf::from(p)),
        Err(_) => Some(PathBuf::from(".portal/credentials.env")),
    }
}

/// Puts every variable of the credentials file at `path` into this process's environment,
/// unless the operator's environment sets it (what is set explicitly wins). Called before any
/// thread starts, and by `portal up` again once its setup has rewritten the file; an absent
/// file changes nothing, one others may read is refused.
pub fn load_into_env(path: &Path) -> anyhow::Result<()> {
    let mut from_file = FROM_FILE.lock().unwrap_or_else(|e| e.into_inner());
    for (key, value) in Credentials::load(path)?.0 {
        // A value this process took from the file earlier is not the operator's: the file
        // has been rewritten since (`portal up` after its setup, with new broker addresses,
        // say), and its new value wins.
        if std::env::var_os(&key).is_none() || from_file.contains(&key) {
            std::env::set_var(&key, value);
            from_file.insert(key);
        }
    }
    Ok(())
}

/// The variables [`load_into_env`] put into the environment (not set by the operator).
static FROM_FILE: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// The setup of this machine's install: the databases of AUTH_DATABASE_URL and
/// USER_DATABASE_URL on the server of ADMIN_DATABASE_URL, the vhost of ADMIN_AMQP_URL.
pub fn config(s: &Settings, admin: &AdminArgs) -> anyhow::Result<SetupConfig> {
    Ok(SetupConfig {
        admin_database_url: admin.admin_database_url.clone(),
        admin_amqp_url: admin.admin_amqp_url.clone(),
        management_url: admin.management_url.clone(),
        auth_db: platform::db::database_name(&s.auth_database_url).context("AUTH_DATABASE_URL")?,
        user_db: platform::db::database_name(&s.user_database_url).context("USER_DATABASE_URL")?,
        appointment_db: platform::db::database_name(&s.appointment_database_url)
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

pub async fn run(s: &Settings, admin: &AdminArgs) -> Result<(), Failure> {
    let config = config(s, admin)?;
    let report = ops::setup::run(&config)
        .await
        .map_err(Failure::unreachable)?;
    print_report(&report, &config.credentials);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Found by hand: `portal up` with the cluster's addresses on an install that had run on one
    /// node set up the cluster, then started the parts on the old node, because the values read
    /// from the file at start counted as the operator's.
    #[test]
    fn a_rewritten_file_wins_over_its_own_earlier_values_but_not_over_the_operator() {
        let dir = std::env::temp_dir().join(format!("portal-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials.env");
        std::env::set_var("PORTAL_TEST_CREDS_OPERATOR", "set by the operator");
        write_private(
            &path,
            "PORTAL_TEST_CREDS_URL=amqp://old:5672\nPORTAL_TEST_CREDS_OPERATOR=from the file\n",
        );
        load_into_env(&path).unwrap();
        assert_eq!(
            std::env::var("PORTAL_TEST_CREDS_URL").unwrap(),
            "amqp://old:5672"
        );
        write_private(
            &path,
            "PORTAL_TEST_CREDS_URL=amqp://new:5681\nPORTAL_TEST_CREDS_OPERATOR=from the file\n",
        );
        load_into_env(&path).unwrap();
        assert_eq!(
            std::env::var("PORTAL_TEST_CREDS_URL").unwrap(),
            "amqp://new:5681"
        );
        assert_eq!(
            std::env::var("PORTAL_TEST_CREDS_OPERATOR").unwrap(),
            "set by the operator"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
