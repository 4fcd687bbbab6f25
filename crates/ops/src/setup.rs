//! The least-privilege setup (`portal setup`, and `portal up` before it starts anything): from
//! the administrative credentials it is given, it makes every part of the system an identity
//! of its own with only the rights that part needs, and writes the generated passwords to one
//! owner-only file that the other commands read.
//!
//! - PostgreSQL: a migration role that owns the databases and their schemas; a login role per
//!   service (`auth_service` on `auth_db`, `user_service` on `user_db`, `appointment_service`
//!   on `appointment_db`) with only the table rights it uses (each service says which:
//!   `auth_service::grants`, `user_service::grants`, `appointment_service::grants`);
//!   an operator role for verify, reconcile and replay. Nobody else may connect to the
//!   databases. Passwords are stored as SCRAM-SHA-256.
//! - RabbitMQ: a user per component. The relay may only publish to `user.events` (routing keys
//!   `user.…`); each consumer service may only read its own queue and publish through its own
//!   set-aside exchange (its retry and dead-letter queues); the operator may read the consumers' queues and
//!   dead letters and publish to them and to `user.events`. None may configure anything: the
//!   setup declares the topology itself, as the administrator.
//!
//! Besides that file (every identity: the operator's commands read it), an install gets one
//! file per part ([`PARTS`]) holding that part's identities only ([`Credentials::for_part`]),
//! owned by the part's own OS user and readable by it alone ([`PartFiles`]): a compromised
//! gateway or web portal holds no password at all, and the user-service none of the
//! auth-service's.
//!
//! It is idempotent (existing identities keep their passwords, from the credentials file) and
//! race-free (a PostgreSQL advisory lock serialises concurrent setups, which then reuse what the
//! first one wrote), and it re-grants what a recreated database or vhost lost.

use anyhow::{anyhow, bail, Context};
use contract::topology::{
    receipt_key, ConsumerQueues, ControlQueue, APPOINTMENT_EXCHANGE, APPOINTMENT_SERVICE,
    APPOINTMENT_UNROUTED, AUTH_SERVICE, CONTROL_EXCHANGE, EXCHANGE, UNROUTED_QUEUE, USER_SERVICE,
};
use platform::rabbit_admin::{Management, Permissions};
use platform::secret;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sqlx::{Connection, PgConnection};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use url::Url;

/// The names of the identities the setup creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identities {
    /// PostgreSQL: owns the databases and schemas, runs the migrations.
    pub migrator: String,
    /// PostgreSQL: the auth-service (and the relay inside it).
    pub auth_service: String,
    /// PostgreSQL: a relay of its own (`portal relay`): the outbox only, never the users.
    pub relay: String,
    /// PostgreSQL: the user-service.
    pub user_service: String,
    /// PostgreSQL: the appointment-service.
    pub appointment_service: String,
    /// PostgreSQL: verify, reconcile, replay.
    pub operator: String,
    /// RabbitMQ: the outbox relay.
    pub relay_user: String,
    /// RabbitMQ: the user-service's consumer.
    pub user_service_user: String,
    /// RabbitMQ: the appointment-service's consumer.
    pub appointment_service_user: String,
    /// RabbitMQ: replay, dlq, consumer add's backfill.
    pub operator_user: String,
}

impl Identities {
    /// The names of a production install.
    pub fn standard() -> Self {
        Self {
            migrator: "portal_migrator".into(),
            auth_service: "auth_service".into(),
            relay: "portal_relay".into(),
            user_service: "user_service".into(),
            appointment_service: "appointment_service".into(),
            operator: "portal_operator".into(),
            relay_user: contract::wire::RELAY_USER.into(),
            user_service_user: format!("portal-{USER_SERVICE}"),
            appointment_service_user: format!("portal-{APPOINTMENT_SERVICE}"),
            operator_user: contract::wire::OPERATOR_USER.into(),
        }
    }

    fn pg_roles(&self) -> [&str; 6] {
        [
            &self.migrator,
            &self.auth_service,
            &self.relay,
            &self.user_service,
            &self.appointment_service,
            &self.operator,
        ]
    }

    fn broker_users(&self) -> [&str; 4] {
        [
            &self.relay_user,
            &self.user_service_user,
            &self.appointment_service_user,
            &self.operator_user,
        ]
    }
}

/// What the setup works on and with.
#[derive(Debug, Clone)]
pub struct SetupConfig {
    /// PostgreSQL as a role that may create roles and databases (any database of the server).
    pub admin_database_url: String,
    /// RabbitMQ as an administrator, on the vhost to set up.
    pub admin_amqp_url: String,
    /// RabbitMQ's management API, called with the admin AMQP user.
    pub management_url: String,
    pub auth_db: String,
    pub user_db: String,
    pub appointment_db: String,
    pub identities: Identities,
    /// The owner-only file the generated credentials go to.
    pub credentials: PathBuf,
    /// Where each part's own credentials file goes, and whose it is (an install); `None`: the
    /// one file only (a development machine, `portal up`).
    pub part_files: Option<PartFiles>,
    /// Delete RabbitMQ's default user `guest` (`SETUP_DISABLE_GUEST`): an installed system
    /// needs it no more once every part has its own identity; a development machine keeps it
    /// for its administrative URL.
    pub disable_guest: bool,
}

