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
    let pool = auth_service::open_database(&c.db.auth_database_url, 2, c.setup.managed_by_setup)
        .await
        .map_err(Failure::unreachable)?;
    bootstrap_on(&pool, &c.email).await
}

/// Creates the first admin `email` on `pool` and says what happened (the password once).
pub async fn bootstrap_on(pool: &sqlx::PgPool, email: &str) -> Result<(), Failure> {
    // A bad email is the caller's to fix (64); anything after it is the database's (1).
    contract::Email::parse(email).map_err(|e| Failure::usage(anyhow::anyhow!("email: {e}")))?;
    match auth_service::seed::bootstrap_admin(pool, email).await? {
        Bootstrap::Created { temporary_password } => {
            println!("created admin {email}");
            println!(
                "temporary password (shown only now; to be changed at the first sign-in): \
                 {temporary_password}"
            );
        }
        Bootstrap::Exists => {
            println!("admin bootstrap: {email} exists already; nothing changed");
        }
    }
    Ok(())
}
