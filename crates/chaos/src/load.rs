//! The workload: a few concurrent clients of the auth-service's admin API creating users and
//! changing them (profile edits, activate / deactivate, role changes), paced so the operations
//! spread over the planned duration and the faults land all through it. Only the auth-service
//! is talked to, so the user-service being down never fails the load: events wait in the outbox
//! or the queue, which is the point.

use anyhow::bail;
use api_client::ApiClient;
use contract::api::{CreateUserRequest, UpdateUserRequest};
use contract::UserSnapshot;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const FIRST_NAMES: &[&str] = &[
    "Tendai", "Rudo", "Farai", "Chipo", "Tatenda", "Nyasha", "Tafadzwa", "Kudzai", "Rumbi",
    "Tinashe", "Vimbai", "Simba",
];
const LAST_NAMES: &[&str] = &[
    "Moyo",
    "Dube",
    "Ncube",
    "Sibanda",
    "Mpofu",
    "Chikwanha",
    "Mutasa",
    "Ndlovu",
    "Gumbo",
    "Marufu",
    "Shumba",
    "Zvobgo",
];
const ROLES: &[&str] = &["doctor", "nurse", "pharmacist", "consultant", "admin"];
/// Below this many known users every operation is a create, so changes have users to act on.
const MIN_USERS: usize = 20;
/// Refused operations tolerated before the load gives up: the auth-service is never faulted,
/// so refusals mean something is wrong with it.
const MAX_REFUSED: u64 = 100;

/// Counts of what the API accepted.
#[derive(Debug, Default)]
pub struct LoadCounts {
    pub creates: AtomicU64,
    pub changes: AtomicU64,
    /// Answered non-2xx or not at all (retried: they do not count as operations).
    pub refused: AtomicU64,
}

impl LoadCounts {
    pub fn accepted(&self) -> u64 {
        self.creates.load(Ordering::Relaxed) + self.changes.load(Ordering::Relaxed)
    }
}

struct Known {
    id: Uuid,
    active: bool,
}

enum Op {
    Create,
    Edit(usize),
    Toggle(usize),
    Role(usize),
}

pub struct Load {
    api: ApiClient,
    run_id: String,
    operations: u64,
    create_percent: u8,
    /// Interval between operation starts, all workers together.
    pace: Duration,
    deadline: Duration,
    users: Mutex<Vec<Known>>,
    next_email: AtomicU64,
    /// Operations not yet claimed by a worker; a refused one is handed back.
    remaining: AtomicI64,
    /// Operations started, for pacing.
    started: AtomicU64,
    pub counts: LoadCounts,
}

