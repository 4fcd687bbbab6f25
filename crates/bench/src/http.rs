//! Row 8: writes over HTTP through the gateway, and the services every HTTP row runs
//! ([`Stack`]). The auth-service (with its relay), the
//! user-service and the gateway run as child processes on free ports; `clients` concurrent
//! clients send the write request of [`write_request`] back to back for `seconds`. Reported:
//! requests per second, latency percentiles, and the sync lag when the load stops (changes
//! committed in `auth_db` but not yet in `user_db`, and how long until they were).

use super::env::{BenchEnv, PASSWORD};
use super::profile::{self, CpuProfile};
use super::report::Setting;
use super::report::{HttpRun, Percentiles};
use super::sync;
use anyhow::{bail, Context};
use api_client::ApiClient;
use auth_service::store::{self, NewUser};
use chrono::{DateTime, Utc};
use contract::Role;
use sandbox::process::free_port;
use sandbox::process::Process;
use std::time::{Duration, Instant};

/// How many users the clients update, as in the measurement of the original design in
/// ARCHITECTURE.md (32 clients updating 10 users): many concurrent changes to the same rows.
const TARGETS: usize = 10;

/// The request each client sends, numbered `n` (unique per run): an admin's profile update of
/// one of the target users, with a phone number no other request uses, so every request is a
/// real change with its own version and event.
fn write_request(
    http: &reqwest::Client,
    gateway: &str,
    token: &str,
    targets: &[uuid::Uuid],
    n: u64,
) -> reqwest::RequestBuilder {
    let target = targets[(n % targets.len() as u64) as usize];
    http.patch(format!("{gateway}/api/v1/auth/admin/users/{target}"))
        .bearer_auth(token)
        .json(&serde_json::json!({ "phoneNumber": format!("+263 7{:08}", n % 100_000_000) }))
}

/// Changes committed in `auth_db` to the target users but not yet applied in `user_db`
/// (the difference of their versions).
async fn versions_behind(
    auth: &sqlx::PgPool,
    user: &sqlx::PgPool,
    targets: &[uuid::Uuid],
) -> anyhow::Result<i64> {
    let sum =
        "SELECT coalesce(sum(coalesce(user_version, 0)), 0)::int8 FROM users WHERE id = ANY($1)";
    let a: i64 = sqlx::query_scalar(sum)
        .bind(targets)
        .fetch_one(auth)
        .await?;
    let u: i64 = sqlx::query_scalar(sum)
        .bind(targets)
        .fetch_one(user)
        .await?;
    Ok(a - u)
}

/// The services of the HTTP rows (8 to 11) as child processes on free ports, ready, with an admin
/// logged in through the gateway whose account has reached `user_db` (so the relay and the
/// consumer are connected).
pub(crate) struct Stack {
    pub auth: sqlx::PgPool,
    pub user: sqlx::PgPool,
    pub auth_service: Process,
    pub user_service: Process,
    pub gateway: Process,
    pub gateway_url: String,
    /// The auth-service's own address (its API, its public keys).
    pub auth_url: String,
    pub http: reqwest::Client,
    pub admin_email: &'static str,
    pub token: String,
}

