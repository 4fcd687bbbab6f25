//! Temporary passwords: generated secrets shown once (account creation, reset, bulk import),
//! stored with a fast keyed hash and an expiry instead of argon2id.
//!
//! argon2's cost exists to slow down guessing of passwords people choose. A temporary password
//! is 20 characters drawn at random from 57 (about 116 bits): no guessing succeeds against it,
//! stretched or not, so stretching would only cost the server (about 30 hashes/s on two cores,
//! minutes for a hospital's import). The hash is HMAC-SHA-256 under a server secret
//! ([`TagKey`], a file beside the JWT keys that only the auth-service reads, never in the
//! database) over a random 16-byte salt of the row and the password; it is stored as
//! `$portal-temp$v=2$kid=<key id>$exp=<unix seconds>$<salt, base64>$<mac, base64>`, so a copy
//! of `auth_db` alone cannot check a guess. Rows of the first form (`v=1`, keyed by their own
//! salt) still check until they expire. The password must be changed on first use
//! (`mustChangePassword`), and after `exp` it no longer logs in even when right. It is
//! one-time: the login that uses it rewrites it with `exp=0` ([`spent`]), after which it only
//! serves to change the password in the session that login started. Passwords people choose
//! keep argon2id ([`super::hash`]).

use super::Verdict;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::time::Duration;

const PREFIX: &str = "$portal-temp$";
const V1: &str = "v=1$";
const V2: &str = "v=2$";
/// The key file in the auth-service's key directory.
pub const KEY_FILE: &str = "temporary-password.key";

/// How long a temporary password logs in when nothing else is configured.
pub const DEFAULT_TTL: Duration = Duration::from_secs(72 * 3600);

/// The `exp` of a temporary password that has been used to log in.
const SPENT: i64 = 0;

/// The server secret temporary passwords are tagged with, and its id (the first 8 hex digits
/// of its SHA-256), which the stored form names so that a check finds it.
#[derive(Clone)]
pub struct TagKey {
    id: String,
    key: hmac::Key,
}

impl std::fmt::Debug for TagKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TagKey({})", self.id)
    }
}

/// The keys loaded in this process, by id: a check reads the key its stored form names (a
/// process may hold several, e.g. tests with a key directory each).
fn loaded() -> &'static std::sync::Mutex<std::collections::HashMap<String, hmac::Key>> {
    static KEYS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<String, hmac::Key>>,
    > = std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

impl TagKey {
    /// A key of these 32 bytes, registered for checks.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let id: String = digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        if let Ok(mut keys) = loaded().lock() {
            keys.insert(id.clone(), key.clone());
        }
        Self { id, key }
    }

    /// The key in `dir` (the auth-service's key directory), created on first start: 32 bytes
    /// from the system's random source, mode 600. An unreadable file, one others may read, or a
    /// random source that fails is an error, never a weaker key.
    pub fn load_or_create(dir: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = dir.join(KEY_FILE);
        if !path.exists() {
            let mut bytes = [0u8; 32];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
            platform::secret::private_dir(dir)
                .with_context(|| format!("cannot create key directory {}", dir.display()))?;
            platform::secret::write_new_secret(&path, &bytes)?;
            tracing::info!(path = %path.display(), "created the temporary passwords' key");
        }
        Self::load(dir)
    }

    /// The key in `dir`, which must exist (a tool beside the auth-service, e.g. `portal admin
    /// bootstrap` as root: creating it there would leave a file the auth-service's own user
    /// cannot read).
    pub fn load(dir: &std::path::Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = dir.join(KEY_FILE);
        anyhow::ensure!(
            path.exists(),
            "no {KEY_FILE} in {}: start the auth-service once (it creates its keys there), or \
             point JWT_KEY_DIR at its key directory",
            dir.display()
        );
        platform::secret::check_private(&path)?;
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        anyhow::ensure!(
            bytes.len() == 32,
            "{} holds {} bytes, not 32",
            path.display(),
            bytes.len()
        );
        Ok(Self::from_bytes(&bytes))
    }
}

/// `stored` once used: the same secret, which no longer logs in ([`Verdict::Spent`]); `None`
/// when `stored` is not a temporary password's hash.
pub fn spent(stored: &str) -> Option<String> {
    let rest = stored.strip_prefix(PREFIX)?;
    let (version, rest) = if let Some(rest) = rest.strip_prefix(V2) {
        let (kid, rest) = rest.split_once('$')?;
        (format!("{V2}{kid}$"), rest)
    } else {
        (V1.to_owned(), rest.strip_prefix(V1)?)
    };
    let (_, after) = rest.split_once('$')?;
    Some(format!("{PREFIX}{version}exp={SPENT}${after}"))
}

/// Whether `stored` is a temporary password's hash (otherwise it is argon2's PHC string).
pub fn is_temporary(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

fn tag(key: &hmac::Key, salt: &[u8], password: &str) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(salt);
    ctx.update(password.as_bytes());
    ctx.sign()
}

