//! `portal status`: one screen for an operator. Each part's readiness (`/health/ready`), the
//! outbox backlog, each registered consumer's queue (messages, consumers, retrying, dead
//! letters) with the lag of its last batch (from its readiness, for the parts this system runs)
//! and of its last receipt (for every consumer, one in another team's service included), and
//! the last verify — the synchronisation's figures come from the same sync admin API the web
//! portal's `/admin/sync` page reads (through the gateway, as an admin), so the two always
//! agree.
//!
//! Exit 0 healthy; 1 degraded (each problem is listed); 2 when the gateway or the sync admin
//! API cannot be reached. `--json` prints the same figures (`sync` is the API's answer read as
//! the contract's `SyncStatus`, each consumer with its last receipt); `--watch` redraws
//! every few seconds until Ctrl-C.

use super::api::{api_failure, connect};
use super::Failure;
use crate::cli::StatusArgs;
use anyhow::anyhow;
use api_client::ApiClient;
use contract::sync_status::{SyncStatus, VerifyState};
use gateway::settings::Upstreams;
use serde_json::{json, Value};
use std::time::Duration;

/// One part of the system and what its readiness said.
struct Part {
    name: &'static str,
    url: String,
    /// `None`: it did not answer at all.
    ready: Option<bool>,
    body: Value,
}

/// Everything one screen shows.
struct Snapshot {
    parts: Vec<Part>,
    sync: SyncStatus,
    problems: Vec<String>,
}

/// The parts `portal status` asks for readiness, where the settings say the gateway reaches
/// them (the standard addresses by default).
fn parts(args: &StatusArgs) -> Vec<(&'static str, String)> {
    let routes = args
        .gateway
        .into_config(&args.auth_location, &Upstreams::default());
    [
        (
            "gateway",
            Some(args.api.url.trim_end_matches('/').to_owned()),
        ),
        ("auth-service", Some(routes.auth_url)),
        ("user-service", Some(routes.users_url)),
        ("appointment-service", routes.appointments_url),
        ("sync-admin", routes.sync_admin_url),
        (
            "web",
            Some(format!(
                "http://{}",
                std::net::SocketAddr::new(args.web.web_host, args.web.web_port)
            )),
        ),
    ]
    .into_iter()
    .filter_map(|(name, url)| url.map(|u| (name, u)))
    // Each replica of a list (`http://a:3001,http://b:3001`) is a row of its own.
    .flat_map(|(name, list)| {
        platform::addresses::split(&list)
            .into_iter()
            .map(|url| (name, url.trim_end_matches('/').to_owned()))
            .collect::<Vec<_>>()
    })
    .collect()
}