/// What a setup did, for people (no secret in it).
#[derive(Debug, Default)]
pub struct SetupReport {
    pub created_roles: Vec<String>,
    pub created_users: Vec<String>,
    pub created_databases: Vec<String>,
    /// False when every password came from the existing credentials file.
    pub wrote_new_passwords: bool,
    /// Asked to delete `guest`: whether it was there (`None`: not asked).
    pub deleted_guest: Option<bool>,
    /// The per-part credentials files written, with their owners.
    pub part_files: Vec<(PathBuf, String)>,
}

/// The parts of an install that run as processes of their own (`portal <part>`, the
/// `portal@<part>` units), each under an OS user of its own with its own credentials file.
pub const PARTS: [&str; 7] = [
    "auth-service",
    "relay",
    "user-service",
    "appointment-service",
    "sync-admin",
    "gateway",
    "web",
];

/// What `part` runs with: (key in its file, key of the full file whose value it takes). Each
/// part's `AMQP_URL` is its own broker identity, so no fallback can reach another's; the
/// gateway and the web portal connect to neither server and hold no password.
fn part_entries(part: &str) -> &'static [(&'static str, &'static str)] {
    const MANAGED: (&str, &str) = ("MANAGED_BY_SETUP", "MANAGED_BY_SETUP");
    const TRUSTED: (&str, &str) = ("TRUSTED_PUBLISHERS", "TRUSTED_PUBLISHERS");
    match part {
        // The auth-service runs a relay inside unless told otherwise: the relay's broker
        // identity, with its own database role.
        "auth-service" => &[
            ("AUTH_DATABASE_URL", "AUTH_DATABASE_URL"),
            ("RELAY_AMQP_URL", "RELAY_AMQP_URL"),
            ("AMQP_URL", "RELAY_AMQP_URL"),
            MANAGED,
        ],
        // A relay of its own: the outbox only (`portal_relay`), never the users' table.
        "relay" => &[
            ("AUTH_DATABASE_URL", "RELAY_AUTH_DATABASE_URL"),
            ("RELAY_AMQP_URL", "RELAY_AMQP_URL"),
            ("AMQP_URL", "RELAY_AMQP_URL"),
            MANAGED,
        ],
        "user-service" => &[
            ("USER_DATABASE_URL", "USER_DATABASE_URL"),
            ("USER_SERVICE_AMQP_URL", "USER_SERVICE_AMQP_URL"),
            ("AMQP_URL", "USER_SERVICE_AMQP_URL"),
            TRUSTED,
            MANAGED,
        ],
        "appointment-service" => &[
            ("APPOINTMENT_DATABASE_URL", "APPOINTMENT_DATABASE_URL"),
            (
                "APPOINTMENT_SERVICE_AMQP_URL",
                "APPOINTMENT_SERVICE_AMQP_URL",
            ),
            ("AMQP_URL", "APPOINTMENT_SERVICE_AMQP_URL"),
            TRUSTED,
            MANAGED,
        ],
        "sync-admin" => &[
            ("OPERATOR_AUTH_DATABASE_URL", "OPERATOR_AUTH_DATABASE_URL"),
            ("OPERATOR_USER_DATABASE_URL", "OPERATOR_USER_DATABASE_URL"),
            (
                "OPERATOR_APPOINTMENT_DATABASE_URL",
                "OPERATOR_APPOINTMENT_DATABASE_URL",
            ),
            ("OPERATOR_AMQP_URL", "OPERATOR_AMQP_URL"),
            ("AMQP_URL", "OPERATOR_AMQP_URL"),
            TRUSTED,
            MANAGED,
        ],
        _ => &[MANAGED],
    }
}

/// Where the per-part credentials files go: `<dir>/<part>.env`, each owned by the OS user
/// `<owner_prefix><part>` (when the setup runs as root; otherwise they stay the caller's, as
/// on a development machine), mode 0400.
#[derive(Debug, Clone)]
pub struct PartFiles {
    pub dir: PathBuf,
    pub owner_prefix: String,
}

impl PartFiles {
    /// The file of `part`.
    pub fn path(&self, part: &str) -> PathBuf {
        self.dir.join(format!("{part}.env"))
    }

    /// Writes every part's file; returns (path, owner) for each.
    fn write(&self, creds: &Credentials) -> anyhow::Result<Vec<(PathBuf, String)>> {
        ensure_listable_dir(&self.dir)?;
        let as_root = nix::unistd::geteuid().is_root();
        let mut written = Vec::new();
        for part in PARTS {
            let owner = format!("{}{part}", self.owner_prefix);
            let ids = if as_root {
                let user = nix::unistd::User::from_name(&owner)
                    .with_context(|| format!("cannot look up the OS user {owner}"))?
                    .ok_or_else(|| {
                        anyhow!(
                            "the OS user {owner} does not exist: the package's postinst creates \
                             one per part (adduser --system --group {owner}); PART_USER_PREFIX \
                             names them"
                        )
                    })?;
                Some((user.uid, user.gid))
            } else {
                None
            };
            let path = self.path(part);
            creds.for_part(part).save_as(&path, ids, part)?;
            written.push((
                path,
                if as_root {
                    owner
                } else {
                    "this user".to_owned()
                },
            ));
        }
        Ok(written)
    }
}

