//! `portal seed`: the 10 demo users, and `portal admin bootstrap`: an install's first admin,
//! both through the auth-service's own write path.

use super::Failure;
use crate::cli::{AdminBootstrapCommand, SeedCommand};
use auth_service::seed::{Bootstrap, SeedReport};

pub fn print_report(report: &SeedReport) {
    for (email, role) in &report.created {
        println!("created {role:<11} {email}");
    }
    println!(
        "seed: {} created, {} already present",
        report.created.len(),
        report.already_present
    );
    if let Some(password) = &report.generated_admin_password {
        println!("admin password (generated, shown only now): {password}");
    }
}

pub async fn run(c: &SeedCommand) -> Result<(), Failure> {
    let options = c.seed.into_options().map_err(Failure::usage)?;
    let pool = auth_service::open_database(&c.db.auth_database_url, 2, c.setup.managed_by_setup)
        .await
        .map_err(Failure::unreachable)?;
    let report = auth_service::seed::seed(&pool, &options).await?;
    print_report(&report);
    Ok(())
}

pub async fn bootstrap(c: &AdminBootstrapCommand) -> Result<(), Failure> {
    // A bad email or a key directory without the key is the caller's to fix (64); anything
    // after it is the database's.
    contract::Email::parse(&c.email).map_err(|e| Failure::usage(anyhow::anyhow!("email: {e}")))?;
    let key = auth_service::password::temporary::TagKey::load(&c.keys.jwt_key_dir)
        .map_err(Failure::usage)?;
    let pool = auth_service::open_database(&c.db.auth_database_url, 2, c.setup.managed_by_setup)
        .await
        .map_err(Failure::unreachable)?;
    let email = &c.email;
    match auth_service::seed::bootstrap_admin(&pool, email, &key, c.temporary_password_ttl.0)
        .await?
    {
        Bootstrap::Created { temporary_password } => {
            println!("created admin {email}");
            println!(
                "temporary password (shown only now; signs in once within {}, to be changed at \
                 the first sign-in): {temporary_password}",
                c.temporary_password_ttl
            );
        }
        Bootstrap::Exists => {
            println!("admin bootstrap: the admin {email} exists already; nothing changed");
        }
    }
    Ok(())
}