impl Load {
    pub fn new(
        api: ApiClient,
        run_id: String,
        operations: u64,
        duration: Duration,
        deadline: Duration,
        create_percent: u8,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            api,
            run_id,
            operations,
            create_percent,
            pace: duration
                .checked_div(u32::try_from(operations).unwrap_or(u32::MAX))
                .unwrap_or_default(),
            deadline,
            users: Mutex::new(Vec::new()),
            next_email: AtomicU64::new(0),
            remaining: AtomicI64::new(i64::try_from(operations).unwrap_or(i64::MAX)),
            started: AtomicU64::new(0),
            counts: LoadCounts::default(),
        })
    }

    pub fn operations(&self) -> u64 {
        self.operations
    }

    /// Runs `workers` clients until the planned operations are accepted; fails past the
    /// deadline, after too many refusals, or when `abort` is cancelled.
    pub async fn run(
        &self,
        workers: u16,
        seed: u64,
        abort: &CancellationToken,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let results = futures::future::join_all(
            (0..u64::from(workers)).map(|w| self.worker(start, seed.wrapping_add(w), abort)),
        )
        .await;
        results.into_iter().collect()
    }

    async fn worker(
        &self,
        start: Instant,
        seed: u64,
        abort: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut rng = StdRng::seed_from_u64(seed);
        loop {
            if self.remaining.fetch_sub(1, Ordering::SeqCst) <= 0 {
                return Ok(());
            }
            if start.elapsed() > self.deadline {
                bail!(
                    "the load did not finish within {:?}: {} of {} operations accepted",
                    self.deadline,
                    self.counts.accepted(),
                    self.operations
                );
            }
            // Pacing is the workload's shape (operations spread over the duration), not a wait
            // for anything to happen.
            let slot = self.started.fetch_add(1, Ordering::SeqCst);
            let due = start
                + self
                    .pace
                    .saturating_mul(u32::try_from(slot).unwrap_or(u32::MAX));
            tokio::select! {
                _ = abort.cancelled() => bail!("load aborted"),
                _ = tokio::time::sleep_until(due.into()) => {}
            }
            let op = self.pick(&mut rng);
            match self.perform(op, &mut rng).await {
                Ok(()) => {}
                Err(e) => {
                    self.remaining.fetch_add(1, Ordering::SeqCst);
                    let refused = self.counts.refused.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!("operation refused: {e:#}");
                    if refused > MAX_REFUSED {
                        return Err(e.context(format!(
                            "the auth-service refused {refused} operations; giving up"
                        )));
                    }
                }
            }
        }
    }

    fn pick(&self, rng: &mut StdRng) -> Op {
        let users = self
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if users.len() < MIN_USERS || rng.gen_range(0..100) < self.create_percent {
            return Op::Create;
        }
        let i = rng.gen_range(0..users.len());
        match rng.gen_range(0..100) {
            0..50 => Op::Edit(i),
            50..75 => Op::Toggle(i),
            _ => Op::Role(i),
        }
    }

    fn known(&self, i: usize) -> (Uuid, bool) {
        let users = self
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        users
            .get(i)
            .map_or((Uuid::nil(), true), |u| (u.id, u.active))
    }

    fn remember(&self, i: Option<usize>, user: &UserSnapshot) {
        let (id, active) = (user.user_id.0, user.is_active);
        let mut users = self
            .users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match i.and_then(|i| users.get_mut(i)) {
            Some(known) => known.active = active,
            None => users.push(Known { id, active }),
        }
    }

    async fn perform(&self, op: Op, rng: &mut StdRng) -> anyhow::Result<()> {
        match op {
            Op::Create => {
                let n = self.next_email.fetch_add(1, Ordering::Relaxed);
                let request = CreateUserRequest {
                    email: format!("chaos-{}-{n}@clinic.example", self.run_id),
                    first_name: one(rng, FIRST_NAMES).to_owned(),
                    last_name: one(rng, LAST_NAMES).to_owned(),
                    role: one(rng, &ROLES[..4]).to_owned(),
                    phone_number: Some(phone(rng)),
                };
                let created = self.api.create_user(&request).await?;
                self.remember(None, &created.user);
                self.counts.creates.fetch_add(1, Ordering::Relaxed);
            }
            Op::Edit(i) => {
                let (id, _) = self.known(i);
                let request = match rng.gen_range(0..3) {
                    0 => UpdateUserRequest {
                        first_name: Some(format!(
                            "{} {}",
                            one(rng, FIRST_NAMES),
                            rng.gen_range(1..1000)
                        )),
                        ..UpdateUserRequest::default()
                    },
                    1 => UpdateUserRequest {
                        last_name: Some(format!(
                            "{}-{}",
                            one(rng, LAST_NAMES),
                            rng.gen_range(1..1000)
                        )),
                        ..UpdateUserRequest::default()
                    },
                    _ if rng.gen_bool(0.2) => UpdateUserRequest {
                        phone_number: Some(None),
                        ..UpdateUserRequest::default()
                    },
                    _ => UpdateUserRequest {
                        phone_number: Some(Some(phone(rng))),
                        ..UpdateUserRequest::default()
                    },
                };
                let user = self.api.update_user(id, &request).await?;
                self.remember(Some(i), &user);
                self.counts.changes.fetch_add(1, Ordering::Relaxed);
            }
            Op::Toggle(i) => {
                // Flip what this run last saw; another worker may have flipped it already, and
                // then the API answers 200 without writing anything (still an accepted operation).
                let (id, active) = self.known(i);
                let user = if active {
                    self.api.deactivate(id).await?
                } else {
                    self.api.activate(id).await?
                };
                self.remember(Some(i), &user);
                self.counts.changes.fetch_add(1, Ordering::Relaxed);
            }
            Op::Role(i) => {
                let (id, _) = self.known(i);
                let user = self.api.set_role(id, one(rng, ROLES)).await?;
                self.remember(Some(i), &user);
                self.counts.changes.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

/// A random entry of a non-empty list.
fn one<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.gen_range(0..list.len())]
}

fn phone(rng: &mut StdRng) -> String {
    format!(
        "+263 77 {:03} {:04}",
        rng.gen_range(0..1000),
        rng.gen_range(0..10000)
    )
}
