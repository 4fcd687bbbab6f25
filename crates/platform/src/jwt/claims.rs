//! What an access token says about its bearer, who issues it for whom, and how long it may
//! live: shared by the signer, the verifier and its cache. The lifetime is checked on every
//! token ([`check_lifetime`]): the signature proves only that a key holder made the token, and
//! someone holding a stolen key could otherwise make one that never expires.

use contract::Role;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub const ISSUER: &str = "auth-service";
pub const AUDIENCE: &str = "clinical-portal";
/// The bounds of an access token's lifetime: long enough for a page's work, short enough that
/// a revoked session (logout, deactivation, role or password change) ends within minutes.
pub const MIN_ACCESS_TTL_SECONDS: i64 = 60;
pub const MAX_ACCESS_TTL_SECONDS: i64 = 900;
/// Access tokens live five minutes unless TOKEN_TTL_SECONDS says otherwise.
pub const DEFAULT_ACCESS_TTL_SECONDS: i64 = 300;
/// The access-token lifetime of the services' `Config::local` (tests and tools, and the
/// sandbox's `portal` children): the auth-service signs for this long, and the parts beside it
/// accept as much.
pub const LOCAL_ACCESS_TTL_SECONDS: i64 = 600;

/// Why the times of a correctly signed token are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifetimeError {
    #[error("the token does not say when it was issued (no numeric iat)")]
    NoIssuedAt,
    #[error("the token says it was issued {ahead} s from now")]
    IssuedInTheFuture { ahead: i64 },
    #[error("the token claims to live {lifetime} s; access tokens live at most {max} s")]
    Lifetime { lifetime: i64, max: i64 },
}

/// Checks a token's issue time and lifetime, its signature and expiry being checked already: it
/// must say when it was issued (`iat`), no later than `now` + `leeway` (the clocks of two
/// machines differ a little), and live (`exp - iat`) between 0 and `max_lifetime` seconds, the
/// configured access-token lifetime.
pub fn check_lifetime(
    iat: Option<i64>,
    exp: i64,
    now: i64,
    leeway: i64,
    max_lifetime: i64,
) -> Result<(), LifetimeError> {
    let iat = iat.ok_or(LifetimeError::NoIssuedAt)?;
    if iat > now.saturating_add(leeway) {
        return Err(LifetimeError::IssuedInTheFuture {
            ahead: iat.saturating_sub(now),
        });
    }
    // An overflowing difference is a lifetime no token may have.
    let lifetime = exp.checked_sub(iat).unwrap_or(i64::MAX);
    if !(0..=max_lifetime).contains(&lifetime) {
        return Err(LifetimeError::Lifetime {
            lifetime,
            max: max_lifetime,
        });
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lives_at_most_the_configured_lifetime_and_is_not_issued_ahead() {
        let (now, leeway, max) = (1_000_000, 5, 300);
        assert_eq!(
            check_lifetime(Some(now), now + 300, now, leeway, max),
            Ok(())
        );
        assert_eq!(
            check_lifetime(Some(now - 299), now + 1, now, leeway, max),
            Ok(())
        );
        assert_eq!(
            check_lifetime(Some(now), now + 301, now, leeway, max),
            Err(LifetimeError::Lifetime {
                lifetime: 301,
                max: 300
            })
        );
        let ten_years = 10 * 365 * 86_400;
        assert!(matches!(
            check_lifetime(Some(now), now + ten_years, now, leeway, max),
            Err(LifetimeError::Lifetime { .. })
        ));
        assert_eq!(
            check_lifetime(None, now + 60, now, leeway, max),
            Err(LifetimeError::NoIssuedAt)
        );
        // Within the leeway a clock slightly ahead is forgiven; beyond it, not.
        assert_eq!(
            check_lifetime(Some(now + 5), now + 65, now, leeway, max),
            Ok(())
        );
        assert_eq!(
            check_lifetime(Some(now + 6), now + 66, now, leeway, max),
            Err(LifetimeError::IssuedInTheFuture { ahead: 6 })
        );
        // Expiring before it was issued, or overflowing: not a lifetime at all.
        assert!(check_lifetime(Some(now), now - 1, now, leeway, max).is_err());
        assert!(check_lifetime(Some(i64::MIN), i64::MAX, now, leeway, max).is_err());
    }
}
