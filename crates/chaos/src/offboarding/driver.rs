//! Starting the offboardings: each through the admin API (`POST
//! /api/v1/auth/admin/users/{id}/offboarding`, [`ApiClient::offboard`]) at its planned moment,
//! so they spread over the run and the kills land all through them. A request the auth-service
//! cannot answer (it is down, or was killed mid-request) is sent again until accepted: the
//! endpoint is idempotent, a second request answers the saga already running.

use super::setup::Tokens;
use anyhow::bail;
use api_client::{ApiClient, Error};
use contract::api::OffboardingRequest;
use contract::control::AppointmentPolicy;
use contract::Role;
use rand::rngs::StdRng;
use rand::Rng;
use reqwest::StatusCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The pause before a refused request is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Each request's own time limit (the auth-service may be killed while it holds it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The reason every offboarding of the run gives (it shows in the cancellation events).
pub const REASON: &str = "left the clinic (chaos run)";

/// One offboarding to start.
#[derive(Debug, Clone, Copy)]
pub struct Planned {
    pub doctor: Uuid,
    pub policy: AppointmentPolicy,
}

/// The offboardings of `doctors`, each `reassign` with `reassign_percent` chance, else
/// `cancel`, in a random order.
pub fn plan(doctors: &[Uuid], reassign_percent: u8, rng: &mut StdRng) -> Vec<Planned> {
    let mut planned: Vec<Planned> = doctors
        .iter()
        .map(|doctor| Planned {
            doctor: *doctor,
            policy: if rng.gen_range(0..100) < reassign_percent {
                AppointmentPolicy::Reassign
            } else {
                AppointmentPolicy::Cancel
            },
        })
        .collect();
    rand::seq::SliceRandom::shuffle(planned.as_mut_slice(), rng);
    planned
}

/// What the driver did (read by the progress display while it runs).
#[derive(Debug, Default)]
pub struct DriverCounts {
    /// Requests answered 2xx: one per planned offboarding.
    pub started: AtomicU64,
    /// Requests that were not answered or refused for a passing reason, and sent again.
    pub retried: AtomicU64,
}

pub struct Driver<'a> {
    pub http: reqwest::Client,
    pub auth_url: String,
    pub tokens: &'a Tokens,
    pub admin: Uuid,
    pub admin_email: String,
    pub counts: DriverCounts,
}

impl<'a> Driver<'a> {
    pub fn new(
        auth_url: String,
        tokens: &'a Tokens,
        admin: Uuid,
        admin_email: String,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()?,
            auth_url,
            tokens,
            admin,
            admin_email,
            counts: DriverCounts::default(),
        })
    }

    /// Starts every planned offboarding, evenly over `duration`; fails when one is still not
    /// accepted `deadline` after the start, on a refusal that trying again cannot mend, or when
    /// `abort` is cancelled.
    pub async fn run(
        &self,
        plan: &[Planned],
        duration: Duration,
        deadline: Duration,
        abort: &CancellationToken,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let pace = duration
            .checked_div(u32::try_from(plan.len()).unwrap_or(u32::MAX))
            .unwrap_or_default();
        let results = futures::future::join_all(plan.iter().enumerate().map(|(i, planned)| {
            // The spread is the workload's shape, not a wait for anything to happen.
            let due = start + pace.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            async move {
                tokio::select! {
                    _ = abort.cancelled() => bail!("offboardings aborted"),
                    _ = tokio::time::sleep_until(due.into()) => {}
                }
                self.offboard(*planned, start + deadline, abort).await
            }
        }))
        .await;
        results.into_iter().collect()
    }

    async fn offboard(
        &self,
        planned: Planned,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> anyhow::Result<()> {
        let request = OffboardingRequest {
            reason: REASON.to_owned(),
            policy: planned.policy,
        };
        loop {
            let token = self
                .tokens
                .sign(self.admin, &self.admin_email, Role::Admin)?;
            let api = ApiClient::with_http(self.http.clone(), &self.auth_url)?.authenticated(token);
            match api.offboard(planned.doctor, &request).await {
                Ok(_) => {
                    self.counts.started.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if passing(&e) => {
                    self.counts.retried.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(doctor = %planned.doctor, "offboarding request not accepted, sending again: {e}");
                    if Instant::now() >= deadline {
                        bail!(
                            "the offboarding of {} was still not accepted at the deadline: {e}",
                            planned.doctor
                        );
                    }
                    tokio::select! {
                        _ = abort.cancelled() => bail!("offboardings aborted"),
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                }
                Err(e) => bail!("the offboarding of {} was refused: {e}", planned.doctor),
            }
        }
    }
}

/// A failure that sending again can mend: no answer (the auth-service is down or was killed
/// mid-request), a server error, or a conflict with a concurrent transition.
fn passing(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } | Error::Unexpected { .. } => true,
        Error::Refused { status, .. } => {
            status.is_server_error() || *status == StatusCode::CONFLICT
        }
        Error::Invalid(_) | Error::SecondFactor(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_plan_offboards_every_doctor_once_with_both_policies() {
        let doctors: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
        let plan = plan(&doctors, 50, &mut StdRng::seed_from_u64(7));
        let mut planned: Vec<Uuid> = plan.iter().map(|p| p.doctor).collect();
        planned.sort();
        let mut expected = doctors.clone();
        expected.sort();
        assert_eq!(planned, expected);
        let reassign = plan
            .iter()
            .filter(|p| p.policy == AppointmentPolicy::Reassign)
            .count();
        assert!((50..150).contains(&reassign), "{reassign}");
        let all_cancel = super::plan(&doctors, 0, &mut StdRng::seed_from_u64(7));
        assert!(all_cancel
            .iter()
            .all(|p| p.policy == AppointmentPolicy::Cancel));
    }
}
