//! `portal verify`: prints `in sync: N users` and exits 0, or lists the differences and exits 1;
//! exits 2 when a database cannot be reached.

use super::Failure;
use crate::cli::Settings;
use ops::verify;

pub async fn run(s: &Settings, max_listed: usize) -> Result<(), Failure> {
    let auth = platform::db::lazy_pool(s.operator_auth_db(), 1)?;
    let users = platform::db::lazy_pool(s.operator_user_db(), 1)?;
    let report = verify::compare(&auth, &users, max_listed)
        .await
        .map_err(|e| match e {
            verify::VerifyError::Unreachable { .. } => Failure::unreachable(e),
            other => Failure::from(anyhow::Error::from(other)),
        })?;
    if report.is_in_sync() {
        println!("in sync: {} users", report.checked);
        return Ok(());
    }
    for d in &report.listed {
        println!("{d}");
    }
    if report.total_differences() > report.listed.len() {
        println!(
            "... and {} more",
            report.total_differences() - report.listed.len()
        );
    }
    println!("{}", report.summary());
    Err(Failure::from(anyhow::anyhow!(
        "out of sync: auth_db and user_db differ"
    )))
}
