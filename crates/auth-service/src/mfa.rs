//! A second factor: TOTP codes (RFC 6238: SHA-1, six digits, 30 s, one step of clock skew —
//! what every authenticator app speaks) with ten recovery codes, and the login's second step.
//!
//! ADMIN_MFA says who must have one ([`MfaPolicy`]): under `required` an admin without one is
//! asked to enrol at the next sign-in, before any token is issued; anyone who has enrolled is
//! asked for a code at every sign-in (unless `off`). A right password then answers a
//! *challenge* ([`issue_challenge`]) instead of tokens; the second step presents it with a code.
//! A challenge lives five minutes and takes five wrong codes; wrong codes also count against
//! the user (`mfa:<id>` in the login throttle) so a stranger who knows a password cannot try
//! every code. A code is accepted once (`last_step`), so one seen over a shoulder cannot be
//! replayed. Enrolments and resets are recorded in `security_events`.

use crate::throttle;
use chrono::Utc;
use ring::rand::SecureRandom;
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;
use totp_rs::{Algorithm, TOTP};
use uuid::Uuid;

/// Who must have a second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MfaPolicy {
    /// Nobody is asked for a code (a factor enrolled earlier is ignored).
    Off,
    /// Anyone may enrol, and is then asked for a code at every sign-in.
    #[default]
    Optional,
    /// As `optional`, and admins without a factor must enrol at their next sign-in.
    Required,
}

impl std::fmt::Display for MfaPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MfaPolicy::Off => "off",
            MfaPolicy::Optional => "optional",
            MfaPolicy::Required => "required",
        })
    }
}

/// The name authenticator apps show beside the account.
pub const ISSUER: &str = "Clinical portal";
/// How long a challenge waits for its code.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// Wrong codes one challenge takes before it is spent.
pub const CHALLENGE_MAX_FAILURES: i32 = 5;
/// Wrong codes for one user within [`USER_WINDOW`] before the second step is locked for it.
pub const USER_MAX_FAILURES: i32 = 10;
const USER_WINDOW: Duration = Duration::from_secs(900);
const USER_LOCK: Duration = Duration::from_secs(900);
/// Recovery codes made at enrolment.
pub const RECOVERY_CODES: usize = 10;
const STEP: u64 = 30;

/// What a sign-in needs after its right password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// Nothing: tokens now.
    Nothing,
    /// A code from the enrolled factor.
    Code,
    /// An enrolment first (an admin under `required` without a factor).
    Enrolment,
}

impl Needed {
    /// The challenge's `status`.
    pub fn status(self) -> &'static str {
        match self {
            Needed::Enrolment => "second_factor_enrolment_required",
            _ => "second_factor_required",
        }
    }
}

/// Whether `user_id` (an admin or not) has a confirmed factor.
pub async fn is_enrolled(db: impl sqlx::PgExecutor<'_>, user_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM second_factors \
         WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
    )
    .bind(user_id)
    .fetch_one(db)
    .await
}

/// What the sign-in of `user_id` needs under `policy`.
pub async fn needed(
    db: &PgPool,
    policy: MfaPolicy,
    user_id: Uuid,
    is_admin: bool,
) -> sqlx::Result<Needed> {
    if policy == MfaPolicy::Off {
        return Ok(Needed::Nothing);
    }
    Ok(match is_enrolled(db, user_id).await? {
        true => Needed::Code,
        false if is_admin && policy == MfaPolicy::Required => Needed::Enrolment,
        false => Needed::Nothing,
    })
}

fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(bytes)
}

fn sha256(s: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .to_vec()
}

fn totp(secret: Vec<u8>, account: &str) -> anyhow::Result<TOTP> {
    TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        STEP,
        secret,
        Some(ISSUER.to_owned()),
        account.to_owned(),
    )
    .map_err(|e| anyhow::anyhow!("TOTP: {e}"))
}

/// The TOTP step a six-digit `code` was made in, among now's and its neighbours, if any.
fn step_of(totp: &TOTP, code: &str, now: u64) -> Option<i64> {
    let current = now / STEP;
    [current, current.saturating_sub(1), current + 1]
        .into_iter()
        .find(|step| totp.generate(step * STEP) == code)
        .and_then(|step| i64::try_from(step).ok())
}

/// The secret and URI of a factor being enrolled.
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

/// Why an enrolment cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("a second factor is enrolled already; an admin can reset it")]
    AlreadyEnrolled,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Starts (or shows again) the enrolment of `user_id`'s factor: a new secret, kept unconfirmed
