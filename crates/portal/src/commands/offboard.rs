//! `portal offboard EMAIL --policy reassign|cancel --reason … [--wait]`: starts (or finds) the
//! person's offboarding through the admin API and prints its steps with their times; with
//! `--wait` it follows the saga until it completes (exit 0), needs attention or stalls (exit 1).
//! The API unreachable is exit 2, as for every API command.

use super::api::{api_failure, connect};
use super::Failure;
use crate::cli::OffboardArgs;
use anyhow::anyhow;
use contract::api::{Offboarding, OffboardingRequest, OffboardingState};
use std::time::{Duration, Instant};

pub async fn run(args: OffboardArgs) -> Result<(), Failure> {
    let client = connect(&args.api).await?;
    let id = client.resolve(&args.user).await.map_err(api_failure)?;
    let started = Instant::now();
    let mut saga = client
        .offboard(
            id,
            &OffboardingRequest {
                reason: args.reason.clone(),
                policy: args.policy,
            },
        )
        .await
        .map_err(api_failure)?;
    println!(
        "offboarding {} of {} <{}> (policy {})",
        saga.id,
        saga.name,
        saga.email,
        saga.policy.as_str()
    );
    let origin = saga.created_at.as_datetime();
    let mut shown = 0;
    shown = print_steps(&saga, origin, shown);
    if !args.wait {
        println!("state: {} (follow it with --wait)", saga.state.as_str());
        return Ok(());
    }
    let limit = args.wait_limit.0;
    while !saga.state.is_terminal() && saga.stalled_reason.is_none() {
        if started.elapsed() > limit {
            return Err(anyhow!(
                "still {} after {}s; it goes on (portal offboard … again shows it)",
                saga.state.as_str(),
                limit.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        saga = client.offboarding(saga.id).await.map_err(api_failure)?;
        shown = print_steps(&saga, origin, shown);
    }
    print_outcome(&saga);
    match (saga.state, &saga.stalled_reason) {
        (OffboardingState::Completed, _) => Ok(()),
        (_, Some(reason)) => Err(anyhow!("stalled: {reason}").into()),
        (state, None) => Err(anyhow!("{}", state.as_str()).into()),
    }
}

/// Prints the steps after the first `shown`, each with its time since the offboarding began;
/// returns how many are shown now.
fn print_steps(saga: &Offboarding, origin: chrono::DateTime<chrono::Utc>, shown: usize) -> usize {
    for step in saga.steps.iter().skip(shown) {
        let at = (step.at.as_datetime() - origin).num_milliseconds().max(0) as f64 / 1000.0;
        println!("  +{at:>7.3}s  {:<16} {}", step.step, step.detail);
    }
    saga.steps.len().max(shown)
}

fn print_outcome(saga: &Offboarding) {
    for r in &saga.receipts {
        println!(
            "  receipt  {:<24} {}",
            r.consumer,
            match (r.user_version, r.delay_seconds) {
                (Some(v), Some(d)) if r.current =>
                    format!("version {v}, {d:.3} s after the change"),
                (Some(v), _) => format!("only version {v}"),
                _ => "none".to_owned(),
            }
        );
    }
    if !saga.appointments.is_empty() {
        println!("patients to inform:");
        for a in &saga.appointments {
            let what = match a.resolution {
                contract::control::Resolution::Reassigned => format!(
                    "now with {}",
                    a.doctor_name.as_deref().unwrap_or("another doctor")
                ),
                contract::control::Resolution::Cancelled => "cancelled".to_owned(),
                contract::control::Resolution::CancelledNoDoctorFree => {
                    "cancelled: no doctor free, needs a new booking".to_owned()
                }
            };
            println!("  {:<28} {}  {what}", a.patient_name, a.starts_at);
        }
    }
    println!("state: {}", saga.state.as_str());
}
