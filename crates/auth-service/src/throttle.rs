//! Login throttling that a stranger cannot turn against a user. Counted in `auth_db`, so every
//! auth-service process counts the same attempts; an attempt is counted *before* its password is
//! checked (a right one then gives it back), so a flood of parallel guesses cannot all pass
//! before the first failure is recorded, and a refused attempt costs no hashing at all.
//!
//! Three counters, so that guessing costs the guesser and nobody else:
//! - **the pair** (account, source address): within a minute the first failures are answered at
//!   once, later ones after a growing delay ([`LoginPolicy::delay_after`]); the one after
//!   [`LoginPolicy::max_failures`] locks *this pair* for [`LoginPolicy::lock`]. The same person
//!   at another address is not affected.
//! - **the source** (an address, IPv6 by /64): past [`LoginPolicy::source_max_failures`]
//!   attempts at any accounts it is locked for [`LoginPolicy::source_lock`] — except for
//!   accounts that have signed in from it before.
//! - **the account** (from anywhere): distributed guessing. It never locks: beyond
//!   [`LoginPolicy::account_slow_after`] attempts each attempt from an address the account has
//!   not signed in from waits longer ([`LoginPolicy::slowing`], exponential and bounded) before
//!   its password is checked; addresses it signed in from before are not slowed.
//!
//! Accounts are keyed by the address as typed (normalised), known or not, so the answers do
//! not tell which accounts exist. The log never carries the raw input: [`account_ref`].

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::net::IpAddr;
use std::time::Duration;

/// How guesses are counted, locked and slowed.
#[derive(Debug, Clone)]
pub struct LoginPolicy {
    /// Failed attempts at one account from one address within [`Self::window`]; the next
    /// locks that pair.
    pub max_failures: i32,
    pub window: Duration,
    /// How long a pair stays locked.
    pub lock: Duration,
    /// Attempts from one address at any accounts within [`Self::source_window`]; the next
    /// locks the address (for accounts it never signed in to).
    pub source_max_failures: i32,
    pub source_window: Duration,
    pub source_lock: Duration,
    /// Attempts at one account from anywhere within [`Self::account_window`] before new
    /// addresses are slowed.
    pub account_slow_after: i32,
    pub account_window: Duration,
    /// The longest an attempt is slowed.
    pub max_delay: Duration,
}

impl Default for LoginPolicy {
    fn default() -> Self {
        Self {
            max_failures: Self::DEFAULT_MAX_FAILURES,
            window: Duration::from_secs(60),
            lock: Self::DEFAULT_LOCK,
            source_max_failures: Self::DEFAULT_SOURCE_MAX_FAILURES,
            source_window: Duration::from_secs(600),
            source_lock: Duration::from_secs(900),
            account_slow_after: Self::DEFAULT_ACCOUNT_SLOW_AFTER,
            account_window: Duration::from_secs(900),
            max_delay: Duration::from_secs(16),
        }
    }
}

impl LoginPolicy {
    /// Failed attempts of a pair in a window before it locks, unless LOGIN_MAX_FAILURES says.
    pub const DEFAULT_MAX_FAILURES: i32 = 10;
    /// How long a pair's lock lasts, unless LOGIN_LOCK says.
    pub const DEFAULT_LOCK: Duration = Duration::from_secs(300);
    /// Attempts from one address in ten minutes, unless LOGIN_SOURCE_MAX_FAILURES says: a ward
    /// behind one address signs in far less often; a guesser at many accounts far more.
    pub const DEFAULT_SOURCE_MAX_FAILURES: i32 = 100;
    /// Attempts at one account in 15 minutes before new addresses are slowed, unless
    /// LOGIN_ACCOUNT_SLOW_AFTER says.
    pub const DEFAULT_ACCOUNT_SLOW_AFTER: i32 = 20;
    /// How long a known address stays known after its last sign-in.
    pub const KNOWN_SOURCE_KEPT: Duration = Duration::from_secs(90 * 24 * 3600);

    /// How long the answer to the `attempt`-th failure of a pair's window waits: nothing for
    /// the first three, then 250 ms more for each, at most 2 s. It slows a guesser without
    /// holding a thread (the wait is asynchronous) and without locking out a person who
    /// mistyped.
    pub fn delay_after(&self, attempt: i32) -> Duration {
        let steps = u64::try_from(attempt.saturating_sub(3)).unwrap_or(0);
        Duration::from_millis((steps * 250).min(2_000))
    }

    /// How long the `n`-th attempt at an account within its window waits before its password
    /// is checked, when it comes from an address the account has not signed in from: nothing
    /// up to [`Self::account_slow_after`], then 0.5 s doubling with each attempt, at most
    /// [`Self::max_delay`].
    pub fn slowing(&self, n: i32) -> Duration {
        let beyond = n.saturating_sub(self.account_slow_after);
        if beyond <= 0 {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(beyond - 1).unwrap_or(0).min(16);
        Duration::from_millis(500u64 << doublings).min(self.max_delay)
    }
}

/// Which counter refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This account from this address.
    Pair,
    /// This address, at accounts it never signed in to.
    Source,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Pair => "pair_locked",
            Scope::Source => "source_locked",
        }
    }
}

