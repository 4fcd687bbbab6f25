//! `portal up`: the whole system in one foreground process.

use super::serve::{
    appointment_config, auth_config, gateway_config, sync_admin_config, user_config, web_config,
};
use super::{setup, Failure};
use crate::cli::{AdminArgs, Cli, Settings};
use anyhow::Context;
use clap::Parser;
use contract::topology;
use platform::service::Service;

/// Runs the least-privilege setup (unless `no_setup`, or PORTAL_CREDENTIALS=none), then the
/// system under the identities it wrote.
pub async fn run(s: &Settings, admin: &AdminArgs, no_setup: bool) -> Result<(), Failure> {
    if no_setup || setup::credentials_path().is_none() {
        return run_services(s).await;
    }
    setup::run(s, admin).await?;
    // The settings again, now with the credentials the setup wrote (what the environment sets
    // explicitly still wins).
    setup::load_into_env(&admin.credentials)?;
    let cli = Cli::try_parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    run_services(&cli.settings).await
}

async fn run_services(s: &Settings) -> Result<(), Failure> {
    let seed_options = super::seed::options(s)?;
    // The user-service reads the public key, so the auth-service (which creates the key pair)
    // is built first.
    let auth = auth_service::Application::build(auth_config(s, true))
        .await
        .map_err(Failure::unreachable)?;
    let users = user_service::Application::build(user_config(s, true))
        .await
        .map_err(Failure::unreachable)?;
    let appointments = appointment_service::Application::build(appointment_config(s))
        .await
        .map_err(Failure::unreachable)?;
    let sync_admin = sync_admin::Application::build(sync_admin_config(s)).await?;
    let mut gateway_settings = gateway_config(s);
    if s.sync_admin_url.is_none() {
        gateway_settings.sync_admin_url = Some(format!(
            "http://{}",
            sync_admin.local_addr().context("sync admin address")?
        ));
    }
    // The web portal started here is the proxy in front of the gateway: every login passes
    // through it, so the gateway must limit each person's address it forwards, not the
    // portal's own (unless GATEWAY_TRUSTED_PROXIES says otherwise).
    if gateway_settings.trusted_proxies.is_empty() {
        gateway_settings.trusted_proxies = vec![
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ];
    }
    let gateway = gateway::Application::build(gateway_settings).await?;
    // The portal reaches the gateway where it really listens (GATEWAY_ADDR may say port 0,
    // or 0.0.0.0), unless GATEWAY_URL says otherwise.
    let mut web_settings = web_config(s);
    if s.gateway_url.is_none() {
        let mut bound = gateway.local_addr().context("gateway address")?;
        if bound.ip().is_unspecified() {
            bound.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        web_settings.gateway_url = format!("http://{bound}");
    }
    let web = web::Application::build(web_settings).await?;

    // Declaring here means the queues exist before anything is published. If RabbitMQ is down
    // the relay and consumer declare it when they connect, so starting anyway loses nothing.
    // (Under the least-privilege setup, the setup has declared it.)
    if !s.managed_by_setup {
        if let Err(e) = platform::amqp::ensure_topology(
            &s.amqp_url,
            &[
                topology::ConsumerQueues::for_consumer(topology::USER_SERVICE),
                topology::ConsumerQueues::for_consumer(topology::APPOINTMENT_SERVICE),
            ],
        )
        .await
        {
            tracing::warn!(
                "RabbitMQ not reachable yet ({e}); events wait in the outbox until it is"
            );
        }
    }

    let seeded = if auth_service::store::count_users(auth.pool())
        .await
        .context("counting users")?
        == 0
    {
        let report = auth_service::seed::seed(auth.pool(), &seed_options).await?;
        super::seed::print_report(&report);
        Some(report)
    } else {
        None
    };

    // A new appointment_db (a first start, or the service added to a running system) learns
    // every existing user from the event store before it books anything; its queue is bound
    // already, so nothing written meanwhile is missed.
    let history = appointment_service::history(appointments.pool())
        .await
        .context("reading appointment_db")?;
    if history.expected.is_none() {
        let queue = topology::ConsumerQueues::for_consumer(topology::APPOINTMENT_SERVICE).main;
        match super::replay::backfill(s, &queue).await {
            Ok(sent) => println!(
                "appointment-service: {} stored events and the end-of-history mark sent to \
                 {queue}; it is ready once it has applied them",
                sent.events
            ),
            // Everything else starts: the appointment-service reports not ready, and says why,
            // until the backfill is run.
            Err(e) => tracing::warn!(
                "appointment-service: backfill not sent ({}); it stays not ready until \
                 `portal consumer add {}` runs",
                e.error,
                topology::APPOINTMENT_SERVICE
            ),
        }
    }

    let shutdown = platform::shutdown::on_signal();
    println!();
    println!(
        "web portal    http://{}",
        web.local_addr().context("web portal address")?
    );
    println!(
        "gateway       http://{}",
        gateway.local_addr().context("gateway address")?
    );
    println!(
        "auth-service  http://{}",
        auth.local_addr().context("auth-service address")?
    );
    println!(
        "user-service  http://{}",
        users.local_addr().context("user-service address")?
    );
    println!(
        "appointments  http://{}",
        appointments
            .local_addr()
            .context("appointment-service address")?
    );
    println!(
        "sync admin    http://{}",
        sync_admin.local_addr().context("sync admin address")?
    );
    let password = match (
        &s.seed_admin_password,
        seeded
            .as_ref()
            .and_then(|r| r.generated_admin_password.as_ref()),
    ) {
        (Some(_), _) => "the password in SEED_ADMIN_PASSWORD".to_owned(),
        (None, Some(generated)) => format!("{generated} (generated, shown only now)"),
        (None, None) => "the password printed when auth_db was first seeded".to_owned(),
    };
    println!("admin login   {} with {password}", s.seed_admin_email);
    println!("stop with Ctrl-C");

    let scheduled = super::serve::reconcile_schedule(s, shutdown.clone());
    let (a, u, p, g, w, y) = tokio::join!(
        auth.run_until_stopped(shutdown.clone()),
        users.run_until_stopped(shutdown.clone()),
        appointments.run_until_stopped(shutdown.clone()),
        gateway.run_until_stopped(shutdown.clone()),
        web.run_until_stopped(shutdown.clone()),
        sync_admin.run_until_stopped(shutdown.clone()),
    );
    if let Some(task) = scheduled {
        task.await.ok();
    }
    a?;
    u?;
    p?;
    g?;
    w?;
    y?;
    println!("stopped cleanly");
    Ok(())
}