/// Creates `dir` root-listable (0755) when absent: each part's user must reach its own file in
/// it, which is the secret (0400), not the names beside it.
fn ensure_listable_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        use std::os::unix::fs::PermissionsExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Under the setup unit's UMask=0077 the mode above comes out 0700: set it outright.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot open {} to the parts", dir.display()))?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(())
}

/// The generated credentials: `KEY=value` lines, the keys the `portal` settings read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials(pub BTreeMap<String, String>);

impl Credentials {
    /// Reads `path` (refusing one others may read); an absent file is empty credentials.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        if !path.exists() {
            return Ok(Self::default());
        }
        secret::check_private(path)?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let map = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok(Self(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// What `part` runs with, and nothing else (see [`PARTS`]).
    pub fn for_part(&self, part: &str) -> Credentials {
        Credentials(
            part_entries(part)
                .iter()
                .filter_map(|(key, from)| Some(((*key).to_owned(), self.0.get(*from)?.clone())))
                .collect(),
        )
    }

    /// Writes the file owner-only, replacing it atomically. A directory it creates is
    /// owner-only; an existing one keeps its mode (`/etc/portal` stays listable, so that each
    /// part's user reaches its own file in `credentials.d`).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        self.save_as(path, None, "")
    }

    /// [`Credentials::save`]; with `owner` (uid, gid), the file is handed to that user and
    /// made read-only (0400): a part's own file, which the part never writes. `part` names
    /// whose identities these are, in the file's header.
    fn save_as(
        &self,
        path: &Path,
        owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
        part: &str,
    ) -> anyhow::Result<()> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        secret::dir_for_secrets(dir)?;
        let mut text = if part.is_empty() {
            String::from(
                "# Written by `portal setup`: the identities the portal's services run under.\n\
                 # Owner-only: it holds passwords. Every portal command reads it (PORTAL_CREDENTIALS);\n\
                 # a variable set in the environment wins over the same one here.\n",
            )
        } else {
            format!(
                "# Written by `portal setup`: the identities of the {part}, and no other part's.\n\
                 # Readable by the {part}'s own user only; rewritten by every setup.\n"
            )
        };
        for (k, v) in &self.0 {
            text.push_str(&format!("{k}={v}\n"));
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("credentials");
        let tmp = dir.join(format!(".{name}-{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        secret::write_new_secret(&tmp, text.as_bytes())?;
        if let Some((uid, gid)) = owner {
            use std::os::unix::fs::PermissionsExt;
            std::os::unix::fs::chown(&tmp, Some(uid.as_raw()), Some(gid.as_raw()))
                .with_context(|| format!("cannot hand {} to its part's user", path.display()))?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400))
                .with_context(|| format!("cannot make {} read-only", path.display()))?;
        }
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    }
}

/// The credentials-file key of an identity's password: `PASSWORD_PG_AUTH_SERVICE`,
/// `PASSWORD_AMQP_PORTAL_RELAY` (kept so a later setup reuses it).
fn secret_key(kind: &str, name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PASSWORD_{kind}_{name}")
}

/// A new password: 32 letters and digits (about 190 bits), safe inside SQL and URLs.
pub(crate) fn new_password() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Names the setup puts into SQL and regular expressions: letters, digits, `_`, `-`, `.`.
fn check_name(name: &str) -> anyhow::Result<&str> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(name)
    } else {
        bail!("{name:?} is not a name the setup accepts (letters, digits, _ - . only)")
    }
}

/// `url` logging in as `user` with `password` to `path` (a database or a vhost).
/// `base` logging in as `user`, with `path` when given; each URL of a list (a broker cluster's
/// nodes) alike.
pub(crate) fn url_as(
    base: &str,
    user: &str,
    password: &str,
    path: Option<&str>,
) -> anyhow::Result<String> {
    platform::addresses::map(base, |base| {
        let mut url =
            Url::parse(base).with_context(|| format!("bad URL {}", secret::redact_url(base)))?;
        // The administrator's name or password given as query parameters (which libpq and sqlx
        // take) would override the part's own, or hand the part the administrator's password.
        if url.query_pairs().any(|(k, _)| is_credential(&k)) {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| !is_credential(k))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if kept.is_empty() {
                url.set_query(None);
            } else {
                url.query_pairs_mut().clear().extend_pairs(kept);
            }
        }
        url.set_username(user)
            .and_then(|()| url.set_password(Some(password)))
            .map_err(|()| anyhow!("cannot put credentials in {}", secret::redact_url(base)))?;
        if let Some(path) = path {
            url.set_path(&format!("/{path}"));
        }
        Ok(url.to_string())
    })
}

/// A query parameter naming who logs in or with what password.
fn is_credential(key: &str) -> bool {
    ["user", "password", "username"]
        .iter()
        .any(|k| key.eq_ignore_ascii_case(k))
}

