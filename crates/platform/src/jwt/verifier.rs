//! Verification of access tokens with the published public keys: where they come from (the
//! JWKS URL or a key directory), fetched again on a timer (so a withdrawn key stops working
//! within one interval) and for an unknown key id (so a new one works at once), each token
//! checked with Ed25519 once (`token_cache`) until it expires, and none accepted that claims to
//! live longer than access tokens are configured to (`claims::check_lifetime`).

use super::claims::{check_lifetime, Claims, LifetimeError, AUDIENCE, ISSUER};
use super::claims::{LOCAL_ACCESS_TTL_SECONDS, MAX_ACCESS_TTL_SECONDS, MIN_ACCESS_TTL_SECONDS};
use super::keys::{keys_of_jwks, KeyDir, PublicKey};
use super::token_cache::TokenCache;
use anyhow::Context;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A verifier asks its key source again for an unknown `kid` at most this often, so tokens with
/// made-up key ids cannot make it hammer the auth-service.
const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(2);
/// How often a verifier fetches the keys again unless told otherwise (JWKS_REFRESH).
pub const DEFAULT_KEY_REFRESH: Duration = Duration::from_secs(60);
/// How often the auth-service's own verifier re-reads its key directory: as often as its key
/// ring does, so a key the ring withdrew is refused here within seconds.
pub const KEY_DIR_RELOAD: Duration = Duration::from_secs(5);
/// How much clock difference between the auth-service and a verifier is forgiven (`exp`, `iat`).
const LEEWAY_SECONDS: u64 = 5;

/// Where a verifier finds the public keys.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// The auth-service's JWKS URL (every other service).
    Jwks(String),
    /// A key directory on this machine (the auth-service itself, tests).
    Dir(KeyDir),
}

/// How a verifier checks tokens: where the keys are, the longest lifetime a token may claim,
/// and how often the keys are fetched again.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub source: KeySource,
    /// The configured access-token lifetime (TOKEN_TTL_SECONDS, the auth-service's): a token
    /// whose `exp - iat` is longer is refused, whatever key signed it.
    pub max_lifetime_seconds: i64,
    /// How often the keys are fetched again (JWKS_REFRESH).
    pub refresh: Duration,
}

impl VerifierConfig {
    /// Keys from `source`, tokens living at most `max_lifetime_seconds`, the keys fetched again
    /// every [`DEFAULT_KEY_REFRESH`].
    pub fn new(source: KeySource, max_lifetime_seconds: i64) -> Self {
        Self {
            source,
            max_lifetime_seconds,
            refresh: DEFAULT_KEY_REFRESH,
        }
    }

    /// The key directory `dir` with the lifetime of the services' `Config::local`
    /// ([`LOCAL_ACCESS_TTL_SECONDS`]): tests and tools.
    pub fn local(dir: &KeyDir) -> Self {
        Self::new(KeySource::Dir(dir.clone()), LOCAL_ACCESS_TTL_SECONDS)
    }

    /// The keys fetched again every `every` instead.
    pub fn refreshed_every(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }
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
    /// Correctly signed, but its times are impossible for an access token.
    #[error(transparent)]
    Lifetime(#[from] LifetimeError),
    /// Correctly signed, but its claims are not an access token's.
    #[error("the token's claims are malformed: {0}")]
    Claims(serde_json::Error),
}

/// Verifies access tokens with the published public keys, cached; the keys are fetched again
/// every [`VerifierConfig::refresh`] (keeping those held when a fetch fails) and for an unknown
/// `kid` (a rotation), at most every few seconds.
pub struct JwtVerifier {
    shared: Arc<Shared>,
    /// The timer fetching the keys again: it ends with the verifier.
    timer: Option<tokio::task::AbortHandle>,
}

/// The verifier's state, shared with its timer.
struct Shared {
    source: KeySource,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, DecodingKey>>,
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    validation: Validation,
    max_lifetime: i64,
    verified: TokenCache,
    /// The last fetch failed and that was said (once per outage).
    failing: AtomicBool,
}

impl Drop for JwtVerifier {
    fn drop(&mut self) {
        if let Some(timer) = &self.timer {
            timer.abort();
        }
    }
}

impl JwtVerifier {
    /// The auth-service's own verifier: its key directory `dir` (read now: a missing key is a
    /// configuration error, and again every [`KEY_DIR_RELOAD`]), tokens living at most
    /// `max_lifetime_seconds`.
    pub fn from_key_dir(dir: &KeyDir, max_lifetime_seconds: i64) -> anyhow::Result<Self> {
        let verifier = Self::new(
            VerifierConfig::new(KeySource::Dir(dir.clone()), max_lifetime_seconds)
                .refreshed_every(KEY_DIR_RELOAD),
        )?;
        verifier.shared.install(dir.public_keys()?);
        Ok(verifier)
    }