/// The stored form of `password` under `key`, valid until `now + ttl`.
pub fn hash(
    password: &str,
    ttl: Duration,
    now: chrono::DateTime<chrono::Utc>,
    key: &TagKey,
) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let expires = now
        .timestamp()
        .saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let tag = tag(&key.key, &salt, password);
    Ok(format!(
        "{PREFIX}{V2}kid={}$exp={expires}${}${}",
        key.id,
        B64.encode(salt),
        B64.encode(tag.as_ref())
    ))
}

/// Checks `password` against `stored` (a [`hash`]) at `now`, in constant time. A stored form
/// whose key this process has not loaded is an error.
pub fn check(
    password: &str,
    stored: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Verdict> {
    let unreadable = || anyhow::anyhow!("stored temporary password hash is unreadable");
    let rest = stored.strip_prefix(PREFIX).ok_or_else(unreadable)?;
    let (key, rest) = if let Some(rest) = rest.strip_prefix(V2) {
        let (kid, rest) = rest.split_once('$').ok_or_else(unreadable)?;
        let kid = kid.strip_prefix("kid=").ok_or_else(unreadable)?;
        let key = loaded()
            .lock()
            .ok()
            .and_then(|keys| keys.get(kid).cloned())
            .ok_or_else(|| {
                anyhow::anyhow!("temporary password tagged with key {kid}, which is not loaded")
            })?;
        (Some(key), rest)
    } else {
        (None, rest.strip_prefix(V1).ok_or_else(unreadable)?)
    };
    let mut parts = rest.split('$');
    let (Some(exp), Some(salt), Some(tag_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unreadable());
    };
    let expires: i64 = exp
        .strip_prefix("exp=")
        .and_then(|e| e.parse().ok())
        .ok_or_else(unreadable)?;
    let salt = B64.decode(salt).map_err(|_| unreadable())?;
    let expected = B64.decode(tag_b64).map_err(|_| unreadable())?;
    let right = match key {
        Some(key) => {
            // hmac::verify compares in constant time; the message is the salt, then the
            // password, as [`tag`] signs it.
            let mut message = salt.clone();
            message.extend_from_slice(password.as_bytes());
            hmac::verify(&key, &message, &expected).is_ok()
        }
        // The first form: keyed by its own salt.
        None => hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, &salt),
            password.as_bytes(),
            &expected,
        )
        .is_ok(),
    };
    if !right {
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

    fn key() -> TagKey {
        TagKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn a_temporary_hash_checks_the_right_password_until_it_expires() {
        let now = chrono::Utc::now();
        let stored = hash(
            "Kp7mQx2RtZ9wNv4HcJ8s",
            Duration::from_secs(3600),
            now,
            &key(),
        )
        .unwrap();
        assert!(stored.starts_with("$portal-temp$v=2$kid="), "{stored}");
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
        let stored = hash(
            "Kp7mQx2RtZ9wNv4HcJ8s",
            Duration::from_secs(3600),
            now,
            &key(),
        )
        .unwrap();
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
        assert_ne!(
            hash("same", ttl, now, &key()).unwrap(),
            hash("same", ttl, now, &key()).unwrap()
        );
        assert!(check("x", "$portal-temp$v=1$exp=x$AA$AA", now).is_err());
        assert!(check("x", "$portal-temp$v=2$kid=ffffffff$exp=1$AA$AA", now).is_err());
        assert!(check("x", "$portal-temp$v=1$exp=1$!!$AA", now).is_err());
        assert!(check("x", "$argon2id$v=19$m=19456,t=2,p=1$AA$AA", now).is_err());
        assert!(!is_temporary("$argon2id$v=19$m=19456,t=2,p=1$AA$AA"));
    }

    #[test]
    fn the_tag_needs_the_server_key_and_the_first_form_still_checks() {
        let now = chrono::Utc::now();
        let stored = hash("Kp7mQx2RtZ9wNv4HcJ8s", Duration::from_secs(60), now, &key()).unwrap();
        let other = TagKey::from_bytes(&[8u8; 32]);
        let forged = stored.replace(&format!("kid={}", key().id), &format!("kid={}", other.id));
        assert_eq!(
            check("Kp7mQx2RtZ9wNv4HcJ8s", &forged, now).unwrap(),
            Verdict::Wrong
        );
        // A v=1 row: HMAC keyed by its own salt (made here as the first form made it).
        let salt = [3u8; 16];
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salt), b"old-one");
        let v1 = format!(
            "$portal-temp$v=1$exp={}${}${}",
            now.timestamp() + 60,
            B64.encode(salt),
            B64.encode(tag.as_ref())
        );
        assert_eq!(check("old-one", &v1, now).unwrap(), Verdict::Matches);
        assert_eq!(
            spent(&v1).unwrap(),
            v1.replace(&format!("exp={}", now.timestamp() + 60), "exp=0")
        );
    }
}