/// RabbitMQ's default user: a new broker creates it with the password `guest` and every right,
/// the administrator tag included (by default it may log in from the broker's machine only).
pub const GUEST: &str = "guest";

/// Refuses a setup asked to delete `guest` that logs in as `guest` itself (ADMIN_AMQP_URL
/// names it, or names no user, and RabbitMQ's client then logs in as `guest`): it would lock
/// itself, and every later setup, out of the broker. Checked before anything is changed.
pub fn check_disable_guest(config: &SetupConfig) -> anyhow::Result<()> {
    if !config.disable_guest {
        return Ok(());
    }
    let admin =
        platform::amqp::broker_user_of(&config.admin_amqp_url).unwrap_or_else(|_| GUEST.to_owned());
    if admin == GUEST {
        bail!(
            "SETUP_DISABLE_GUEST=true, but ADMIN_AMQP_URL logs in as {GUEST}: deleting {GUEST} \
             would lock the setup out of RabbitMQ. Create an administrator first (rabbitmqctl \
             add_user NAME PASSWORD; rabbitmqctl set_user_tags NAME administrator; rabbitmqctl \
             set_permissions -p / NAME '.*' '.*' '.*'), name it in ADMIN_AMQP_URL, then run the \
             setup again"
        );
    }
    Ok(())
}

/// Deletes the broker user `user`, its permissions with it (RabbitMQ closes its connections),
/// unless it is `admin_user`, the one the management API is called as. Returns whether it
/// existed. The setup calls it for [`GUEST`]; tests, for a user of their own.
pub async fn disable_broker_user(
    management: &Management,
    user: &str,
    admin_user: &str,
) -> anyhow::Result<bool> {
    if user == admin_user {
        bail!(
            "will not delete the RabbitMQ user {user}: the setup is logged in as it \
             (ADMIN_AMQP_URL), and would lock itself out"
        );
    }
    let existed = management.users().await?.iter().any(|u| u == user);
    management.delete_user(user).await?;
    Ok(existed)
}

/// A key of the advisory lock that serialises setups (any process, any machine, one server).
const SETUP_LOCK: i64 = 0x706f_7274_616c_0002;

/// Runs the setup; see the module documentation.
pub async fn run(config: &SetupConfig) -> anyhow::Result<SetupReport> {
    check_disable_guest(config)?;
    let ids = &config.identities;
    for name in ids.pg_roles().into_iter().chain(ids.broker_users()).chain([
        config.auth_db.as_str(),
        config.user_db.as_str(),
        config.appointment_db.as_str(),
    ]) {
        check_name(name)?;
    }
    // The services' TLS rule for the administrator too: `verify-full` to another machine
    // unless the URL says otherwise.
    let mut admin =
        PgConnection::connect_with(&platform::db::connect_options(&config.admin_database_url)?)
            .await
            .with_context(|| {
                format!(
                    "cannot reach PostgreSQL as the administrator ({})",
                    secret::redact_url(&config.admin_database_url)
                )
            })?;
    // Held until the end: a second setup waits here, then finds (and reuses) what this one
    // wrote, passwords included.
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(SETUP_LOCK)
        .execute(&mut admin)
        .await?;
    let result = run_locked(config, &mut admin).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(SETUP_LOCK)
        .execute(&mut admin)
        .await
        .ok();
    admin.close().await.ok();
    result
}

