//! Reading a test's databases.

use sqlx::PgPool;

/// The number a `SELECT count(*) …` returns; panics when the query fails (tests).
pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
