//! `portal up`: the whole system in one foreground process.

use super::{check_links, require_broker_user, setup, start_failure, Failure};
use crate::cli::{Command, UpArgs};
use crate::settings::Sources;
use anyhow::Context;
use contract::topology;
use gateway::settings::Upstreams;
use platform::service::Service;

/// Runs the least-privilege setup (unless `no_setup`, or PORTAL_CREDENTIALS=none), then the
/// system under the identities it wrote.
pub async fn run(args: UpArgs, sources: &Sources) -> Result<(), Failure> {
    if args.no_setup || sources.path.is_none() {
        return run_services(&args).await;
    }
    // `portal up` is a development system: it keeps RabbitMQ's guest (its default
    // ADMIN_AMQP_URL logs in as guest).
    setup::run_with(
        &args.admin,
        &args.auth.db,
        &args.user_db,
        &args.appointment_db,
        &args.network,
        false,
        None,
    )
    .await?;
    // The settings again, now with the credentials the setup wrote where it wrote them
    // (`--credentials`, PORTAL_CREDENTIALS, or the default); a flag or the environment still
    // wins.
    let sources =
        Sources::load_from(args.admin.credentials.clone(), true).map_err(Failure::usage)?;
    let (cli, _) = sources
        .parse_from(std::env::args_os())
        .map_err(|e| Failure::usage(anyhow::anyhow!("{e}")))?;
    match cli.command {
        Command::Up(args) => run_services(&args).await,
        _ => Err(anyhow::anyhow!("the command line changed under `portal up`").into()),
    }
}