async fn run_locked(config: &SetupConfig, admin: &mut PgConnection) -> anyhow::Result<SetupReport> {
    let ids = &config.identities;
    let mut report = SetupReport::default();
    let mut creds = Credentials::load(&config.credentials)?;
    let mut password = |key: String, report: &mut SetupReport| -> String {
        creds
            .0
            .entry(key)
            .or_insert_with(|| {
                report.wrote_new_passwords = true;
                new_password()
            })
            .clone()
    };
    let pg_passwords: Vec<(String, String)> = ids
        .pg_roles()
        .iter()
        .map(|role| {
            (
                (*role).to_owned(),
                password(secret_key("PG", role), &mut report),
            )
        })
        .collect();
    let broker_passwords: Vec<(String, String)> = ids
        .broker_users()
        .iter()
        .map(|user| {
            (
                (*user).to_owned(),
                password(secret_key("AMQP", user), &mut report),
            )
        })
        .collect();

    // --- PostgreSQL: roles, databases, schema owner, migrations, grants -------------------
    sqlx::query("SET password_encryption = 'scram-sha-256'")
        .execute(&mut *admin)
        .await?;
    for (role, pw) in &pg_passwords {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(role)
                .fetch_one(&mut *admin)
                .await?;
        let verb = if exists { "ALTER" } else { "CREATE" };
        sqlx::query(&format!(
            "{verb} ROLE \"{role}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{pw}'"
        ))
        .execute(&mut *admin)
        .await
        .with_context(|| format!("cannot {} role {role}", verb.to_lowercase()))?;
        if !exists {
            report.created_roles.push(role.clone());
        }
    }
    let pg_password = |role: &str| {
        pg_passwords
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    };
    for db in [&config.auth_db, &config.user_db, &config.appointment_db] {
        if platform::db::create_database_owned(&mut *admin, db, &ids.migrator).await? {
            report.created_databases.push(db.clone());
        }
        own_everything(&config.admin_database_url, db, &ids.migrator).await?;
        sqlx::query(&format!("REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC"))
            .execute(&mut *admin)
            .await?;
    }
    for (db, roles) in [
        (
            &config.auth_db,
            vec![&ids.auth_service, &ids.relay, &ids.operator],
        ),
        (&config.user_db, vec![&ids.user_service, &ids.operator]),
        (
            &config.appointment_db,
            vec![&ids.appointment_service, &ids.operator],
        ),
    ] {
        for role in roles {
            sqlx::query(&format!("GRANT CONNECT ON DATABASE \"{db}\" TO \"{role}\""))
                .execute(&mut *admin)
                .await?;
        }
    }
    let migrator = |db: &str| {
        url_as(
            &config.admin_database_url,
            &ids.migrator,
            &pg_password(&ids.migrator),
            Some(db),
        )
    };
    let pool = auth_service::prepare_database(&migrator(&config.auth_db)?, 1).await?;
    for grant in auth_service::grants(&ids.auth_service, &ids.operator)
        .into_iter()
        .chain(auth_service::relay_grants(&ids.relay))
    {
        sqlx::query(&grant).execute(&pool).await?;
    }
    // The system's own consumers, required: an offboarding waits for both to confirm. (A
    // further consumer is registered by `portal consumer add`; a registration changed there is
    // kept unless it is one of these two.)
    for (name, user) in [
        (USER_SERVICE, &ids.user_service_user),
        (APPOINTMENT_SERVICE, &ids.appointment_service_user),
    ] {
        auth_service::consumers::register(&pool, name, true, user).await?;
    }
    pool.close().await;
    let pool = user_service::prepare_database(&migrator(&config.user_db)?, 1).await?;
    for grant in user_service::grants(&ids.user_service, &ids.operator) {
        sqlx::query(&grant).execute(&pool).await?;
    }
    pool.close().await;
    let pool = appointment_service::prepare_database(&migrator(&config.appointment_db)?, 1).await?;
    for grant in appointment_service::grants(&ids.appointment_service, &ids.operator) {
        sqlx::query(&grant).execute(&pool).await?;
    }
    pool.close().await;

    // --- RabbitMQ: users, topology, permissions -------------------------------------------
    // A cluster's nodes share users, vhosts and credentials: the first URL says them.
    let admin_url = Url::parse(platform::addresses::first(&config.admin_amqp_url))
        .context("bad ADMIN_AMQP_URL")?;
    let vhost = percent_encoding::percent_decode_str(admin_url.path().trim_start_matches('/'))
        .decode_utf8_lossy()
        .into_owned();
    let vhost = if vhost.is_empty() {
        "/".to_owned()
    } else {
        vhost
    };
    let admin_user = platform::amqp::broker_user_of(&config.admin_amqp_url)
        .context("ADMIN_AMQP_URL: the management API is called as its user")?;
    let admin_password = percent_encoding::percent_decode_str(admin_url.password().unwrap_or(""))
        .decode_utf8_lossy()
        .into_owned();
    let management = Management::new(&config.management_url, &admin_user, &admin_password)?;
    let existing = management.users().await?;
    for (user, pw) in &broker_passwords {
        management.put_user(user, pw).await?;
        if !existing.contains(user) {
            report.created_users.push(user.clone());
        }
    }
    let consumers = [
        (
            ConsumerQueues::for_consumer(USER_SERVICE),
            &ids.user_service_user,
        ),
        (
            ConsumerQueues::for_consumer(APPOINTMENT_SERVICE),
            &ids.appointment_service_user,
        ),
    ];
    let all_queues: Vec<ConsumerQueues> = consumers.iter().map(|(q, _)| q.clone()).collect();
    platform::amqp::ensure_topology(&config.admin_amqp_url, &all_queues)
        .await
        .context("declaring the topology as the administrator")?;
    let exact = |name: &str| format!("^{}$", regex_escape(name));
    let either = |names: &[&str]| {
        format!(
            "^({})$",
            names
                .iter()
                .map(|n| regex_escape(n))
                .collect::<Vec<_>>()
                .join("|")
        )
    };
    let nothing = String::new();
    let events_keys = "^user\\..+$";
    // The auth-service's identity: user events (and a snapshot sent again to one late consumer,
    // `resend.<consumer>`), the saga's commands; it reads its control queue (receipts, replies).
    management
        .set_permissions(
            &vhost,
            &ids.relay_user,
            &Permissions {
                configure: nothing.clone(),
                write: either(&[EXCHANGE, CONTROL_EXCHANGE]),
                read: exact(&ControlQueue::of(AUTH_SERVICE).main),
            },
        )
        .await?;
    management
        .set_topic_permissions(
            &vhost,
            &ids.relay_user,
            EXCHANGE,
            "^(user|resend)\\..+$",
            "^$",
        )
        .await?;
    management
        .set_topic_permissions(
            &vhost,
            &ids.relay_user,
            CONTROL_EXCHANGE,
            "^command\\..+$",
            "^$",
        )
        .await?;
    for (queues, user) in &consumers {
        let rights = consumer_rights(queues);
        management
            .set_permissions(&vhost, user, &rights.permissions)
            .await?;
        management
            .set_topic_permissions(&vhost, user, CONTROL_EXCHANGE, &rights.control_keys, "^$")
            .await?;
    }
    management
        .set_permissions(
            &vhost,
            &ids.operator_user,
            &Permissions {
                configure: nothing,
                // Replays and requeues go to one consumer's queue through the default exchange;
                // unrouted events go back to the exchange. It reads what the control queues set
                // aside (`portal dlq --queue auth-service.control.dlq`) and the appointment
                // events no one has taken yet, and the retry queues, from which an erasure's
                // purge removes the person's messages (`ops::erasure`).
                write: format!("^(amq\\.default|{})$", regex_escape(EXCHANGE)),
                read: format!(
                    "^(.+\\.user-events(\\.dlq|\\.retry\\.[0-9a-z]+)?|.+\\.control\\.dlq|{}|{})$",
                    regex_escape(UNROUTED_QUEUE),
                    regex_escape(APPOINTMENT_UNROUTED)
                ),
            },
        )
        .await?;
    management
        .set_topic_permissions(&vhost, &ids.operator_user, EXCHANGE, events_keys, "^$")
        .await?;

    // --- The credentials file -------------------------------------------------------------
    let broker_password = |user: &str| {
        broker_passwords
            .iter()
            .find(|(u, _)| u == user)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    };
    let db_url = |role: &str, db: &str| {
        url_as(
            &config.admin_database_url,
            role,
            &pg_password(role),
            Some(db),
        )
    };
    let amqp_url = |user: &str| url_as(&config.admin_amqp_url, user, &broker_password(user), None);
    let entries = [
        (
            "AUTH_DATABASE_URL",
            db_url(&ids.auth_service, &config.auth_db)?,
        ),
        (
            "USER_DATABASE_URL",
            db_url(&ids.user_service, &config.user_db)?,
        ),
        (
            "APPOINTMENT_DATABASE_URL",
            db_url(&ids.appointment_service, &config.appointment_db)?,
        ),
        (
            "OPERATOR_APPOINTMENT_DATABASE_URL",
            db_url(&ids.operator, &config.appointment_db)?,
        ),
        (
            "OPERATOR_AUTH_DATABASE_URL",
            db_url(&ids.operator, &config.auth_db)?,
        ),
        // A relay of its own (`portal relay`, the relay part's AUTH_DATABASE_URL).
        (
            "RELAY_AUTH_DATABASE_URL",
            db_url(&ids.relay, &config.auth_db)?,
        ),
        (
            "OPERATOR_USER_DATABASE_URL",
            db_url(&ids.operator, &config.user_db)?,
        ),
        ("RELAY_AMQP_URL", amqp_url(&ids.relay_user)?),
        ("USER_SERVICE_AMQP_URL", amqp_url(&ids.user_service_user)?),
        (
            "APPOINTMENT_SERVICE_AMQP_URL",
            amqp_url(&ids.appointment_service_user)?,
        ),
        ("OPERATOR_AMQP_URL", amqp_url(&ids.operator_user)?),
        // Without an AMQP_URL of their own, commands fall back to the operator's.
        ("AMQP_URL", amqp_url(&ids.operator_user)?),
        ("MANAGED_BY_SETUP", "true".to_owned()),
        (
            "TRUSTED_PUBLISHERS",
            format!("{},{}", ids.relay_user, ids.operator_user),
        ),
    ];
    for (key, value) in entries {
        creds.0.insert(key.to_owned(), value);
    }
    creds.save(&config.credentials)?;
    if let Some(parts) = &config.part_files {
        report.part_files = parts.write(&creds)?;
    }
    // Last, once every part has its own identity, its rights and its credentials: nothing of
    // the system needs `guest` any more (and a failure here loses none of the above).
    if config.disable_guest {
        report.deleted_guest = Some(disable_broker_user(&management, GUEST, &admin_user).await?);
    }
    Ok(report)
}

