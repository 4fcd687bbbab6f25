//! Access tokens: EdDSA (Ed25519) JWTs. The auth-service holds the private key and signs; every
//! other service holds only the public key and verifies, so nothing but the auth-service can mint
//! a token. `iss`, `aud` and `exp` are always checked.

use anyhow::Context;
use base64::Engine;
use contract::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::KeyPair as _;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use uuid::Uuid;

pub const ISSUER: &str = "auth-service";
pub const AUDIENCE: &str = "clinical-portal";
const PRIVATE_FILE: &str = "jwt-ed25519.key";
const PUBLIC_FILE: &str = "jwt-ed25519.pub";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow it.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// What a token says about its bearer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub email: String,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}

/// Where the key pair lives: `<dir>/jwt-ed25519.key` (private, 0600) and `<dir>/jwt-ed25519.pub`.
#[derive(Debug, Clone)]
pub struct KeyDir(pub PathBuf);

impl KeyDir {
    pub fn private_path(&self) -> PathBuf {
        self.0.join(PRIVATE_FILE)
    }

    pub fn public_path(&self) -> PathBuf {
        self.0.join(PUBLIC_FILE)
    }

    /// Creates the key pair on first use; later calls reuse it, so tokens survive restarts.
    pub fn ensure_key_pair(&self) -> anyhow::Result<()> {
        if self.private_path().exists() {
            return Ok(());
        }
        crate::secret::private_dir(&self.0)
            .with_context(|| format!("cannot create key directory {}", self.0.display()))?;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow::anyhow!("cannot generate an Ed25519 key"))?;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("generated Ed25519 key is unreadable"))?;
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        crate::secret::write_new_secret(
            &self.private_path(),
            pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes(),
        )?;
        std::fs::write(self.public_path(), pem("PUBLIC KEY", &spki))
            .with_context(|| format!("cannot write {}", self.public_path().display()))?;
        tracing::info!(dir = %self.0.display(), "created JWT signing key pair");
        Ok(())
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Signs access tokens (auth-service only).
pub struct JwtSigner {
    key: EncodingKey,
    ttl_seconds: i64,
}

impl JwtSigner {
    pub fn from_key_dir(dir: &KeyDir, ttl_seconds: i64) -> anyhow::Result<Self> {
        dir.ensure_key_pair()?;
        crate::secret::check_private(&dir.private_path())?;
        let pem = std::fs::read(dir.private_path())
            .with_context(|| format!("cannot read {}", dir.private_path().display()))?;
        let key = EncodingKey::from_ed_pem(&pem).context("JWT private key is not Ed25519 PEM")?;
        Ok(Self { key, ttl_seconds })
    }

    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
    }

    pub fn sign(&self, user_id: Uuid, email: &str, role: Role) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            email: email.to_owned(),
            role,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + self.ttl_seconds,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &self.key,
        )?)
    }
}

/// Verifies access tokens with the public key only.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    pub fn from_key_dir(dir: &KeyDir) -> anyhow::Result<Self> {
        let path = dir.public_path();
        let pem = std::fs::read(&path).with_context(|| {
            format!(
                "JWT public key not found at {}: start the auth-service once (it creates the key \
                 pair) or point JWT_KEY_DIR at the auth-service's key directory",
                path.display()
            )
        })?;
        let key = DecodingKey::from_ed_pem(&pem).context("JWT public key is not Ed25519 PEM")?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(Self { key, validation })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_signed_with_the_private_key_verify_with_the_public_key_only() {
        let dir = std::env::temp_dir().join(format!("jwt-test-{}", Uuid::new_v4()));
        let keys = KeyDir(dir.clone());
        let signer = JwtSigner::from_key_dir(&keys, 60).unwrap();
        let verifier = JwtVerifier::from_key_dir(&keys).unwrap();
        let id = Uuid::new_v4();
        let token = signer.sign(id, "a@b.co", Role::Doctor).unwrap();
        let claims = verifier.verify(&token).unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.role, Role::Doctor);

        // A token from another key pair, an expired one, and a tampered one are all refused.
        let other = KeyDir(dir.join("other"));
        let forged = JwtSigner::from_key_dir(&other, 60).unwrap();
        assert!(verifier
            .verify(&forged.sign(id, "a@b.co", Role::Admin).unwrap())
            .is_err());
        let expired = JwtSigner::from_key_dir(&keys, -120).unwrap();
        assert!(verifier
            .verify(&expired.sign(id, "a@b.co", Role::Doctor).unwrap())
            .is_err());
        let mut tampered = token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert!(verifier.verify(&tampered).is_err());
        std::fs::remove_dir_all(dir).ok();
    }
}