/// What the throttle says about one login attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Go on and check the password; this is the pair's `n`-th attempt of its window. Wait
    /// `slowed` first (distributed guessing at this account, from an address it does not know).
    Allowed {
        n: i32,
        slowed: Duration,
        known: bool,
    },
    /// Refused without checking: locked for this long still; `just_now` when this attempt
    /// set the lock (logged once; the refusals after it are not each logged).
    Locked {
        scope: Scope,
        left: Duration,
        just_now: bool,
    },
}

impl Attempt {
    /// The metric label of this decision.
    pub fn decision(&self) -> &'static str {
        match self {
            Attempt::Allowed { slowed, .. } if !slowed.is_zero() => "slowed",
            Attempt::Allowed { .. } => "allowed",
            Attempt::Locked { scope, .. } => scope.as_str(),
        }
    }
}

/// The throttle's key of an email as typed: trimmed, lower-cased, bounded.
pub fn account_key(email: &str) -> String {
    email.trim().to_lowercase().chars().take(320).collect()
}

/// What the security log says instead of the email as typed (which may be a mistyped
/// password): the first 12 hex digits of its key's SHA-256, enough to tell lines about the
/// same account apart from others.
pub fn account_ref(account: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, account.as_bytes());
    digest
        .as_ref()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The throttle's key of a client address: IPv4 as it is, IPv6 by its /64 (one customer's
/// network; an attacker holds all of it), an IPv4-mapped IPv6 address as the IPv4 it maps.
pub fn source_key(client: Option<IpAddr>) -> String {
    match client.map(platform::client_addr::limit_key) {
        None => "unknown".to_owned(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(net)) => format!("{net}/64"),
    }
}

fn pair(account: &str, source: &str) -> String {
    format!("pair:{account}|{source}")
}

/// Counts one attempt under `key` and answers (attempts in the window, the lock's end, whether
/// this attempt set it). One statement, so parallel attempts on several processes count
/// exactly. A row whose window or lock has passed starts over at 1; a locked row stays as it is;
/// otherwise the count grows, and passing `max` sets the lock. `now()` is the statement's
/// transaction time, so a lock ending exactly `lock` from it was set just now.
async fn count(
    db: &PgPool,
    key: &str,
    max: i32,
    window: Duration,
    lock: Duration,
) -> sqlx::Result<(i32, Option<DateTime<Utc>>, bool)> {
    // A key locked now is answered from a read: a flood at a locked pair writes nothing (no
    // row lock to queue on, no commit to flush), so refusing it costs almost nothing.
    sqlx::query_as(
        "WITH locked AS ( \
           SELECT attempts, locked_until FROM login_throttle \
           WHERE key = $1 AND locked_until > now()), \
         counted AS ( \
           INSERT INTO login_throttle AS t (key, attempts, window_started) \
           SELECT $1, 1, now() WHERE NOT EXISTS (SELECT 1 FROM locked) \
           ON CONFLICT (key) DO UPDATE SET \
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
             coalesce(locked_until = now() + make_interval(secs => $3), false) AS just_now) \
         SELECT attempts, locked_until, just_now FROM counted \
         UNION ALL SELECT attempts, locked_until, false FROM locked",
    )
    .bind(key)
    .bind(window.as_secs_f64())
    .bind(lock.as_secs_f64())
    .bind(max)
    .fetch_one(db)
    .await
}

fn locked(scope: Scope, until: DateTime<Utc>, just_now: bool) -> Attempt {
    Attempt::Locked {
        scope,
        left: left_until(until),
        just_now,
    }
}

/// Counts one attempt under `key` (a counter of another part: the second factor's wrong codes)
/// and answers how long it is locked, if it is (this attempt's lock included).
pub async fn locked_for(
    db: &PgPool,
    key: &str,
    max: i32,
    window: Duration,
    lock: Duration,
) -> sqlx::Result<Option<Duration>> {
    let (_, until, _) = count(db, key, max, window, lock).await?;
    Ok(until.map(left_until))
}

/// How long `key` is locked still, if it is; counts nothing.
pub async fn is_locked(db: &PgPool, key: &str) -> sqlx::Result<Option<Duration>> {
    let until: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT locked_until FROM login_throttle WHERE key = $1 AND locked_until > now()",
    )
    .bind(key)
    .fetch_optional(db)
    .await?
    .flatten();
    Ok(until.map(left_until))
}

fn left_until(until: DateTime<Utc>) -> Duration {
    (until - Utc::now())
        .to_std()
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1))
}

/// Whether `account` signed in successfully from `source` within the last 90 days.
pub async fn is_known(db: &PgPool, account: &str, source: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM login_known_sources \
         WHERE account = $1 AND source = $2 AND last_success > now() - make_interval(secs => $3))",
    )
    .bind(account)
    .bind(source)
    .bind(LoginPolicy::KNOWN_SOURCE_KEPT.as_secs_f64())
    .fetch_one(db)
    .await
}

