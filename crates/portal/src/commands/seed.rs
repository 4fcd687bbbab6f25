//! `portal seed`: the 10 demo users, through the auth-service's own write path.

use super::Failure;
use crate::cli::Settings;
use anyhow::Context;
use auth_service::seed::{SeedOptions, SeedReport};
use contract::Email;

pub fn options(s: &Settings) -> anyhow::Result<SeedOptions> {
    Ok(SeedOptions {
        admin_email: Email::parse(&s.seed_admin_email).context("SEED_ADMIN_EMAIL")?,
        admin_password: s.seed_admin_password.clone(),
        staff_password: s.seed_staff_password.clone(),
    })
}

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

pub async fn run(s: &Settings) -> Result<(), Failure> {
    let options = options(s)?;
    let pool = auth_service::open_database(&s.auth_database_url, 2, s.managed_by_setup)
        .await
        .map_err(Failure::unreachable)?;
    let report = auth_service::seed::seed(&pool, &options).await?;
    print_report(&report);
    Ok(())
}
