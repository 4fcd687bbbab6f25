//! `portal reconcile`: finds drift between `auth_db` and every consumer's copy (a
//! [`CopySpec`]: `user_db`'s `users`, `appointment_db`'s `clinicians`) with the same streaming
//! comparison as `verify`, and repairs it through the normal pipeline. For each user missing,
//! stale or different in any copy it writes ONE `user.snapshot` event of the user's current
//! state to the auth-service's outbox (so the repair is also in the event store); the relay
//! publishes it to the exchange, so every consumer receives it and applies it when its version
//! is greater than or equal to the stored one — a copy already in sync rewrites the same values
//! (harmless: the snapshot is the state it holds). Users found only in a copy are reported, and
//! deleted from that copy only when asked, together with what depends on them there (the
//! appointment copy flags the future appointments of a doctor it deletes). The schedule
//! (`RECONCILE_INTERVAL`) reconciles each copy on its own, so one that cannot be reached does
//! not hold up the others.
//!
//! A repair counts as done only when `verify` no longer reports it: [`confirm`] re-compares the
//! repaired users in each copy until it has applied its repairs, or the wait runs out (the relay
//! or that consumer is down, the repair is still in the outbox or the queue). "repaired N" never
//! counts a repair that was merely written. Everything is counted per copy, so the summary says
//! which consumer is behind.
//!
//! A copy *ahead* of `auth_db` (a version `auth_db` does not hold: `auth_db` restored from a
//! backup older than the copies, or a forged row) would ignore a snapshot at `auth_db`'s
//! version, and every later change until `auth_db`'s version passed the copy's. So its repair
//! first moves the user's version in `auth_db` past the highest any copy holds (the version
//! fence, `store::write_repairs`), in the transaction of the snapshot: the snapshot applies
//! everywhere by the ordinary rule and the user's next change is newer than anything a copy saw.
//!
//! Memory grows with the drift (the ids to repair), never with the number of users.

use crate::verify::{self, CopySpec, Difference, Kind, VerifyError};
use auth_service::store;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Users repaired per transaction.
const REPAIR_CHUNK: usize = 500;

/// How long a scheduled run waits for its repairs to apply before it reports them unconfirmed.
const SCHEDULED_CONFIRM_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Only report.
    pub dry_run: bool,
    /// Delete users found only in a copy (from that copy).
    pub delete_extra: bool,
}

/// One copy reconciled: a pool on its database and what it is.
pub type CopyPool<'a> = (&'a CopySpec, &'a PgPool);

/// What one copy held and what became of it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopySummary {
    /// The consumer keeping the copy.
    pub service: &'static str,
    /// The copy's database.
    pub database: &'static str,
    /// Users in `auth_db`.
    pub checked: u64,
    pub missing: u64,
    pub stale: u64,
    pub mismatched: u64,
    pub extra: u64,
    /// Repairs this copy has applied: `verify` no longer reports them (set by [`confirm`]).
    pub repaired: u64,
    /// Repairs written but not yet applied by this copy when [`confirm`] stopped waiting.
    pub unconfirmed: u64,
    /// Extra users deleted from this copy.
    pub removed: u64,
    /// Rows changed by the copy's [`verify::OnRemoved`] statement after those deletions.
    pub followed: u64,
    /// What [`CopySummary::followed`] counts, from the copy's [`verify::OnRemoved`].
    followed_as: Option<&'static str>,
    /// The users whose repairs [`confirm`] waits for in this copy.
    repairing: Vec<Uuid>,
}

impl CopySummary {
    fn new(copy: &CopySpec) -> Self {
        Self {
            service: copy.service,
            database: copy.database,
            followed_as: copy.on_removed.map(|then| then.counted_as),
            ..Self::default()
        }
    }

    /// The users this copy misses or holds differently (what a repair fixes).
    pub fn to_repair(&self) -> u64 {
        self.missing + self.stale + self.mismatched
    }

