//! The results of a run: what each row measured, the targets checked against them, the printed
//! table and the JSON file. Rows that did not run (a failure earlier) are absent from both, and
//! the error is recorded.

use super::profile::CpuProfile;
use super::{BenchArgs, Sizes};
use anyhow::Context;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

/// Relay batch size and batches in flight, and consumer prefetch: the only difference between
/// batched and naive.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Setting {
    pub relay_batch_size: i64,
    pub relay_in_flight: u16,
    pub prefetch: u16,
}

impl Setting {
    /// One confirm awaited per event, one transaction per message: the same code, unbatched.
    pub const NAIVE: Setting = Setting {
        relay_batch_size: 1,
        relay_in_flight: 1,
        prefetch: 1,
    };
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
}

impl Throughput {
    pub fn new(events: u64, seconds: f64) -> Self {
        Self {
            events,
            seconds,
            events_per_s: events as f64 / seconds.max(1e-9),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncRun {
    pub setting: Setting,
    /// First outbox transaction to last apply in `user_db`, on the server clock.
    pub throughput: Throughput,
    /// How fast the bulk writer committed (the offered load).
    pub writer_events_per_s: f64,
    pub relay_peak_rss_mib: f64,
    pub user_service_peak_rss_mib: f64,
    pub cpu: CpuProfile,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyRun {
    pub offered_rate: u32,
    pub seconds: u64,
    pub changes: u64,
    /// Commits per second actually reached by the open-loop writer.
    pub achieved_rate: f64,
    /// The furthest the writer fell behind its schedule.
    pub worst_schedule_slip_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Commit in auth_db → the relay's claiming transaction (`outbox.published_at`).
    pub until_claimed_ms: Percentiles,
    /// The relay's claiming transaction → the applying transaction in user_db.
    pub claimed_to_applied_ms: Percentiles,
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// From durations in microseconds (nearest-rank percentiles).
    pub fn of(mut micros: Vec<i64>) -> Self {
        if micros.is_empty() {
            return Self::default();
        }
        micros.sort_unstable();
        let at = |q: f64| {
            let i = ((micros.len() as f64 * q).ceil() as usize).clamp(1, micros.len()) - 1;
            micros[i] as f64 / 1000.0
        };
        Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BacklogRun {
    pub events: u64,
    /// Writing the backlog and the relay publishing it, with no consumer.
    pub build_seconds: f64,
    /// From starting the user-service to the last apply.
    pub drain_seconds: f64,
    pub drain_events_per_s: f64,
    pub relay_peak_rss_mib: f64,
    pub user_service_peak_rss_mib: f64,
    pub cpu: CpuProfile,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyRun {
    pub users: u64,
    pub seconds: f64,
    pub in_sync: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct HttpRun {
    pub request: String,
    pub clients: usize,
    pub seconds: f64,
    pub requests: u64,
    pub failures: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Changes committed in `auth_db` but not yet in `user_db` when the load stopped.
    pub pending_at_end: i64,
    /// From the end of the load to the last apply (0 when nothing was pending).
    pub lag_seconds: f64,
    pub auth_service_peak_rss_mib: f64,
    pub user_service_peak_rss_mib: f64,
    pub gateway_peak_rss_mib: f64,
    /// Server CPU per change, milliseconds: `all` first, then per process (PostgreSQL with its
    /// backends, RabbitMQ, each service), from the load's start to the last apply.
    pub server_cpu_ms_per_change: Vec<(String, f64)>,
    pub cpu: CpuProfile,
}

/// Row 9: `portal users import` of a CSV file, until every account is applied in `user_db`.
#[derive(Debug, Clone, Serialize)]
pub struct ImportRun {
    pub users: u64,
    /// The command's own run, from start to exit.
    pub command_seconds: f64,
    /// Server clock: from just before the command to the last account applied in every
    /// consumer's copy (the later of the two below).
    pub applied_seconds: f64,
    /// The same, to the last account applied in `user_db`.
    pub user_db_seconds: f64,
    /// The same, to the last account applied in the appointment-service's `clinicians`.
    pub appointment_db_seconds: f64,
    pub users_per_s: f64,
    pub auth_service_peak_rss_mib: f64,
    /// The auth-service's peak before the command started (its start and the admin's login).
    pub auth_service_peak_before_mib: f64,
    pub user_service_peak_rss_mib: f64,
    pub appointment_service_peak_rss_mib: f64,
    pub gateway_peak_rss_mib: f64,
}

/// Row 10: clinicians offboarded over the admin API by concurrent clients, each timed from
/// its request to the saga's record of both required consumers' receipts.
#[derive(Debug, Clone, Serialize)]
pub struct OffboardingRun {
    pub offboardings: u64,
    /// Concurrent clients, each sending its next request once the last was answered.
    pub clients: usize,
    /// Where the requests went (the gateway, as `portal offboard` sends them).
    pub through: &'static str,
    /// From the first request sent to the last answered.
    pub requests_seconds: f64,
    pub requests_per_s: f64,
    /// Request sent (this process's clock) → the later `receipt` step of the saga
    /// (`offboarding_steps.at`, PostgreSQL's `clock_timestamp()`; same machine, same clock).
    pub receipts_ms: Percentiles,
    /// Request sent → the later of the two consumers' commits of the deactivating version
    /// (`consumer_versions.applied_at`, from their receipts).
    pub consumers_applied_ms: Percentiles,
    /// Per offboarding, from the later consumer's commit to the saga's record of both receipts:
    /// the receipt's way back and the saga's own reaction.
    pub recorded_after_applied_ms: Percentiles,
    /// The request's HTTP round trip.
    pub answered_ms: Percentiles,
    /// Request sent → the saga finished (`offboardings.finished_at`: the reply recorded).
    pub completed_ms: Percentiles,
    /// From the first request sent to the last saga finished.
    pub all_completed_seconds: f64,
    /// Snapshots sent again because a receipt was late (`resent` steps), and sagas stalled.
    pub resent: i64,
    pub stalled: i64,
    pub auth_service_peak_rss_mib: f64,
    /// From the first request to the last saga finished.
    pub cpu: CpuProfile,
}

/// Row 11: one doctor with future appointments offboarded (policy `reassign`); every time is
/// from the request (this process's clock) to a PostgreSQL timestamp on the same machine.
#[derive(Debug, Clone, Serialize)]
pub struct LeavingDoctorRun {
    pub appointments: u64,
    pub other_doctors: u64,
    pub reassigned: u64,
    /// Cancelled because no other doctor was free at that time.
    pub cancelled: u64,
    /// The saga's end state (`needs_attention` when some were cancelled).
    pub state: String,
    /// To the later of the saga's end and the last appointment event published.
    pub seconds: f64,
    /// To the saga's record of both receipts (the later `receipt` step).
    pub receipts_seconds: f64,
    /// To the command sent (`command-sent` step).
    pub command_sent_seconds: f64,
    /// To the last appointment's transaction in the appointment-service
    /// (`command_results.done_at`).
    pub last_resolved_seconds: f64,
    /// To `offboardings.finished_at` (the reply recorded).
    pub finished_seconds: f64,
    /// To the last `appointment_db.outbox.published_at` (the relay's claiming transaction,
    /// committed once the broker confirmed).
    pub last_published_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub row: &'static str,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: serde_json::Value,
    pub sizes: Sizes,
    pub batched_setting: Setting,
    pub broker: Option<Throughput>,
    pub broker_cpu: Option<CpuProfile>,
    /// One publish and its confirm, awaited one at a time (the broker's share of any latency).
    pub broker_confirm_ms: Option<Percentiles>,
    pub sync: Option<SyncRun>,
    pub naive: Option<SyncRun>,
    pub latency: Vec<LatencyRun>,
    pub backlog: Option<BacklogRun>,
    pub verify: Option<VerifyRun>,
    pub http: Option<HttpRun>,
    pub import: Option<ImportRun>,
    pub offboarding: Option<OffboardingRun>,
    pub leaving_doctor: Option<LeavingDoctorRun>,
    pub targets: Vec<TargetCheck>,
    pub latency_method: &'static str,
    pub offboarding_method: &'static str,
    pub error: Option<String>,
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Report {
    pub fn new(args: &BenchArgs, sizes: Sizes, machine: serde_json::Value) -> Self {
        Self {
            date: chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
            machine,
            sizes,
            batched_setting: Setting {
                relay_batch_size: args.relay_batch_size,
                relay_in_flight: args.relay_in_flight,
                prefetch: args.prefetch,
            },
            broker: None,
            broker_confirm_ms: None,
            broker_cpu: None,
            sync: None,
            naive: None,
            latency: Vec::new(),
            backlog: None,
            verify: None,
            http: None,
            import: None,
            offboarding: None,
            leaving_doctor: None,
            targets: Vec::new(),
            latency_method: "user_db users.synced_at - auth_db outbox.created_at, both now() \
                 (transaction start) of the same PostgreSQL server clock",
            offboarding_method: "row 10: auth_db offboarding_steps.at (clock_timestamp()) of the \
                 later 'receipt' step - the client's clock just before the request was sent; \
                 row 11: max(auth_db offboardings.finished_at, appointment_db max(outbox.published_at)) \
                 - the same; PostgreSQL runs on this machine, so both read the same clock",
            error: None,
        }
    }

    /// Checks the targets against what was measured.
    pub fn evaluate_targets(&mut self) {
        let mut t = Vec::new();
        let mut check = |row, target: String, measured: String, met| {
            t.push(TargetCheck {
                row,
                target,
                measured,
                met,
            })
        };
        if let (Some(b), Some(s)) = (&self.broker, &self.sync) {
            let ratio = s.throughput.events_per_s / b.events_per_s;
            check(
                "2",
                "sync >= 75% of broker ceiling".into(),
                format!("{:.0}%", ratio * 100.0),
                ratio >= 0.75,
            );
        }
        if let (Some(s), Some(n)) = (&self.sync, &self.naive) {
            let ratio = s.throughput.events_per_s / n.throughput.events_per_s;
            check(
                "3",
                "batched >= 8x naive".into(),
                format!("{ratio:.1}x"),
                ratio >= 8.0,
            );
        }
        for l in &self.latency {
            // A latency only counts at the rate it was asked for: when the writers could not
            // commit the offered rate, the target is missed whatever the percentiles say.
            let reached = l.achieved_rate >= 0.95 * f64::from(l.offered_rate);
            let at = |ms: f64| match reached {
                true => format!("{ms:.1} ms"),
                false => format!("{ms:.1} ms at {}/s", thousands(l.achieved_rate)),
            };
            let limits: &[(&str, f64, f64)] = match l.offered_rate {
                1000 => &[("p50", l.p50_ms, 3.0), ("p99", l.p99_ms, 10.0)],
                5000 => &[("p99", l.p99_ms, 25.0)],
                _ => &[],
            };
            for &(name, value, limit) in limits {
                check(
                    "4",
                    format!(
                        "{name} <= {limit} ms at {}/s",
                        thousands(f64::from(l.offered_rate))
                    ),
                    at(value),
                    reached && value <= limit,
                );
            }
        }
        if let Some(b) = &self.backlog {
            check(
                "5",
                format!("{} backlog drained <= 90 s", thousands(b.events as f64)),
                format!("{:.1} s", b.drain_seconds),
                b.drain_seconds <= 90.0,
            );
        }
        if let Some(v) = &self.verify {
            check(
                "6",
                format!("verify {} users <= 15 s", thousands(v.users as f64)),
                format!("{:.1} s", v.seconds),
                v.seconds <= 15.0,
            );
        }
        if let Some(s) = &self.sync {
            let worst = s.relay_peak_rss_mib.max(s.user_service_peak_rss_mib);
            check(
                "7",
                "peak RSS <= 50 MiB per service".into(),
                format!("{worst:.1} MiB"),
                worst <= 50.0,
            );
        }
        if let Some(h) = &self.http {
            check(
                "8",
                ">= 2,500 req/s, p99 <= 50 ms, synced <= 100 ms after".into(),
                format!(
                    "{} req/s, p99 {:.0} ms, {:.0} ms",
                    thousands(h.requests_per_s),
                    h.p99_ms,
                    h.lag_seconds * 1000.0
                ),
                h.requests_per_s >= 2500.0 && h.p99_ms <= 50.0 && h.lag_seconds <= 0.1,
            );
            if let Some((_, all)) = h.server_cpu_ms_per_change.first() {
                check(
                    "8",
                    "server CPU <= 1.0 ms per change".into(),
                    format!("{all:.2} ms"),
                    *all <= 1.0,
                );
            }
            let worst = h
                .auth_service_peak_rss_mib
                .max(h.user_service_peak_rss_mib)
                .max(h.gateway_peak_rss_mib);
            check(
                "8",
                "peak RSS <= 50 MiB per service".into(),
                format!("{worst:.1} MiB"),
                worst <= 50.0,
            );
        }
        if let Some(i) = &self.import {
            // The target is for 100,000 users; a smaller run is held to the same rate.
            let limit = 60.0 * i.users as f64 / 100_000.0;
            check(
                "9",
                format!(
                    "{} users imported and applied <= {limit:.1} s",
                    thousands(i.users as f64)
                ),
                format!("{:.1} s", i.applied_seconds),
                i.applied_seconds <= limit,
            );
            let worst = i
                .auth_service_peak_rss_mib
                .max(i.user_service_peak_rss_mib)
                .max(i.appointment_service_peak_rss_mib)
                .max(i.gateway_peak_rss_mib);
            check(
                "9",
                "peak RSS <= 50 MiB per service".into(),
                format!("{worst:.1} MiB"),
                worst <= 50.0,
            );
        }
        if let Some(o) = &self.offboarding {
            check(
                "10",
                "p95 <= 1 s, request to both receipts".into(),
                format!("p95 {:.0} ms", o.receipts_ms.p95),
                o.receipts_ms.p95 <= 1000.0,
            );
        }
        if let Some(d) = &self.leaving_doctor {
            check(
                "11",
                format!("{} appointments resolved, published <= 5 s", d.appointments),
                format!("{:.2} s", d.seconds),
                d.seconds <= 5.0,
            );
        }
        self.targets = t;
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(
            out,
            "\nportal bench, {} | {} x{} cores, {} GiB | PostgreSQL {} | RabbitMQ {}",
            self.date,
            m["cpu"].as_str().unwrap_or("?"),
            m["cores"],
            m["memory_gib"],
            m["postgresql"].as_str().unwrap_or("?"),
            m["rabbitmq"].as_str().unwrap_or("?"),
        );
        let s = &self.batched_setting;
        let _ = writeln!(
            out,
            "batched setting: relay batch {} ({} in flight), consumer prefetch {} (transactions of at most 500); naive: 1 (1) and 1",
            s.relay_batch_size, s.relay_in_flight, s.prefetch
        );
        let mut row = |n: &str, what: String, result: String| {
            let _ = writeln!(out, "{n:<3} {what:<46} {result}");
        };
        row("row", "measurement".into(), "result".into());
        if let Some(b) = &self.broker {
            row(
                "1",
                format!(
                    "broker ceiling, {} msgs, quorum, no DB",
                    thousands(b.events as f64)
                ),
                format!("{} events/s", thousands(b.events_per_s)),
            );
        }
        if let Some(c) = &self.broker_confirm_ms {
            row(
                "",
                "  one publish -> confirm, awaited (p50/p99)".into(),
                format!("{:.1} / {:.1} ms", c.p50, c.p99),
            );
        }
        if let Some(sync) = &self.sync {
            let ratio = self
                .broker
                .as_ref()
                .map(|b| {
                    format!(
                        " = {:.0}% of (1)",
                        100.0 * sync.throughput.events_per_s / b.events_per_s
                    )
                })
                .unwrap_or_default();
            row(
                "2",
                format!(
                    "sustained sync, {} users",
                    thousands(sync.throughput.events as f64)
                ),
                format!(
                    "{} events/s{ratio} ({:.1} s; writer {} /s)",
                    thousands(sync.throughput.events_per_s),
                    sync.throughput.seconds,
                    thousands(sync.writer_events_per_s)
                ),
            );
        }
        if let Some(naive) = &self.naive {
            let ratio = self
                .sync
                .as_ref()
                .map(|s| {
                    format!(
                        "; (2) is {:.1}x",
                        s.throughput.events_per_s / naive.throughput.events_per_s
                    )
                })
                .unwrap_or_default();
            row(
                "3",
                format!(
                    "naive sync (batch 1, prefetch 1), {} users",
                    thousands(naive.throughput.events as f64)
                ),
                format!(
                    "{} events/s{ratio}",
                    thousands(naive.throughput.events_per_s)
                ),
            );
        }
        for l in &self.latency {
            row(
                "4",
                format!(
                    "latency at {}/s for {} s (reached {}/s)",
                    thousands(f64::from(l.offered_rate)),
                    l.seconds,
                    thousands(l.achieved_rate)
                ),
                format!(
                    "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
                ),
            );
            row(
                "",
                "  of which: commit -> relay claims (p50/p99)".into(),
                format!(
                    "{:.1} / {:.1} ms; claimed -> applied {:.1} / {:.1} ms",
                    l.until_claimed_ms.p50,
                    l.until_claimed_ms.p99,
                    l.claimed_to_applied_ms.p50,
                    l.claimed_to_applied_ms.p99
                ),
            );
        }
        if let Some(b) = &self.backlog {
            row(
                "5",
                format!("backlog of {} events drained", thousands(b.events as f64)),
                format!(
                    "{:.1} s ({} events/s; built in {:.1} s)",
                    b.drain_seconds,
                    thousands(b.drain_events_per_s),
                    b.build_seconds
                ),
            );
        }
        if let Some(v) = &self.verify {
            row(
                "6",
                format!("portal verify over {} users", thousands(v.users as f64)),
                format!(
                    "{:.1} s, {}",
                    v.seconds,
                    if v.in_sync { "in sync" } else { "OUT OF SYNC" }
                ),
            );
        }
        if let Some(sync) = &self.sync {
            row(
                "7",
                "peak RSS during (2)".into(),
                format!(
                    "relay {:.1} MiB, user-service {:.1} MiB",
                    sync.relay_peak_rss_mib, sync.user_service_peak_rss_mib
                ),
            );
        }
        if let Some(h) = &self.http {
            row(
                "8",
                format!(
                    "HTTP {} x{} clients, {:.0} s",
                    h.request, h.clients, h.seconds
                ),
                format!(
                    "{:.0} req/s, p50 {:.0} ms, p99 {:.0} ms; lag at end {} pending, synced {:.2} s later",
                    h.requests_per_s, h.p50_ms, h.p99_ms, h.pending_at_end, h.lag_seconds
                ),
            );
            let per: Vec<String> = h
                .server_cpu_ms_per_change
                .iter()
                .skip(1)
                .map(|(name, ms)| format!("{name} {ms:.2}"))
                .collect();
            if let Some((_, all)) = h.server_cpu_ms_per_change.first() {
                row(
                    "",
                    "  server CPU per change during (8)".into(),
                    format!("{all:.2} ms: {}", per.join(", ")),
                );
            }
            row(
                "",
                "  peak RSS during (8)".into(),
                format!(
                    "auth-service {:.0} MiB, user-service {:.0} MiB, gateway {:.0} MiB",
                    h.auth_service_peak_rss_mib,
                    h.user_service_peak_rss_mib,
                    h.gateway_peak_rss_mib
                ),
            );
        }
        if let Some(i) = &self.import {
            row(
                "9",
                format!(
                    "portal users import, {} users from CSV",
                    thousands(i.users as f64)
                ),
                format!(
                    "applied in every consumer {:.1} s after the start ({} users/s; user_db {:.1} s, appointment_db {:.1} s; command {:.1} s)",
                    i.applied_seconds,
                    thousands(i.users_per_s),
                    i.user_db_seconds,
                    i.appointment_db_seconds,
                    i.command_seconds
                ),
            );
            row(
                "",
                "  peak RSS during (9)".into(),
                format!(
                    "auth-service {:.0} MiB ({:.0} before), user-service {:.0} MiB, appointment-service {:.0} MiB, gateway {:.0} MiB",
                    i.auth_service_peak_rss_mib,
                    i.auth_service_peak_before_mib,
                    i.user_service_peak_rss_mib,
                    i.appointment_service_peak_rss_mib,
                    i.gateway_peak_rss_mib
                ),
            );
        }
        if let Some(o) = &self.offboarding {
            row(
                "10",
                format!(
                    "offboarding, {} users x{} clients, {}",
                    thousands(o.offboardings as f64),
                    o.clients,
                    o.through
                ),
                format!(
                    "to both receipts: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms (requests at {:.0}/s)",
                    o.receipts_ms.p50, o.receipts_ms.p95, o.receipts_ms.max, o.requests_per_s
                ),
            );
            row(
                "",
                "  of which: both consumers applied (p50/p95)".into(),
                format!(
                    "{:.0} / {:.0} ms; recorded by the saga {:.0} / {:.0} ms after that",
                    o.consumers_applied_ms.p50,
                    o.consumers_applied_ms.p95,
                    o.recorded_after_applied_ms.p50,
                    o.recorded_after_applied_ms.p95
                ),
            );
            row(
                "",
                "  request answered; saga finished (p50/p95)".into(),
                format!(
                    "{:.0} / {:.0} ms; {:.0} / {:.0} ms",
                    o.answered_ms.p50, o.answered_ms.p95, o.completed_ms.p50, o.completed_ms.p95
                ),
            );
            row(
                "",
                "  every saga finished".into(),
                format!(
                    "{:.1} s after the first request (requests {:.1} s); {} re-sent, {} stalled",
                    o.all_completed_seconds, o.requests_seconds, o.resent, o.stalled
                ),
            );
        }
        if let Some(d) = &self.leaving_doctor {
            row(
                "11",
                format!("doctor with {} future appointments offboarded", d.appointments),
                format!(
                    "finished, every event published {:.2} s after the request ({} reassigned, {} cancelled)",
                    d.seconds, d.reassigned, d.cancelled
                ),
            );
            row(
                "",
                "  receipts / command / last resolved / finished".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} s; last event published {:.2} s",
                    d.receipts_seconds,
                    d.command_sent_seconds,
                    d.last_resolved_seconds,
                    d.finished_seconds,
                    d.last_published_seconds
                ),
            );
        }
        if let Some(cpu) = &self.broker_cpu {
            let _ = writeln!(out, "cpu during (1): {}", cpu.summary());
        }
        if let Some(sync) = &self.sync {
            let _ = writeln!(out, "cpu during (2): {}", sync.cpu.summary());
        }
        if let Some(b) = &self.backlog {
            let _ = writeln!(out, "cpu during (5) drain: {}", b.cpu.summary());
        }
        if let Some(h) = &self.http {
            let _ = writeln!(out, "cpu during (8): {}", h.cpu.summary());
        }
        if let Some(o) = &self.offboarding {
            let _ = writeln!(out, "cpu during (10): {}", o.cpu.summary());
        }
        if !self.targets.is_empty() {
            let _ = writeln!(out, "targets:");
            for t in &self.targets {
                let _ = writeln!(
                    out,
                    "  ({}) {:<36} {:<18} {}",
                    t.row,
                    t.target,
                    t.measured,
                    if t.met { "met" } else { "MISSED" }
                );
            }
        }
        match &self.error {
            Some(e) => {
                let _ = writeln!(out, "FAILED: {e}");
            }
            None => {
                let _ = writeln!(out, "every step ended with portal verify: in sync");
            }
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        let one = Percentiles::of(vec![1500]);
        assert_eq!((one.p50, one.max), (1.5, 1.5));
        assert_eq!(Percentiles::of(Vec::new()).max, 0.0);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }
}
