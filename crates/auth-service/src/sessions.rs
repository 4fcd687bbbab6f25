//! Sessions: one login is a family of refresh tokens. A refresh token is 32 random bytes handed
//! to the client once and stored only as its SHA-256, so a copy of `auth_db` holds nothing that
//! signs in. Each use marks the token used and issues the next one of the family with the same
//! absolute expiry; a used token presented again means two holders (a stolen copy), and the
//! whole family is revoked. Logout revokes the family; deactivation, a role change and a
//! password change or reset revoke every family of the user ([`revoke_user`], called by the
//! store in the transaction of the change).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;
use uuid::Uuid;

/// A refresh token as the client gets it: shown once, never stored.
pub struct Issued {
    pub token: String,
    pub family_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// What presenting a refresh token led to.
pub enum Refreshed {
    /// The next token of the family, for this user.
    Rotated { user_id: Uuid, next: Issued },
    /// Unknown, expired or revoked: nothing changes.
    Refused,
    /// Already used: the family is now revoked (its holders must log in again).
    Reused { user_id: Uuid, family_id: Uuid },
}

fn hash(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Starts a new family (a login) for `user_id`, ending `lifetime` from now.
pub async fn start(
    db: impl sqlx::PgExecutor<'_>,
    user_id: Uuid,
    lifetime: Duration,
) -> sqlx::Result<Issued> {
    let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(12));
    let issued = Issued {
        token: new_token(),
        family_id: Uuid::new_v4(),
        expires_at: Utc::now() + lifetime,
    };
    store(db, &issued, user_id).await?;
    Ok(issued)
}

/// Stores `issued` (its hash only) as a live token of `user_id`.
async fn store(db: impl sqlx::PgExecutor<'_>, issued: &Issued, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(hash(&issued.token))
    .bind(issued.family_id)
    .bind(user_id)
    .bind(issued.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Uses `presented` once: the next token of its family, or why not. The row is locked, so two
/// uses of one token at the same moment cannot both rotate: the second is a reuse.
pub async fn refresh(db: &PgPool, presented: &str) -> sqlx::Result<Refreshed> {
    let mut tx = db.begin().await?;
    let row: Option<(Uuid, Uuid, DateTime<Utc>, bool, bool)> = sqlx::query_as(
        "SELECT family_id, user_id, expires_at, used_at IS NOT NULL, revoked_at IS NOT NULL \
         FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(hash(presented))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((family_id, user_id, expires_at, used, revoked)) = row else {
        return Ok(Refreshed::Refused);
    };
    if revoked || expires_at <= Utc::now() {
        return Ok(Refreshed::Refused);
    }
    if used {
        revoke_family(&mut tx, family_id).await?;
        tx.commit().await?;
        return Ok(Refreshed::Reused { user_id, family_id });
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1")
        .bind(hash(presented))
        .execute(&mut *tx)
        .await?;
    let next = Issued {
        token: new_token(),
        family_id,
        expires_at,
    };
    store(&mut *tx, &next, user_id).await?;
    tx.commit().await?;
    Ok(Refreshed::Rotated { user_id, next })
}

/// Logout: revokes the family of `presented`; the user it belonged to, if the token was known.
pub async fn logout(db: &PgPool, presented: &str) -> sqlx::Result<Option<Uuid>> {
    let mut tx = db.begin().await?;
    let row: Option<(Uuid, Uuid)> =
        sqlx::query_as("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(hash(presented))
            .fetch_optional(&mut *tx)
            .await?;
    let Some((family_id, user_id)) = row else {
        return Ok(None);
    };
    revoke_family(&mut tx, family_id).await?;
    tx.commit().await?;
    Ok(Some(user_id))
}

async fn revoke_family(tx: &mut Transaction<'_, Postgres>, family_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() \
         WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Revokes every live session of `user_id`, in the transaction of the change that requires it;
/// returns how many tokens were revoked.
pub async fn revoke_user(tx: &mut Transaction<'_, Postgres>, user_id: Uuid) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() \
         WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes tokens that expired more than a day ago (kept that long so a late reuse of one is
/// still recognised as a reuse rather than an unknown token).
pub async fn prune(db: &PgPool) -> sqlx::Result<u64> {
    let done =
        sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < now() - interval '1 day'")
            .execute(db)
            .await?;
    Ok(done.rows_affected())
}
