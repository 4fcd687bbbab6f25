//! The saga's timer: every due saga is claimed `FOR UPDATE SKIP LOCKED` (several auth-service
//! replicas share the work, none takes a saga another holds) and advanced one step in a
//! transaction of its own. Receipts and replies bring a saga's turn forward ([`Runner::wake`]);
//! otherwise the runner looks every `poll`.

use super::store::{self, Saga, SagaError, Transition};
use super::{decide, OffboardingConfig, Wait};
use crate::consumers;
use chrono::Utc;
use contract::api::OffboardingState;
use platform::backoff::{Backoff, OutageLog};
use platform::shutdown::sleep_unless_cancelled;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Sagas advanced at once by one runner (each holds a database connection meanwhile).
const WORKERS: usize = 4;

#[derive(Clone)]
pub struct Runner {
    db: PgPool,
    config: Arc<OffboardingConfig>,
    wake: Arc<Notify>,
}

impl Runner {
    pub fn new(db: PgPool, config: OffboardingConfig) -> Self {
        Self {
            db,
            config: Arc::new(config),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn config(&self) -> &OffboardingConfig {
        &self.config
    }

    /// Looks at the due sagas now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Advances due sagas until `shutdown`; prunes finished ones past retention every hour.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut outage = OutageLog::new("offboarding runner: auth_db");
        let mut backoff = Backoff::reconnect();
        let mut last_prune: Option<std::time::Instant> = None;
        while !shutdown.is_cancelled() {
            match self.advance_due().await {
                Ok(_) => {
                    outage.recovered();
                    backoff.reset();
                }
                Err(e) => {
                    outage.failed(&e);
                    sleep_unless_cancelled(backoff.next_delay(), &shutdown).await;
                    continue;
                }
            }
            if last_prune.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                last_prune = Some(std::time::Instant::now());
                match store::prune(&self.db, self.config.retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "pruned offboardings past retention"),
                    Err(e) => tracing::debug!(error = %e, "cannot prune offboardings now"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// Advances every saga due now, [`WORKERS`] at a time (each in its own transaction; `SKIP
    /// LOCKED` keeps them apart); returns how many were advanced.
    pub async fn advance_due(&self) -> Result<usize, SagaError> {
        // One cheap look first: idle, the poll costs one statement, not a transaction per worker.
        if !store::any_due(&self.db).await? {
            return Ok(0);
        }
        let workers = futures::future::join_all((0..WORKERS).map(|_| self.advance_some())).await;
        let mut advanced = 0;
        for worker in workers {
            advanced += worker?;
        }
        Ok(advanced)
    }

    /// One worker of [`Runner::advance_due`]: claims and advances due sagas until none is left.
    async fn advance_some(&self) -> Result<usize, SagaError> {
        let mut advanced = 0;
        loop {
            let mut tx = self.db.begin().await?;
            // Planned for each saga's own arguments: a plan cached while the receipts were few
            // scans them whole (seen in the benchmark's thousand offboardings).
            sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
                .execute(&mut *tx)
                .await?;
            let Some(saga) = store::claim_due(&mut tx).await? else {
                tx.rollback().await?;
                return Ok(advanced);
            };
            let id = saga.id;
            match self.advance(&mut tx, saga).await {
                Ok(()) => tx.commit().await?,
                Err(e) => {
                    tx.rollback().await.ok();
                    // Not retried at once: pushed back, so one broken saga cannot spin.
                    tracing::warn!(offboarding = %id, error = %e, "offboarding step failed; will try again");
                    sqlx::query(
                        "UPDATE offboardings SET due_at = now() + interval '5 seconds' WHERE id = $1",
                    )
                    .bind(id)
                    .execute(&self.db)
                    .await?;
                }
            }
            advanced += 1;
        }
    }

    /// One step of a due saga, in the transaction that holds it.
    async fn advance(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        saga: Saga,
    ) -> Result<(), SagaError> {
        let now = Utc::now();
        // By the database's clock, which `due_at` is compared with: a service clock behind it
        // would otherwise keep finding the saga due and not yet timed out.
        let timed_out = saga.timed_out;
        let attempts = u32::try_from(saga.attempts).unwrap_or(0);
        let stalled = saga.stalled_reason.is_some();
        let timeout = chrono::Duration::from_std(self.config.timeout).unwrap_or_default();
        let stalled_every =
            chrono::Duration::from_std(self.config.stalled_every).unwrap_or_default();
        let written = match saga.state()? {
            OffboardingState::AwaitingReceipts => {
                let late =
                    consumers::unconfirmed(&mut **tx, saga.user_id, saga.target_version).await?;
                match decide(
                    late.is_empty(),
                    timed_out,
                    attempts,
                    self.config.resends,
                    stalled,
                ) {
                    Wait::Proceed => self.receipts_in(tx, &saga, timeout).await?,
                    Wait::KeepWaiting => {
                        store::transition(
                            tx,
                            &saga,
                            Transition {
                                due_at: Some(saga.deadline_at),
                                ..Transition::default()
                            },
                        )
                        .await?
                    }
                    Wait::SendAgain { attempt } => {
                        for consumer in &late {
                            store::resend_snapshot(tx, saga.user_id, consumer).await?;
                        }
                        store::step(
                            tx,
                            saga.id,
                            "resent",
                            &format!(
                                "no receipt of version {} from {} after {}s: snapshot sent again \
                                 (try {attempt} of {})",
                                saga.target_version,
                                late.join(", "),
                                self.config.timeout.as_secs(),
                                self.config.resends
                            ),
                        )
                        .await?;
                        let deadline = now + timeout;
                        store::transition(
                            tx,
                            &saga,
                            Transition {
                                attempts: Some(saga.attempts + 1),
                                due_at: Some(Some(deadline)),
                                deadline_at: Some(Some(deadline)),
                                ..Transition::default()
                            },
                        )
                        .await?
                    }
                    Wait::Stall { first_time } => {
                        for consumer in &late {
                            store::resend_snapshot(tx, saga.user_id, consumer).await?;
                        }
                        let reason =
                            format!(
                            "{} {} not confirmed version {} after {} re-sends; the snapshot is \
                             sent again every {}s until {}",
                            late.join(", "),
                            if late.len() == 1 { "has" } else { "have" },
                            saga.target_version,
                            self.config.resends,
                            self.config.stalled_every.as_secs(),
                            if late.len() == 1 { "it does" } else { "they do" },
                        );
                        self.stall(tx, &saga, first_time, reason, now + stalled_every)
                            .await?
                    }
                }
            }
            OffboardingState::ResolvingAppointments => {
                // The reply ends this state (`store::record_reply`): due here means timed out.
                match decide(false, timed_out, attempts, self.config.resends, stalled) {
                    Wait::Proceed | Wait::KeepWaiting => {
                        store::transition(
                            tx,
                            &saga,
                            Transition {
                                due_at: Some(saga.deadline_at),
                                ..Transition::default()
                            },
                        )
                        .await?
                    }
                    Wait::SendAgain { attempt } => {
                        let command = saga.command_id.unwrap_or_else(Uuid::now_v7);
                        store::send_command(tx, &saga, command).await?;
                        store::step(
                            tx,
                            saga.id,
                            "command-resent",
                            &format!(
                                "no reply from the appointment-service after {}s: command sent \
                                 again (try {attempt} of {})",
                                self.config.timeout.as_secs(),
                                self.config.resends
                            ),
                        )
                        .await?;
                        let deadline = now + timeout;
                        store::transition(
                            tx,
                            &saga,
                            Transition {
                                attempts: Some(saga.attempts + 1),
                                command_id: Some(command),
                                due_at: Some(Some(deadline)),
                                deadline_at: Some(Some(deadline)),
                                ..Transition::default()
                            },
                        )
                        .await?
                    }
                    Wait::Stall { first_time } => {
                        let command = saga.command_id.unwrap_or_else(Uuid::now_v7);
                        store::send_command(tx, &saga, command).await?;
                        let reason = format!(
                            "the appointment-service has not answered after {} re-sends; the \
                             command is sent again every {}s until it does",
                            self.config.resends,
                            self.config.stalled_every.as_secs()
                        );
                        self.stall(tx, &saga, first_time, reason, now + stalled_every)
                            .await?
                    }
                }
            }
            // A finished saga is never due; make sure it is not looked at again.
            _ => {
                store::transition(
                    tx,
                    &saga,
                    Transition {
                        due_at: Some(None),
                        ..Transition::default()
                    },
                )
                .await?
            }
        };
        if written {
            Ok(())
        } else {
            Err(SagaError::Conflict)
        }
    }

    /// Every required consumer confirmed: record each receipt, send the command, wait for the
    /// reply.
    async fn receipts_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        saga: &Saga,
        timeout: chrono::Duration,
    ) -> Result<bool, SagaError> {
        let receipts = consumers::receipts_of(&mut **tx, saga.user_id, saga.target_version).await?;
        for r in receipts.iter().filter(|r| r.current) {
            store::step(
                tx,
                saga.id,
                "receipt",
                &format!(
                    "{} applied version {}{}",
                    r.consumer,
                    r.user_version.unwrap_or_default(),
                    r.delay_seconds
                        .map(|s| format!(", {s:.3} s after the change"))
                        .unwrap_or_default()
                ),
            )
            .await?;
        }
        let command = Uuid::now_v7();
        store::send_command(tx, saga, command).await?;
        store::step(
            tx,
            saga.id,
            "command-sent",
            &format!(
                "every required consumer confirmed version {}: the appointment-service resolves \
                 the future appointments ({})",
                saga.target_version, saga.policy
            ),
        )
        .await?;
        let deadline = Utc::now() + timeout;
        Ok(store::transition(
            tx,
            saga,
            Transition {
                state: Some(OffboardingState::ResolvingAppointments),
                stalled_reason: Some(None),
                attempts: Some(0),
                command_id: Some(command),
                due_at: Some(Some(deadline)),
                deadline_at: Some(Some(deadline)),
                ..Transition::default()
            },
        )
        .await?)
    }

    async fn stall(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        saga: &Saga,
        first_time: bool,
        reason: String,
        next: chrono::DateTime<Utc>,
    ) -> Result<bool, SagaError> {
        if first_time {
            tracing::warn!(offboarding = %saga.id, user_id = %saga.user_id, reason, "offboarding stalled");
            store::step(tx, saga.id, "stalled", &reason).await?;
        }
        Ok(store::transition(
            tx,
            saga,
            Transition {
                stalled_reason: Some(Some(reason)),
                due_at: Some(Some(next)),
                deadline_at: Some(Some(next)),
                ..Transition::default()
            },
        )
        .await?)
    }
}
