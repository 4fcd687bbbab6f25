//! A further consumer's broker identity, for `portal consumer add` and `portal consumer remove`:
//! a RabbitMQ user of its own with the rights the setup gives the user-service
//! ([`crate::setup::consumer_rights`]: configure nothing, read its own queue, write through its
//! set-aside exchange to its retry and dead-letter queues, and to `portal.control` with its own
//! receipts' key only), a generated password handed over once, and the settings the consumer
//! runs with ([`ConsumerSettings`]).
//!
//! The user is made through the management API as the administrator of `ADMIN_AMQP_URL`, as the
//! setup makes its users. Its name is `<prefix><consumer>` ([`managed_user`], `portal-pharmacy`
//! by default): a name `portal consumer add` owns, so running it again keeps the password
//! (unless a new one is asked for) and sets the rights again, and `portal consumer remove`
//! deletes it. A broker user someone else made (`--broker-user`) is only registered: it is never
//! created, changed or deleted here.

use crate::setup::{consumer_rights, new_password, url_as, ConsumerRights};
use anyhow::{anyhow, bail, Context};
use contract::topology::{ConsumerQueues, CONTROL_EXCHANGE};
use contract::wire::TrustedPublishers;
use platform::rabbit_admin::Management;
use platform::secret;
use std::path::Path;
use url::Url;

/// The prefix of the broker users `portal consumer add` makes, unless told otherwise.
pub const DEFAULT_PREFIX: &str = "portal-";

/// The broker user `portal consumer add` makes for the consumer `name`.
pub fn managed_user(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// What became of a consumer's broker user. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    /// Whether this call created it.
    pub created: bool,
    /// The password, when this call set one (a new user, or a new password asked for); `None`:
    /// the user keeps the one it had, which nobody stored and is not shown again.
    pub password: Option<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("created", &self.created)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The broker as its administrator, on one vhost: who manages users and their permissions.
pub struct BrokerAdmin {
    management: Management,
    vhost: String,
    admin_amqp_url: String,
    admin_user: String,
}

impl BrokerAdmin {
    /// The administrator of `admin_amqp_url` (its user and vhost; a cluster's nodes share both),
    /// calling the management API at `management_url` as that user.
    pub fn new(admin_amqp_url: &str, management_url: &str) -> anyhow::Result<Self> {
        let first =
            Url::parse(platform::addresses::first(admin_amqp_url)).context("bad ADMIN_AMQP_URL")?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let vhost = match decode(first.path().trim_start_matches('/')) {
            v if v.is_empty() => "/".to_owned(),
            v => v,
        };
        let admin_user = platform::amqp::broker_user_of(admin_amqp_url)
            .context("ADMIN_AMQP_URL: the management API is called as its user")?;
        let password = decode(first.password().unwrap_or(""));
        Ok(Self {
            management: Management::new(management_url, &admin_user, &password)?,
            vhost,
            admin_amqp_url: admin_amqp_url.to_owned(),
            admin_user,
        })
    }

    /// Whether the broker has a user `user`.
    pub async fn has_user(&self, user: &str) -> anyhow::Result<bool> {
        Ok(self.management.users().await?.iter().any(|u| u == user))
    }

    /// Makes `user` the broker identity of the consumer `name`: created with a new password when
    /// absent, given a new one when `new_password`, otherwise left with its own; either way its
    /// rights on this vhost are set to exactly [`consumer_rights`] (what an older run or a hand
    /// gave it besides is taken away).
    pub async fn ensure_consumer_user(
        &self,
        name: &str,
        user: &str,
        new_password: bool,
    ) -> anyhow::Result<Identity> {
        if user == self.admin_user {
            bail!(
                "{user} is the administrator ADMIN_AMQP_URL logs in as: a consumer gets a broker \
                 user of its own"
            );
        }
        let created = !self.has_user(user).await?;
        let password = (created || new_password).then(self::new_password);
        if let Some(password) = &password {
            self.management.put_user(user, password).await?;
        }
        let rights = consumer_rights(&ConsumerQueues::for_consumer(name));
        self.management
            .set_permissions(&self.vhost, user, &rights.permissions)
            .await?;
        self.management
            .set_topic_permissions(
                &self.vhost,
                user,
                CONTROL_EXCHANGE,
                &rights.control_keys,
                "^$",
            )
            .await?;
        Ok(Identity {
            user: user.to_owned(),
            created,
            password,
        })
    }

    /// Deletes the broker user `user` (its permissions and connections go with it); whether it
    /// existed. Never the administrator's own.
    pub async fn delete_user(&self, user: &str) -> anyhow::Result<bool> {
        crate::setup::disable_broker_user(&self.management, user, &self.admin_user).await
    }

    /// The broker URL that logs in as `user` with `password`: ADMIN_AMQP_URL's servers, vhost
    /// and TLS settings, never the administrator's credentials.
    pub fn url_for(&self, user: &str, password: &str) -> anyhow::Result<String> {
        url_as(&self.admin_amqp_url, user, password, None)
    }
}

/// The rights a consumer's broker user needs, in words an operator can give them with
/// (`rabbitmqctl set_permissions` and `set_topic_permissions`): what `--broker-user` prints for
/// a user it does not manage.
pub fn describe_rights(name: &str) -> String {
    let ConsumerRights {
        permissions,
        control_keys,
    } = consumer_rights(&ConsumerQueues::for_consumer(name));
    format!(
        "configure '{}', write '{}', read '{}'; on the topic exchange {CONTROL_EXCHANGE}, write \
         '{control_keys}'",
        permissions.configure, permissions.write, permissions.read
    )
}

/// Whom a consumer must trust (the AMQP `user_id` of what it applies): the system's own
/// publishers (`portal-relay`, `portal-operator`), the configured `TRUSTED_PUBLISHERS`, and the
/// operator's broker user, which sends its backfill. Sorted, without duplicates.
pub fn trusted_publishers(operator_user: &str, configured: &[String]) -> Vec<String> {
    TrustedPublishers::new(operator_user, configured)
        .names()
        .map(str::to_owned)
        .collect()
}

/// What a consumer outside the repository runs with, as the environment variables the
/// reference consumer (`examples/python-consumer`) reads: its name, its broker URL (with its
/// password) and whom it trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    pub name: String,
    pub amqp_url: String,
    pub trusted_publishers: Vec<String>,
}

