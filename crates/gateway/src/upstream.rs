//! One service's replicas behind the gateway: requests are spread over the healthy ones in
//! turn; a replica that fails its readiness check, or refuses a connection, is left out until a
//! check passes again (one log line each way). When none is healthy every replica is still
//! tried, since a check can be stale and refusing outright helps nobody.
//!
//! What is retried on another replica: any request whose connection was never made (no byte
//! reached the replica), and safe requests (GET, HEAD, OPTIONS) that failed any other way. A
//! POST, PATCH, PUT or DELETE that may have reached a replica is never sent again: the client
//! gets 502 and decides (the services' writes are versioned, so a retry by the client is safe
//! for changes and answered 409 for a create that did happen).

use prometheus::IntGaugeVec;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// One replica.
pub(crate) struct Member {
    /// Base URL, e.g. `http://10.0.0.2:3001`.
    pub base: String,
    /// Its place in the service's list (0 first): how the metrics name it. `/metrics` may be
    /// read from afar (METRICS_TOKEN), and the network behind the gateway is not its business.
    index: String,
    healthy: AtomicBool,
}

/// A service's replicas.
pub(crate) struct Upstream {
    /// The service's name, shown to clients instead of an address.
    pub name: &'static str,
    members: Vec<Member>,
    next: AtomicUsize,
    healthy_gauge: Option<IntGaugeVec>,
}

impl Upstream {
    /// The replicas of `list` (comma-separated base URLs), all taken as healthy at first.
    pub fn new(name: &'static str, list: &str, healthy_gauge: Option<IntGaugeVec>) -> Self {
        let members: Vec<Member> = platform::addresses::split(list)
            .into_iter()
            .enumerate()
            .map(|(index, base)| Member {
                base: base.trim_end_matches('/').to_owned(),
                index: index.to_string(),
                healthy: AtomicBool::new(true),
            })
            .collect();
        let upstream = Self {
            name,
            members,
            next: AtomicUsize::new(0),
            healthy_gauge,
        };
        for member in &upstream.members {
            // Once, in the log only: which address each `replica` of the metrics is.
            tracing::info!(
                upstream = name,
                replica = member.index.as_str(),
                base = %member.base,
                "replica {} of {name} is {} (the metrics name it by number only)",
                member.index,
                member.base
            );
            upstream.show(member, true);
        }
        upstream
    }

    /// The replicas in the order to try them for one request: the healthy ones, starting with
    /// the next in turn, then the others.
    pub fn order(&self) -> Vec<&Member> {
        let n = self.members.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let rotated = (0..n).map(|i| &self.members[(start + i) % n]);
        let (healthy, down): (Vec<&Member>, Vec<&Member>) =
            rotated.partition(|m| m.healthy.load(Ordering::Relaxed));
        healthy.into_iter().chain(down).collect()
    }

    /// Every replica (the readiness of the gateway, the checks).
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Records what a check or a request found; logs only a change.
    pub fn mark(&self, member: &Member, healthy: bool, why: &str) {
        let was = member.healthy.swap(healthy, Ordering::Relaxed);
        if was == healthy {
            return;
        }
        self.show(member, healthy);
        if healthy {
            tracing::info!(upstream = self.name, replica = %member.base, "replica healthy again; sending it requests");
        } else {
            tracing::warn!(upstream = self.name, replica = %member.base, why, "replica unhealthy; sending its requests to the others");
        }
    }

    fn show(&self, member: &Member, healthy: bool) {
        if let Some(gauge) = &self.healthy_gauge {
            gauge
                .with_label_values(&[self.name, member.index.as_str()])
                .set(i64::from(healthy));
        }
    }
}

/// Checks every replica of `upstreams` every `interval` (`GET /health/ready`, 2 s at most)
/// for as long as the gateway holds them.
pub(crate) fn watch(client: reqwest::Client, upstreams: &[Arc<Upstream>], interval: Duration) {
    let watched: Vec<Weak<Upstream>> = upstreams.iter().map(Arc::downgrade).collect();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(upstreams) = watched
                .iter()
                .map(Weak::upgrade)
                .collect::<Option<Vec<_>>>()
            else {
                return; // the gateway is gone
            };
            let checks = upstreams.iter().flat_map(|upstream| {
                upstream.members().iter().map(|member| {
                    let client = client.clone();
                    let upstream = upstream.clone();
                    async move {
                        let (healthy, why) = check(&client, &member.base).await;
                        upstream.mark(member, healthy, &why);
                    }
                })
            });
            futures::future::join_all(checks).await;
        }
    });
}

/// Whether the replica at `base` is ready, and why not.
async fn check(client: &reqwest::Client, base: &str) -> (bool, String) {
    match client
        .get(format!("{base}/health/ready"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => (true, String::new()),
        Ok(r) => (false, format!("readiness answered {}", r.status().as_u16())),
        Err(e) if e.is_timeout() => (false, "readiness did not answer in 2 s".to_owned()),
        Err(_) => (false, "readiness check could not connect".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bases(order: &[&Member]) -> Vec<String> {
        order.iter().map(|m| m.base.clone()).collect()
    }

    #[test]
    fn requests_go_round_the_healthy_replicas_and_the_others_come_last() {
        let up = Upstream::new("auth-service", "http://a, http://b/,http://c", None);
        assert_eq!(bases(&up.order()), ["http://a", "http://b", "http://c"]);
        assert_eq!(bases(&up.order()), ["http://b", "http://c", "http://a"]);
        up.mark(&up.members()[1], false, "test");
        assert_eq!(bases(&up.order()), ["http://c", "http://a", "http://b"]);
        assert_eq!(bases(&up.order()), ["http://a", "http://c", "http://b"]);
        up.mark(&up.members()[1], true, "test");
        assert_eq!(bases(&up.order()), ["http://b", "http://c", "http://a"]);
    }

    #[test]
    fn with_none_healthy_every_replica_is_still_tried() {
        let up = Upstream::new("user-service", "http://a,http://b", None);
        for m in up.members() {
            up.mark(m, false, "test");
        }
        assert_eq!(up.order().len(), 2);
    }

    #[test]
    fn a_single_url_is_one_replica() {
        let up = Upstream::new("user-service", "http://127.0.0.1:3002", None);
        assert_eq!(bases(&up.order()), ["http://127.0.0.1:3002"]);
    }
}
