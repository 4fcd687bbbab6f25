//! Login throttling per account, in `auth_db` so every auth-service process counts the same
//! attempts. An attempt is counted *before* its password is checked (a right password then
//! clears the count), so a flood of parallel guesses cannot all pass before the first failure
//! is recorded, and a locked account costs no hashing at all.
//!
//! Within one window ([`LoginPolicy::window`], a minute) the first attempts are answered at
//! once, later failures after a growing delay ([`LoginPolicy::delay_after`]); the attempt after
//! [`LoginPolicy::max_failures`] locks the account for [`LoginPolicy::lock`] and every attempt
//! during the lock, right password or not, is refused with the time left. The lock ends by
//! itself. Accounts are keyed by the address as typed (normalised), known or not, so the
//! answers do not tell which accounts exist.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;

/// How many failures lock an account, and for how long.
#[derive(Debug, Clone)]
pub struct LoginPolicy {
    /// Failed attempts allowed within one window; the next one locks.
    pub max_failures: i32,
    pub window: Duration,
    pub lock: Duration,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        Self {
            max_failures: Self::DEFAULT_MAX_FAILURES,
            window: Duration::from_secs(60),
            lock: Self::DEFAULT_LOCK,
        }
    }
}

impl LoginPolicy {
    /// Failed attempts in a window before the account locks, unless LOGIN_MAX_FAILURES says.
    pub const DEFAULT_MAX_FAILURES: i32 = 10;
    /// How long a lock lasts, unless LOGIN_LOCK says.
    pub const DEFAULT_LOCK: Duration = Duration::from_secs(300);

    /// How long the answer to the `attempt`-th failure of a window waits: nothing for the first
    /// three, then 250 ms more for each, at most 2 s. It slows a guesser without holding a
    /// thread (the wait is asynchronous) and without locking out a person who mistyped.
    pub fn delay_after(&self, attempt: i32) -> Duration {
        let steps = u64::try_from(attempt.saturating_sub(3)).unwrap_or(0);
        Duration::from_millis((steps * 250).min(2_000))
    }
}

/// What the throttle says about one login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Go on and check the password; this is the `n`-th attempt of the window.
    Allowed(i32),
    /// Refused without checking: locked for this long still; `just_now` when this attempt
    /// set the lock (logged once as a lockout; the refusals after it are not each logged).
    Locked { left: Duration, just_now: bool },
}

/// The throttle's key of an email as typed: trimmed, lower-cased, bounded.
pub fn account_key(email: &str) -> String {
    email.trim().to_lowercase().chars().take(320).collect()
}

/// Counts one attempt at `account` and says whether it may proceed. One statement, so parallel
/// attempts on several auth-service processes count exactly.
pub async fn attempt(db: &PgPool, account: &str, policy: &LoginPolicy) -> sqlx::Result<Attempt> {
    let window = policy.window.as_secs_f64();
    let lock = policy.lock.as_secs_f64();
    // A row whose window or lock has passed starts over at 1; a locked row stays as it is;
    // otherwise the count grows, and passing the limit sets the lock. `now()` is the
    // statement's transaction time, so a lock ending exactly `lock` from it was set just now.
    let (attempts, locked_until, just_now): (i32, Option<DateTime<Utc>>, bool) = sqlx::query_as(
        "INSERT INTO login_throttle AS t (account, attempts, window_started) \
         VALUES ($1, 1, now()) \
         ON CONFLICT (account) DO UPDATE SET \
           attempts = CASE \
             WHEN t.locked_until > now() THEN t.attempts \
             WHEN t.locked_until IS NOT NULL OR t.window_started < now() - make_interval(secs => $2) THEN 1 \
             ELSE t.attempts + 1 END, \
           window_started = CASE \
             WHEN t.locked_until > now() THEN t.window_started \
             WHEN t.locked_until IS NOT NULL OR t.window_started < now() - make_interval(secs => $2) THEN now() \
             ELSE t.window_started END, \
           locked_until = CASE \
             WHEN t.locked_until > now() THEN t.locked_until \
             WHEN t.locked_until IS NULL AND t.window_started >= now() - make_interval(secs => $2) \
                  AND t.attempts + 1 > $4 THEN now() + make_interval(secs => $3) \
             ELSE NULL END \
         RETURNING attempts, locked_until, \
           coalesce(locked_until = now() + make_interval(secs => $3), false)",
    )
    .bind(account)
    .bind(window)
    .bind(lock)
    .bind(policy.max_failures)
    .fetch_one(db)
    .await?;
    Ok(match locked_until {
        Some(until) => {
            let left = (until - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            Attempt::Locked {
                left: left.max(Duration::from_secs(1)),
                just_now,
            }
        }
        None => Attempt::Allowed(attempts),
    })
}

/// An attempt that was not checked (the hashing queue was full) is not counted.
pub async fn refund(db: &PgPool, account: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE login_throttle SET attempts = attempts - 1 \
         WHERE account = $1 AND attempts > 0 AND locked_until IS NULL",
    )
    .bind(account)
    .execute(db)
    .await?;
    Ok(())
}

/// A right password: the account's count starts over.
pub async fn succeeded(db: &PgPool, account: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM login_throttle WHERE account = $1 AND locked_until IS NULL")
        .bind(account)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes rows whose window and lock ended more than a day ago (guesses at addresses that do
/// not exist would otherwise pile up).
pub async fn prune(db: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "DELETE FROM login_throttle WHERE window_started < now() - interval '1 day' \
         AND (locked_until IS NULL OR locked_until < now())",
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_the_third_failure_and_stay_bounded() {
        let p = LoginPolicy::default();
        assert_eq!(p.delay_after(1), Duration::ZERO);
        assert_eq!(p.delay_after(3), Duration::ZERO);
        assert_eq!(p.delay_after(4), Duration::from_millis(250));
        assert_eq!(p.delay_after(6), Duration::from_millis(750));
        assert_eq!(p.delay_after(100), Duration::from_secs(2));
    }

    #[test]
    fn accounts_are_keyed_as_typed_but_normalised() {
        assert_eq!(account_key("  Doctor@Clinic.Test "), "doctor@clinic.test");
        assert_eq!(account_key(&"a".repeat(1000)).len(), 320);
    }
}
