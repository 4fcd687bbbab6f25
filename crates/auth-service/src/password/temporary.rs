//! Temporary passwords: generated secrets shown once (account creation, reset, bulk import),
//! stored with a fast keyed hash and an expiry instead of argon2id.
//!
//! argon2's cost exists to slow down guessing of passwords people choose. A temporary password
//! is 20 characters drawn at random from 57 (about 116 bits): no guessing succeeds against it,
//! stretched or not, so stretching would only cost the server (about 30 hashes/s on two cores,
//! minutes for a hospital's import). The hash is HMAC-SHA-256 keyed with a random 16-byte salt
//! of its own; it is stored as
//! `$portal-temp$v=1$exp=<unix seconds>$<salt, base64>$<mac, base64>`. The password must be
//! changed on first use (`mustChangePassword`), and after `exp` it no longer logs in even when
//! right. It is one-time: the login that uses it rewrites it with `exp=0` ([`spent`]), after
//! which it only serves to change the password in the session that login started.
//! Passwords people choose keep argon2id ([`super::hash`]).

use super::Verdict;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::time::Duration;

const PREFIX: &str = "$portal-temp$v=1$";

/// How long a temporary password logs in when nothing else is configured.
pub const DEFAULT_TTL: Duration = Duration::from_secs(72 * 3600);

/// The `exp` of a temporary password that has been used to log in.
const SPENT: i64 = 0;

/// `stored` once used: the same secret, which no longer logs in ([`Verdict::Spent`]); `None`
/// when `stored` is not a temporary password's hash.
pub fn spent(stored: &str) -> Option<String> {
    let rest = stored.strip_prefix(PREFIX)?;
    let (_, after) = rest.split_once('$')?;
    Some(format!("{PREFIX}exp={SPENT}${after}"))
}

/// Whether `stored` is a temporary password's hash (otherwise it is argon2's PHC string).
pub fn is_temporary(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// The stored form of `password`, valid until `now + ttl`.
pub fn hash(password: &str, ttl: Duration, now: chrono::DateTime<chrono::Utc>) -> String {
    let mut salt = [0u8; 16];
    // The OS's random source does not fail on Linux once booted; if it ever did, a salt of
    // zeros still leaves the 116 random bits of the password itself.
    let _ = SystemRandom::new().fill(&mut salt);
    let expires = now
        .timestamp()
        .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &salt),
        password.as_bytes(),
    );
    format!(
        "{PREFIX}exp={expires}${}${}",
        B64.encode(salt),
        B64.encode(tag.as_ref())
    )
}

/// Checks `password` against `stored` (a [`hash`]) at `now`, in constant time.
pub fn check(
    password: &str,
    stored: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Verdict> {
    let unreadable = || anyhow::anyhow!("stored temporary password hash is unreadable");
    let rest = stored.strip_prefix(PREFIX).ok_or_else(unreadable)?;
    let mut parts = rest.split('$');
    let (Some(exp), Some(salt), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unreadable());
    };
    let expires: i64 = exp
        .strip_prefix("exp=")
        .and_then(|e| e.parse().ok())
        .ok_or_else(unreadable)?;
    let salt = B64.decode(salt).map_err(|_| unreadable())?;
    let tag = B64.decode(tag).map_err(|_| unreadable())?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &salt);
    if hmac::verify(&key, password.as_bytes(), &tag).is_err() {
        return Ok(Verdict::Wrong);
    }
    Ok(if expires == SPENT {
        Verdict::Spent
    } else if now.timestamp() >= expires {
        Verdict::Expired
    } else {
        Verdict::Matches
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_hash_checks_the_right_password_until_it_expires() {
        let now = chrono::Utc::now();
        let stored = hash("Kp7mQx2RtZ9wNv4HcJ8s", Duration::from_secs(3600), now);
        assert!(is_temporary(&stored));
        assert!(!stored.contains("Kp7mQx2RtZ9wNv4HcJ8s"));
        assert_eq!(
            check("Kp7mQx2RtZ9wNv4HcJ8s", &stored, now).unwrap(),
            Verdict::Matches
        );
        assert_eq!(
            check("Kp7mQx2RtZ9wNv4HcJ8t", &stored, now).unwrap(),
            Verdict::Wrong
        );
        let later = now + chrono::Duration::seconds(3600);
        assert_eq!(
            check("Kp7mQx2RtZ9wNv4HcJ8s", &stored, later).unwrap(),
            Verdict::Expired
        );
        // Wrong stays wrong after expiry: expiry says nothing about a wrong password.
        assert_eq!(check("nope", &stored, later).unwrap(), Verdict::Wrong);
    }

    #[test]
    fn a_spent_temporary_password_is_told_apart_only_when_right() {
        let now = chrono::Utc::now();
        let stored = hash("Kp7mQx2RtZ9wNv4HcJ8s", Duration::from_secs(3600), now);
        let used = spent(&stored).unwrap();
        assert!(is_temporary(&used));
        assert_eq!(
            check("Kp7mQx2RtZ9wNv4HcJ8s", &used, now).unwrap(),
            Verdict::Spent
        );
        assert_eq!(
            check("Kp7mQx2RtZ9wNv4HcJ8t", &used, now).unwrap(),
            Verdict::Wrong
        );
        assert_eq!(spent(&used).unwrap(), used);
        assert!(spent("$argon2id$v=19$m=19456,t=2,p=1$AA$AA").is_none());
    }

    #[test]
    fn two_hashes_of_one_password_differ_and_garbage_is_an_error() {
        let now = chrono::Utc::now();
        let ttl = Duration::from_secs(60);
        assert_ne!(hash("same", ttl, now), hash("same", ttl, now));
        assert!(check("x", "$portal-temp$v=1$exp=x$AA$AA", now).is_err());
        assert!(check("x", "$portal-temp$v=1$exp=1$!!$AA", now).is_err());
        assert!(check("x", "$argon2id$v=19$m=19456,t=2,p=1$AA$AA", now).is_err());
        assert!(!is_temporary("$argon2id$v=19$m=19456,t=2,p=1$AA$AA"));
    }
}