    fn fmt_line(&self, f: &mut fmt::Formatter<'_>, dry_run: bool) -> fmt::Result {
        write!(
            f,
            "{}: {}checked {}, missing {}, stale {}, mismatched {}, extra {}, repaired {}",
            self.service,
            if dry_run { "dry run: " } else { "" },
            self.checked,
            self.missing,
            self.stale,
            self.mismatched,
            self.extra,
            self.repaired
        )?;
        if self.unconfirmed > 0 {
            write!(f, ", not yet applied {}", self.unconfirmed)?;
        }
        if self.removed > 0 {
            write!(f, ", removed {}", self.removed)?;
        }
        if let (Some(what), 1..) = (self.followed_as, self.followed) {
            write!(f, ", {what} {}", self.followed)?;
        }
        Ok(())
    }
}

/// A run over every copy: one [`CopySummary`] per copy, in the order given, and the repairs
/// written for all of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub copies: Vec<CopySummary>,
    /// Users that differ in at least one copy: one repair each.
    pub users_to_repair: u64,
    /// Repair events written to the outbox (one per user, however many copies differ).
    pub written: u64,
    pub dry_run: bool,
}

impl Summary {
    fn total(&self, count: impl Fn(&CopySummary) -> u64) -> u64 {
        self.copies.iter().map(count).sum()
    }

    /// Missing rows, over every copy.
    pub fn missing(&self) -> u64 {
        self.total(|c| c.missing)
    }

    /// Stale rows, over every copy.
    pub fn stale(&self) -> u64 {
        self.total(|c| c.stale)
    }

    /// Mismatched rows, over every copy.
    pub fn mismatched(&self) -> u64 {
        self.total(|c| c.mismatched)
    }

    /// Rows found only in a copy, over every copy.
    pub fn extra(&self) -> u64 {
        self.total(|c| c.extra)
    }

    /// Repairs applied, counted per copy.
    pub fn repaired(&self) -> u64 {
        self.total(|c| c.repaired)
    }

    /// Repairs not applied yet, counted per copy.
    pub fn unconfirmed(&self) -> u64 {
        self.total(|c| c.unconfirmed)
    }

    /// Extra rows deleted, over every copy.
    pub fn removed(&self) -> u64 {
        self.total(|c| c.removed)
    }

    /// Repairs [`confirm`] waits for, counted per copy (its progress's total).
    pub fn awaiting(&self) -> u64 {
        self.total(|c| c.repairing.len() as u64)
    }

    /// The users whose repair some copy has not applied yet (after [`confirm`]).
    pub fn not_applied_users(&self) -> u64 {
        let users: HashSet<Uuid> = self
            .copies
            .iter()
            .flat_map(|c| c.repairing.iter().copied())
            .collect();
        users.len() as u64
    }

    /// The copies with repairs not applied yet (after [`confirm`]).
    pub fn behind(&self) -> impl Iterator<Item = &CopySummary> {
        self.copies.iter().filter(|c| c.unconfirmed > 0)
    }
}