/// until a code made with it is accepted; asked again within ten minutes, the same secret (a
/// page shown twice must not change what the app was given). Refused when one is confirmed.
pub async fn begin_enrolment(
    db: &PgPool,
    user_id: Uuid,
    account: &str,
) -> Result<Enrolment, EnrolError> {
    let secret = random_bytes(20)?;
    let stored: Option<Vec<u8>> = sqlx::query_scalar(
        "INSERT INTO second_factors (user_id, secret) VALUES ($1, $2) \
         ON CONFLICT (user_id) DO UPDATE SET \
           secret = CASE WHEN second_factors.created_at > now() - interval '10 minutes' \
                         THEN second_factors.secret ELSE EXCLUDED.secret END, \
           created_at = CASE WHEN second_factors.created_at > now() - interval '10 minutes' \
                         THEN second_factors.created_at ELSE now() END \
           WHERE second_factors.confirmed_at IS NULL \
         RETURNING secret",
    )
    .bind(user_id)
    .bind(&secret)
    .fetch_optional(db)
    .await?;
    let secret = stored.ok_or(EnrolError::AlreadyEnrolled)?;
    let totp = totp(secret, account)?;
    Ok(Enrolment {
        secret: totp.get_secret_base32(),
        otpauth_uri: totp.get_url(),
    })
}

/// What checking a code did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// A code from the app; `recovery_codes` when it confirmed a new enrolment (shown once).
    Totp { recovery_codes: Option<Vec<String>> },
    /// One of the recovery codes, now used; this many are left.
    Recovery { left: i64 },
    /// Wrong, used before, or no factor to check it against.
    Refused,
}

/// Checks `code` for `user_id` within `tx` (which locks the factor's row: of two sign-ins with
/// one code, one wins). A TOTP code confirms an enrolment in progress and makes its recovery
/// codes; a recovery code is good only for a confirmed factor.
pub async fn check(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    account: &str,
    code: &str,
) -> anyhow::Result<Checked> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let row: Option<(Vec<u8>, bool, i64)> = sqlx::query_as(
        "SELECT secret, confirmed_at IS NOT NULL, last_step FROM second_factors \
         WHERE user_id = $1 FOR UPDATE",
    )
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((secret, confirmed, last_step)) = row else {
        return Ok(Checked::Refused);
    };
    if code.len() == 6 && code.chars().all(|c| c.is_ascii_digit()) {
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        let Some(step) = step_of(&totp(secret, account)?, &code, now) else {
            return Ok(Checked::Refused);
        };
        if step <= last_step {
            return Ok(Checked::Refused);
        }
        sqlx::query(
            "UPDATE second_factors SET last_step = $2, confirmed_at = coalesce(confirmed_at, now()) \
             WHERE user_id = $1",
        )
        .bind(user_id)
        .bind(step)
        .execute(&mut **tx)
        .await?;
        if confirmed {
            return Ok(Checked::Totp {
                recovery_codes: None,
            });
        }
        let codes = new_recovery_codes(tx, user_id).await?;
        record(&mut **tx, "second_factor_enrolled", user_id, None).await?;
        return Ok(Checked::Totp {
            recovery_codes: Some(codes),
        });
    }
    if !confirmed {
        return Ok(Checked::Refused);
    }
    let used = sqlx::query(
        "UPDATE recovery_codes SET used_at = now() \
         WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
    )
    .bind(user_id)
    .bind(sha256(&code.to_lowercase()))
    .execute(&mut **tx)
    .await?;
    if used.rows_affected() == 0 {
        return Ok(Checked::Refused);
    }
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?;
    record_with(
        &mut **tx,
        "recovery_code_used",
        user_id,
        None,
        Some(serde_json::json!({ "left": left })),
    )
    .await?;
    Ok(Checked::Recovery { left })
}

/// Ten new recovery codes for `user_id` (the old ones go): `xxxxx-xxxxx`, lower-case base32.
async fn new_recovery_codes(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
) -> anyhow::Result<Vec<String>> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let bytes = random_bytes(10)?;
        let chars: String = bytes
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        let code = format!("{}-{}", &chars[..5], &chars[5..]);
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
            .bind(user_id)
            .bind(sha256(&code))
            .execute(&mut **tx)
            .await?;
        codes.push(code);
    }
    Ok(codes)
}

