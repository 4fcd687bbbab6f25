//! Access tokens: EdDSA (Ed25519) JWTs with a key id (`kid`). The auth-service holds the private
//! key and signs; it publishes the public keys as a JWKS (RFC 7517), and every other service
//! fetches and caches them (again every minute or so, [`VerifierConfig::refresh`]), so nothing
//! but the auth-service can mint a token and a key can be rotated without copying files.
//! `iss`, `aud`, `exp`, `kid` and the lifetime (`exp - iat`, at most the configured
//! TOKEN_TTL_SECONDS, [`check_lifetime`]) are always checked: a key in other hands cannot mint a
//! token that outlives the access tokens the auth-service issues.
//!
//! Rotation (`portal keys rotate`): the current public key moves to `retired/<kid>.pub` and a
//! new pair becomes current. A retired key stays published for [`RETIRED_KEY_KEPT`], longer than
//! any access token lives, so tokens signed before the rotation stay valid until they expire;
//! then the auth-service withdraws it (stops publishing and accepting it, removes its file) and
//! every verifier drops it at its next refresh.
//!
//! Layout (the parts are private; everything callers use is re-exported here):
//! - `claims`: what a token says ([`Claims`]), its issuer, audience and lifetime bounds.
//! - `keys`: the key files and their rotation ([`KeyDir`]), public keys and JWKS documents.
//! - `signer`: the auth-service's signing key ring ([`KeyRing`]).
//! - `verifier`: token verification with the published keys ([`JwtVerifier`]).
//! - `token_cache`: the verifier's memory of tokens it already checked.

mod claims;
mod keys;
mod signer;
mod token_cache;
mod verifier;

pub use claims::{
    check_lifetime, Claims, LifetimeError, AUDIENCE, DEFAULT_ACCESS_TTL_SECONDS, ISSUER,
    LOCAL_ACCESS_TTL_SECONDS, MAX_ACCESS_TTL_SECONDS, MIN_ACCESS_TTL_SECONDS,
};
pub use keys::{jwks, keys_of_jwks, KeyDir, PublicKey, JWKS_PATH, RETIRED_KEY_KEPT};
pub use signer::KeyRing;
pub use verifier::{
    JwtVerifier, KeySource, VerifierConfig, VerifyError, DEFAULT_KEY_REFRESH, KEY_DIR_RELOAD,
};
