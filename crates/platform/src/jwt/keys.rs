//! The key files and their rotation: where the Ed25519 pair and the retired public keys live
//! ([`KeyDir`]), one public key and its id ([`PublicKey`]), and JWKS documents of them.
//!
//! A retired key is kept for [`RETIRED_KEY_KEPT`] after its rotation (its file's modification
//! time: `rotate` writes the file then) and no longer: past that it is neither read as
//! published ([`KeyDir::public_keys`]) nor left on disk by the next prune.

use anyhow::Context;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::DecodingKey;
use ring::signature::KeyPair as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a retired public key stays published after a rotation: longer than any access
/// token signed with it can live (at most [`MAX_ACCESS_TTL_SECONDS`](super::MAX_ACCESS_TTL_SECONDS)),
/// and then it is withdrawn: the auth-service stops publishing and accepting it, and every
/// verifier drops it at its next refresh.
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

    /// The current public key, then the retired ones still kept ([`RETIRED_KEY_KEPT`]).
    pub fn public_keys(&self) -> anyhow::Result<Vec<PublicKey>> {
        Ok(self.held_keys()?.into_iter().map(|k| k.key).collect())
    }

    /// [`KeyDir::public_keys`] with each retired key's retirement time. A retired key whose
    /// file's time cannot be read is left out: a key of unknown age may be past its time.
    pub(super) fn held_keys(&self) -> anyhow::Result<Vec<HeldKey>> {
        let mut keys = vec![HeldKey {
            key: self.current_public_key()?,
            retired_at: None,
        }];
        let now = SystemTime::now();
        for (path, retired_at) in self.retired_files() {
            if !retired_at.is_some_and(|t| still_kept(t, now)) {
                continue;
            }
            let key = std::fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|pem| PublicKey::from_pem(&pem))
                .with_context(|| format!("retired key {}", path.display()))?;
            if !keys.iter().any(|k| k.key == key) {
                keys.push(HeldKey { key, retired_at });
            }
        }
        Ok(keys)
    }

    /// The retired key files (`retired/*.pub`) and their modification times.
    fn retired_files(&self) -> Vec<(PathBuf, Option<SystemTime>)> {
        let Ok(entries) = std::fs::read_dir(self.retired_dir()) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "pub"))
            .map(|path| {
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                (path, modified)
            })
            .collect();
        // The newest retirement first, so the JWKS lists keys from the newest to the oldest.
        files.sort_by_key(|(_, modified)| std::cmp::Reverse(*modified));
        files
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
        // The rotation is done: a retired key that cannot be removed is no longer published
        // anyway, and the auth-service tries again every few seconds.
        if let Err(e) = self.prune_retired() {
            tracing::warn!(
                error = format!("{e:#}"),
                "cannot remove an old retired JWT key"
            );
        }
        let new = self.current_public_key()?;
        tracing::info!(retired = %old.kid, current = %new.kid, "rotated the JWT signing key");
        Ok(new.kid)
    }

    /// Removes the retired keys past [`RETIRED_KEY_KEPT`] (the auth-service's key ring does so
    /// every few seconds, `rotate` at each rotation); returns how many went. Another
    /// auth-service pruning the same directory at the same moment is no error.
    pub fn prune_retired(&self) -> anyhow::Result<usize> {
        let now = SystemTime::now();
        let mut removed = 0;
        for (path, retired_at) in self.retired_files() {
            let Some(retired_at) = retired_at else {
                continue; // of unknown age: never published, and not ours to judge
            };
            if still_kept(retired_at, now) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(
                        target: "security",
                        event = "retired_key_removed",
                        kid = %kid_of_file(&path),
                        "removed a retired JWT key past its kept time: tokens signed with it are refused"
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()))
                }
            }
        }
        Ok(removed)
    }
}

/// A published key as the key directory holds it: current (`retired_at` is `None`) or retired
/// at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HeldKey {
    pub key: PublicKey,
    pub retired_at: Option<SystemTime>,
}

impl HeldKey {
    /// Whether the key may still be published and accepted at `now`.
    pub fn kept_at(&self, now: SystemTime) -> bool {
        self.retired_at.is_none_or(|t| still_kept(t, now))
    }
}

/// Whether a key retired at `retired_at` is still kept at `now`. A retirement time ahead of
/// `now` (the clock was set back) counts as a retirement now.
pub(super) fn still_kept(retired_at: SystemTime, now: SystemTime) -> bool {
    now.duration_since(retired_at)
        .map_or(true, |age| age <= RETIRED_KEY_KEPT)
}

/// The key id a retired key's file is named by (`retired/<kid>.pub`).
fn kid_of_file(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_key_is_kept_for_its_time_and_no_longer() {
        let now = SystemTime::now();
        let retired = |ago: Duration| now - ago;
        assert!(still_kept(retired(Duration::ZERO), now));
        assert!(still_kept(retired(RETIRED_KEY_KEPT), now));
        assert!(!still_kept(
            retired(RETIRED_KEY_KEPT + Duration::from_secs(1)),
            now
        ));
        // A retirement time ahead of the clock (set back since) counts as now.
        assert!(still_kept(now + Duration::from_secs(30), now));
        let current = HeldKey {
            key: PublicKey::from_raw(&[7; 32]).unwrap(),
            retired_at: None,
        };
        assert!(
            current.kept_at(now + RETIRED_KEY_KEPT * 100),
            "the current key never ages"
        );
    }
}