/// Counts one attempt at `account` from `source` and says whether it may proceed.
pub async fn attempt(
    db: &PgPool,
    account: &str,
    source: &str,
    policy: &LoginPolicy,
) -> sqlx::Result<Attempt> {
    let (n, until, just_now) = count(
        db,
        &pair(account, source),
        policy.max_failures,
        policy.window,
        policy.lock,
    )
    .await?;
    if let Some(until) = until {
        return Ok(locked(Scope::Pair, until, just_now));
    }
    let known = is_known(db, account, source).await?;
    if !known {
        let (_, until, just_now) = count(
            db,
            &format!("addr:{source}"),
            policy.source_max_failures,
            policy.source_window,
            policy.source_lock,
        )
        .await?;
        if let Some(until) = until {
            // Refused unchecked: the pair's count gives this attempt back.
            give_back(db, &[pair(account, source)]).await?;
            return Ok(locked(Scope::Source, until, just_now));
        }
    }
    let (at_account, _, _) = count(
        db,
        &format!("acct:{account}"),
        i32::MAX,
        policy.account_window,
        Duration::ZERO,
    )
    .await?;
    let slowed = if known {
        Duration::ZERO
    } else {
        policy.slowing(at_account)
    };
    Ok(Attempt::Allowed { n, slowed, known })
}

async fn give_back(db: &PgPool, keys: &[String]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE login_throttle SET attempts = attempts - 1 \
         WHERE key = ANY($1) AND attempts > 0 AND locked_until IS NULL",
    )
    .bind(keys)
    .execute(db)
    .await?;
    Ok(())
}

/// An attempt that was not checked (the hashing queue was full) is not counted.
pub async fn refund(db: &PgPool, account: &str, source: &str) -> sqlx::Result<()> {
    give_back(
        db,
        &[
            pair(account, source),
            format!("addr:{source}"),
            format!("acct:{account}"),
        ],
    )
    .await
}

/// A right password: the pair's count starts over, the address and the account get the attempt
/// back, and the address becomes known to the account.
pub async fn succeeded(db: &PgPool, account: &str, source: &str) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM login_throttle WHERE key = $1 AND locked_until IS NULL")
        .bind(pair(account, source))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE login_throttle SET attempts = attempts - 1 \
         WHERE key = ANY($1) AND attempts > 0 AND locked_until IS NULL",
    )
    .bind([format!("addr:{source}"), format!("acct:{account}")])
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO login_known_sources (account, source, last_success) VALUES ($1, $2, now()) \
         ON CONFLICT (account, source) DO UPDATE SET last_success = now()",
    )
    .bind(account)
    .bind(source)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Deletes counters whose window and lock ended more than a day ago (guesses at addresses that
/// do not exist would otherwise pile up) and known addresses past their 90 days.
pub async fn prune(db: &PgPool) -> sqlx::Result<u64> {
    let counters = sqlx::query(
        "DELETE FROM login_throttle WHERE window_started < now() - interval '1 day' \
         AND (locked_until IS NULL OR locked_until < now())",
    )
    .execute(db)
    .await?;
    let known = sqlx::query(
        "DELETE FROM login_known_sources WHERE last_success < now() - make_interval(secs => $1)",
    )
    .bind(LoginPolicy::KNOWN_SOURCE_KEPT.as_secs_f64())
    .execute(db)
    .await?;
    Ok(counters.rows_affected() + known.rows_affected())
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
    fn slowing_starts_past_the_ceiling_doubles_and_stays_bounded() {
        let p = LoginPolicy::default();
        assert_eq!(p.slowing(1), Duration::ZERO);
        assert_eq!(p.slowing(p.account_slow_after), Duration::ZERO);
        assert_eq!(
            p.slowing(p.account_slow_after + 1),
            Duration::from_millis(500)
        );
        assert_eq!(p.slowing(p.account_slow_after + 3), Duration::from_secs(2));
        assert_eq!(p.slowing(i32::MAX), p.max_delay);
    }

    #[test]
    fn accounts_are_keyed_as_typed_but_normalised() {
        assert_eq!(account_key("  Doctor@Clinic.Test "), "doctor@clinic.test");
        assert_eq!(account_key(&"a".repeat(1000)).len(), 320);
    }

    #[test]
    fn the_log_reference_hides_the_input_but_tells_accounts_apart() {
        let a = account_ref("doctor@clinic.test");
        assert_eq!(a.len(), 12);
        assert!(!a.contains("doctor"));
        assert_ne!(a, account_ref("nurse@clinic.test"));
    }

    #[test]
    fn sources_are_addresses_and_ipv6_networks() {
        let v6a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(source_key(Some(v6a)), source_key(Some(v6b)));
        assert_eq!(source_key(Some(v6a)), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(source_key(Some(mapped)), "10.1.2.3");
        assert_eq!(source_key(None), "unknown");
    }
}
