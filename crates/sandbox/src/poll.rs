//! Waiting for something to become true, with a deadline, instead of sleeping and hoping.

use sqlx::PgPool;
use std::future::Future;
use std::time::{Duration, Instant};

/// A generous deadline for what normally takes milliseconds (an event applied, a service
/// ready): long enough for a loaded machine, short enough that a hang fails the test.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn poll_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the `users` table of `pool` holds `id` at `version` or newer.
pub async fn wait_for_user_version(pool: &PgPool, id: uuid::Uuid, version: i64, timeout: Duration) {
    poll_until(
        timeout,
        &format!("user {id} at version {version}"),
        || async {
            let v: Option<Option<i64>> =
                sqlx::query_scalar("SELECT user_version FROM users WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await
                    .ok()?;
            (v.flatten()? >= version).then_some(())
        },
    )
    .await
}
