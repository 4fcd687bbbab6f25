//! `verify` in the background: one run at a time, its progress readable while it streams the
//! databases (a million users take a while; the page that asked must stay responsive), its
//! result kept until the next run. Only this process's runs are remembered: a restart forgets
//! the last result, and `portal verify` on the command line reports to its own terminal.

use contract::sync_status::{CopyVerify, VerifyRun, VerifyState};
use contract::Timestamp;
use ops::verify::{self, CopySpec};
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Differences listed per copy (the rest are counted in the summary).
const MAX_LISTED: usize = 10;

/// The copies a run compares with `auth_db`, each with its database.
pub type Copies = Vec<(&'static CopySpec, PgPool)>;

/// The run in hand and its live counters (users compared so far, per copy).
struct Current {
    run: VerifyRun,
    checked: Vec<Arc<AtomicU64>>,
}

pub struct VerifyJobs {
    auth: PgPool,
    copies: Copies,
    last: Mutex<Option<Current>>,
}

impl VerifyJobs {
    pub fn new(auth: PgPool, copies: Copies) -> Arc<Self> {
        Arc::new(Self {
            auth,
            copies,
            last: Mutex::new(None),
        })
    }

    /// The lock, even if a panicking holder poisoned it (the state is plain data, always whole).
    fn lock(&self) -> MutexGuard<'_, Option<Current>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last run as it stands now (`None` before the first).
    pub fn snapshot(&self) -> Option<VerifyRun> {
        self.lock().as_ref().map(read)
    }

    /// Starts a run unless one is running; answers the run in hand either way, and whether
    /// this call started it.
    pub fn start(self: &Arc<Self>) -> (VerifyRun, bool) {
        let mut last = self.lock();
        if let Some(current) = last.as_ref() {
            if current.run.state == VerifyState::Running {
                return (read(current), false);
            }
        }
        let checked: Vec<Arc<AtomicU64>> = self
            .copies
            .iter()
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        let run = VerifyRun {
            state: VerifyState::Running,
            started_at: Timestamp::now(),
            finished_at: None,
            users: None,
            copies: self
                .copies
                .iter()
                .map(|(spec, _)| CopyVerify {
                    service: spec.service.to_owned(),
                    database: spec.database.to_owned(),
                    checked: 0,
                    in_sync: None,
                    summary: None,
                    differences: Vec::new(),
                    error: None,
                })
                .collect(),
        };
        let current = Current {
            run: run.clone(),
            checked: checked.clone(),
        };
        *last = Some(current);
        drop(last);
        tracing::info!("verify started from the sync admin API");
        let run_task = tokio::spawn(self.clone().run(checked));
        // A run that panics must not stay "running" for ever (no new run could start, and the
        // page would refresh itself for ever): its end is watched.
        let jobs = self.clone();
        tokio::spawn(async move {
            if let Err(e) = run_task.await {
                tracing::error!(error = %e, "verify run ended abnormally");
                jobs.update(|run| {
                    if run.state == VerifyState::Running {
                        for copy in &mut run.copies {
                            if copy.in_sync.is_none() && copy.error.is_none() {
                                copy.error = Some("the run ended abnormally".to_owned());
                            }
                        }
                        run.state = VerifyState::Failed;
                        run.finished_at = Some(Timestamp::now());
                    }
                });
            }
        });
        (run, true)
    }

    /// Changes the run in hand.
    fn update(&self, change: impl FnOnce(&mut VerifyRun)) {
        if let Some(current) = self.lock().as_mut() {
            change(&mut current.run);
        }
    }

    async fn run(self: Arc<Self>, checked: Vec<Arc<AtomicU64>>) {
        match sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
            .fetch_one(&self.auth)
            .await
        {
            Ok(users) => self.update(|run| run.users = Some(users)),
            Err(e) => {
                let error = format!("cannot read auth_db: {e}");
                tracing::warn!("verify failed: {error}");
                self.update(|run| {
                    for copy in &mut run.copies {
                        copy.error = Some(error.clone());
                    }
                    run.state = VerifyState::Failed;
                    run.finished_at = Some(Timestamp::now());
                });
                return;
            }
        }
        let mut failed = false;
        for (i, (spec, pool)) in self.copies.iter().enumerate() {
            let options = verify::Options::listing(MAX_LISTED).progress(&checked[i]);
            let result = verify::compare(&self.auth, spec, pool, options).await;
            match &result {
                Ok(report) if report.is_in_sync() => tracing::info!(
                    "verify: {} ({}) in sync: {} users",
                    spec.service,
                    spec.database,
                    report.checked
                ),
                Ok(report) => tracing::warn!(
                    "verify: {} ({}) {}",
                    spec.service,
                    spec.database,
                    report.summary()
                ),
                Err(e) => tracing::warn!("verify: {} not compared: {e}", spec.service),
            }
            failed |= result.is_err();
            self.update(|run| {
                let copy = &mut run.copies[i];
                match result {
                    Ok(report) => {
                        copy.checked = report.checked;
                        copy.in_sync = Some(report.is_in_sync());
                        copy.summary = Some(if report.is_in_sync() {
                            format!("in sync: {} users", report.checked)
                        } else {
                            report.summary()
                        });
                        copy.differences = report.listed.iter().map(|d| d.to_string()).collect();
                    }
                    Err(e) => copy.error = Some(e.to_string()),
                }
            });
        }
        failed |= self.by_receipts().await;
        self.update(|run| {
            run.state = if failed {
                VerifyState::Failed
            } else {
                VerifyState::Finished
            };
            run.finished_at = Some(Timestamp::now());
        });
    }
}

impl VerifyJobs {
    /// Every other registered consumer (another team's, whose database the operator does not
    /// read), judged by its receipts as `portal verify` judges it; each is one more entry of the
    /// run (database `receipts`). True when they could not be read.
    async fn by_receipts(&self) -> bool {
        let registered = match ops::status::registered(&self.auth).await {
            Ok(registered) => registered,
            Err(e) => {
                tracing::warn!("verify: the registered consumers not read: {e}");
                return true;
            }
        };
        let mut failed = false;
        for (queues, _) in registered {
            let name = queues.consumer().to_owned();
            if self.copies.iter().any(|(spec, _)| spec.service == name) {
                continue;
            }
            let result = ops::receipts::compare(&self.auth, &name, MAX_LISTED).await;
            let mut entry = CopyVerify {
                service: name.clone(),
                database: "receipts".to_owned(),
                checked: 0,
                in_sync: None,
                summary: None,
                differences: Vec::new(),
                error: None,
            };
            match result {
                Ok(report) => {
                    entry.checked = report.checked;
                    entry.in_sync = Some(report.is_in_sync());
                    entry.summary = Some(if report.is_in_sync() {
                        format!("in sync: {} users confirmed", report.checked)
                    } else {
                        report.summary()
                    });
                    entry.differences = report.listed.iter().map(|d| d.to_string()).collect();
                    tracing::info!(
                        "verify: {name} (receipts) {}",
                        entry.summary.as_deref().unwrap_or_default()
                    );
                }
                Err(e) => {
                    failed = true;
                    tracing::warn!("verify: {name} (receipts) not compared: {e}");
                    entry.error = Some(e.to_string());
                }
            }
            self.update(|run| run.copies.push(entry));
        }
        failed
    }
}

/// The run with each unfinished copy's live count.
fn read(current: &Current) -> VerifyRun {
    let mut run = current.run.clone();
    for (copy, checked) in run.copies.iter_mut().zip(&current.checked) {
        if copy.in_sync.is_none() {
            copy.checked = checked.load(Ordering::Relaxed);
        }
    }
    run
}
