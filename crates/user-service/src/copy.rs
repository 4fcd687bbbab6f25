//! The user-service's part of consuming user events: how a batch changes `user_db` (the shared
//! [`consumer`] crate does the rest — batches, trust, retries, dead letters, reconnection).

use consumer::{Apply, Changed};
use contract::Envelope;

/// `user_db`'s `users`, kept by the version rule ([`crate::store::apply`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct UserCopy;

impl Apply for UserCopy {
    async fn apply(
        &self,
        conn: &mut sqlx::PgConnection,
        events: &[Envelope],
    ) -> Result<Vec<Changed>, sqlx::Error> {
        crate::store::apply(conn, events).await
    }
}

/// The user-service's consumer.
pub type UserConsumer = consumer::Consumer<UserCopy>;
