//! `portal-bench` (also run as `portal bench`): measures the whole pipeline in one run and
//! proves it ends in sync.
//!
//! Everything runs in the benchmark's own databases (`<id>_auth`, `<id>_user`, dropped and
//! recreated for every step so each starts from the same empty state) and its own RabbitMQ vhost
//! (the topology names are fixed constants), on the PostgreSQL server of `AUTH_DATABASE_URL` and
//! the broker of `AMQP_URL`. The relay and the user-service run as child processes of the `portal`
//! binary (`portal relay`, `portal user-service`) so their memory can be read from `/proc`; the
//! load is generated here, through the auth-service's own store code.
//!
//! Layout: [`env`] owns the databases, vhost, keys and child processes; [`broker`] the raw
//! broker ceiling; [`sync`] the throughput runs (batched and naive), the backlog drain and the
//! waiting for `user_db`; [`latency`] the fixed-rate runs; [`http`] load through the gateway;
//! [`import`] the onboarding of a CSV file; [`offboarding`] the offboarding saga (receipts
//! of both consumers, a leaving doctor's appointments);
//! [`profile`] CPU time per process; [`report`] the table and the JSON file. [`soak`] is the
//! `soak` subcommand: the whole system for minutes at ten times the usual change rate, watching
//! the outbox and the event store (retention without bloat).

mod broker;
mod env;
mod http;
mod import;
mod latency;
mod offboarding;
mod profile;
mod report;
pub mod soak;
mod sync;

use anyhow::Context;
use auth_service::relay::RelayConfig;
use clap::Parser;
use env::BenchEnv;
use indicatif::{ProgressBar, ProgressStyle};
use platform::exit::Failure;
use report::Report;
use std::path::PathBuf;
use std::time::Duration;