/// Hands every table, sequence and function of `db`'s `public` schema (and the schema) to
/// `owner`: a database created earlier by another role (an older install, a restored backup) is
/// brought under the migration role, which alone changes the schema from then on.
async fn own_everything(admin_url: &str, db: &str, owner: &str) -> anyhow::Result<()> {
    let mut url = Url::parse(admin_url).context("bad ADMIN_DATABASE_URL")?;
    url.set_path(&format!("/{db}"));
    let mut conn = PgConnection::connect_with(&platform::db::connect_options(url.as_str())?)
        .await
        .with_context(|| format!("cannot reach {db} as the administrator"))?;
    let statements: Vec<String> = sqlx::query_scalar(
        "SELECT format('ALTER TABLE public.%I OWNER TO %I', c.relname, $1::text) \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') \
            AND pg_get_userbyid(c.relowner) <> $1 \
         UNION ALL \
         SELECT format('ALTER FUNCTION public.%I(%s) OWNER TO %I', p.proname, \
                       pg_get_function_identity_arguments(p.oid), $1::text) \
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
          WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> $1",
    )
    .bind(owner)
    .fetch_all(&mut conn)
    .await?;
    for statement in statements {
        // A table's sequences follow it (they are owned by its columns).
        sqlx::query(&statement).execute(&mut conn).await?;
    }
    sqlx::query(&format!("ALTER SCHEMA public OWNER TO \"{owner}\""))
        .execute(&mut conn)
        .await?;
    sqlx::query("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        .execute(&mut conn)
        .await?;
    conn.close().await.ok();
    Ok(())
}

/// What a consumer's broker user may do: the same shape for the setup's consumers and for
/// those `portal consumer add` creates (`ops::consumer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRights {
    /// Configure nothing; write to its set-aside exchange (its retry and dead-letter queues)
    /// and `portal.control`; read its own queue. The appointment-service also writes
    /// appointment events and reads its control queue (the saga's commands).
    pub permissions: Permissions,
    /// The routing keys it may publish with on `portal.control` (a topic permission): its own
    /// receipts (`receipt.<name>`); the appointment-service also its replies to the saga.
    pub control_keys: String,
}

