//! What an access token says about its bearer, who issues it for whom, and how long it may
//! live: shared by the signer, the verifier and its cache.

use contract::Role;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const ISSUER: &str = "auth-service";
pub const AUDIENCE: &str = "clinical-portal";
/// The bounds of an access token's lifetime: long enough for a page's work, short enough that
/// a revoked session (logout, deactivation, role or password change) ends within minutes.
pub const MIN_ACCESS_TTL_SECONDS: i64 = 60;
pub const MAX_ACCESS_TTL_SECONDS: i64 = 900;

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
