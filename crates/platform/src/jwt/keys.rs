//! The key files and their rotation: where the Ed25519 pair and the retired public keys live
//! ([`KeyDir`]), one public key and its id ([`PublicKey`]), and JWKS documents of them.

use anyhow::Context;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::DecodingKey;
use ring::signature::KeyPair as _;
use std::path::PathBuf;
use std::time::Duration;

/// How long a retired public key stays published after a rotation: longer than any access
/// token signed with it can live.
pub const RETIRED_KEY_KEPT: Duration = Duration::from_secs(3600);
/// Where the auth-service publishes its public keys.
pub const JWKS_PATH: &str = "/api/v1/auth/.well-known/jwks.json";
const PRIVATE_FILE: &str = "jwt-ed25519.key";
const PUBLIC_FILE: &str = "jwt-ed25519.pub";
const RETIRED_DIR: &str = "retired";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow it.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// One Ed25519 public key and its id (the RFC 7638 thumbprint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    /// The 32 raw key bytes.
    raw: Vec<u8>,
}

impl PublicKey {
    fn from_raw(raw: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(raw.len() == 32, "an Ed25519 public key has 32 bytes");
        let x = URL_SAFE_NO_PAD.encode(raw);
        // RFC 7638: the SHA-256 of the required members in lexicographic order, no spaces.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
        Ok(Self {
            kid: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            raw: raw.to_vec(),
        })
    }

    fn from_pem(pem: &[u8]) -> anyhow::Result<Self> {
        let text = std::str::from_utf8(pem).context("a public key file is not text")?;
        let b64: String = text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let der = STANDARD
            .decode(b64.trim())
            .context("a public key file is not PEM")?;
        let raw = der
            .strip_prefix(&ED25519_SPKI_PREFIX[..])
            .context("a public key file is not an Ed25519 key")?;
        Self::from_raw(raw)
    }

    /// The key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(&self.raw),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    pub(super) fn decoding_key(&self) -> DecodingKey {
        // jsonwebtoken hands these bytes to ring as the raw 32-byte key.
        DecodingKey::from_ed_der(&self.raw)
    }
}

/// A JWKS document of `keys`.
pub fn jwks(keys: &[PublicKey]) -> serde_json::Value {
    serde_json::json!({ "keys": keys.iter().map(PublicKey::jwk).collect::<Vec<_>>() })
}

/// The Ed25519 keys of a JWKS document; members of other kinds are skipped.
pub fn keys_of_jwks(doc: &serde_json::Value) -> anyhow::Result<Vec<PublicKey>> {
    let keys = doc["keys"]
        .as_array()
        .context("a JWKS document has a \"keys\" array")?;
    let mut out = Vec::new();
    for key in keys {
        if key["kty"] != "OKP" || key["crv"] != "Ed25519" {
            continue;
        }
        let x = key["x"].as_str().context("a JWK without \"x\"")?;
        let raw = URL_SAFE_NO_PAD
            .decode(x)
            .context("a JWK's \"x\" is not base64url")?;
        let parsed = PublicKey::from_raw(&raw)?;
        // A key id that is not the key's thumbprint would let one key pose as another.
        anyhow::ensure!(
            key["kid"].as_str() == Some(parsed.kid.as_str()),
            "a JWK's kid is not its thumbprint"
        );
        out.push(parsed);
    }
    Ok(out)
}

/// Where the key pair lives: `<dir>/jwt-ed25519.key` (private, 0600), `<dir>/jwt-ed25519.pub`,
/// and the retired public keys in `<dir>/retired/<kid>.pub`.
#[derive(Debug, Clone)]
pub struct KeyDir(pub PathBuf);

impl KeyDir {
    pub fn private_path(&self) -> PathBuf {
        self.0.join(PRIVATE_FILE)
    }

    pub fn public_path(&self) -> PathBuf {
        self.0.join(PUBLIC_FILE)
    }

    fn retired_dir(&self) -> PathBuf {
        self.0.join(RETIRED_DIR)
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
        // The public key first: a private key without its public half would never be published.
        let public_tmp = self.0.join(format!("{PUBLIC_FILE}.new"));
        std::fs::write(&public_tmp, pem("PUBLIC KEY", &spki))
            .with_context(|| format!("cannot write {}", public_tmp.display()))?;
        std::fs::rename(&public_tmp, self.public_path())
            .with_context(|| format!("cannot write {}", self.public_path().display()))?;
        crate::secret::write_new_secret(
            &self.private_path(),
            pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes(),
        )?;
        tracing::info!(dir = %self.0.display(), "created JWT signing key pair");
        Ok(())
    }

    /// The current public key.
    pub fn current_public_key(&self) -> anyhow::Result<PublicKey> {
        let path = self.public_path();
        let pem = std::fs::read(&path).with_context(|| {
            format!(
                "JWT public key not found at {}: start the auth-service once (it creates the key \
                 pair) or point JWT_KEY_DIR at the auth-service's key directory",
                path.display()
            )
        })?;
        PublicKey::from_pem(&pem).with_context(|| format!("in {}", path.display()))
    }

    /// The current public key, then the retired ones still published.
    pub fn public_keys(&self) -> anyhow::Result<Vec<PublicKey>> {
        let mut keys = vec![self.current_public_key()?];
        let Ok(entries) = std::fs::read_dir(self.retired_dir()) else {
            return Ok(keys);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pub") {
                let key = std::fs::read(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|pem| PublicKey::from_pem(&pem))
                    .with_context(|| format!("retired key {}", path.display()))?;
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
        }
        Ok(keys)
    }

    /// Retires the current key pair and makes a new one current; returns the new key id. Retired
    /// keys older than [`RETIRED_KEY_KEPT`] are removed. Running auth-services sign with the new
    /// key and publish both within seconds ([`KeyRing::reload`](super::KeyRing::reload)).
    pub fn rotate(&self) -> anyhow::Result<String> {
        let old = self.current_public_key()?;
        crate::secret::private_dir(&self.retired_dir())?;
        std::fs::copy(
            self.public_path(),
            self.retired_dir().join(format!("{}.pub", old.kid)),
        )
        .context("cannot retire the current public key")?;
        std::fs::remove_file(self.private_path()).context("cannot remove the old private key")?;
        self.ensure_key_pair()?;
        self.prune_retired(RETIRED_KEY_KEPT)?;
        let new = self.current_public_key()?;
        tracing::info!(retired = %old.kid, current = %new.kid, "rotated the JWT signing key");
        Ok(new.kid)
    }

    fn prune_retired(&self, kept: Duration) -> anyhow::Result<()> {
        let Ok(entries) = std::fs::read_dir(self.retired_dir()) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > kept);
            if old {
                std::fs::remove_file(entry.path()).ok();
            }
        }
        Ok(())
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
impl KeyDir {
    /// A key directory of its own under the system's temporary directory (tests).
    pub(super) fn temp() -> Self {
        Self(std::env::temp_dir().join(format!("jwt-test-{}", uuid::Uuid::new_v4())))
    }
}
