//! TLS is available to every connection the services make: a database URL with
//! `sslmode=require` reaches a PostgreSQL that serves TLS, and the connection is encrypted (the
//! server says so in `pg_stat_ssl`), and `verify-full` accepts only a certificate it trusts
//! (`sslrootcert`); a service reaches RabbitMQ over `amqps://`, checking its
//! certificate (RabbitMQ lists the connection as TLS). The HTTP clients (`https://`) use the
//! same rustls build. Both servers are the test's own, with a self-signed certificate.

use sandbox::http::get;
use sandbox::process::{Process, Spec};
use sandbox::servers::{PrivatePostgres, PrivateRabbit};
use sandbox::{poll_until, Sandbox, SETTLE};
use std::path::Path;
use tokio::task::block_in_place;

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
    // `verify-full` checks the certificate: refused while nothing trusts it, accepted with the
    // server's certificate as the root (how an install trusts its own CA).
    let verify = format!("{}/postgres?sslmode=verify-full", server.url());
    let untrusted = platform::db::lazy_pool(&verify, 1).unwrap();
    assert!(sqlx::query("SELECT 1").execute(&untrusted).await.is_err());
    untrusted.close().await;
    let rooted = format!("{verify}&sslrootcert={}", server.certificate().display());
    let trusted = platform::db::lazy_pool(&rooted, 1).unwrap();
    sqlx::query("SELECT 1")
        .execute(&trusted)
        .await
        .expect("verify-full with the server's certificate as sslrootcert");
    trusted.close().await;
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

/// A service reaches RabbitMQ over `amqps://` and checks the broker's certificate: trusted
/// through `SSL_CERT_FILE` (how an install trusts its own CA without changing the system's
/// store) the user-service connects over TLS and gets ready; an unknown certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_reaches_rabbitmq_over_amqps_and_checks_its_certificate() {
    let rabbit =
        block_in_place(PrivateRabbit::start_with_tls).expect("a private RabbitMQ serving AMQPS");
    let url = rabbit.tls_url().expect("a TLS port");
    // This process does not trust the node's certificate.
    let refused = platform::amqp::connect(&url, "tls-untrusted").await;
    assert!(refused.is_err(), "a connection to an unknown certificate");

    let sb = Sandbox::for_test().await;
    let spec = Spec::on(&sb, "user-service-amqps", &["user-service"])
        .env("AMQP_URL", &url)
        .env("SSL_CERT_FILE", rabbit.certificate())
        .http("USER_ADDR");
    let users = Process::start(Path::new(env!("CARGO_BIN_EXE_portal")), &spec, &sb.dir)
        .await
        .expect("the user-service");
    let ready = format!("{}/health/ready", users.url().unwrap());
    poll_until(SETTLE, "the user-service ready over amqps", || async {
        (get(&ready, None).await.0 == 200).then_some(())
    })
    .await;
    let connections =
        block_in_place(|| rabbit.ctl_output(&["list_connections", "ssl", "user"])).unwrap();
    assert!(
        connections
            .lines()
            .any(|line| line.split_whitespace().eq(["true", "guest"])),
        "the service's connection is TLS: {connections}"
    );
    users.stop().await.unwrap();
    block_in_place(move || drop(rabbit));
}