impl std::fmt::Debug for ConsumerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerSettings")
            .field("name", &self.name)
            .field("amqp_url", &secret::redact_url(&self.amqp_url))
            .field("trusted_publishers", &self.trusted_publishers)
            .finish()
    }
}

impl ConsumerSettings {
    /// `KEY=value` lines.
    pub fn lines(&self) -> String {
        format!(
            "CONSUMER_NAME={}\nAMQP_URL={}\nTRUSTED_PUBLISHERS={}\n",
            self.name,
            self.amqp_url,
            self.trusted_publishers.join(",")
        )
    }

    /// Writes [`ConsumerSettings::lines`] to `path`, owner-only (0600), replacing it atomically;
    /// a directory it creates is owner-only.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        secret::dir_for_secrets(dir)?;
        let text = format!(
            "# Written by `portal consumer add {}`: the consumer's broker identity.\n\
             # Owner-only: it holds a password.\n{}",
            self.name,
            self.lines()
        );
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("{} names no file", path.display()))?;
        let tmp = dir.join(format!(".{file}-{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        secret::write_new_secret(&tmp, text.as_bytes())?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_is_told_its_name_its_broker_and_whom_to_trust() {
        assert_eq!(managed_user(DEFAULT_PREFIX, "pharmacy"), "portal-pharmacy");
        let trusted = trusted_publishers("portal-operator", &["legacy".into(), " ".into()]);
        assert_eq!(trusted, ["legacy", "portal-operator", "portal-relay"]);
        let settings = ConsumerSettings {
            name: "pharmacy".into(),
            amqp_url: "amqp://portal-pharmacy:s3cret@127.0.0.1:5672/%2f".into(),
            trusted_publishers: trusted,
        };
        assert_eq!(
            settings.lines(),
            "CONSUMER_NAME=pharmacy\nAMQP_URL=amqp://portal-pharmacy:s3cret@127.0.0.1:5672/%2f\n\
             TRUSTED_PUBLISHERS=legacy,portal-operator,portal-relay\n"
        );
        assert!(
            !format!("{settings:?}").contains("s3cret"),
            "never in a log"
        );
        let identity = Identity {
            user: "portal-pharmacy".into(),
            created: true,
            password: Some("s3cret".into()),
        };
        assert!(!format!("{identity:?}").contains("s3cret"));
        assert!(describe_rights("pharmacy").contains("'^receipt\\.pharmacy$'"));
    }

    #[test]
    fn the_settings_file_is_its_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("consumer-settings-{}", new_password()));
        let path = dir.join("pharmacy.env");
        let settings = ConsumerSettings {
            name: "pharmacy".into(),
            amqp_url: "amqp://u:p@h/%2f".into(),
            trusted_publishers: vec!["portal-relay".into()],
        };
        settings.write(&path).unwrap();
        settings.write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("AMQP_URL=amqp://u:p@h/%2f\n"));
        std::fs::remove_dir_all(dir).ok();
    }
}