/// The rights of the consumer whose queues are `queues` (its name is the queues' prefix).
pub fn consumer_rights(queues: &ConsumerQueues) -> ConsumerRights {
    let name = queues.consumer();
    let exact = |name: &str| format!("^{}$", regex_escape(name));
    let either = |names: &[&str]| {
        let names: Vec<String> = names.iter().map(|n| regex_escape(n)).collect();
        format!("^({})$", names.join("|"))
    };
    let control = ControlQueue::of(name);
    let (write, read, control_keys) = match name == APPOINTMENT_SERVICE {
        // Its receipts; it also replies to the saga, reads its commands and publishes
        // appointment events.
        true => (
            either(&[&queues.set_aside, CONTROL_EXCHANGE, APPOINTMENT_EXCHANGE]),
            either(&[&queues.main, &control.main]),
            format!(
                "^({}|reply\\.{}\\..+)$",
                regex_escape(&receipt_key(name)),
                regex_escape(AUTH_SERVICE)
            ),
        ),
        false => (
            either(&[&queues.set_aside, CONTROL_EXCHANGE]),
            exact(&queues.main),
            exact(&receipt_key(name)),
        ),
    };
    ConsumerRights {
        permissions: Permissions {
            configure: String::new(),
            write,
            read,
        },
        control_keys,
    }
}

