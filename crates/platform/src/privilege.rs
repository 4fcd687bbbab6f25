//! Whether a part connects with more rights than the least-privilege setup gave it. Under
//! `portal setup` (`MANAGED_BY_SETUP`) every part has an identity of its own; an operator's
//! environment that overrides one URL with a superuser's (`postgres://postgres@db/auth_db`) or
//! the broker's `guest` would otherwise run the part silently with every right. A part never
//! refuses to start over it (a recovery may need exactly that), but says it loudly: one
//! warning at start naming the part, the identity and the fix, and the gauge
//! `portal_privileged_identity{kind}` at 1 on its `/metrics`, where an alert can see it.
//!
//! [`watch`] is what each part calls at start; [`inspect`] is the check of one identity, which
//! `portal config check --connect` runs too.

use crate::metrics::Metrics;
use crate::rabbit_admin::Management;
use prometheus::IntGaugeVec;
use sqlx::PgPool;
use std::time::Duration;

/// How long one identity's check may take (the pool's acquire, the management API's answer):
/// it runs beside the part's start and must end even when a server does not answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the management API may take to say who a broker user is.
const WHOAMI_TIMEOUT: Duration = Duration::from_secs(3);

/// The management API's port beside a broker that no setting names one for (RabbitMQ's own).
const DEFAULT_MANAGEMENT_PORT: u16 = 15672;

/// RabbitMQ's default user, an administrator on every fresh broker.
const GUEST: &str = "guest";

/// Which server an identity is of: the gauge's `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Rabbitmq,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Postgres => "postgres",
            Kind::Rabbitmq => "rabbitmq",
        }
    }
}

/// One identity a part connects as, named by the setting that gives it (the one to unset when
/// the environment overrides what `portal setup` wrote).
#[derive(Debug, Clone)]
pub struct Identity {
    pub setting: String,
    server: Server,
}

#[derive(Debug, Clone)]
enum Server {
    /// The part's own pool: the check costs no connection of its own.
    Postgres(PgPool),
    /// The broker URL (a cluster's list: its first node, whose users every node shares).
    Rabbitmq(String),
}

impl Identity {
    /// The role `pool` connects as, given by `setting` (e.g. `AUTH_DATABASE_URL`).
    pub fn postgres(setting: impl Into<String>, pool: &PgPool) -> Self {
        Self {
            setting: setting.into(),
            server: Server::Postgres(pool.clone()),
        }
    }

    /// The broker user `url` logs in as, given by `setting` (e.g. `RELAY_AMQP_URL`).
    pub fn rabbitmq(setting: impl Into<String>, url: &str) -> Self {
        Self {
            setting: setting.into(),
            server: Server::Rabbitmq(url.to_owned()),
        }
    }

    pub fn kind(&self) -> Kind {
        match self.server {
            Server::Postgres(_) => Kind::Postgres,
            Server::Rabbitmq(_) => Kind::Rabbitmq,
        }
    }
}

/// What the check found about one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Only the rights it was given: `who` is the role or broker user.
    Limited { who: String },
    /// A PostgreSQL superuser or a RabbitMQ administrator; `what` says which, in words.
    Privileged { who: String, what: String },
    /// It could not be told (a server down, no management API to ask), and why.
    Unknown(String),
}

/// Checks `identity`: a PostgreSQL role by `is_superuser`; a broker user by its name (`guest`
/// is the broker's administrator) or by the management API's `GET /api/whoami` as that user
/// (a 401 is a user without any management tag: fine; the `administrator` tag is not).
pub async fn inspect(identity: &Identity) -> Finding {
    let checked = match &identity.server {
        Server::Postgres(pool) => tokio::time::timeout(CHECK_TIMEOUT, postgres(pool)).await,
        Server::Rabbitmq(url) => tokio::time::timeout(CHECK_TIMEOUT, rabbitmq(url)).await,
    };
    checked.unwrap_or_else(|_| Finding::Unknown(format!("no answer within {CHECK_TIMEOUT:?}")))
}

async fn postgres(pool: &PgPool) -> Finding {
    let row: Result<(String, bool), sqlx::Error> =
        sqlx::query_as("SELECT current_user::text, current_setting('is_superuser') = 'on'")
            .fetch_one(pool)
            .await;
    match row {
        Ok((who, true)) => Finding::Privileged {
            who,
            what: "a PostgreSQL superuser".to_owned(),
        },
        Ok((who, false)) => Finding::Limited { who },
        Err(e) => Finding::Unknown(format!("cannot ask PostgreSQL: {e}")),
    }
}

async fn rabbitmq(url: &str) -> Finding {
    let Some(login) = BrokerLogin::of(url) else {
        return Finding::Unknown("the broker URL does not parse or names no user".to_owned());
    };
    if login.user == GUEST {
        return Finding::Privileged {
            who: login.user,
            what: "RabbitMQ's default administrator".to_owned(),
        };
    }
    let Some(management) = login.management_url.as_deref() else {
        return Finding::Unknown(format!(
            "no management API is known beside the broker at {} (only one on this machine is \
             assumed at :{DEFAULT_MANAGEMENT_PORT}): the broker user is not checked",
            login.host
        ));
    };
    let tags = async {
        Management::new(management, &login.user, &login.password)?
            .own_tags()
            .await
    };
    match tokio::time::timeout(WHOAMI_TIMEOUT, tags).await {
        // Refused: a user without any management tag (AMQP only), as the setup makes them.
        Ok(Ok(None)) => Finding::Limited { who: login.user },
        Ok(Ok(Some(tags))) if tags.iter().any(|t| t == "administrator") => Finding::Privileged {
            who: login.user,
            what: "a RabbitMQ administrator".to_owned(),
        },
        Ok(Ok(Some(_))) => Finding::Limited { who: login.user },
        Ok(Err(e)) => Finding::Unknown(format!("cannot ask {management}: {e:#}")),
        Err(_) => Finding::Unknown(format!(
            "{management} did not answer within {WHOAMI_TIMEOUT:?}"
        )),
    }
}

