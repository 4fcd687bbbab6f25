//! Access tokens: EdDSA (Ed25519) JWTs with a key id (`kid`). The auth-service holds the private
//! key and signs; it publishes the public keys as a JWKS (RFC 7517), and every other service
//! fetches and caches them, so nothing but the auth-service can mint a token and a key can be
//! rotated without copying files. `iss`, `aud`, `exp` and `kid` are always checked.
//!
//! Rotation (`portal keys rotate`): the current public key moves to `retired/<kid>.pub` and a
//! new pair becomes current. A retired key stays published for [`RETIRED_KEY_KEPT`], longer than
//! any access token lives, so tokens signed before the rotation stay valid until they expire.

use anyhow::Context;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use contract::Role;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::KeyPair as _;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub const ISSUER: &str = "auth-service";
pub const AUDIENCE: &str = "clinical-portal";
/// The bounds of an access token's lifetime: long enough for a page's work, short enough that
/// a revoked session (logout, deactivation, role or password change) ends within minutes.
pub const MIN_ACCESS_TTL_SECONDS: i64 = 60;
pub const MAX_ACCESS_TTL_SECONDS: i64 = 900;
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
/// A verifier asks its key source again for an unknown `kid` at most this often, so tokens with
/// made-up key ids cannot make it hammer the auth-service.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(2);

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
    /// The account must change its password first: such a token is accepted only to read the
    /// account (`me`) and to change the password (absent, and so false, in other tokens).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mcp: bool,
}

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

    fn decoding_key(&self) -> DecodingKey {
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
    /// key and publish both within seconds ([`KeyRing::reload`]).
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

/// Where a verifier finds the public keys.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The auth-service's JWKS URL (every other service).
    Jwks(String),
    /// A key directory on this machine (the auth-service itself, tests).
    Dir(KeyDir),
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the token names no key id")]
    NoKeyId,
    #[error("the token's key is not published")]
    UnknownKey,
    #[error(transparent)]
    Invalid(#[from] jsonwebtoken::errors::Error),
}

/// Verifies access tokens with the published public keys, cached; an unknown `kid` (a rotation)
/// makes it ask the source again, at most every few seconds.
pub struct JwtVerifier {
    source: KeySource,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    validation: Validation,
    verified: crate::token_cache::TokenCache,
}

impl JwtVerifier {
    /// A verifier reading `dir` (checked now: a missing key is a configuration error).
    pub fn from_key_dir(dir: &KeyDir) -> anyhow::Result<Self> {
        let verifier = Self::new(KeySource::Dir(dir.clone()))?;
        verifier.install(dir.public_keys()?);
        Ok(verifier)
    }

    /// A verifier of `source`; JWKS keys are fetched on the first token.
    pub fn new(source: KeySource) -> anyhow::Result<Self> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            source,
            client,
            keys: RwLock::new(HashMap::new()),
            refreshed: tokio::sync::Mutex::new(None),
            validation,
            verified: Default::default(),
        })
    }

    fn install(&self, keys: Vec<PublicKey>) {
        let map = keys
            .iter()
            .map(|k| (k.kid.clone(), k.decoding_key()))
            .collect();
        if let Ok(mut held) = self.keys.write() {
            *held = map;
        }
        // Tokens checked with keys that may be gone now are checked again.
        self.verified.clear();
    }

    fn try_verify(&self, kid: &str, token: &str) -> Option<Result<Claims, VerifyError>> {
        let keys = self.keys.read().ok()?;
        let key = keys.get(kid)?;
        Some(
            jsonwebtoken::decode::<Claims>(token, key, &self.validation)
                .map(|d| d.claims)
                .map_err(VerifyError::from),
        )
    }

    /// Fetches the keys again for `kid`: one fetch at a time, at most every
    /// [`REFETCH_AT_MOST_EVERY`] (a caller within that waits for its turn, so a key rotated
    /// just after a fetch is still found, and made-up key ids cost one fetch per interval).
    async fn refresh(&self, kid: &str) {
        let asked = Instant::now();
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|t| t >= asked)
            || self.keys.read().is_ok_and(|keys| keys.contains_key(kid))
        {
            return; // fetched while we waited for the lock
        }
        if let Some(wait) = last.and_then(|t| REFETCH_AT_MOST_EVERY.checked_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
        }
        *last = Some(Instant::now());
        let fetched = match &self.source {
            KeySource::Dir(dir) => dir.public_keys(),
            KeySource::Jwks(url) => self.fetch(url).await,
        };
        match fetched {
            Ok(keys) => self.install(keys),
            Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot refresh the token keys"),
        }
    }

    /// From the first of `urls` (comma-separated: every auth-service replica publishes the
    /// same keys) that answers.
    async fn fetch(&self, urls: &str) -> anyhow::Result<Vec<PublicKey>> {
        let mut last = None;
        for url in crate::addresses::split(urls) {
            match self.fetch_one(url).await {
                Ok(keys) => return Ok(keys),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no JWKS URL is set")))
    }

    async fn fetch_one(&self, url: &str) -> anyhow::Result<Vec<PublicKey>> {
        let doc: serde_json::Value = self
            .client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("cannot fetch {}", crate::secret::redact_url(url)))?
            .json()
            .await
            .context("the JWKS is not JSON")?;
        keys_of_jwks(&doc)
    }

    /// The claims of `token` if its signature, issuer, audience and expiry hold. A token
    /// verified before is answered from [`crate::token_cache`] until it expires.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        if let Some(claims) = self.verified.get(token, now, self.validation.leeway) {
            return Ok(claims);
        }
        let claims = self.verify_fully(token).await?;
        self.verified
            .put(token, &claims, now, self.validation.leeway);
        Ok(claims)
    }

    async fn verify_fully(&self, token: &str) -> Result<Claims, VerifyError> {
        let kid = jsonwebtoken::decode_header(token)?
            .kid
            .ok_or(VerifyError::NoKeyId)?;
        if let Some(result) = self.try_verify(&kid, token) {
            return result;
        }
        self.refresh(&kid).await;
        self.try_verify(&kid, token)
            .unwrap_or(Err(VerifyError::UnknownKey))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> KeyDir {
        KeyDir(std::env::temp_dir().join(format!("jwt-test-{}", Uuid::new_v4())))
    }

    #[tokio::test]
    async fn tokens_signed_with_the_private_key_verify_with_the_public_key_only() {
        let keys = temp_dir();
        let signer = KeyRing::open(&keys, 60).unwrap();
        let verifier = JwtVerifier::from_key_dir(&keys).unwrap();
        let id = Uuid::new_v4();
        let token = signer.sign(id, "a@b.co", Role::Doctor).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(signer.kid().as_str()));
        let claims = verifier.verify(&token).await.unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.role, Role::Doctor);
        // Checked once, then answered from the cache until the keys change.
        assert_eq!(verifier.verified.len(), 1);
        assert_eq!(verifier.verify(&token).await.unwrap().sub, id);
        verifier.install(Vec::new());
        assert!(
            verifier.verified.is_empty(),
            "new keys: every token is checked again"
        );

        // A token from another key pair, one without a key id, and a tampered one are refused.
        let other = KeyDir(keys.0.join("other"));
        let forged = KeyRing::open(&other, 60).unwrap();
        assert!(matches!(
            verifier
                .verify(&forged.sign(id, "a@b.co", Role::Admin).unwrap())
                .await,
            Err(VerifyError::UnknownKey)
        ));
        let pem = std::fs::read(keys.private_path()).unwrap();
        let no_kid = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &verifier.try_verify(&signer.kid(), &token).unwrap().unwrap(),
            &EncodingKey::from_ed_pem(&pem).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            verifier.verify(&no_kid).await,
            Err(VerifyError::NoKeyId)
        ));
        let mut tampered = token.clone();
        tampered.insert(tampered.len() / 2, 'x');
        assert!(verifier.verify(&tampered).await.is_err());
        std::fs::remove_dir_all(&keys.0).ok();
    }

    #[test]
    fn access_token_lifetimes_are_bounded() {
        let keys = temp_dir();
        assert!(KeyRing::open(&keys, 3600).is_err());
        assert!(KeyRing::open(&keys, 10).is_err());
        assert!(KeyRing::open(&keys, MAX_ACCESS_TTL_SECONDS).is_ok());
        std::fs::remove_dir_all(&keys.0).ok();
    }

    #[test]
    fn a_rotation_publishes_the_new_key_first_and_keeps_the_old_one() {
        let keys = temp_dir();
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
