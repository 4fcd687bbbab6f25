//! SCIM clients' bearer tokens: created and revoked by an admin (`portal scim token`, the admin
//! API, the web portal's SCIM page), 32 random bytes shown once and stored only as their SHA-256,
//! good for `/scim/v2` and nothing else (they are not JWTs, so no other route takes them, and
//! `/scim/v2` takes no JWT).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use contract::api::ScimToken;
use contract::{Timestamp, UserId};
use rand::RngCore;
use sqlx::PgExecutor;
use uuid::Uuid;

/// What a token's secret starts with, so a leaked one is recognised (by a secret scanner, or
/// a person reading a log) for what it is.
pub const PREFIX: &str = "scim_";

fn hash(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    name: String,
    created_by: Uuid,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<Row> for ScimToken {
    fn from(r: Row) -> Self {
        ScimToken {
            id: r.id,
            name: r.name,
            created_at: Timestamp::from(r.created_at),
            created_by: UserId(r.created_by),
            last_used_at: r.last_used_at.map(Timestamp::from),
            revoked_at: r.revoked_at.map(Timestamp::from),
        }
    }
}

const COLUMNS: &str = "id, name, created_by, created_at, last_used_at, revoked_at";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("a SCIM token named {0:?} exists already: revoke it first, or choose another name")]
    NameTaken(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// Creates a token named `name` for `by`; its record and the secret (shown once).
pub async fn create(
    db: impl PgExecutor<'_>,
    name: &str,
    by: Uuid,
) -> Result<(ScimToken, String), TokenError> {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let row: Row = sqlx::query_as(&format!(
        "INSERT INTO scim_tokens (id, name, secret_hash, created_by) VALUES ($1, $2, $3, $4) \
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(name)
    .bind(hash(&secret))
    .bind(by)
    .fetch_one(db)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("scim_tokens_live_name") => {
            TokenError::NameTaken(name.to_owned())
        }
        _ => TokenError::Db(e),
    })?;
    Ok((row.into(), secret))
}

/// Every token, newest first.
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<ScimToken>> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM scim_tokens ORDER BY created_at DESC, name"
    ))
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(ScimToken::from).collect())
}

/// Revokes token `id` (a revoked one stays as it was); `None` when there is no such token.
pub async fn revoke(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<ScimToken>> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "UPDATE scim_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 \
         RETURNING {COLUMNS}"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(ScimToken::from))
}

/// The live token a request presented: its id and name.
#[derive(Debug, Clone)]
pub struct Client {
    pub token_id: Uuid,
    pub name: String,
}

/// The live token whose secret is `secret`, or `None`. Marks it used, at most once a minute
/// (a directory's sync sends thousands of requests; the log line of each says more).
pub async fn check(db: impl PgExecutor<'_>, secret: &str) -> sqlx::Result<Option<Client>> {
    if !secret.starts_with(PREFIX) {
        return Ok(None);
    }
    // One statement: the look-up, and the mark when it is a minute old.
    let found: Option<(Uuid, String)> = sqlx::query_as(
        "WITH live AS (SELECT id, name, last_used_at FROM scim_tokens \
                       WHERE secret_hash = $1 AND revoked_at IS NULL), \
              marked AS (UPDATE scim_tokens t SET last_used_at = now() FROM live \
                         WHERE t.id = live.id \
                           AND (live.last_used_at IS NULL \
                                OR live.last_used_at < now() - interval '1 minute')) \
         SELECT id, name FROM live",
    )
    .bind(hash(secret))
    .fetch_optional(db)
    .await?;
    Ok(found.map(|(token_id, name)| Client { token_id, name }))
}
