//! The auth-service's test helpers, shared by its own tests and every test of the whole system:
//! the service in-process on a test's sandbox, users written through the store with
//! [`TEST_PASSWORD`], logins, tokens of any lifetime signed with the sandbox's real key (as a
//! stolen key could sign them), and what the relay has published.

use crate::{poll_until, Running, Sandbox, SETTLE, TEST_PASSWORD};
use auth_service::store::{insert_user, NewUser};
use contract::Role;
use platform::jwt::{Claims, AUDIENCE, ISSUER};
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The service on the sandbox's `auth` database, vhost and keys, on a free port, with its relay.
pub fn config(sb: &Sandbox) -> auth_service::Config {
    auth_service::Config::local(&sb.database_url("auth"), &sb.amqp_url, &sb.key_dir)
}

/// Builds (migrating the database) and runs the service in this process.
pub async fn start(config: auth_service::Config) -> Running {
    Running::launch(auth_service::Application::build(config)).await
}

/// A pool on the sandbox's `auth` database, created and migrated if need be.
pub async fn pool(sb: &Sandbox) -> PgPool {
    auth_service::prepare_database(&sb.database_url("auth"), 4)
        .await
        .expect("auth_db")
}

/// The hash of [`TEST_PASSWORD`], computed once per test binary (argon2 is slow on purpose).
async fn password_hash() -> String {
    static HASH: OnceCell<String> = OnceCell::const_new();
    HASH.get_or_init(|| async {
        auth_service::password::hash(TEST_PASSWORD.into())
            .await
            .expect("hash the test password")
    })
    .await
    .clone()
}

/// Writes an active user with [`TEST_PASSWORD`] through the store (so it has its
/// `user.created` event) and returns its id.
pub async fn create_user(pool: &PgPool, email: &str, role: Role) -> Uuid {
    let new = NewUser::staff(email, "Test", email, role, password_hash().await).expect("test user");
    insert_user(pool, new).await.expect("create user").id
}

/// Logs in through `base_url` (the service or the gateway) and returns the access token.
pub async fn login(base_url: &str, email: &str, password: &str) -> String {
    crate::ApiClient::new(base_url)
        .expect("API client")
        .login(email, password)
        .await
        .unwrap_or_else(|e| panic!("login as {email}: {e}"))
        .access_token
}

/// Creates an admin and logs it in through `base_url`.
pub async fn admin_token(pool: &PgPool, base_url: &str) -> String {
    let email = format!("admin-{}@test.example", Uuid::new_v4().simple());
    create_user(pool, &email, Role::Admin).await;
    login(base_url, &email, TEST_PASSWORD).await
}

/// A bearer token of user `id` with `role`, signed with the sandbox's current key as the
/// auth-service signs, but claiming to live `lifetime` from now: what someone holding a stolen
/// key could make. Every part must refuse one living longer than TOKEN_TTL_SECONDS.
pub fn token_living(sb: &Sandbox, id: Uuid, role: Role, lifetime: Duration) -> String {
    let now = chrono::Utc::now().timestamp();
    let lifetime = i64::try_from(lifetime.as_secs()).expect("a lifetime in seconds");
    let claims = Claims {
        sub: id,
        email: "holder@clinic.test".into(),
        role,
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        iat: now,
        exp: now + lifetime,
        mcp: false,
    };
    let pem = std::fs::read(sb.key_dir.private_path()).expect("the sandbox's private key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(
        sb.key_dir
            .current_public_key()
            .expect("the sandbox's public key")
            .kid,
    );
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).expect("an Ed25519 private key");
    jsonwebtoken::encode(&header, &claims, &key).expect("sign a token")
}

/// Outbox rows not published yet.
pub async fn unpublished(pool: &PgPool) -> i64 {
    crate::db::count(
        pool,
        "SELECT count(*) FROM outbox WHERE published_at IS NULL",
    )
    .await
}

/// Waits until the relay has published every event of `auth_db`'s outbox.
pub async fn all_published(auth: &PgPool) {
    poll_until(SETTLE, "every outbox event published", || async {
        (unpublished(auth).await == 0).then_some(())
    })
    .await;
}

/// The code an authenticator app shows for the base32 `secret` (as enrolment answers it;
/// spaces allowed) at `offset` 30-second steps from now.
pub fn totp_code(secret: &str, offset: i64) -> String {
    let key = totp_rs::Secret::Encoded(secret.trim().replace(' ', ""))
        .to_bytes()
        .expect("a base32 secret");
    totp_code_of_key(key, offset)
}

/// [`totp_code`] for the raw `key` (as stored in `second_factors`).
pub fn totp_code_of_key(key: Vec<u8>, offset: i64) -> String {
    let totp =
        totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 1, 30, key, None, String::new());
    let now = chrono::Utc::now().timestamp() + offset * 30;
    totp.generate(u64::try_from(now).expect("a time after 1970"))
}
