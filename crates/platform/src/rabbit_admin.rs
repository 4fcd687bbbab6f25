//! A client of the RabbitMQ management API, for what AMQP cannot do: users and their
//! permissions (the least-privilege setup), vhosts (the tests', the benchmark's and the chaos
//! run's own), cutting every connection of a vhost, a queue's total including unacked messages.

use anyhow::{anyhow, Context};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde_json::{json, Value};
use std::time::Duration;

/// What a user may do on a vhost: regular expressions over resource names, `""` for nothing
/// (RabbitMQ's configure, write and read permissions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

impl Permissions {
    /// Everything (the vhost's owner).
    pub fn all() -> Self {
        Self {
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        }
    }
}

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
            .timeout(Duration::from_secs(30)) // deleting a vhost that holds a large backlog takes a while
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
        self.set_permissions(vhost, &self.user, &Permissions::all())
            .await
    }

    /// Creates `user` (or sets its password) with no management tags: it can use AMQP, not the
    /// management API. The broker stores the password hashed.
    pub async fn put_user(&self, user: &str, password: &str) -> anyhow::Result<()> {
        let body = json!({"password": password, "tags": ""});
        self.send_ok(
            self.http.put(self.api(&["users", user])?).json(&body),
            &format!("create user {user}"),
        )
        .await
        .map(drop)
    }

    /// Deletes `user`; an absent one is fine.
    pub async fn delete_user(&self, user: &str) -> anyhow::Result<()> {
        let req = self.http.delete(self.api(&["users", user])?);
        self.send_if_found(req, &format!("delete user {user}"))
            .await
            .map(drop)
    }

    /// The names of every user of the broker.
    pub async fn users(&self) -> anyhow::Result<Vec<String>> {
        let list: Value = self
            .send_ok(self.http.get(self.api(&["users"])?), "list users")
            .await?
            .json()
            .await
            .context("users JSON")?;
        Ok(list
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|u| u["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Sets what `user` may do on `vhost`: each a regular expression over resource names
    /// (`""` for nothing).
    pub async fn set_permissions(
        &self,
        vhost: &str,
        user: &str,
        permissions: &Permissions,
    ) -> anyhow::Result<()> {
        let body = json!({
            "configure": permissions.configure,
            "write": permissions.write,
            "read": permissions.read,
        });
        self.send_ok(
            self.http
                .put(self.api(&["permissions", vhost, user])?)
                .json(&body),
            &format!("set the permissions of {user} on {vhost}"),
        )
        .await
        .map(drop)
    }

    /// Restricts the routing keys `user` may publish with (`write`) and bind with (`read`) on
    /// the topic `exchange` of `vhost`.
    pub async fn set_topic_permissions(
        &self,
        vhost: &str,
        user: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> anyhow::Result<()> {
        let body = json!({"exchange": exchange, "write": write, "read": read});
        self.send_ok(
            self.http
                .put(self.api(&["topic-permissions", vhost, user])?)
                .json(&body),
            &format!("set the topic permissions of {user} on {vhost}"),
        )
        .await
        .map(drop)
    }

    /// Sends `req`; `Ok(false)` when the API answers 404 (no such thing), `Ok(true)` on success.
    async fn send_if_found(&self, req: RequestBuilder, what: &str) -> anyhow::Result<bool> {
        let resp = self.send(req, what).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        resp.error_for_status()
            .with_context(|| format!("RabbitMQ management API: {what}"))?;
        Ok(true)
    }

    /// Deletes `vhost` with everything in it; an absent vhost is fine.
    pub async fn delete_vhost(&self, vhost: &str) -> anyhow::Result<()> {
        let req = self.http.delete(self.api(&["vhosts", vhost])?);
        self.send_if_found(req, &format!("delete vhost {vhost}"))
            .await
            .map(drop)
    }

    /// True when `vhost` exists (a run that cleaned up leaves none behind).
    pub async fn vhost_exists(&self, vhost: &str) -> anyhow::Result<bool> {
        let req = self.http.get(self.api(&["vhosts", vhost])?);
        self.send_if_found(req, &format!("vhost {vhost}")).await
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

    /// The names of every queue of `vhost`.
    pub async fn queues(&self, vhost: &str) -> anyhow::Result<Vec<String>> {
        let qs: Vec<Value> = self
            .send_ok(
                self.http.get(self.api(&["queues", vhost])?),
                &format!("queues of {vhost}"),
            )
            .await?
            .json()
            .await
            .context("queues JSON")?;
        Ok(qs
            .iter()
            .filter_map(|q| q["name"].as_str().map(str::to_owned))
            .collect())
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

    /// The management tags of the user this client logs in as (`GET /api/whoami`), or `None`
    /// when the API refuses it (401: a user without any management tag, who may use AMQP
    /// only, as the least-privilege setup makes them; or a wrong password).
    pub async fn own_tags(&self) -> anyhow::Result<Option<Vec<String>>> {
        let resp = self
            .send(self.http.get(self.api(&["whoami"])?), "whoami")
            .await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Ok(None);
        }
        let me: Value = resp
            .error_for_status()
            .context("RabbitMQ management API: whoami")?
            .json()
            .await
            .context("whoami JSON")?;
        Ok(Some(tags(&me["tags"])))
    }

    /// The broker's version (`GET /api/overview`), for reports.
    pub async fn rabbitmq_version(&self) -> anyhow::Result<Option<String>> {
        let overview: Value = self
            .send_ok(self.http.get(self.api(&["overview"])?), "overview")
            .await?
            .json()
            .await
            .context("overview JSON")?;
        Ok(overview["rabbitmq_version"].as_str().map(str::to_owned))
    }
}

/// A user's tags as the management API writes them: a list (RabbitMQ 3.9 and later) or one
/// comma-separated string (earlier).
fn tags(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        Value::String(list) => list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_read_as_a_list_or_as_one_string() {
        assert_eq!(tags(&json!(["administrator"])), ["administrator"]);
        assert_eq!(
            tags(&json!("monitoring, administrator")),
            ["monitoring", "administrator"]
        );
        assert!(tags(&json!("")).is_empty());
        assert!(tags(&Value::Null).is_empty());
    }
}
