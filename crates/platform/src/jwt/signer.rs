//! The auth-service's signing key ring: the current signing key and every published public
//! key, re-read from the key directory so a rotation needs no restart.

use super::claims::{Claims, AUDIENCE, ISSUER, MAX_ACCESS_TTL_SECONDS, MIN_ACCESS_TTL_SECONDS};
use super::keys::{KeyDir, PublicKey};
use anyhow::Context;
use contract::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::sync::RwLock;
use uuid::Uuid;

/// The auth-service's keys: the current signing key and every published public key, re-read
/// from the key directory by [`KeyRing::reload`] so a rotation needs no restart.
pub struct KeyRing {
    dir: KeyDir,
    ttl_seconds: i64,
    state: RwLock<RingState>,
}

struct RingState {
    signing: EncodingKey,
    /// The current key first (the signing key's public half), then the retired ones.
    published: Vec<PublicKey>,
}

impl RingState {
    fn kid(&self) -> String {
        self.published
            .first()
            .map(|k| k.kid.clone())
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
        })
    }

    fn load(dir: &KeyDir) -> anyhow::Result<RingState> {
        crate::secret::check_private(&dir.private_path())?;
        let pem = std::fs::read(dir.private_path())
            .with_context(|| format!("cannot read {}", dir.private_path().display()))?;
        let signing =
            EncodingKey::from_ed_pem(&pem).context("JWT private key is not Ed25519 PEM")?;
        let published = dir.public_keys()?;
        Ok(RingState { signing, published })
    }

    /// Re-reads the key directory; true when the current key changed (a rotation). A directory
    /// caught half-way through a rotation is read again next time.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let published = self.dir.public_keys()?;
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

    /// The published public keys: the current one first.
    pub fn published(&self) -> Vec<PublicKey> {
        self.state
            .read()
            .map(|s| s.published.clone())
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
    use crate::jwt::{jwks, keys_of_jwks};

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
}