/// Sizes of a full run, and of `--quick`.
const FULL: Sizes = Sizes {
    events: 200_000,
    naive_events: 20_000,
    broker_events: 200_000,
    latency_seconds: 30,
    backlog: 1_000_000,
    verify_users: 1_000_000,
    http_seconds: 20,
    import_users: 100_000,
    offboardings: 1_000,
    appointments: 50,
};
const QUICK: Sizes = Sizes {
    events: 5_000,
    naive_events: 500,
    broker_events: 5_000,
    latency_seconds: 1,
    backlog: 5_000,
    verify_users: 5_000,
    http_seconds: 2,
    import_users: 1_000,
    offboardings: 50,
    appointments: 10,
};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "portal-bench",
    version = platform::build::VERSION,
    about = "The benchmark of the user synchronisation (also run as `portal bench`)",
    long_about = "Measures the user synchronisation end to end and checks it ends in sync.\n\n\
        Rows: (1) raw broker ceiling, publish with pipelined confirms + consume on a quorum queue, \
        no database; (2) sustained sync throughput, users committed in auth_db through the \
        auth-service's store until applied in user_db, and its ratio to (1); (3) the same with \
        the naive setting (relay batch 1, prefetch 1); (4) commit-to-commit latency at fixed \
        offered rates; (5) a backlog built with the consumer stopped, then drained; (6) portal \
        verify over many users; (7) peak RSS of the relay and user-service processes during (2); \
        (8) HTTP writes through the gateway; (9) bulk onboarding, `portal users import` of a CSV \
        file until every account is applied in user_db; (10) offboardings over the admin API \
        from concurrent clients, each from its request to the receipts of both required consumers \
        recorded by the saga; (11) a doctor with future appointments offboarded, from the request \
        to the saga finished and every appointment event published.\n\n\
        It uses the PostgreSQL server of AUTH_DATABASE_URL and the RabbitMQ of AMQP_URL but \
        only its own databases <ID>_auth, <ID>_user and <ID>_appointment (dropped and recreated) \
        and its own vhost (<ID> with _ as -), all removed at the end. Exit 0 when every step ran and every copy \
        verified in sync (targets missed are reported, not failures); 1 otherwise; 2 when \
        PostgreSQL or RabbitMQ cannot be reached. The services run from the `portal` binary \
        beside this one (or PORTAL_BIN).\n\n\
        `portal-bench soak` is the retention soak run (see its --help).",
    args_conflicts_with_subcommands = true
)]
pub struct BenchArgs {
    /// Another run than the benchmark's rows.
    #[command(subcommand)]
    pub mode: Option<Mode>,
    #[command(flatten)]
    pub servers: sandbox::ServerArgs,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench-results.json")]
    pub out: PathBuf,
    /// Small sizes everywhere (a smoke run of a few seconds); explicit sizes still win.
    #[arg(long)]
    pub quick: bool,
    /// Users created for the sustained-throughput row (2) [default: 200000; quick 5000].
    #[arg(long)]
    pub events: Option<u64>,
    /// Users created for the naive row (3) [default: 20000; quick 500].
    #[arg(long)]
    pub naive_events: Option<u64>,
    /// Messages for the broker ceiling (1) [default: 200000; quick 5000].
    #[arg(long)]
    pub broker_events: Option<u64>,
    /// Seconds of each fixed-rate latency run (4) [default: 30; quick 1].
    #[arg(long)]
    pub latency_seconds: Option<u64>,
    /// Offered rates of the latency runs, changes per second.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub latency_rates: Vec<u32>,
    /// Events built up with the consumer stopped, then drained (5) [default: 1000000; quick 5000].
    #[arg(long)]
    pub backlog: Option<u64>,
    /// Users `verify` compares (6), at least: the backlog's users plus more if needed
    /// [default: 1000000; quick 5000].
    #[arg(long)]
    pub verify_users: Option<u64>,
    /// Seconds of HTTP load through the gateway (8) [default: 20; quick 2].
    #[arg(long)]
    pub http_seconds: Option<u64>,
    /// Accounts in the CSV file of the onboarding row (9) [default: 100000; quick 1000].
    #[arg(long)]
    pub import_users: Option<u64>,
    /// Concurrent HTTP clients (8).
    #[arg(long, default_value_t = 32)]
    pub http_clients: usize,
    /// Clinicians offboarded in row (10) [default: 1000; quick 50].
    #[arg(long)]
    pub offboardings: Option<u64>,
    /// Concurrent admin clients sending the offboardings of row (10), each its next request
    /// once the last is answered.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub offboarding_clients: u16,
    /// Future appointments of the doctor offboarded in row (11) [default: 50; quick 10].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub appointments: Option<u64>,
    /// Relay batch size of the batched setting (the naive one is 1).
    #[arg(long, default_value_t = RelayConfig::DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub relay_batch_size: i64,
    /// Relay batches in flight of the batched setting (the naive one is 1).
    #[arg(long, default_value_t = RelayConfig::DEFAULT_IN_FLIGHT, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub relay_in_flight: u16,
    /// Consumer prefetch window of the batched setting (the naive one is 1); each transaction
    /// applies at most CONSUMER_BATCH_SIZE (500) of it.
    #[arg(long, default_value_t = consumer::ConsumerConfig::DEFAULT_PREFETCH, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Users per transaction when the benchmark writes in bulk.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    pub write_batch: u64,
    /// Run only these rows (e.g. `--only 4` or `--only 1,2,7`), to investigate one of them;
    /// rows 2 and 7, and 5 and 6, always run together.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u8).range(1..=11))]
    pub only: Vec<u8>,
    /// Names the databases (<ID>_auth, <ID>_user, <ID>_appointment) and the vhost (<ID>,
    /// `_` → `-`).
    #[arg(long, default_value = "bench", value_parser = parse_id)]
    pub id: String,
}

/// The runs beside the benchmark's rows.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Mode {
    /// The whole system (auth-service with its relay and cleanup, user-service,
    /// appointment-service, gateway) for `--minutes` at ten times the usual change rate,
    /// printing every minute the outbox's and the event store's rows, bytes and dead tuples and
    /// the cleanup's longest batch; fails when the outbox outgrows its bound or the event store
    /// did not grow by exactly the events written.
    Soak(soak::SoakArgs),
}

