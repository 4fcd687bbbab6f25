//! TLS is available to every connection the services make: here a database URL with
//! `sslmode=require` reaches a PostgreSQL that serves TLS, and the connection is encrypted (the
//! server says so in `pg_stat_ssl`). RabbitMQ (`amqps://`) and the HTTP clients (`https://`) use
//! the same rustls build.

use sandbox::servers::PrivatePostgres;

#[tokio::test]
async fn a_database_url_with_sslmode_require_connects_over_tls() {
    let server = tokio::task::spawn_blocking(PrivatePostgres::start_with_tls)
        .await
        .unwrap()
        .expect("a private PostgreSQL serving TLS");
    let url = format!("{}/postgres?sslmode=require", server.url());
    let pool = platform::db::lazy_pool(&url, 1).unwrap();
    let (ssl, version): (bool, Option<String>) =
        sqlx::query_as("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(ssl, "the connection is encrypted");
    assert!(version.is_some_and(|v| v.starts_with("TLS")));
    pool.close().await;
    // The auth-service migrates and serves over the same kind of URL.
    let auth =
        auth_service::prepare_database(&format!("{}/auth_db?sslmode=require", server.url()), 1)
            .await
            .expect("auth_db over TLS");
    auth.close().await;
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}
