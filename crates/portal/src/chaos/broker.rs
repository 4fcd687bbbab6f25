//! RabbitMQ as the chaos run sees it: the management API (its vhost, cutting every connection
//! in it, a queue's total including unacked messages) and a few AMQP look-ups (ready count,
//! the dead-letter queue's contents).

use anyhow::{anyhow, Context};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A client of the RabbitMQ management API.
pub struct Management {
    http: reqwest::Client,
    base: Url,
    user: String,
    password: String,
}

impl Management {
    pub fn new(base: &str, user: &str, password: &str) -> anyhow::Result<Self> {
        let base = Url::parse(base).with_context(|| format!("bad management URL {base}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("HTTP client")?;
        Ok(Self {
            http,
            base,
            user: user.to_owned(),
            password: password.to_owned(),
        })
    }

    /// The same API with a client of its own: a client's pooled connections belong to the
    /// runtime that opened them, and cleanup on drop runs on another one.
    pub fn fresh(&self) -> anyhow::Result<Self> {
        Self::new(self.base.as_str(), &self.user, &self.password)
    }

    /// `<base>/api/<segments…>`, each segment percent-encoded (vhost and connection names hold
    /// characters such as `/`, spaces and `>`).
    fn api(&self, segments: &[&str]) -> anyhow::Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| anyhow!("{} cannot be a base URL", self.base))?
            .pop_if_empty()
            .push("api")
            .extend(segments);
        Ok(url)
    }

    async fn send(&self, req: RequestBuilder, what: &str) -> anyhow::Result<reqwest::Response> {
        req.basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .with_context(|| format!("RabbitMQ management API: {what}"))
    }

    async fn send_ok(&self, req: RequestBuilder, what: &str) -> anyhow::Result<reqwest::Response> {
        self.send(req, what)
            .await?
            .error_for_status()
            .with_context(|| format!("RabbitMQ management API: {what}"))
    }

    /// Creates `vhost` and gives this user every permission on it.
    pub async fn create_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        let what = format!("create vhost {vhost} (is the management plugin enabled?)");
        self.send_ok(self.http.put(self.api(&["vhosts", vhost])?), &what)
            .await?;
        let grant = json!({"configure": ".*", "write": ".*", "read": ".*"});
        self.send_ok(
            self.http
                .put(self.api(&["permissions", vhost, &self.user])?)
                .json(&grant),
            &format!("grant {} on vhost {vhost}", self.user),
        )
        .await?;
        Ok(())
    }

    /// Deletes `vhost` with everything in it; an absent vhost is fine.
    pub async fn delete_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        let resp = self
            .send(
                self.http.delete(self.api(&["vhosts", vhost])?),
                &format!("delete vhost {vhost}"),
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        resp.error_for_status()
            .with_context(|| format!("delete vhost {vhost}"))?;
        Ok(())
    }

    /// Force-closes every client connection of `vhost` (what `rabbitmqctl close_all_connections
    /// --vhost` does, without needing root on the broker's host); returns how many it closed.
    pub async fn close_connections(&self, vhost: &str, reason: &str) -> anyhow::Result<usize> {
        let list: Value = self
            .send_ok(
                self.http.get(self.api(&["vhosts", vhost, "connections"])?),
                "list connections",
            )
            .await?
            .json()
            .await
            .context("connections JSON")?;
        let names: Vec<String> = list
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut closed = 0;
        for name in names {
            let resp = self
                .send(
                    self.http
                        .delete(self.api(&["connections", &name])?)
                        .header("X-Reason", reason),
                    "close connection",
                )
                .await?;
            // Gone already (its owner was just killed or reconnected): nothing to cut.
            if resp.status() == StatusCode::NOT_FOUND {
                continue;
            }
            resp.error_for_status()
                .with_context(|| format!("close connection {name}"))?;
            closed += 1;
        }
        Ok(closed)
    }

    /// The queue's `messages` (ready plus unacked) as the management API last sampled it;
    /// `None` until the first sample exists. Sampled every `collect_statistics_interval`
    /// (5 s by default), so a 0 is only trusted once it has held for longer than that.
    pub async fn queue_messages(&self, vhost: &str, queue: &str) -> anyhow::Result<Option<u64>> {
        let q: Value = self
            .send_ok(
                self.http.get(self.api(&["queues", vhost, queue])?),
                &format!("queue {queue}"),
            )
            .await?
            .json()
            .await
            .context("queue JSON")?;
        Ok(q["messages"].as_u64())
    }
}

/// Messages ready in `queue` (a passive declare: exact, but it does not count unacked ones).
pub async fn ready_messages(amqp_url: &str, queue: &str) -> anyhow::Result<u32> {
    let conn = platform::amqp::connect(amqp_url, "chaos queue depth").await?;
    let result = async {
        let ch = conn.create_channel().await?;
        let q = ch
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let count = q.message_count();
        // Closed before the connection, or lapin logs a spurious "Connection error".
        ch.close(200, "done").await?;
        Ok::<_, lapin::Error>(count)
    }
    .await;
    conn.close(200, "done").await.ok();
    result.with_context(|| format!("passive declare of {queue}"))
}

/// What the dead-letter queue holds.
#[derive(Debug, Default)]
pub struct DeadLetters {
    /// Messages in the queue, copies included.
    pub copies: u64,
    /// Distinct message ids carrying `id_prefix` (the malformed messages this run injected).
    pub ours: BTreeSet<String>,
    /// Messages without our prefix: events that should have been applied, not dead-lettered.
    pub foreign: u64,
    /// Count per `x-error-reason` header.
    pub reasons: BTreeMap<String, u64>,
}

/// Reads every message of `queue` without consuming it (got unacked, requeued when the
/// connection closes).
pub async fn read_dead_letters(
    amqp_url: &str,
    queue: &str,
    id_prefix: &str,
) -> anyhow::Result<DeadLetters> {
    let conn = platform::amqp::connect(amqp_url, "chaos dead-letter count").await?;
    let result = async {
        let ch = conn.create_channel().await?;
        let mut seen = DeadLetters::default();
        while let Some(message) = ch
            .basic_get(queue, BasicGetOptions { no_ack: false })
            .await?
        {
            let props = &message.delivery.properties;
            seen.copies += 1;
            match props.message_id().as_ref().map(|id| id.as_str()) {
                Some(id) if id.starts_with(id_prefix) => {
                    seen.ours.insert(id.to_owned());
                }
                _ => seen.foreign += 1,
            }
            let reason = props
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-error-reason").cloned())
                .map_or("none".to_owned(), |v| match v {
                    AMQPValue::LongString(s) => s.to_string(),
                    other => format!("{other:?}"),
                });
            *seen.reasons.entry(reason).or_default() += 1;
        }
        ch.close(200, "done").await?;
        Ok::<_, lapin::Error>(seen)
    }
    .await;
    conn.close(200, "done").await.ok();
    result.with_context(|| format!("reading {queue}"))
}