fn parse_id(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 40
        && raw.starts_with(|c: char| c.is_ascii_lowercase())
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    ok.then(|| raw.to_owned())
        .ok_or_else(|| "use 1-40 characters a-z, 0-9 and _, starting with a letter".to_owned())
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sizes {
    pub events: u64,
    pub naive_events: u64,
    pub broker_events: u64,
    pub latency_seconds: u64,
    pub backlog: u64,
    pub verify_users: u64,
    pub http_seconds: u64,
    pub import_users: u64,
    pub offboardings: u64,
    pub appointments: u64,
}

impl BenchArgs {
    fn sizes(&self) -> Sizes {
        let base = if self.quick { QUICK } else { FULL };
        Sizes {
            events: self.events.unwrap_or(base.events),
            naive_events: self.naive_events.unwrap_or(base.naive_events),
            broker_events: self.broker_events.unwrap_or(base.broker_events),
            latency_seconds: self.latency_seconds.unwrap_or(base.latency_seconds),
            backlog: self.backlog.unwrap_or(base.backlog),
            verify_users: self.verify_users.unwrap_or(base.verify_users),
            http_seconds: self.http_seconds.unwrap_or(base.http_seconds),
            import_users: self.import_users.unwrap_or(base.import_users),
            offboardings: self.offboardings.unwrap_or(base.offboardings),
            appointments: self.appointments.unwrap_or(base.appointments),
        }
    }
}

/// Runs every row, prints the table, writes the JSON (also after a failure, with what was
/// measured and the error), and removes the databases and the vhost.
pub async fn run(args: BenchArgs) -> Result<(), Failure> {
    if let Some(Mode::Soak(soak)) = args.mode {
        return soak::run(soak).await;
    }
    let sizes = args.sizes();
    let mut env = BenchEnv::create(&args.servers, &args.id)
        .await
        .map_err(Failure::unreachable)?;
    let mut report = Report::new(&args, sizes, env.describe_machine().await);
    let outcome = run_rows(&env, &args, sizes, &mut report).await;
    env.cleanup().await;
    if let Err(e) = &outcome {
        report.error = Some(format!("{e:#}"));
    }
    report.evaluate_targets();
    print!("{}", report.table());
    let written = report.write_json(&args.out);
    outcome?;
    written?;
    if let Some(e) = &report.error {
        return Err(anyhow::anyhow!("{e}").into());
    }
    println!("results written to {}", args.out.display());
    Ok(())
}

async fn run_rows(
    env: &BenchEnv,
    args: &BenchArgs,
    sizes: Sizes,
    report: &mut Report,
) -> anyhow::Result<()> {
    let wanted = |row: u8| args.only.is_empty() || args.only.contains(&row);
    let batched = report::Setting {
        relay_batch_size: args.relay_batch_size,
        relay_in_flight: args.relay_in_flight,
        prefetch: args.prefetch,
    };
    if wanted(1) {
        let ceiling = broker::ceiling(env, sizes.broker_events, batched);
        let (throughput, confirm_ms, cpu) = ceiling.await.context("row 1, broker ceiling")?;
        report.broker = Some(throughput);
        report.broker_cpu = Some(cpu);
        report.broker_confirm_ms = Some(confirm_ms);
    }
    if wanted(2) || wanted(7) {
        let run = sync::throughput(env, batched, sizes.events, args.write_batch, "row 2");
        report.sync = Some(run.await.context("row 2, sustained sync throughput")?);
    }
    if wanted(3) {
        let run = sync::throughput(
            env,
            report::Setting::NAIVE,
            sizes.naive_events,
            args.write_batch,
            "row 3, naive",
        );
        report.naive = Some(run.await.context("row 3, naive sync throughput")?);
    }
    if wanted(4) {
        for &rate in &args.latency_rates {
            let run = latency::fixed_rate(env, batched, rate, sizes.latency_seconds);
            let run = run
                .await
                .with_context(|| format!("row 4, latency at {rate}/s"))?;
            report.latency.push(run);
        }
    }
    if wanted(5) || wanted(6) {
        let run = sync::backlog_then_verify(
            env,
            batched,
            sizes.backlog,
            sizes.verify_users,
            args.write_batch,
        );
        let (backlog, verify) = run.await.context("rows 5 and 6, backlog and verify")?;
        report.backlog = Some(backlog);
        report.verify = Some(verify);
    }
    if wanted(8) {
        let run = http::through_gateway(env, batched, args.http_clients, sizes.http_seconds);
        report.http = Some(run.await.context("row 8, HTTP through the gateway")?);
    }
    if wanted(9) {
        let run = import::onboarding(env, batched, sizes.import_users);
        report.import = Some(run.await.context("row 9, bulk onboarding")?);
    }
    if wanted(10) {
        let run = offboarding::receipts(
            env,
            batched,
            sizes.offboardings,
            usize::from(args.offboarding_clients),
            args.write_batch,
        );
        report.offboarding = Some(run.await.context("row 10, offboardings")?);
    }
    if wanted(11) {
        let run = offboarding::leaving_doctor(env, batched, sizes.appointments);
        report.leaving_doctor = Some(run.await.context("row 11, a leaving doctor")?);
    }
    Ok(())
}

/// A bar for a step with a known size (drawn on stderr, hidden when it is not a terminal).
pub(crate) fn bar(len: u64, message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new(len).with_message(message.into());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {msg:<38} [{bar:30}] {human_pos}/{human_len} {per_sec:0} {elapsed}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A spinner for a step of unknown length.
pub(crate) fn spinner(message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(message.into());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {elapsed}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
