//! `portal auth-service | user-service | appointment-service | sync-admin | gateway | web | relay`: each part alone, in the foreground,
//! until SIGTERM or Ctrl-C. Also builds the service configurations `portal up` uses.

use super::Failure;
use crate::cli::Settings;
use auth_service::relay::{Relay, RelayConfig, RelayMetrics};
use consumer::ConsumerConfig;
use platform::jwt::{KeyDir, KeySource};
use platform::metrics::Metrics;
use platform::service::Service;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn auth_config(s: &Settings, run_relay: bool) -> auth_service::Config {
    auth_service::Config {
        http_addr: s.auth_addr,
        database_url: s.auth_database_url.clone(),
        amqp_url: s.relay_amqp().to_owned(),
        key_dir: KeyDir(s.jwt_key_dir.clone()),
        token_ttl_seconds: s.token_ttl_seconds,
        security: auth_service::SecurityConfig {
            session_ttl: s.session_ttl,
            login: auth_service::throttle::LoginPolicy {
                max_failures: s.login_max_failures,
                lock: s.login_lock,
                ..Default::default()
            },
            registration_enabled: s.registration_enabled,
            hash_queue_limit: s.hash_queue_limit.map(|n| n as usize),
            temporary_password_ttl: s.temporary_password_ttl,
        },
        run_relay,
        max_db_connections: 16,
        managed_by_setup: s.managed_by_setup,
        relay: relay_config(s),
    }
}

pub fn relay_config(s: &Settings) -> RelayConfig {
    RelayConfig {
        batch_size: s.relay_batch_size,
        in_flight: usize::from(s.relay_in_flight),
        retention: s
            .event_retention_days
            .map(|days| Duration::from_secs(u64::from(days) * 86_400)),
        declare_topology: !s.managed_by_setup,
        ..RelayConfig::default()
    }
}

pub fn user_config(s: &Settings, run_consumer: bool) -> user_service::Config {
    user_service::Config {
        http_addr: s.user_addr,
        database_url: s.user_database_url.clone(),
        amqp_url: s.user_service_amqp().to_owned(),
        keys: KeySource::Jwks(s.jwks_url()),
        run_consumer,
        max_db_connections: 16,
        managed_by_setup: s.managed_by_setup,
        consumer: ConsumerConfig {
            prefetch: s.consumer_prefetch,
            batch_size: s.consumer_batch_size,
            trusted_publishers: s.trusted_publishers.clone(),
            ..ConsumerConfig::default()
        },
    }
}

pub fn appointment_config(s: &Settings) -> appointment_service::Config {
    appointment_service::Config {
        http_addr: s.appointment_addr,
        database_url: s.appointment_database_url.clone(),
        amqp_url: s.appointment_service_amqp().to_owned(),
        keys: KeySource::Jwks(s.jwks_url()),
        max_db_connections: 16,
        managed_by_setup: s.managed_by_setup,
        consumer: appointment_service::consumer_config(ConsumerConfig {
            prefetch: s.consumer_prefetch,
            batch_size: s.consumer_batch_size,
            trusted_publishers: s.trusted_publishers.clone(),
            ..ConsumerConfig::default()
        }),
    }
}

pub fn web_config(s: &Settings) -> web::Config {
    web::Config {
        http_addr: std::net::SocketAddr::new(s.web_host, s.web_port),
        gateway_url: s
            .gateway_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", s.gateway_addr)),
        secure_cookies: s.web_secure_cookies,
        utc_offset: s.utc_offset,
    }
}

/// The sync admin API under the operator's identity (the URLs `portal verify` and `portal dlq`
/// use).
pub fn sync_admin_config(s: &Settings) -> sync_admin::Config {
    sync_admin::Config::standard(
        s.sync_admin_addr,
        s.operator_auth_db(),
        s.operator_user_db(),
        s.operator_appointment_db(),
        s.operator_amqp(),
        KeySource::Jwks(s.jwks_url()),
    )
}

pub fn gateway_config(s: &Settings) -> gateway::Config {
    gateway::Config {
        http_addr: s.gateway_addr,
        auth_url: s.auth_service_url(),
        users_url: s
            .user_service_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", s.user_addr)),
        // `none`: a system without the appointment-service (the benchmark's) routes nothing
        // there and does not wait for it to be ready.
        appointments_url: match s.appointment_service_url.as_deref() {
            Some("none") => None,
            Some(url) => Some(url.to_owned()),
            None => Some(format!("http://{}", s.appointment_addr)),
        },
        sync_admin_url: match s.sync_admin_url.as_deref() {
            Some("none") => None,
            Some(url) => Some(url.to_owned()),
            None => Some(format!("http://{}", s.sync_admin_addr)),
        },
        upstream_timeout: Duration::from_secs(30),
        health_interval: s.gateway_health_interval,
        auth_rate_limit: gateway::AuthRateLimit {
            per_minute: s.gateway_auth_rate,
            burst: s.gateway_auth_burst,
        },
        trusted_proxies: s.gateway_trusted_proxies.clone(),
    }
}

