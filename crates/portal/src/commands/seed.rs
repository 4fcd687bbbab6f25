//! `portal seed`: the 10 demo users, through the auth-service's own write path.

use super::Failure;
use crate::cli::SeedCommand;
use auth_service::seed::SeedReport;

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
