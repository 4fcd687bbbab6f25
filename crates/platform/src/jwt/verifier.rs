//! Verification of access tokens with the published public keys: where they come from (the
//! JWKS URL or a key directory), fetched again for an unknown key id, and each token checked
//! with Ed25519 once (`token_cache`) until it expires.

use super::claims::{Claims, AUDIENCE, ISSUER};
use super::keys::{keys_of_jwks, KeyDir, PublicKey};
use super::token_cache::TokenCache;
use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// A verifier asks its key source again for an unknown `kid` at most this often, so tokens with
/// made-up key ids cannot make it hammer the auth-service.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(2);

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
    verified: TokenCache,
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
    /// verified before is answered from the token cache until it expires.
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
    use crate::jwt::KeyRing;
    use contract::Role;
    use jsonwebtoken::{EncodingKey, Header};
    use uuid::Uuid;

    #[tokio::test]
    async fn tokens_signed_with_the_private_key_verify_with_the_public_key_only() {
        let keys = KeyDir::temp();
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
}