impl fmt::Display for Summary {
    /// One line per copy, e.g. `user-service: checked 10, missing 1, stale 0, mismatched 0,
    /// extra 0, repaired 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, copy) in self.copies.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            copy.fmt_line(f, self.dry_run)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Compare(#[from] VerifyError),
    #[error("writing repair events to auth_db: {0}")]
    Repair(#[from] store::StoreError),
    #[error("deleting extra users from {database}: {source}")]
    Delete {
        database: &'static str,
        source: sqlx::Error,
    },
}

/// The users to repair, each with the highest version a copy holds ahead of `auth_db` (what
/// its repair must pass, so that it applies in every copy).
#[derive(Debug, Default)]
struct Repairs(BTreeMap<Uuid, Option<i64>>);

impl Repairs {
    fn add(&mut self, id: Uuid, version_to_pass: Option<i64>) {
        let pass = self.0.entry(id).or_default();
        *pass = (*pass).max(version_to_pass);
    }
}

/// Finds the drift of every copy and, unless a dry run, writes one repair event per user that
/// differs in any of them (and deletes extra users from the copies holding them, when asked).
/// Every copy is compared before anything is written: an unreachable one stops the run. The
/// repairs are confirmed by [`confirm`].
pub async fn reconcile(
    auth: &PgPool,
    copies: &[CopyPool<'_>],
    options: Options,
) -> Result<Summary, ReconcileError> {
    let mut summary = Summary {
        dry_run: options.dry_run,
        ..Summary::default()
    };
    let mut repairs = Repairs::default();
    // Per copy: its users to repair (what confirm waits for) and its extra users.
    let mut extras: Vec<Vec<Uuid>> = Vec::with_capacity(copies.len());
    for (spec, pool) in copies {
        let mut copy = CopySummary::new(spec);
        let mut extra = Vec::new();
        let mut note = |d: &Difference| {
            if matches!(d.kind, Kind::Extra) {
                extra.push(d.id);
            } else {
                repairs.add(d.id, d.version_to_pass());
                copy.repairing.push(d.id);
            }
        };
        let report =
            verify::compare(auth, spec, pool, verify::Options::default().each(&mut note)).await?;
        copy.checked = report.checked;
        copy.missing = report.missing;
        copy.stale = report.stale;
        copy.mismatched = report.mismatched;
        copy.extra = report.extra;
        summary.copies.push(copy);
        extras.push(extra);
    }
    summary.users_to_repair = repairs.0.len() as u64;
    if options.dry_run {
        for copy in &mut summary.copies {
            copy.repairing.clear();
        }
        return Ok(summary);
    }
    let to_repair: Vec<(Uuid, Option<i64>)> = repairs.0.into_iter().collect();
    for chunk in to_repair.chunks(REPAIR_CHUNK) {
        let mut tx = auth.begin().await.map_err(store::StoreError::from)?;
        let written = store::write_repairs(&mut tx, chunk).await?;
        tx.commit().await.map_err(store::StoreError::from)?;
        summary.written += written as u64;
    }
    if options.delete_extra {
        for (((spec, pool), extra), copy) in copies.iter().zip(&extras).zip(&mut summary.copies) {
            if extra.is_empty() {
                continue;
            }
            let failed = |source| ReconcileError::Delete {
                database: spec.database,
                source,
            };
            let mut tx = pool.begin().await.map_err(failed)?;
            let done = sqlx::query(&format!("DELETE FROM {} WHERE id = ANY($1)", spec.table))
                .bind(extra)
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
            copy.removed = done.rows_affected();
            // A statement of its own after the delete: the delete waited for whatever held
            // these rows (a booking locks its doctor's row FOR SHARE), so this one's snapshot
            // includes what they committed.
            if let Some(then) = spec.on_removed {
                let followed = sqlx::query(then.sql)
                    .bind(extra)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?;
                copy.followed = followed.rows_affected();
            }
            tx.commit().await.map_err(failed)?;
        }
    }
    Ok(summary)
}

/// How often [`confirm`] looks again.
const CONFIRM_POLL: Duration = Duration::from_millis(200);

/// Waits up to `within` for `verify` to stop reporting each repaired user in each copy (the
/// `copies` given to [`reconcile`]), then sets each copy's `repaired` (no longer reported) and
/// `unconfirmed` (still reported). `progress` hears (applied, total) after each look, counted
/// per copy.
pub async fn confirm(
    auth: &PgPool,
    copies: &[CopyPool<'_>],
    summary: &mut Summary,
    within: Duration,
    mut progress: impl FnMut(u64, u64),
) -> Result<(), VerifyError> {
    let deadline = Instant::now() + within;
    let total = summary.awaiting();
    let mut applied = 0;
    for copy in &mut summary.copies {
        copy.repaired = 0;
        copy.unconfirmed = 0;
    }
    loop {
        for copy in summary
            .copies
            .iter_mut()
            .filter(|c| !c.repairing.is_empty())
        {
            let Some((spec, pool)) = copies.iter().find(|(s, _)| s.service == copy.service) else {
                continue;
            };
            // The repaired users that `verify` still reports.
            let mut different = HashSet::new();
            let mut note = |d: &Difference| {
                different.insert(d.id);
            };
            let repaired_only = verify::Options::default()
                .only(&copy.repairing)
                .each(&mut note);
            verify::compare(auth, spec, pool, repaired_only).await?;
            let before = copy.repairing.len();
            copy.repairing.retain(|id| different.contains(id));
            let done = (before - copy.repairing.len()) as u64;
            copy.repaired += done;
            applied += done;
        }
        progress(applied, total);
        if applied == total || Instant::now() + CONFIRM_POLL > deadline {
            break;
        }
        tokio::time::sleep(CONFIRM_POLL).await;
    }
    for copy in &mut summary.copies {
        copy.unconfirmed = copy.repairing.len() as u64;
    }
    Ok(())
}

/// Runs [`reconcile`] over `copies` (each a copy and its database URL) every `interval` until
/// `shutdown` (`RECONCILE_INTERVAL`), logging what it found and repaired.
pub fn spawn_schedule(
    auth_url: String,
    copies: Vec<(&'static CopySpec, String)>,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let auth = platform::db::lazy_pool(&auth_url, 2);
        let pools: Result<Vec<_>, _> = copies
            .iter()
            .map(|(spec, url)| platform::db::lazy_pool(url, 2).map(|pool| (*spec, pool)))
            .collect();
        let (Ok(auth), Ok(pools)) = (auth, pools) else {
            tracing::error!("scheduled reconcile: bad database URL; not running");
            return;
        };
        let copies: Vec<CopyPool<'_>> = pools.iter().map(|(spec, pool)| (*spec, pool)).collect();
        tracing::info!(every = ?interval, "scheduled reconcile on");
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            // Each copy on its own: one that cannot be reached (its service down, its
            // database not created yet) does not stop the repair of the others.
            for copy in &copies {
                let copy = std::slice::from_ref(copy);
                let run = async {
                    let mut summary = reconcile(&auth, copy, Options::default()).await?;
                    // Confirm within the interval at most, so one run never overlaps the next.
                    let within = interval.min(SCHEDULED_CONFIRM_WAIT);
                    confirm(&auth, copy, &mut summary, within, |_, _| {}).await?;
                    Ok::<_, ReconcileError>(summary)
                };
                match run.await {
                    Ok(summary) if summary.unconfirmed() > 0 => tracing::warn!(
                        "scheduled reconcile found drift, some repairs not applied yet: {summary}"
                    ),
                    Ok(summary) if summary.written > 0 => {
                        tracing::warn!("scheduled reconcile repaired drift: {summary}")
                    }
                    Ok(summary) => tracing::info!("scheduled reconcile: {summary}"),
                    Err(e) => tracing::warn!(
                        service = copy[0].0.service,
                        "scheduled reconcile failed: {e}"
                    ),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{APPOINTMENT_SERVICE, USER_SERVICE};

    #[test]
    fn one_repair_per_user_passing_the_highest_version_ahead() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut repairs = Repairs::default();
        repairs.add(a, None);
        repairs.add(a, Some(9));
        repairs.add(a, Some(7));
        repairs.add(a, None);
        repairs.add(b, None);
        assert_eq!(
            repairs.0.into_iter().collect::<Vec<_>>(),
            [(a, Some(9)), (b, None)]
        );
    }

    #[test]
    fn the_summary_has_a_line_per_service_and_totals() {
        let mut users = CopySummary::new(&USER_SERVICE);
        (users.checked, users.missing, users.repaired) = (10, 1, 1);
        let mut clinicians = CopySummary::new(&APPOINTMENT_SERVICE);
        (clinicians.checked, clinicians.stale, clinicians.extra) = (10, 2, 1);
        (
            clinicians.repaired,
            clinicians.unconfirmed,
            clinicians.removed,
            clinicians.followed,
        ) = (1, 1, 1, 2);
        clinicians.repairing = vec![Uuid::from_u128(3)];
        let mut summary = Summary {
            copies: vec![users, clinicians],
            users_to_repair: 3,
            written: 3,
            dry_run: false,
        };
        assert_eq!(
            summary.to_string(),
            "user-service: checked 10, missing 1, stale 0, mismatched 0, extra 0, repaired 1\n\
             appointment-service: checked 10, missing 0, stale 2, mismatched 0, extra 1, \
             repaired 1, not yet applied 1, removed 1, appointments to reassign 2"
        );
        assert_eq!(
            (
                summary.missing(),
                summary.stale(),
                summary.extra(),
                summary.repaired(),
                summary.unconfirmed(),
                summary.not_applied_users()
            ),
            (1, 2, 1, 2, 1, 1)
        );
        assert_eq!(
            summary.behind().map(|c| c.service).collect::<Vec<_>>(),
            ["appointment-service"]
        );
        summary.dry_run = true;
        assert!(summary
            .to_string()
            .starts_with("user-service: dry run: checked 10, missing 1"));
    }
}