    /// A verifier as `config` says; JWKS keys are fetched on the first token, then every
    /// `config.refresh` by a task on the current tokio runtime (without a runtime, only for
    /// unknown key ids).
    pub fn new(config: VerifierConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (MIN_ACCESS_TTL_SECONDS..=MAX_ACCESS_TTL_SECONDS)
                .contains(&config.max_lifetime_seconds),
            "an access token lives {MIN_ACCESS_TTL_SECONDS} to {MAX_ACCESS_TTL_SECONDS} seconds, \
             not {}",
            config.max_lifetime_seconds
        );
        anyhow::ensure!(
            !config.refresh.is_zero(),
            "the keys' refresh interval must be positive"
        );
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        // `iat` is required too, by `check_lifetime` (jsonwebtoken does not check it).
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let shared = Arc::new(Shared {
            source: config.source,
            client,
            keys: RwLock::new(HashMap::new()),
            refreshed: tokio::sync::Mutex::new(None),
            validation,
            max_lifetime: config.max_lifetime_seconds,
            verified: Default::default(),
            failing: AtomicBool::new(false),
        });
        let timer = Shared::start_timer(&shared, config.refresh);
        Ok(Self { shared, timer })
    }

    /// The claims of `token` if its signature, issuer, audience, expiry and lifetime hold. A
    /// token verified before is answered from the token cache until it expires (its lifetime
    /// checked again: the cache is no way around it), unless its key is withdrawn meanwhile.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let shared = &self.shared;
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let leeway = shared.validation.leeway;
        if let Some(claims) = shared.verified.get(token, now, leeway) {
            shared.check_times(Some(claims.iat), claims.exp, now)?;
            return Ok(claims);
        }
        let kid = jsonwebtoken::decode_header(token)?
            .kid
            .ok_or(VerifyError::NoKeyId)?;
        let claims = match shared.try_verify(&kid, token, now) {
            Some(result) => result?,
            None => {
                shared.refresh_for(&kid).await;
                shared
                    .try_verify(&kid, token, now)
                    .unwrap_or(Err(VerifyError::UnknownKey))?
            }
        };
        shared.remember(token, &kid, &claims, now);
        Ok(claims)
    }
}