pub async fn auth_service(s: &Settings, run_relay: bool) -> Result<(), Failure> {
    let app = auth_service::Application::build(auth_config(s, run_relay))
        .await
        .map_err(Failure::unreachable)?;
    app.run_until_stopped(platform::shutdown::on_signal())
        .await?;
    Ok(())
}

/// The periodic reconcile when `RECONCILE_INTERVAL` is set, over every consumer's copy (those
/// `portal reconcile` covers); it stops with `shutdown`.
pub fn reconcile_schedule(
    s: &Settings,
    shutdown: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = s.reconcile_interval?;
    Some(ops::reconcile::spawn_schedule(
        s.operator_auth_db().to_owned(),
        super::verify::copies(s)
            .into_iter()
            .map(|(copy, url)| (copy, url.to_owned()))
            .collect(),
        interval,
        shutdown,
    ))
}

pub async fn user_service(s: &Settings, run_consumer: bool) -> Result<(), Failure> {
    let app = user_service::Application::build(user_config(s, run_consumer))
        .await
        .map_err(Failure::unreachable)?;
    let shutdown = platform::shutdown::on_signal();
    let scheduled = reconcile_schedule(s, shutdown.clone());
    let served = app.run_until_stopped(shutdown.clone()).await;
    shutdown.cancel();
    if let Some(task) = scheduled {
        task.await.ok();
    }
    served?;
    Ok(())
}

pub async fn appointment_service(s: &Settings) -> Result<(), Failure> {
    let app = appointment_service::Application::build(appointment_config(s))
        .await
        .map_err(Failure::unreachable)?;
    app.run_until_stopped(platform::shutdown::on_signal())
        .await?;
    Ok(())
}

pub async fn web(s: &Settings) -> Result<(), Failure> {
    let app = web::Application::build(web_config(s)).await?;
    app.run_until_stopped(platform::shutdown::on_signal())
        .await?;
    Ok(())
}

pub async fn sync_admin(s: &Settings) -> Result<(), Failure> {
    let app = sync_admin::Application::build(sync_admin_config(s)).await?;
    app.run_until_stopped(platform::shutdown::on_signal())
        .await?;
    Ok(())
}

pub async fn gateway(s: &Settings) -> Result<(), Failure> {
    let app = gateway::Application::build(gateway_config(s)).await?;
    app.run_until_stopped(platform::shutdown::on_signal())
        .await?;
    Ok(())
}

/// `portal relay`: the outbox relay alone, with a small HTTP port of its own
/// (`RELAY_HTTP_HOST`:`RELAY_HTTP_PORT`) for `/health/live`, `/health/ready` (auth_db and the
/// broker) and `/metrics`.
pub async fn relay(s: &Settings) -> Result<(), Failure> {
    let pool = auth_service::open_database(&s.auth_database_url, 4, s.managed_by_setup)
        .await
        .map_err(Failure::unreachable)?;
    let metrics = Metrics::new("relay").map_err(anyhow::Error::from)?;
    metrics
        .watch_pool(pool.clone(), "auth_db")
        .map_err(anyhow::Error::from)?;
    let counted = RelayMetrics::register(&metrics, pool.clone()).map_err(anyhow::Error::from)?;
    let relay =
        Relay::new(pool.clone(), s.relay_amqp().to_owned(), relay_config(s)).with_metrics(counted);
    let broker_up = relay.broker_up();
    let addr = std::net::SocketAddr::new(s.relay_http_host, s.relay_http_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let ready_pool = pool.clone();
    let ready = move || {
        let (pool, broker_up) = (ready_pool.clone(), broker_up.clone());
        async move {
            let up = broker_up.load(std::sync::atomic::Ordering::Relaxed);
            platform::http::readiness(&pool, "auth_db", Some(up), None).await
        }
    };
    let router = platform::metrics::instrument(
        axum::Router::new()
            .merge(platform::http::health_routes(ready))
            .fallback(platform::http::fallback_not_found),
        &metrics,
    );
    let shutdown = platform::shutdown::on_signal();
    platform::http::serve_with_worker(
        "relay",
        listener,
        router,
        Some(relay.run(shutdown.clone())),
        &pool,
        shutdown,
    )
    .await?;
    Ok(())
}

/// `portal keys rotate`.
pub fn rotate_keys(s: &Settings) -> Result<(), Failure> {
    let kid = KeyDir(s.jwt_key_dir.clone()).rotate()?;
    println!("new signing key {kid}; the auth-service uses it within 5 seconds");
    Ok(())
}