/// Removes `user_id`'s factor and recovery codes (an admin's reset of another admin's factor,
/// in the transaction that records it and ends the user's sessions); false when there was none.
pub async fn reset(tx: &mut Transaction<'_, Postgres>, user_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    let done = sqlx::query("DELETE FROM second_factors WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Recovery codes `user_id` has left.
pub async fn recovery_codes_left(db: &PgPool, user_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
        .bind(user_id)
        .fetch_one(db)
        .await
}

/// Records a security-relevant act that is no change of a user.
pub async fn record(
    db: impl sqlx::PgExecutor<'_>,
    kind: &str,
    user_id: Uuid,
    by: Option<Uuid>,
) -> sqlx::Result<()> {
    record_with(db, kind, user_id, by, None).await
}

/// [`record`] with details.
pub async fn record_with(
    db: impl sqlx::PgExecutor<'_>,
    kind: &str,
    user_id: Uuid,
    by: Option<Uuid>,
    detail: Option<serde_json::Value>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO security_events (kind, user_id, by_user, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(kind)
    .bind(user_id)
    .bind(by)
    .bind(detail.unwrap_or_else(|| serde_json::json!({})))
    .execute(db)
    .await?;
    Ok(())
}

/// A right password's challenge: a random token (returned) whose hash is stored with the
/// user and the password hash the login saw.
pub async fn issue_challenge(
    db: &PgPool,
    user_id: Uuid,
    password_seen: &str,
) -> anyhow::Result<String> {
    use base64::Engine;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(32)?);
    sqlx::query(
        "INSERT INTO login_challenges (token_hash, user_id, password_seen, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(sha256(&token))
    .bind(user_id)
    .bind(password_seen)
    .bind(CHALLENGE_TTL.as_secs_f64())
    .execute(db)
    .await?;
    Ok(token)
}

/// A challenge that is still good: its user and the password hash its login saw.
pub struct Challenge {
    pub token_hash: Vec<u8>,
    pub user_id: Uuid,
    pub password_seen: String,
}

/// The challenge `token` if it is known, unexpired and not spent by wrong codes.
pub async fn find_challenge(db: &PgPool, token: &str) -> sqlx::Result<Option<Challenge>> {
    let row: Option<(Vec<u8>, Uuid, String)> = sqlx::query_as(
        "SELECT token_hash, user_id, password_seen FROM login_challenges \
         WHERE token_hash = $1 AND expires_at > now() AND failures < $2",
    )
    .bind(sha256(token))
    .bind(CHALLENGE_MAX_FAILURES)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(token_hash, user_id, password_seen)| Challenge {
        token_hash,
        user_id,
        password_seen,
    }))
}

/// A wrong code: counted against the challenge and the user. `Some(left)` when the user's
/// second step is now locked for that long.
pub async fn failed(db: &PgPool, challenge: &Challenge) -> sqlx::Result<Option<Duration>> {
    sqlx::query("UPDATE login_challenges SET failures = failures + 1 WHERE token_hash = $1")
        .bind(&challenge.token_hash)
        .execute(db)
        .await?;
    user_attempt(db, challenge.user_id).await
}

/// Counts one second-step attempt of `user_id`; `Some(left)` while it is locked.
pub async fn user_attempt(db: &PgPool, user_id: Uuid) -> sqlx::Result<Option<Duration>> {
    throttle::locked_for(
        db,
        &format!("mfa:{user_id}"),
        USER_MAX_FAILURES,
        USER_WINDOW,
        USER_LOCK,
    )
    .await
}

/// Whether `user_id`'s second step is locked now (without counting an attempt).
pub async fn user_locked(db: &PgPool, user_id: Uuid) -> sqlx::Result<Option<Duration>> {
    throttle::is_locked(db, &format!("mfa:{user_id}")).await
}

/// The challenge is done (signed in): it goes, in the sign-in's transaction.
pub async fn spend_challenge(
    tx: &mut Transaction<'_, Postgres>,
    challenge: &Challenge,
) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM login_challenges WHERE token_hash = $1")
        .bind(&challenge.token_hash)
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes expired challenges.
pub async fn prune(db: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query("DELETE FROM login_challenges WHERE expires_at < now()")
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_found_in_its_step_and_its_neighbours_only() {
        let t = totp(b"12345678901234567890".to_vec(), "a@clinic.test").unwrap();
        let now = 1_700_000_000;
        let code = t.generate(now);
        assert_eq!(step_of(&t, &code, now), Some((now / STEP) as i64));
        assert_eq!(step_of(&t, &code, now + STEP), Some((now / STEP) as i64));
        assert_eq!(step_of(&t, &code, now + 3 * STEP), None);
    }

    #[test]
    fn the_rfc_6238_test_vector_holds() {
        // RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (eight digits); six digits: 287082.
        let t = totp(b"12345678901234567890".to_vec(), "a@clinic.test").unwrap();
        assert_eq!(t.generate(59), "287082");
    }
}