impl Shared {
    /// Fetches the keys again every `every` while the verifier lives.
    fn start_timer(shared: &Arc<Self>, every: Duration) -> Option<tokio::task::AbortHandle> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(
                "no async runtime: the token keys are fetched for unknown key ids only"
            );
            return None;
        };
        let weak = Arc::downgrade(shared);
        let task = runtime.spawn(async move {
            // The first fetch is the first token's (or this timer's, one interval in): a
            // service starting beside the auth-service does not warn that it is not up yet.
            let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                let Some(shared) = weak.upgrade() else {
                    return;
                };
                shared.refresh_now().await;
            }
        });
        Some(task.abort_handle())
    }

    fn check_times(&self, iat: Option<i64>, exp: i64, now: i64) -> Result<(), LifetimeError> {
        let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
        check_lifetime(iat, exp, now, leeway, self.max_lifetime)
    }

    /// The token checked with the key `kid`, or `None` when that key is not held.
    fn try_verify(&self, kid: &str, token: &str, now: i64) -> Option<Result<Claims, VerifyError>> {
        let decoded = {
            let keys = self.keys.read().ok()?;
            let key = keys.get(kid)?;
            jsonwebtoken::decode::<serde_json::Value>(token, key, &self.validation)
        };
        Some(match decoded {
            Ok(data) => self.accept(kid, data.claims, now),
            Err(e) => Err(e.into()),
        })
    }

    /// The claims of a token whose signature, issuer, audience and expiry hold, if its times
    /// and claims are an access token's. Only a holder of a signing key can make a token that
    /// fails here, so each refusal is a `security` line naming the key.
    fn accept(&self, kid: &str, raw: serde_json::Value, now: i64) -> Result<Claims, VerifyError> {
        let iat = raw.get("iat").and_then(serde_json::Value::as_i64);
        // jsonwebtoken checked `exp` is a number; one beyond i64 is a lifetime no token has.
        let exp = raw
            .get("exp")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(i64::MAX);
        let sub = raw
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let checked = self
            .check_times(iat, exp, now)
            .map_err(VerifyError::from)
            .and_then(|()| serde_json::from_value::<Claims>(raw).map_err(VerifyError::Claims));
        if let Err(e) = &checked {
            tracing::warn!(
                target: "security",
                event = "signed_token_refused",
                kid,
                sub,
                error = %e,
                "refused a token signed with a published key: the auth-service never issues such \
                 a token, so its signing key may be in other hands (rotate it: portal keys rotate)"
            );
        }
        checked
    }

    /// Remembers a fully verified token, unless its key was withdrawn meanwhile. Under the
    /// keys' read lock: `install` changes the keys and forgets the withdrawn keys' tokens under
    /// the write lock, so no token of a withdrawn key is remembered after it.
    fn remember(&self, token: &str, kid: &str, claims: &Claims, now: i64) {
        if let Ok(keys) = self.keys.read() {
            if keys.contains_key(kid) {
                self.verified
                    .put(token, kid, claims, now, self.validation.leeway);
            }
        }
    }

    /// Holds `keys` from now on, if they differ from those held; the tokens verified with a key
    /// that is gone are forgotten (checked again, and refused).
    fn install(&self, keys: Vec<PublicKey>) {
        let kids: HashSet<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
        let Ok(mut held) = self.keys.write() else {
            return;
        };
        if held.len() == kids.len() && kids.iter().all(|kid| held.contains_key(*kid)) {
            return;
        }
        let removed: Vec<String> = held
            .keys()
            .filter(|kid| !kids.contains(kid.as_str()))
            .cloned()
            .collect();
        let added: Vec<&str> = kids
            .iter()
            .filter(|kid| !held.contains_key(**kid))
            .copied()
            .collect();
        tracing::info!(?added, ?removed, "token keys changed");
        *held = keys
            .iter()
            .map(|k| (k.kid.clone(), k.decoding_key()))
            .collect();
        self.verified.retain_keys(|kid| kids.contains(kid));
    }

    /// Fetches the keys again for `kid`: one fetch at a time, at most every
    /// [`REFETCH_AT_MOST_EVERY`] (a caller within that waits for its turn, so a key rotated
    /// just after a fetch is still found, and made-up key ids cost one fetch per interval).
    async fn refresh_for(&self, kid: &str) {
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
        self.fetch_and_install().await;
    }

    /// The timer's fetch.
    async fn refresh_now(&self) {
        let mut last = self.refreshed.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_install().await;
    }

    /// Fetches the keys and holds them; when the fetch fails, keeps those held (one warning per
    /// outage, one line when a fetch succeeds again).
    async fn fetch_and_install(&self) {
        let fetched = match &self.source {
            KeySource::Dir(dir) => dir.public_keys(),
            KeySource::Jwks(url) => self.fetch(url).await,
        };
        match fetched {
            Ok(keys) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(keys = keys.len(), "token keys fetched again");
                }
                self.install(keys);
            }
            Err(e) => {
                let held = self.keys.read().map(|k| k.len()).unwrap_or(0);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        held,
                        "cannot refresh the token keys; keeping those held until a fetch succeeds"
                    );
                } else {
                    tracing::debug!(error = format!("{e:#}"), "cannot refresh the token keys");
                }
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::KeyRing;
    use contract::Role;
    use jsonwebtoken::{EncodingKey, Header};
    use uuid::Uuid;

    /// `claims` signed with the current key of `keys`, as only a holder of that key can.
    fn sign_raw(keys: &KeyDir, claims: &serde_json::Value) -> String {
        let pem = std::fs::read(keys.private_path()).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(keys.current_public_key().unwrap().kid);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
    }

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    #[tokio::test]
    async fn tokens_signed_with_the_private_key_verify_with_the_public_key_only() {
        let keys = KeyDir::temp();
        let signer = KeyRing::open(&keys, 60).unwrap();
        let verifier = JwtVerifier::from_key_dir(&keys, 60).unwrap();
        let id = Uuid::new_v4();
        let token = signer.sign(id, "a@b.co", Role::Doctor).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(signer.kid().as_str()));
        let claims = verifier.verify(&token).await.unwrap();
        assert_eq!(claims.sub, id);
        assert_eq!(claims.role, Role::Doctor);
        // Checked once, then answered from the cache until the keys change.
        assert_eq!(verifier.shared.verified.len(), 1);
        assert_eq!(verifier.verify(&token).await.unwrap().sub, id);
        verifier.shared.install(Vec::new());
        assert!(
            verifier.shared.verified.is_empty(),
            "the key is gone: its tokens are checked again"
        );
        verifier.shared.install(keys.public_keys().unwrap());

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
            &claims,
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

    /// A token made with the real key (as someone who stole it could) that lives longer than
    /// access tokens are configured to, says nothing of when it was issued, or says it was
    /// issued in the future, is refused; the same token with a lifetime within bounds is not.
    #[tokio::test]
    async fn a_correctly_signed_token_with_impossible_times_is_refused() {
        let keys = KeyDir::temp();
        KeyRing::open(&keys, 300).unwrap();
        let verifier = JwtVerifier::from_key_dir(&keys, 300).unwrap();
        let token = |iat: Option<i64>, exp: i64| {
            let mut claims = serde_json::json!({
                "sub": Uuid::new_v4(), "email": "a@b.co", "role": "admin",
                "iss": ISSUER, "aud": AUDIENCE, "exp": exp,
            });
            if let Some(iat) = iat {
                claims["iat"] = iat.into();
            }
            sign_raw(&keys, &claims)
        };
        let t = now();
        verifier.verify(&token(Some(t), t + 300)).await.unwrap();
        let ten_years = 10 * 365 * 86_400;
        for (refused, what) in [
            (token(Some(t), t + ten_years), "a ten-year lifetime"),
            (token(Some(t), t + 301), "a second too long"),
            (token(None, t + 60), "no iat"),
            (token(Some(t + 3600), t + 3660), "issued an hour from now"),
        ] {
            // Twice: a refusal is not remembered as anything else.
            for _ in 0..2 {
                assert!(
                    matches!(
                        verifier.verify(&refused).await,
                        Err(VerifyError::Lifetime(_))
                    ),
                    "{what}"
                );
            }
        }
        assert_eq!(
            verifier.shared.verified.len(),
            1,
            "only the valid token is remembered"
        );
        std::fs::remove_dir_all(&keys.0).ok();
    }

    /// The keys are fetched again on the timer: a key withdrawn (a retired key past its kept
    /// time) stops its tokens, those already verified and remembered too; while the keys cannot
    /// be read, those held are kept.
    #[tokio::test]
    async fn the_timer_withdraws_a_pruned_key_and_a_failed_fetch_keeps_the_keys() {
        let keys = KeyDir::temp();
        let signer = KeyRing::open(&keys, 60).unwrap();
        let refresh = Duration::from_millis(100);
        let verifier = JwtVerifier::new(
            VerifierConfig::new(KeySource::Dir(keys.clone()), 60).refreshed_every(refresh),
        )
        .unwrap();
        let old = signer.sign(Uuid::new_v4(), "a@b.co", Role::Doctor).unwrap();
        verifier.verify(&old).await.unwrap();
        let old_kid = signer.kid();

        // A failed fetch (the current key unreadable) keeps the keys held.
        let public = std::fs::read(keys.public_path()).unwrap();
        std::fs::remove_file(keys.public_path()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !verifier.shared.failing.load(Ordering::Relaxed) {
            assert!(Instant::now() < deadline, "the timer never fetched");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        verifier.verify(&old).await.expect("the keys held are kept");
        std::fs::write(keys.public_path(), public).unwrap();

        // Rotated, then the retired key past its kept time: refused within the interval.
        keys.rotate().unwrap();
        let retired = keys.0.join("retired").join(format!("{old_kid}.pub"));
        std::fs::File::options()
            .write(true)
            .open(&retired)
            .unwrap()
            .set_modified(
                std::time::SystemTime::now()
                    - crate::jwt::RETIRED_KEY_KEPT
                    - Duration::from_secs(1),
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while verifier.verify(&old).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "the withdrawn key still verifies"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !verifier.shared.failing.load(Ordering::Relaxed),
            "fetched again"
        );
        std::fs::remove_dir_all(&keys.0).ok();
    }
}