async fn readiness(http: &reqwest::Client, name: &'static str, url: String) -> Part {
    let answer = http
        .get(format!("{url}/health/ready"))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    let (ready, body) = match answer {
        Ok(r) => {
            let ok = r.status().is_success();
            (Some(ok), r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (None, Value::Null),
    };
    Part {
        name,
        url,
        ready,
        body,
    }
}

/// What is wrong, in words, given the thresholds.
fn problems(parts: &[Part], sync: &SyncStatus, max_outbox_age: f64) -> Vec<String> {
    let mut out = Vec::new();
    for p in parts {
        match p.ready {
            None => out.push(format!("{} does not answer at {}", p.name, p.url)),
            Some(false) => out.push(format!(
                "{} is not ready: {}",
                p.name, p.body["unavailable"]
            )),
            Some(true) => {}
        }
    }
    out.extend(sync.unavailable.iter().map(|u| format!("cannot read {u}")));
    if let Some(age) = sync
        .outbox
        .as_ref()
        .and_then(|o| o.oldest_unpublished_age_seconds)
    {
        if age > max_outbox_age {
            out.push(format!(
                "the oldest unpublished event has waited {age:.0} s (over {max_outbox_age:.0} s)"
            ));
        }
    }
    for c in sync.consumers.iter().flatten() {
        for queue in [&c.queue, &c.dead_letter] {
            if let Some(problem) = &queue.problem {
                out.push(format!(
                    "{}: cannot read {}: {problem}",
                    c.consumer, queue.name
                ));
            }
        }
        if c.queue.consumers == Some(0) {
            out.push(format!(
                "{}: no consumer reads {}",
                c.consumer, c.queue.name
            ));
        }
        match c.dead_letter.messages {
            Some(n) if n > 0 => out.push(format!(
                "{}: {n} messages in {}",
                c.consumer, c.dead_letter.name
            )),
            _ => {}
        }
    }
    if let Some(run) = &sync.verify {
        for copy in &run.copies {
            if let Some(error) = &copy.error {
                out.push(format!(
                    "last verify: {} not compared: {error}",
                    copy.database
                ));
            } else if copy.in_sync == Some(false) {
                out.push(format!(
                    "last verify: {} {}",
                    copy.database,
                    copy.summary.clone().unwrap_or_default()
                ));
            }
        }
    }
    out
}

async fn gather(
    api: &ApiClient,
    args: &StatusArgs,
    http: &reqwest::Client,
) -> Result<Snapshot, Failure> {
    let answer = api
        .call::<SyncStatus>(
            reqwest::Method::GET,
            &["api", "v1", "admin", "sync"],
            &[],
            None::<&()>,
        )
        .await;
    let sync = match answer {
        Ok(sync) => sync,
        // The gateway could not reach it (502), or it did not answer in time (504).
        Err(api_client::Error::Refused { status, body })
            if matches!(status.as_u16(), 502 | 504) =>
        {
            return Err(Failure::unreachable(anyhow!(
                "the sync admin API cannot be reached through the gateway: {}",
                body.message
            )))
        }
        Err(e) => return Err(api_failure(e)),
    };
    let asked = parts(args);
    let parts = futures::future::join_all(
        asked
            .into_iter()
            .map(|(name, url)| readiness(http, name, url)),
    )
    .await;
    let problems = problems(&parts, &sync, args.max_outbox_age as f64);
    Ok(Snapshot {
        parts,
        sync,
        problems,
    })
}

/// The lag of a consumer's last batch, from its readiness (`sync.lastBatchLagMs`).
fn lag(parts: &[Part], consumer: &str) -> String {
    parts
        .iter()
        .find(|p| p.name == consumer)
        .and_then(|p| p.body["sync"]["lastBatchLagMs"].as_u64())
        .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"))
}

/// A consumer's last receipt: its lag, and how long before these figures it came.
fn receipt(snap: &Snapshot, consumer: &str) -> String {
    let Some(last) = snap
        .sync
        .consumers
        .iter()
        .flatten()
        .find(|c| c.consumer == consumer)
    else {
        return "-".to_owned();
    };
    match (last.last_receipt_lag_ms, last.last_receipt_at) {
        (Some(lag), Some(at)) => {
            let ago = auth_service::consumers::seconds_between(
                at.as_datetime(),
                snap.sync.at.as_datetime(),
            );
            format!("{lag} ms, {ago:.0} s ago")
        }
        _ => "-".to_owned(),
    }
}

fn count(n: Option<u32>) -> String {
    n.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

fn screen(snap: &Snapshot) -> String {
    let mut out = String::new();
    let verdict = if snap.problems.is_empty() {
        "healthy"
    } else {
        "degraded"
    };
    out += &format!("portal status at {}: {verdict}\n\n", snap.sync.at);
    out += "PART                 READY  URL\n";
    for p in &snap.parts {
        let ready = match p.ready {
            Some(true) => "yes",
            Some(false) => "no",
            None => "down",
        };
        out += &format!("{:<20} {:<6} {}\n", p.name, ready, p.url);
    }
    out += "\n";
    match &snap.sync.outbox {
        Some(o) => {
            out += &format!("outbox: {} waiting", o.unpublished);
            if let Some(age) = o.oldest_unpublished_age_seconds {
                out += &format!(", the oldest for {age:.1} s");
            }
            out += "\n\n";
        }
        None => out += "outbox: not readable\n\n",
    }
    out += "CONSUMER             MESSAGES  CONSUMERS  RETRYING  DEAD LETTERS  LAST BATCH LAG  \
            LAST RECEIPT (LAG, AGE)\n";
    for c in snap.sync.consumers.iter().flatten() {
        out += &format!(
            "{:<20} {:>8}  {:>9}  {:>8}  {:>12}  {:>14}  {}\n",
            c.consumer,
            count(c.queue.messages),
            count(c.queue.consumers),
            c.retrying,
            count(c.dead_letter.messages),
            lag(&snap.parts, &c.consumer),
            receipt(snap, &c.consumer),
        );
    }
    out += "\n";
    match &snap.sync.verify {
        None => out += "last verify: none since the sync admin API started\n",
        Some(run) => {
            let when = run
                .finished_at
                .map_or_else(|| "running".to_owned(), |t| t.to_string());
            let state = match run.state {
                VerifyState::Running => format!("running, {:.0}%", run.percent()),
                VerifyState::Finished => "finished".to_owned(),
                VerifyState::Failed => "failed".to_owned(),
            };
            out += &format!("last verify: {state} ({when})\n");
            for c in &run.copies {
                let said = c
                    .error
                    .clone()
                    .or_else(|| c.summary.clone())
                    .unwrap_or_else(|| format!("{} compared so far", c.checked));
                out += &format!("  {} ({}): {said}\n", c.service, c.database);
            }
        }
    }
    if !snap.problems.is_empty() {
        out += "\nPROBLEMS\n";
        for p in &snap.problems {
            out += &format!("  - {p}\n");
        }
    }
    out
}

fn as_json(snap: &Snapshot) -> Value {
    json!({
        "status": if snap.problems.is_empty() { "healthy" } else { "degraded" },
        "problems": snap.problems,
        "parts": snap.parts.iter().map(|p| json!({
            "name": p.name, "url": p.url, "ready": p.ready, "readiness": p.body,
        })).collect::<Vec<_>>(),
        "sync": snap.sync,
    })
}

/// The outcome of one look: exit 0 or 1.
fn verdict(snap: &Snapshot) -> Result<(), Failure> {
    match snap.problems.len() {
        0 => Ok(()),
        n => Err(anyhow!("degraded: {n} problem{}", if n == 1 { "" } else { "s" }).into()),
    }
}

pub async fn run(args: StatusArgs) -> Result<(), Failure> {
    let api = connect(&args.api).await?;
    let http = reqwest::Client::new();
    loop {
        let snap = match gather(&api, &args, &http).await {
            Ok(snap) => snap,
            // Watching: a failure is shown and the next round tries again.
            Err(e) if args.watch.is_some() => {
                print!("\x1b[2J\x1b[H");
                println!("portal status: {:#}", e.error);
                let every = Duration::from_secs(args.watch.unwrap_or(2).max(1));
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Err(e),
                    _ = tokio::time::sleep(every) => {}
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        if args.api.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&as_json(&snap)).unwrap_or_default()
            );
        } else {
            if args.watch.is_some() {
                // Clear the screen and go home: the picture is redrawn in place.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", screen(&snap));
        }
        let Some(every) = args.watch else {
            return verdict(&snap);
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return verdict(&snap),
            _ = tokio::time::sleep(Duration::from_secs(every.max(1))) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer with no readiness of its own (another team's service) shows the lag of its
    /// last receipt, which the sync admin API adds beside its figures; its dead letters count.
    #[test]
    fn a_consumer_without_readiness_shows_its_last_receipts_lag() {
        let at = contract::Timestamp::now();
        let queue = |name: &str, messages: u32| json!({"name": name, "messages": messages, "consumers": 1, "problem": null});
        let raw = json!({
            "at": at, "outbox": null, "verify": null, "unavailable": [],
            "consumers": [{
                "consumer": "pharmacy", "queue": queue("pharmacy.user-events", 0), "retrying": 0,
                "deadLetter": queue("pharmacy.user-events.dlq", 1), "required": true,
                "lastReceiptAt": at, "lastReceiptLagMs": 42
            }]
        });
        let sync: SyncStatus = serde_json::from_value(raw.clone()).unwrap();
        let snap = Snapshot {
            parts: Vec::new(),
            problems: problems(&[], &sync, 60.0),
            sync,
        };
        assert_eq!(receipt(&snap, "pharmacy"), "42 ms, 0 s ago");
        assert_eq!(receipt(&snap, "user-service"), "-");
        let shown = screen(&snap);
        let row = shown.lines().find(|l| l.starts_with("pharmacy")).unwrap();
        assert!(row.ends_with("1               -  42 ms, 0 s ago"), "{row}");
        assert!(
            shown.contains("pharmacy: 1 messages in pharmacy.user-events.dlq"),
            "{shown}"
        );
        assert_eq!(
            as_json(&snap)["sync"]["consumers"][0]["lastReceiptLagMs"],
            42
        );
    }
}
