//! The auth-service's signing key ring: the current signing key and every published public
//! key, re-read from the key directory so a rotation needs no restart, and retired keys
//! withdrawn once past their kept time.

use super::claims::{Claims, AUDIENCE, ISSUER, MAX_ACCESS_TTL_SECONDS, MIN_ACCESS_TTL_SECONDS};
use super::keys::{HeldKey, KeyDir, PublicKey};
use anyhow::Context;
use contract::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::SystemTime;
use uuid::Uuid;

/// The auth-service's keys: the current signing key and every published public key, re-read
/// from the key directory by [`KeyRing::reload`] so a rotation needs no restart.
pub struct KeyRing {
    dir: KeyDir,
    ttl_seconds: i64,
    state: RwLock<RingState>,
    /// A prune failed and was said; said again only after one succeeded.
    prune_failing: AtomicBool,
}

struct RingState {
    signing: EncodingKey,
    /// The current key first (the signing key's public half), then the retired ones still kept.
    published: Vec<HeldKey>,
}

impl RingState {
    fn kid(&self) -> String {
        self.published
            .first()
            .map(|k| k.key.kid.clone())
            .unwrap_or_default()
    }
}

impl KeyRing {
    /// Loads (creating on first start) the key directory; `ttl_seconds` must lie within
    /// [`MIN_ACCESS_TTL_SECONDS`]..=[`MAX_ACCESS_TTL_SECONDS`].
    pub fn open(dir: &KeyDir, ttl_seconds: i64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (MIN_ACCESS_TTL_SECONDS..=MAX_ACCESS_TTL_SECONDS).contains(&ttl_seconds),
            "an access token lives {MIN_ACCESS_TTL_SECONDS} to {MAX_ACCESS_TTL_SECONDS} seconds, \
             not {ttl_seconds}"
        );
        dir.ensure_key_pair()?;
        Ok(Self {
            dir: dir.clone(),
            ttl_seconds,
            state: RwLock::new(Self::load(dir)?),
            prune_failing: AtomicBool::new(false),
        })
    }

    fn load(dir: &KeyDir) -> anyhow::Result<RingState> {
        crate::secret::check_private(&dir.private_path())?;
        let pem = std::fs::read(dir.private_path())
            .with_context(|| format!("cannot read {}", dir.private_path().display()))?;
        let signing =
            EncodingKey::from_ed_pem(&pem).context("JWT private key is not Ed25519 PEM")?;
        let published = dir.held_keys()?;
        Ok(RingState { signing, published })
    }

    /// Removes the retired keys past their kept time, then re-reads the key directory; true when
    /// the current key changed (a rotation). A directory caught half-way through a rotation is
    /// read again next time. (The auth-service calls this every few seconds.)
    pub fn reload(&self) -> anyhow::Result<bool> {
        // A key that cannot be removed is still withdrawn: it is no longer read as published.
        match self.dir.prune_retired() {
            Ok(_) => self.prune_failing.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.prune_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "cannot remove a retired JWT key past its kept time (no longer published)"
                    );
                }
            }
        }
        let published = self.dir.held_keys()?;
        if self.state.read().is_ok_and(|s| s.published == published) {
            return Ok(false);
        }
        let fresh = Self::load(&self.dir)?;
        let rotated = fresh.kid() != self.kid();
        if let Ok(mut state) = self.state.write() {
            *state = fresh;
        }
        Ok(rotated)
    }

    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
    }

    /// The id of the key new tokens are signed with.
    pub fn kid(&self) -> String {
        self.state.read().map(|s| s.kid()).unwrap_or_default()
    }

    /// The published public keys: the current one first, then the retired ones still kept. A
    /// retired key past its kept time is left out here, when the JWKS is published, even before
    /// the next [`KeyRing::reload`] removes it.
    pub fn published(&self) -> Vec<PublicKey> {
        let now = SystemTime::now();
        self.state
            .read()
            .map(|s| {
                s.published
                    .iter()
                    .filter(|k| k.kept_at(now))
                    .map(|k| k.key.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn sign(&self, user_id: Uuid, email: &str, role: Role) -> anyhow::Result<String> {
        self.sign_for(user_id, email, role, false)
    }

    /// [`KeyRing::sign`] for an account that must (or need not) change its password first.
    pub fn sign_for(
        &self,
        user_id: Uuid,
        email: &str,
        role: Role,
        must_change_password: bool,
    ) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            email: email.to_owned(),
            role,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + self.ttl_seconds,
            mcp: must_change_password,
        };
        let state = self
            .state
            .read()
            .map_err(|_| anyhow::anyhow!("the key ring is poisoned"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(state.kid());
        Ok(jsonwebtoken::encode(&header, &claims, &state.signing)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{jwks, keys_of_jwks, RETIRED_KEY_KEPT};
    use std::time::Duration;

    #[test]
    fn access_token_lifetimes_are_bounded() {
        let keys = KeyDir::temp();
        assert!(KeyRing::open(&keys, 3600).is_err());
        assert!(KeyRing::open(&keys, 10).is_err());
        assert!(KeyRing::open(&keys, MAX_ACCESS_TTL_SECONDS).is_ok());
        std::fs::remove_dir_all(&keys.0).ok();
    }

    #[test]
    fn a_rotation_publishes_the_new_key_first_and_keeps_the_old_one() {
        let keys = KeyDir::temp();
        let ring = KeyRing::open(&keys, 60).unwrap();
        let old = ring.kid();
        let new = keys.rotate().unwrap();
        assert_ne!(old, new);
        assert!(ring.reload().unwrap(), "the ring sees the rotation");
        assert_eq!(ring.kid(), new);
        let published: Vec<String> = ring.published().into_iter().map(|k| k.kid).collect();
        assert_eq!(published[0], new);
        assert!(published.contains(&old));
        assert!(!ring.reload().unwrap(), "nothing changed since");
        // A JWKS round-trips, and a kid that is not the key's thumbprint is refused.
        let doc = jwks(&ring.published());
        assert_eq!(keys_of_jwks(&doc).unwrap(), ring.published());
        let mut forged = doc.clone();
        forged["keys"][0]["kid"] = serde_json::json!(old);
        assert!(keys_of_jwks(&forged).is_err());
        std::fs::remove_dir_all(&keys.0).ok();
    }

    fn kids(keys: &[PublicKey]) -> Vec<String> {
        keys.iter().map(|k| k.kid.clone()).collect()
    }

    #[test]
    fn a_retired_key_is_withdrawn_once_past_its_kept_time() {
        let keys = KeyDir::temp();
        let ring = KeyRing::open(&keys, 60).unwrap();
        let old = ring.kid();
        let new = keys.rotate().unwrap();
        ring.reload().unwrap();
        assert_eq!(kids(&ring.published()), [new.clone(), old.clone()]);
        // Retired longer ago than it is kept (as if the rotation was an hour and a minute ago).
        let file = keys.0.join("retired").join(format!("{old}.pub"));
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(SystemTime::now() - RETIRED_KEY_KEPT - Duration::from_secs(60))
            .unwrap();
        // No longer read as published, and the ring's next reload removes the file.
        assert_eq!(
            kids(&keys.public_keys().unwrap()),
            std::slice::from_ref(&new)
        );
        assert!(!ring.reload().unwrap(), "the current key did not change");
        assert!(!file.exists(), "the retired key's file is removed");
        assert_eq!(kids(&ring.published()), std::slice::from_ref(&new));
        // Between two reloads, the ring leaves out a retired key whose time has passed (as an
        // hour passing does to the one retired just now).
        let other = KeyDir(keys.0.join("other"));
        other.ensure_key_pair().unwrap();
        if let Ok(mut state) = ring.state.write() {
            state.published.push(HeldKey {
                key: other.current_public_key().unwrap(),
                retired_at: Some(SystemTime::now() - RETIRED_KEY_KEPT - Duration::from_secs(1)),
            });
        }
        assert_eq!(kids(&ring.published()), [new]);
        std::fs::remove_dir_all(&keys.0).ok();
    }
}
