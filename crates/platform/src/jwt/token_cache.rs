//! The verifier's private memory of access tokens already verified, so a token is checked with
//! Ed25519 once rather than on every request it comes with. The profile of the HTTP row
//! (BENCHMARKS.md) put signature checks at 15% of the busiest service threads; a client sends
//! the same token for its whole lifetime.
//!
//! Entries are keyed by the SHA-256 of the token's exact text (a lookup compares digests, never
//! the secret itself), hold the claims the full check produced and the id of the key that
//! signed the token, and are honoured only until the token's `exp` (with the verifier's leeway)
//! — exactly as long as the full check would accept it. The cache is bounded, and when the
//! verifier's keys change the tokens of a key that is gone are forgotten, so a withdrawn key
//! stops its tokens as soon as the verifier learns of it. (The verifier checks a remembered
//! token's lifetime again on every use: the cache is never a way around that check.)

use super::claims::Claims;
use std::collections::HashMap;
use std::sync::Mutex;

/// At most this many tokens are remembered (about 1 MiB): far more than the staff signed in to
/// one service at a time; when full, expired entries go first, then everything.
pub const CAPACITY: usize = 4096;

type Digest = [u8; 32];

#[derive(Default)]
pub struct TokenCache {
    verified: Mutex<HashMap<Digest, Entry>>,
}

/// A token fully verified: its claims, and the key id it was verified with.
struct Entry {
    kid: String,
    claims: Claims,
}

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// True while a token expiring at `exp` is still accepted at `now` (seconds), as
/// `jsonwebtoken` decides it: refused once `exp < now - leeway`.
fn live(exp: i64, now: i64, leeway: u64) -> bool {
    exp >= now.saturating_sub(i64::try_from(leeway).unwrap_or(i64::MAX))
}

impl TokenCache {
    /// The claims of `token` if it was verified before and has not expired at `now`.
    pub fn get(&self, token: &str, now: i64, leeway: u64) -> Option<Claims> {
        let key = digest(token);
        let mut verified = self.verified.lock().ok()?;
        match verified.get(&key) {
            Some(entry) if live(entry.claims.exp, now, leeway) => Some(entry.claims.clone()),
            Some(_) => {
                verified.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers `claims` as the result of fully verifying `token` with the key `kid`.
    pub fn put(&self, token: &str, kid: &str, claims: &Claims, now: i64, leeway: u64) {
        let Ok(mut verified) = self.verified.lock() else {
            return;
        };
        if verified.len() >= CAPACITY {
            verified.retain(|_, e| live(e.claims.exp, now, leeway));
            if verified.len() >= CAPACITY {
                verified.clear();
            }
        }
        verified.insert(
            digest(token),
            Entry {
                kid: kid.to_owned(),
                claims: claims.clone(),
            },
        );
    }

    /// Forgets the tokens verified with a key `keep` refuses (the verifier's keys changed and
    /// those are gone).
    pub fn retain_keys(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut verified) = self.verified.lock() {
            verified.retain(|_, e| keep(&e.kid));
        }
    }

    /// Forgets every token.
    #[cfg(test)]
    pub fn clear(&self) {
        if let Ok(mut verified) = self.verified.lock() {
            verified.clear();
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.verified.lock().map(|v| v.len()).unwrap_or(0)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::Role;
    use uuid::Uuid;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: Uuid::new_v4(),
            email: "a@b.co".into(),
            role: Role::Doctor,
            iss: "i".into(),
            aud: "a".into(),
            iat: exp - 60,
            exp,
            mcp: false,
        }
    }

    #[test]
    fn a_token_is_remembered_until_it_expires_and_only_by_its_exact_text() {
        let cache = TokenCache::default();
        cache.put("t1", "k", &claims(1_000), 900, 5);
        assert_eq!(cache.get("t1", 900, 5).map(|c| c.exp), Some(1_000));
        assert!(
            cache.get("t1x", 900, 5).is_none(),
            "another text is another token"
        );
        assert!(cache.get("t1", 1_005, 5).is_some(), "within the leeway");
        assert!(
            cache.get("t1", 1_006, 5).is_none(),
            "expired: the full check decides"
        );
        assert!(cache.is_empty(), "an expired entry is dropped when seen");
    }

    #[test]
    fn the_cache_stays_bounded_dropping_expired_entries_first() {
        let cache = TokenCache::default();
        for i in 0..CAPACITY {
            // Half of them expired by now = 10_000.
            let exp = if i % 2 == 0 { 100 } else { 20_000 };
            cache.put(&format!("t{i}"), "k", &claims(exp), 10_000, 5);
        }
        assert_eq!(cache.len(), CAPACITY);
        cache.put("fresh", "k", &claims(20_000), 10_000, 5);
        assert_eq!(cache.len(), CAPACITY / 2 + 1);
        assert!(cache.get("t1", 10_000, 5).is_some());
        assert!(cache.get("fresh", 10_000, 5).is_some());
        cache.clear();
        assert!(cache.get("fresh", 10_000, 5).is_none());
    }

    #[test]
    fn the_tokens_of_a_withdrawn_key_are_forgotten_and_only_those() {
        let cache = TokenCache::default();
        cache.put("old", "k1", &claims(2_000), 1_000, 5);
        cache.put("new", "k2", &claims(2_000), 1_000, 5);
        cache.retain_keys(|kid| kid == "k2");
        assert!(cache.get("old", 1_000, 5).is_none(), "k1 is gone");
        assert!(cache.get("new", 1_000, 5).is_some(), "k2 stays");
    }
}