impl Stack {
    /// `required`: the consumers registered as required in `auth_db` before any service starts
    /// (as the setup registers them on an install), with the broker user of the bench's AMQP
    /// URL; the other rows register none.
    pub async fn start(
        env: &BenchEnv,
        setting: Setting,
        clients: usize,
        label: &str,
        required: &[&str],
    ) -> anyhow::Result<Self> {
        let (auth, user) = env.fresh_databases(2).await?;
        if !required.is_empty() {
            let broker_user = platform::amqp::broker_user_of(&env.sandbox.amqp_url)?;
            for name in required {
                auth_service::consumers::register(&auth, name, true, &broker_user)
                    .await
                    .with_context(|| format!("register {name}"))?;
            }
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(clients)
            .build()?;
        let spin = super::spinner(format!("{label}: starting services"));
        // Ports free a moment ago: another test's process may take one before a service binds
        // it; then the three start again on others (the services name each other's addresses,
        // so one cannot move alone).
        let mut attempt = 0;
        let (mut auth_service, mut user_service, gateway, auth_addr, gateway_url) = loop {
            attempt += 1;
            match start_services(env, setting, &http).await {
                Ok(started) => break started,
                Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                    tracing::warn!("{label}: a port was taken meanwhile; starting again: {e:#}");
                }
                Err(e) => return Err(e),
            }
        };
        // The admin is written through the store with the precomputed hash of PASSWORD; being
        // synced to user_db it is also the probe that the relay and consumer are up.
        let admin_email = "bench.admin@bench.example";
        let new = NewUser::staff(
            admin_email,
            "Bench",
            "Admin",
            Role::Admin,
            env.password_hash.clone(),
        )?;
        let mut tx = auth.begin().await?;
        let admin = store::create_user(&mut tx, new).await?;
        tx.commit().await?;
        let token = ApiClient::with_http(http.clone(), &gateway_url)?
            .login(admin_email, PASSWORD)
            .await
            .context("admin login through the gateway")?
            .access_token;
        let deadline = Instant::now() + Duration::from_secs(60);
        while sqlx::query_scalar::<_, i32>("SELECT 1 FROM users WHERE id = $1")
            .bind(admin.id)
            .fetch_optional(&user)
            .await?
            .is_none()
        {
            for s in [&mut auth_service, &mut user_service] {
                s.check_alive()?;
            }
            if Instant::now() > deadline {
                bail!("the admin did not reach user_db within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        spin.finish_and_clear();
        Ok(Self {
            auth,
            user,
            auth_service,
            user_service,
            gateway,
            gateway_url,
            auth_url: format!("http://{auth_addr}"),
            http,
            admin_email,
            token,
        })
    }

    /// Stops the services, checks `user_db` against `auth_db` and closes the pools.
    pub async fn stop_and_verify(self) -> anyhow::Result<()> {
        for s in [self.gateway, self.auth_service, self.user_service] {
            s.stop().await?;
        }
        sync::verify_in_sync(&self.auth, &self.user).await?;
        self.auth.close().await;
        self.user.close().await;
        Ok(())
    }
}

/// The auth-service, user-service and gateway of one HTTP row on ports free a moment ago,
/// once the gateway is ready: the three, the auth-service's address and the gateway's URL. A
/// service that exits meanwhile (its port taken) fails it, and the others are stopped.
async fn start_services(
    env: &BenchEnv,
    setting: Setting,
    http: &reqwest::Client,
) -> anyhow::Result<(Process, Process, Process, String, String)> {
    let (auth_port, user_port, gateway_port) = (free_port()?, free_port()?, free_port()?);
    let auth_addr = format!("127.0.0.1:{auth_port}");
    let user_addr = format!("127.0.0.1:{user_port}");
    let gateway_addr = format!("127.0.0.1:{gateway_port}");
    let addresses = [
        ("AUTH_ADDR", auth_addr.clone()),
        ("USER_ADDR", user_addr.clone()),
        ("GATEWAY_ADDR", gateway_addr.clone()),
        ("AUTH_SERVICE_URL", format!("http://{auth_addr}")),
        ("USER_SERVICE_URL", format!("http://{user_addr}")),
    ];
    let with = |extra: &[(&'static str, String)]| {
        let mut all = addresses.to_vec();
        all.extend_from_slice(extra);
        all
    };
    let mut auth_service = env
        .spawn(
            "auth-service",
            "auth-service",
            &with(&crate::env::relay_env(setting)),
        )
        .await?;
    let mut user_service = env
        .spawn(
            "user-service",
            "user-service",
            &with(&[("CONSUMER_PREFETCH", setting.prefetch.to_string())]),
        )
        .await?;
    let mut gateway = env.spawn("gateway", "gateway", &addresses).await?;
    let gateway_url = format!("http://{gateway_addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for s in [&mut auth_service, &mut user_service, &mut gateway] {
            s.check_alive()?;
        }
        let ready = http
            .get(format!("{gateway_url}/health/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the gateway was not ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((auth_service, user_service, gateway, auth_addr, gateway_url))
}

pub async fn through_gateway(
    env: &BenchEnv,
    setting: Setting,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<HttpRun> {
    let label = "row 8: HTTP through the gateway";
    let mut stack = Stack::start(env, setting, clients, label, &[]).await?;
    let (auth, user) = (stack.auth.clone(), stack.user.clone());
    let mut tx = auth.begin().await?;
    let mut targets = Vec::with_capacity(TARGETS);
    for i in 0..TARGETS {
        let email = format!("target{i}@bench.example");
        let target = NewUser::staff(
            &email,
            "Tendai",
            &format!("Target{i}"),
            Role::Doctor,
            env.password_hash.clone(),
        )?;
        targets.push(store::create_user(&mut tx, target).await?.id);
    }
    tx.commit().await?;
    let targets = std::sync::Arc::new(targets);
    let (http, gateway_url, token) = (
        stack.http.clone(),
        stack.gateway_url.clone(),
        stack.token.clone(),
    );
    // CPU of every process from here until the last change is applied: the load and the
    // catch-up, so each change's whole cost (write, relay, broker, apply) is counted.
    let cpu_before = profile::snapshot(&[&stack.auth_service, &stack.user_service, &stack.gateway]);
    let bar = super::bar(seconds, format!("{label}: seconds of load"));
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (http, gateway_url, token) = (http.clone(), gateway_url.clone(), token.clone());
        let targets = targets.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut n = c as u64;
            while Instant::now() < stop_at {
                let sent = Instant::now();
                let ok = write_request(&http, &gateway_url, &token, &targets, n)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    latencies.push(sent.elapsed().as_micros() as i64);
                } else {
                    failures += 1;
                }
                n += clients as u64;
            }
            (latencies, failures)
        });
    }
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            while Instant::now() < stop_at {
                bar.set_position(started.elapsed().as_secs());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut latencies = Vec::new();
    let mut failures = 0;
    while let Some(done) = tasks.join_next().await {
        let (l, f) = done.context("HTTP client task panicked")?;
        latencies.extend(l);
        failures += f;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    ticker.abort();
    let load_end: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&user)
        .await?;
    let pending_at_end = versions_behind(&auth, &user, &targets).await?;
    let spin = super::spinner(format!("{label}: waiting for user_db"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while versions_behind(&auth, &user, &targets).await? > 0 {
        for s in [&mut stack.auth_service, &mut stack.user_service] {
            s.check_alive()?;
        }
        if Instant::now() > deadline {
            bail!("user_db did not catch up with the updates within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // On the server clock: from the end of the load to the last apply, none if nothing waited.
    let last_apply: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT max(synced_at) FROM users")
        .fetch_one(&user)
        .await?;
    let lag_seconds = last_apply.map_or(0.0, |t| {
        ((t - load_end).num_microseconds().unwrap_or(0) as f64 / 1e6).max(0.0)
    });
    let cpu = profile::since(
        &cpu_before,
        &[&stack.auth_service, &stack.user_service, &stack.gateway],
    );
    spin.finish_and_clear();
    if latencies.is_empty() {
        bail!("no HTTP request succeeded ({failures} failed)");
    }
    let requests = latencies.len() as u64;
    let ms = Percentiles::of(latencies);
    let run = HttpRun {
        request: format!("PATCH /api/v1/auth/admin/users/{{id}} ({TARGETS} users)"),
        clients,
        seconds: load_seconds,
        requests,
        failures,
        requests_per_s: requests as f64 / load_seconds,
        p50_ms: ms.p50,
        p99_ms: ms.p99,
        max_ms: ms.max,
        pending_at_end,
        lag_seconds,
        auth_service_peak_rss_mib: stack.auth_service.peak_rss_kib()? as f64 / 1024.0,
        user_service_peak_rss_mib: stack.user_service.peak_rss_kib()? as f64 / 1024.0,
        gateway_peak_rss_mib: stack.gateway.peak_rss_kib()? as f64 / 1024.0,
        server_cpu_ms_per_change: server_cpu_per_change(&cpu, requests),
        cpu,
    };
    bar.finish_with_message(format!(
        "{label}: {:.0} req/s, p99 {:.0} ms",
        run.requests_per_s, run.p99_ms
    ));
    stack.stop_and_verify().await?;
    if failures > 0 {
        bail!("{failures} HTTP requests failed");
    }
    Ok(run)
}

/// The processes that serve a change (not the load generator, not the rest of the machine).
pub const SERVER_PROCESSES: [&str; 5] = [
    "postgresql",
    "rabbitmq",
    "auth-service",
    "user-service",
    "gateway",
];

/// Milliseconds of CPU per change, per server process and in all.
fn server_cpu_per_change(cpu: &CpuProfile, changes: u64) -> Vec<(String, f64)> {
    let per = |seconds: f64| 1000.0 * seconds / (changes.max(1) as f64);
    let mut rows: Vec<(String, f64)> = SERVER_PROCESSES
        .iter()
        .map(|name| {
            let seconds = cpu
                .groups
                .iter()
                .filter(|g| g.group == *name)
                .map(|g| g.cpu_seconds)
                .sum();
            ((*name).to_owned(), per(seconds))
        })
        .collect();
    let all = rows.iter().map(|(_, ms)| ms).sum();
    rows.insert(0, ("all".to_owned(), all));
    rows
}