/// `name` with the characters that mean something in a regular expression escaped.
fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let special = matches!(c, '.' | '-' | '+' | '*' | '?' | '(' | ')' | '[' | ']');
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part's URL keeps the administrator's server, port and TLS settings, never its name or
    /// password, wherever the administrator's URL carries them.
    #[test]
    fn a_parts_url_takes_the_servers_settings_but_not_the_administrators_credentials() {
        let url = url_as(
            "postgres://postgres:admin-pw@db.clinic.internal:5433/postgres?sslmode=verify-full&password=admin-pw&user=postgres",
            "auth_service",
            "part-pw",
            Some("auth_db"),
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://auth_service:part-pw@db.clinic.internal:5433/auth_db?sslmode=verify-full"
        );
        let url = url_as("postgres://h/postgres?PASSWORD=x", "a", "p", Some("d")).unwrap();
        assert_eq!(url, "postgres://a:p@h/d");
    }

    /// A further consumer's broker user (`portal consumer add`) has the user-service's shape:
    /// it configures nothing, reads its own queue, writes through its set-aside exchange and to
    /// `portal.control`, and there only its own receipts.
    #[test]
    fn a_further_consumer_may_read_its_queue_and_send_its_copies_and_receipts_only() {
        let rights = consumer_rights(&ConsumerQueues::for_consumer("pharmacy"));
        assert_eq!(rights.permissions.configure, "");
        assert_eq!(rights.permissions.read, "^pharmacy\\.user\\-events$");
        assert_eq!(
            rights.permissions.write,
            "^(pharmacy\\.user\\-events\\.set\\-aside|portal\\.control)$"
        );
        assert_eq!(rights.control_keys, "^receipt\\.pharmacy$");
        let appointments = consumer_rights(&ConsumerQueues::for_consumer(APPOINTMENT_SERVICE));
        assert!(appointments.control_keys.contains("reply"));
        assert!(appointments
            .permissions
            .read
            .contains("appointment\\-service\\.control"));
    }

    #[test]
    fn names_are_escaped_for_permissions_and_checked_for_sql() {
        assert_eq!(regex_escape("user.events"), "user\\.events");
        assert_eq!(
            regex_escape("user-service.user-events.set-aside"),
            "user\\-service\\.user\\-events\\.set\\-aside"
        );
        assert!(check_name("auth_service").is_ok());
        assert!(check_name("x\"; DROP ROLE postgres; --").is_err());
        assert!(check_name("").is_err());
    }

    /// Deleting `guest` while logged in as `guest` would lock the setup out: refused before
    /// anything is touched, whether the URL names guest or no user at all.
    #[test]
    fn a_setup_logged_in_as_guest_refuses_to_delete_guest() {
        let config = |admin_amqp_url: &str, disable_guest: bool| SetupConfig {
            admin_database_url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            admin_amqp_url: admin_amqp_url.into(),
            management_url: "http://127.0.0.1:15672".into(),
            auth_db: "auth_db".into(),
            user_db: "user_db".into(),
            appointment_db: "appointment_db".into(),
            identities: Identities::standard(),
            credentials: PathBuf::from("/nonexistent/credentials.env"),
            part_files: None,
            disable_guest,
        };
        for as_guest in [
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqp://127.0.0.1:5672/%2f",
            "amqps://guest:pw@mq1.clinic.internal:5671/%2f,amqps://admin:pw@mq2:5671/%2f",
        ] {
            let e = check_disable_guest(&config(as_guest, true))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("SETUP_DISABLE_GUEST")
                    && e.contains("ADMIN_AMQP_URL")
                    && e.contains("lock"),
                "{e}"
            );
            check_disable_guest(&config(as_guest, false)).unwrap();
        }
        check_disable_guest(&config(
            "amqps://admin:pw@mq.clinic.internal:5671/%2f",
            true,
        ))
        .unwrap();
    }

    /// Each part's file holds its own identities only: no part gets another's password, the
    /// gateway and the web portal none, and every broker part's AMQP_URL is its own.
    #[test]
    fn each_part_gets_its_own_identities_only() {
        let mut all = Credentials::default();
        for (key, value) in [
            ("AUTH_DATABASE_URL", "postgres://auth_service:A@h/auth_db"),
            ("USER_DATABASE_URL", "postgres://user_service:U@h/user_db"),
            (
                "APPOINTMENT_DATABASE_URL",
                "postgres://appointment_service:P@h/a",
            ),
            (
                "OPERATOR_AUTH_DATABASE_URL",
                "postgres://portal_operator:O@h/auth_db",
            ),
            (
                "OPERATOR_USER_DATABASE_URL",
                "postgres://portal_operator:O@h/user_db",
            ),
            (
                "OPERATOR_APPOINTMENT_DATABASE_URL",
                "postgres://portal_operator:O@h/a",
            ),
            ("RELAY_AMQP_URL", "amqp://portal-relay:R@h/%2f"),
            (
                "USER_SERVICE_AMQP_URL",
                "amqp://portal-user-service:US@h/%2f",
            ),
            (
                "APPOINTMENT_SERVICE_AMQP_URL",
                "amqp://portal-appointment-service:AS@h/%2f",
            ),
            ("OPERATOR_AMQP_URL", "amqp://portal-operator:OP@h/%2f"),
            ("AMQP_URL", "amqp://portal-operator:OP@h/%2f"),
            (
                "RELAY_AUTH_DATABASE_URL",
                "postgres://portal_relay:RD@h/auth_db",
            ),
            ("MANAGED_BY_SETUP", "true"),
            ("TRUSTED_PUBLISHERS", "portal-relay,portal-operator"),
            ("PASSWORD_PG_AUTH_SERVICE", "A"),
            ("PASSWORD_AMQP_PORTAL_RELAY", "R"),
        ] {
            all.0.insert(key.into(), value.into());
        }
        let keys = |part: &str| all.for_part(part).0.into_keys().collect::<Vec<_>>();
        let secrets = |part: &str| {
            all.for_part(part)
                .0
                .values()
                .flat_map(|v| {
                    ["A@", "U@", "P@", "O@", "R@", "US@", "AS@", "OP@", "RD@"]
                        .into_iter()
                        .filter(|s| v.contains(&format!(":{s}")))
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect::<std::collections::BTreeSet<_>>()
        };
        for part in ["gateway", "web"] {
            assert_eq!(keys(part), ["MANAGED_BY_SETUP"], "{part}");
        }
        assert_eq!(
            secrets("user-service").into_iter().collect::<Vec<_>>(),
            ["U@", "US@"]
        );
        assert_eq!(
            secrets("auth-service").into_iter().collect::<Vec<_>>(),
            ["A@", "R@"]
        );
        assert_eq!(
            secrets("sync-admin").into_iter().collect::<Vec<_>>(),
            ["O@", "OP@"]
        );
        // A relay of its own reaches the outbox as portal_relay, not as the auth-service.
        assert_eq!(
            secrets("relay").into_iter().collect::<Vec<_>>(),
            ["R@", "RD@"]
        );
        assert_eq!(
            all.for_part("appointment-service").get("AMQP_URL"),
            Some("amqp://portal-appointment-service:AS@h/%2f")
        );
        for part in PARTS {
            assert!(
                !keys(part).iter().any(|k| k.starts_with("PASSWORD_")),
                "{part}"
            );
        }
    }

    #[test]
    fn credentials_round_trip_owner_only() {
        let dir = std::env::temp_dir().join(format!("creds-test-{}", new_password()));
        let path = dir.join("credentials.env");
        let mut creds = Credentials::default();
        creds.0.insert(
            "AUTH_DATABASE_URL".into(),
            "postgres://a:b@h/auth_db".into(),
        );
        creds.save(&path).unwrap();
        assert_eq!(Credentials::load(&path).unwrap(), creds);
        assert!(secret::check_private(&path).is_ok());
        assert_eq!(new_password().len(), 32);
        std::fs::remove_dir_all(dir).ok();
    }
}
