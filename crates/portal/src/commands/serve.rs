//! `portal auth-service | user-service | appointment-service | sync-admin | gateway | web | relay`: each part alone, in the foreground,
//! until SIGTERM or Ctrl-C, each configured from its own settings groups.

use super::{check_links, require_broker_user, start_failure, Failure};
use crate::cli::{
    AppointmentServiceCommand, AuthServiceCommand, GatewayCommand, RelayCommand, SyncAdminCommand,
    UserServiceCommand, WebCommand,
};
use auth_service::relay::{Relay, RelayMetrics};
use auth_service::settings::KeyDirArgs;
use gateway::settings::Upstreams;
use platform::metrics::Metrics;
use platform::privilege::Identity;
use platform::service::Service;
use platform::settings::DEFAULT_AUTH_SERVICE_URL;
use web::settings::DEFAULT_GATEWAY_URL;

/// Runs `app` until SIGTERM or Ctrl-C.
async fn until_signal(app: impl Service) -> Result<(), Failure> {
    app.run_until_stopped(platform::shutdown::on_signal())
        .await?;
    Ok(())
}

pub async fn auth_service(c: &AuthServiceCommand) -> Result<(), Failure> {
    check_links(&c.network, &c.links())?;
    if !c.no_relay {
        require_broker_user(c.settings.relay.amqp_url_or(&c.settings.broker.amqp_url))?;
    }
    let app = auth_service::Application::build(c.settings.into_config(!c.no_relay))
        .await
        .map_err(Failure::unreachable)?;
    until_signal(app).await
}

pub async fn user_service(c: &UserServiceCommand) -> Result<(), Failure> {
    check_links(&c.network, &c.links())?;
    let config = c
        .service
        .into_config(
            &c.db,
            &c.consumer,
            &c.broker,
            &c.setup,
            c.token_checks(),
            DEFAULT_AUTH_SERVICE_URL,
            !c.no_consumer,
        )
        .map_err(Failure::usage)?;
    let app = user_service::Application::build(config)
        .await
        .map_err(|e| start_failure(e, Failure::unreachable))?;
    until_signal(app).await
}

pub async fn appointment_service(c: &AppointmentServiceCommand) -> Result<(), Failure> {
    check_links(&c.network, &c.links())?;
    let mut config = c
        .service
        .into_config(
            &c.db,
            &c.consumer,
            &c.broker,
            &c.setup,
            c.token_checks(),
            DEFAULT_AUTH_SERVICE_URL,
        )
        .map_err(Failure::usage)?;
    config.outbox_cleanup = c.outbox.cleanup();
    let app = appointment_service::Application::build(config)
        .await
        .map_err(|e| start_failure(e, Failure::unreachable))?;
    until_signal(app).await
}

pub async fn web(c: &WebCommand) -> Result<(), Failure> {
    check_links(&c.network, &c.web.links())?;
    let mut config = c.web.into_config(DEFAULT_GATEWAY_URL);
    config.metrics_token = c.metrics.token().map_err(Failure::usage)?;
    let app = web::Application::build(config).await?;
    until_signal(app).await
}

/// The sync admin API under the operator's identity (the URLs `portal verify` and `portal dlq`
/// use), with the scheduled reconcile when RECONCILE_INTERVAL is set.
pub async fn sync_admin(c: &SyncAdminCommand) -> Result<(), Failure> {
    check_links(&c.network, &c.links())?;
    let mut config = c
        .sync_admin
        .into_config(
            &c.operator,
            c.token_checks(),
            &c.trust.trusted_publishers,
            DEFAULT_AUTH_SERVICE_URL,
        )
        .map_err(Failure::usage)?;
    config.managed_by_setup = c.setup.managed_by_setup;
    let app = sync_admin::Application::build(config)
        .await
        .map_err(|e| start_failure(e, Failure::from))?;
    until_signal(app).await
}

pub async fn gateway(c: &GatewayCommand) -> Result<(), Failure> {
    check_links(&c.network, &c.gateway.links(&c.auth_location))?;
    let mut config = c
        .gateway
        .into_config(&c.auth_location, &Upstreams::default());
    config.metrics_token = c.metrics.token().map_err(Failure::usage)?;
    let app = gateway::Application::build(config).await?;
    until_signal(app).await
}

/// `portal relay`: the outbox relay alone, with a small HTTP port of its own
/// (`RELAY_HTTP_HOST`:`RELAY_HTTP_PORT`) for `/health/live`, `/health/ready` (auth_db and the
/// broker) and `/metrics`.
pub async fn relay(c: &RelayCommand) -> Result<(), Failure> {
    check_links(&c.network, &c.links())?;
    require_broker_user(c.relay.amqp_url_or(&c.broker.amqp_url))?;
    let managed_by_setup = c.setup.managed_by_setup;
    let pool = auth_service::open_database(&c.db.auth_database_url, 4, managed_by_setup)
        .await
        .map_err(Failure::unreachable)?;
    let metrics = Metrics::new("relay").map_err(anyhow::Error::from)?;
    metrics
        .watch_pool(pool.clone(), "auth_db")
        .map_err(anyhow::Error::from)?;
    let counted =
        RelayMetrics::register(&metrics, &auth_service::relay::user_events(), pool.clone())
            .map_err(anyhow::Error::from)?;
    let cleanup =
        auth_service::relay::CleanupMetrics::register(&metrics).map_err(anyhow::Error::from)?;
    let broker = c.relay.broker_link(&c.broker.amqp_url);
    let identities = [
        Identity::postgres("AUTH_DATABASE_URL", &pool),
        Identity::rabbitmq(broker.setting, &broker.urls),
    ];
    platform::privilege::watch("relay", &metrics, managed_by_setup, identities)
        .map_err(anyhow::Error::from)?;
    let relay = Relay::new(
        auth_service::relay::user_events(),
        pool.clone(),
        c.relay.amqp_url_or(&c.broker.amqp_url).to_owned(),
        c.relay.into_config(managed_by_setup),
    )
    .with_metrics(counted)
    .with_cleanup_metrics(cleanup);
    let broker_up = relay.broker_up();
    let addr = c.http.addr();
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
pub fn rotate_keys(keys: &KeyDirArgs) -> Result<(), Failure> {
    let kid = keys.key_dir().rotate()?;
    println!("new signing key {kid}; the auth-service uses it within 5 seconds");
    Ok(())
}