/// Who a broker URL logs in as, and the management API to ask about it.
#[derive(Debug, PartialEq, Eq)]
struct BrokerLogin {
    user: String,
    password: String,
    host: String,
    /// `http://<host>:15672` for a broker on this machine; `None` elsewhere, where no setting
    /// says where its management API is and guessing would send the password to an unknown
    /// port in plaintext.
    management_url: Option<String>,
}

impl BrokerLogin {
    fn of(url: &str) -> Option<Self> {
        let parsed = url::Url::parse(crate::addresses::first(url)).ok()?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = decode(parsed.username());
        if user.is_empty() {
            return None;
        }
        // `amqp:///vhost`: the client's default host, this machine.
        let host = parsed.host_str().unwrap_or("localhost").to_owned();
        let management_url = crate::settings::is_loopback_host(&host)
            .then(|| format!("http://{host}:{DEFAULT_MANAGEMENT_PORT}"));
        Some(Self {
            user,
            password: decode(parsed.password().unwrap_or_default()),
            host,
            management_url,
        })
    }
}

/// At a part's start: registers `portal_privileged_identity{kind}` on `metrics` (0), and when
/// the least-privilege setup manages the install checks each of `identities` in the
/// background (the start never waits for a server to answer): a privileged one sets its kind
/// to 1 and is said in one warning naming `part`, the identity and the fix. What cannot be
/// checked is said at debug level.
pub fn watch(
    part: &'static str,
    metrics: &Metrics,
    managed_by_setup: bool,
    identities: impl IntoIterator<Item = Identity>,
) -> prometheus::Result<()> {
    let gauge = metrics.int_gauge_vec(
        "portal_privileged_identity",
        "1 when this part connects as a PostgreSQL superuser (kind=postgres) or a RabbitMQ \
         administrator (kind=rabbitmq) although the least-privilege setup manages the install \
         (MANAGED_BY_SETUP); 0 otherwise.",
        &["kind"],
    )?;
    for kind in [Kind::Postgres, Kind::Rabbitmq] {
        gauge.with_label_values(&[kind.label()]).set(0);
    }
    if !managed_by_setup {
        // Development and tests run with administrative credentials on purpose.
        return Ok(());
    }
    let identities: Vec<Identity> = identities.into_iter().collect();
    tokio::spawn(check_all(part, gauge, identities));
    Ok(())
}

async fn check_all(part: &'static str, gauge: IntGaugeVec, identities: Vec<Identity>) {
    for identity in identities {
        let kind = identity.kind();
        match inspect(&identity).await {
            Finding::Privileged { who, what } => {
                gauge.with_label_values(&[kind.label()]).set(1);
                tracing::warn!(
                    target: "security",
                    event = "privileged_identity",
                    part,
                    kind = kind.label(),
                    identity = %who,
                    setting = %identity.setting,
                    "{part} connects as `{who}`, {what}, although the least-privilege setup \
                     manages this install (MANAGED_BY_SETUP=true): run with the identity `portal \
                     setup` wrote; unset {} in the environment",
                    identity.setting
                );
            }
            Finding::Limited { who } => {
                tracing::debug!(part, setting = %identity.setting, identity = %who, "connects with limited rights");
            }
            Finding::Unknown(why) => {
                tracing::debug!(
                    part,
                    setting = %identity.setting,
                    "cannot tell whether {} is privileged: {why}",
                    identity.setting
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_broker_on_this_machine_gets_a_guessed_management_api() {
        let local = BrokerLogin::of("amqp://portal-relay:p%40ss@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(local.user, "portal-relay");
        assert_eq!(local.password, "p@ss");
        assert_eq!(
            local.management_url.as_deref(),
            Some("http://127.0.0.1:15672")
        );
        let v6 = BrokerLogin::of("amqp://u:p@[::1]:5672/%2f").unwrap();
        assert_eq!(v6.management_url.as_deref(), Some("http://[::1]:15672"));
        let remote = BrokerLogin::of("amqps://u:p@rabbit.clinic.internal:5671/%2f").unwrap();
        assert_eq!(remote.management_url, None);
        // A cluster: its first node.
        let cluster = BrokerLogin::of("amqp://a:p@127.0.0.1:5672/%2f,amqp://a:p@10.0.0.2/%2f");
        assert_eq!(cluster.unwrap().host, "127.0.0.1");
        assert_eq!(BrokerLogin::of("amqp://127.0.0.1:5672/%2f"), None);
    }

    #[tokio::test]
    async fn guest_is_an_administrator_without_asking() {
        // Nothing listens on the port: had it asked, the answer would be Unknown.
        let identity = Identity::rabbitmq("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f");
        assert_eq!(
            inspect(&identity).await,
            Finding::Privileged {
                who: "guest".to_owned(),
                what: "RabbitMQ's default administrator".to_owned()
            }
        );
    }

    #[tokio::test]
    async fn a_broker_elsewhere_is_not_checked() {
        let identity = Identity::rabbitmq("AMQP_URL", "amqps://u:p@192.0.2.10:5671/%2f");
        assert!(matches!(inspect(&identity).await, Finding::Unknown(_)));
    }
}