async fn run_services(s: &UpArgs) -> Result<(), Failure> {
    check_links(&s.network, &s.links())?;
    let seed_options = s.seed.into_options().map_err(Failure::usage)?;
    // The gateway's and the web portal's (the parts that face users).
    let metrics_token = s.metrics.token().map_err(Failure::usage)?;
    // The relay publishes under its URL's broker user, which the consumers trust: named, never
    // guessed (the consumers and the sync admin API check theirs when they are built).
    require_broker_user(s.auth.relay.amqp_url_or(&s.auth.broker.amqp_url))?;
    // The user-service reads the public key, so the auth-service (which creates the key pair)
    // is built first.
    // The development and demo system signs in with a password alone (its seed guide says
    // so) unless ADMIN_MFA says otherwise; an install's default is `required`.
    let mut auth_config = s.auth.into_config(true);
    if s.auth.service.admin_mfa.is_none() {
        auth_config.security.mfa = auth_service::mfa::MfaPolicy::Optional;
    }
    let auth = auth_service::Application::build(auth_config)
        .await
        .map_err(Failure::unreachable)?;
    // The other parts find the auth-service where it really listens (AUTH_ADDR may say port 0,
    // or 0.0.0.0), unless AUTH_SERVICE_URL says otherwise.
    let auth_url = local_url(&auth, "auth-service")?;
    let user_config = s
        .user
        .into_config(
            &s.user_db,
            &s.consumer,
            &s.auth.broker,
            &s.auth.setup,
            s.token_checks(),
            &auth_url,
            true,
        )
        .map_err(Failure::usage)?;
    let mut appointment_config = s
        .appointment
        .into_config(
            &s.appointment_db,
            &s.consumer,
            &s.auth.broker,
            &s.auth.setup,
            s.token_checks(),
            &auth_url,
        )
        .map_err(Failure::usage)?;
    appointment_config.outbox_cleanup = s.auth.relay.outbox.cleanup();
    // The consumers' broker users, whose receipts are believed: the setup registers them on
    // an install; without it, `portal up` does.
    let consumers = [
        (
            topology::USER_SERVICE,
            platform::amqp::broker_user(&user_config.amqp_url),
        ),
        (
            topology::APPOINTMENT_SERVICE,
            platform::amqp::broker_user(&appointment_config.amqp_url),
        ),
    ];
    let users = user_service::Application::build(user_config)
        .await
        .map_err(|e| start_failure(e, Failure::unreachable))?;
    let appointments = appointment_service::Application::build(appointment_config)
        .await
        .map_err(|e| start_failure(e, Failure::unreachable))?;
    let mut sync_admin_config = s
        .sync_admin
        .into_config(
            &s.operator,
            s.token_checks(),
            &s.consumer.trust.trusted_publishers,
            &auth_url,
        )
        .map_err(Failure::usage)?;
    sync_admin_config.managed_by_setup = s.auth.setup.managed_by_setup;
    let sync_admin = sync_admin::Application::build(sync_admin_config)
        .await
        .map_err(|e| start_failure(e, Failure::from))?;
    let mut gateway_settings = s.gateway.into_config(
        &s.auth_location,
        &Upstreams {
            auth: auth_url.clone(),
            users: local_url(&users, "user-service")?,
            appointments: local_url(&appointments, "appointment-service")?,
            sync_admin: local_url(&sync_admin, "sync admin")?,
        },
    );
    // The web portal started here is the proxy in front of the gateway: every login passes
    // through it, so the gateway must limit each person's address it forwards, not the
    // portal's own (unless GATEWAY_TRUSTED_PROXIES says otherwise).
    if gateway_settings.trusted_proxies.is_empty() {
        gateway_settings.trusted_proxies = vec![
            std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::Ipv6Addr::LOCALHOST.into(),
        ];
    }
    gateway_settings.metrics_token = metrics_token.clone();
    let gateway = gateway::Application::build(gateway_settings).await?;
    // The portal reaches the gateway where it really listens, unless GATEWAY_URL says
    // otherwise.
    let mut web_settings = s.web.into_config(&local_url(&gateway, "gateway")?);
    web_settings.metrics_token = metrics_token;
    let web = web::Application::build(web_settings).await?;
    let amqp_url = &s.auth.broker.amqp_url;
    let managed_by_setup = s.auth.setup.managed_by_setup;

    // Declaring here means the queues exist before anything is published. If RabbitMQ is down
    // the relay and consumer declare it when they connect, so starting anyway loses nothing.
    // (Under the least-privilege setup, the setup has declared it.)
    if !managed_by_setup {
        for (name, broker_user) in &consumers {
            auth_service::consumers::register(auth.pool(), name, true, broker_user)
                .await
                .context("registering the consumers")?;
        }
        if let Err(e) = platform::amqp::ensure_topology(
            amqp_url,
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
    super::replay::backfill_new_copy(&s.operator, appointments.pool()).await?;

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
        &s.seed.seed_admin_password,
        seeded
            .as_ref()
            .and_then(|r| r.generated_admin_password.as_ref()),
    ) {
        (Some(_), _) => "the password in SEED_ADMIN_PASSWORD".to_owned(),
        (None, Some(generated)) => format!("{generated} (generated, shown only now)"),
        (None, None) => "the password printed when auth_db was first seeded".to_owned(),
    };
    println!("admin login   {} with {password}", s.seed.seed_admin_email);
    println!("stop with Ctrl-C");

    let (a, u, p, g, w, y) = tokio::join!(
        auth.run_until_stopped(shutdown.clone()),
        users.run_until_stopped(shutdown.clone()),
        appointments.run_until_stopped(shutdown.clone()),
        gateway.run_until_stopped(shutdown.clone()),
        web.run_until_stopped(shutdown.clone()),
        sync_admin.run_until_stopped(shutdown.clone()),
    );
    a?;
    u?;
    p?;
    g?;
    w?;
    y?;
    println!("stopped cleanly");
    Ok(())
}

/// `http://` and where `service` really listens, with an unspecified address (0.0.0.0) as
/// 127.0.0.1: how the other parts of this process reach it.
fn local_url(service: &impl Service, name: &str) -> anyhow::Result<String> {
    let mut bound = service
        .local_addr()
        .with_context(|| format!("{name} address"))?;
    if bound.ip().is_unspecified() {
        bound.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    Ok(format!("http://{bound}"))
}
