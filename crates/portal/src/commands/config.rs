//! `portal config check`: each part's settings read as `portal <part>` would read them now,
//! checked (clap's own checks, then every URL parsed, then the plaintext rule: no `amqp://` or
//! `http://` to another machine without ALLOW_PLAINTEXT_NETWORK), and printed with where each
//! value came from, secrets redacted. What a person runs after editing an environment file,
//! before restarting anything.
//!
//! Under the least-privilege setup (MANAGED_BY_SETUP) it also holds each part to the identity
//! `portal setup` wrote for it: a database or broker URL the environment sets in place of the
//! credentials file's (a superuser's, say) is a problem, found offline. With `--connect` it
//! also logs in with each URL and asks who that is (`platform::privilege`).

use super::Failure;
use crate::cli::{Cli, Command, ConfigCommand, Part};
use crate::settings::{Origin, Sources};
use anyhow::anyhow;
use clap::parser::ValueSource;
use clap::CommandFactory;
use platform::privilege::{Finding, Identity, Kind};

pub async fn run(command: ConfigCommand, sources: &Sources) -> Result<(), Failure> {
    let ConfigCommand::Check { part, connect } = command;
    let mut problems = Vec::new();
    match (&sources.path, sources.found) {
        (None, _) => println!("credentials file: none (PORTAL_CREDENTIALS=none)"),
        (Some(path), true) => println!("credentials file: {} (read)", path.display()),
        (Some(path), false) => {
            println!("credentials file: {} (absent)", path.display());
            if let Err(e) = sources.require_named_file() {
                problems.push(format!("{e:#}"));
            }
        }
    }
    let parts = match part {
        Some(part) => vec![part],
        None => Part::ALL.to_vec(),
    };
    for part in parts {
        match check(part, sources, connect).await {
            Ok(lines) => {
                println!("{}: ok", part.command());
                for line in lines {
                    println!("  {line}");
                }
            }
            Err(errors) => {
                for error in errors {
                    println!("{}: {error}", part.command());
                    problems.push(format!("{}: {error}", part.command()));
                }
            }
        }
    }
    match problems.len() {
        0 => Ok(()),
        n => Err(anyhow!(
            "{n} problem{} in the settings",
            if n == 1 { "" } else { "s" }
        )
        .into()),
    }
}

/// The effective settings of `part`, one line each, or what is wrong with them; `connect`:
/// and who its database and broker URLs log in as.
async fn check(part: Part, sources: &Sources, connect: bool) -> Result<Vec<String>, Vec<String>> {
    let name = part.command();
    let (cli, matches) = sources
        .parse_from(["portal", name])
        .map_err(|e| vec![first_line(&e.to_string())])?;
    let command = sources.apply(Cli::command());
    let (Some(definition), Some(matches)) = (
        command.find_subcommand(name),
        matches.subcommand_matches(name),
    ) else {
        return Err(vec![format!("no command {name}")]);
    };
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for arg in definition.get_arguments() {
        let Some(var) = arg.get_env().and_then(|v| v.to_str()) else {
            continue;
        };
        let id = arg.get_id().as_str();
        let value: Option<String> = matches.get_raw(id).map(|values| {
            values
                .map(|v| v.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(",")
        });
        if let Some(value) = &value {
            if let Err(e) = valid_url(var, value) {
                errors.push(format!("{var}: {e}"));
            }
        }
        let shown = match &value {
            None => "(not set)".to_owned(),
            Some(v) if arg.is_hide_env_values_set() && v.contains("://") => {
                platform::secret::redact_url(v)
            }
            Some(_) if arg.is_hide_env_values_set() => "***".to_owned(),
            Some(v) => v.clone(),
        };
        let origin = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_owned(),
            Some(ValueSource::EnvVariable) => "environment".to_owned(),
            _ => match sources.origin(var) {
                Origin::File => "credentials file".to_owned(),
                Origin::Fallback(from) => format!("from {from}"),
                Origin::Environment | Origin::Default => "default".to_owned(),
            },
        };
        lines.push(format!("{var:<34} {shown}  ({origin})"));
    }
    // What the part would refuse at start (exit 64): a plaintext URL to another machine
    // without ALLOW_PLAINTEXT_NETWORK. Only for settings that parse (else said above already).
    if errors.is_empty() {
        if let Some((network, links)) = cli.command.links() {
            if let Err(e) = network.verdict(&links) {
                errors.push(format!("{e:#}"));
            }
        }
    }
    let managed = managed_by_setup(&cli.command);
    if managed {
        for (var, fallback) in identity_settings(part) {
            if let Some(from) = overridden(sources, var, *fallback) {
                errors.push(format!(
                    "{from} from the environment overrides the identity `portal setup` wrote \
                     for this part"
                ));
            }
        }
    }
    if connect && errors.is_empty() {
        for (setting, kind, url) in connections(&cli.command) {
            match who(setting, kind, &url).await {
                Finding::Privileged { who, what } if managed => errors.push(format!(
                    "{setting} connects as `{who}`, {what}: run with the identity `portal \
                     setup` wrote; {}",
                    fix(sources, setting)
                )),
                Finding::Privileged { who, what } => lines.push(format!(
                    "{setting:<34} connects as `{who}`, {what} (not under the setup)"
                )),
                Finding::Limited { who } => {
                    lines.push(format!("{setting:<34} connects as `{who}`, not privileged"))
                }
                Finding::Unknown(why) => lines.push(format!("{setting:<34} cannot tell: {why}")),
            }
        }
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

/// A URL setting that does not parse is named before a service fails on it at start. The
/// parsers' own messages are not repeated: some quote the whole URL, password included.
fn valid_url(var: &str, value: &str) -> anyhow::Result<()> {
    if !var.ends_with("_URL") || value == "none" {
        return Ok(());
    }
    for url in platform::addresses::split(value) {
        let valid = if var.ends_with("DATABASE_URL") {
            platform::db::database_name(url).is_ok()
        } else if var.ends_with("AMQP_URL") {
            url.parse::<lapin::uri::AMQPUri>().is_ok()
        } else {
            url::Url::parse(url).is_ok()
        };
        if !valid {
            let kind = if var.ends_with("DATABASE_URL") {
                "a PostgreSQL URL naming a database, e.g. postgres://user:password@host:5432/auth_db"
            } else if var.ends_with("AMQP_URL") {
                "an AMQP URL, e.g. amqp://user:password@host:5672/%2f"
            } else {
                "a URL"
            };
            // The value itself is not shown: a mistyped URL hides its password from redaction.
            return Err(anyhow!("the value is not {kind}"));
        }
    }
    Ok(())
}

/// Whether `command`, a part, runs under the least-privilege setup (MANAGED_BY_SETUP as it
/// reads it).
fn managed_by_setup(command: &Command) -> bool {
    match command {
        Command::AuthService(c) => c.settings.setup.managed_by_setup,
        Command::Relay(c) => c.setup.managed_by_setup,
        Command::UserService(c) => c.setup.managed_by_setup,
        Command::AppointmentService(c) => c.setup.managed_by_setup,
        Command::SyncAdmin(c) => c.setup.managed_by_setup,
        _ => false,
    }
}

/// The URL settings `part` connects with, each with the one it reads when that is unset: those
/// `portal setup` writes the part's identity to (`ops::setup`).
fn identity_settings(part: Part) -> &'static [(&'static str, Option<&'static str>)] {
    match part {
        Part::AuthService | Part::Relay => &[
            ("AUTH_DATABASE_URL", None),
            ("RELAY_AMQP_URL", Some("AMQP_URL")),
        ],
        Part::UserService => &[
            ("USER_DATABASE_URL", None),
            ("USER_SERVICE_AMQP_URL", Some("AMQP_URL")),
        ],
        Part::AppointmentService => &[
            ("APPOINTMENT_DATABASE_URL", None),
            ("APPOINTMENT_SERVICE_AMQP_URL", Some("AMQP_URL")),
        ],
        // As `ops::settings::FALLBACKS` has them.
        Part::SyncAdmin => &[
            ("OPERATOR_AUTH_DATABASE_URL", Some("AUTH_DATABASE_URL")),
            ("OPERATOR_USER_DATABASE_URL", Some("USER_DATABASE_URL")),
            (
                "OPERATOR_APPOINTMENT_DATABASE_URL",
                Some("APPOINTMENT_DATABASE_URL"),
            ),
            ("OPERATOR_AMQP_URL", Some("AMQP_URL")),
        ],
        Part::Gateway | Part::Web => &[],
    }
}

/// The variable of the environment that puts another identity in place of the one the
/// credentials file holds for `var` (or, when it holds none, for `fallback`): the part reads
/// `var` from the environment, else from the file, else `fallback` likewise. `None` when the
/// file holds no identity for it, or the part connects with the file's.
fn overridden(
    sources: &Sources,
    var: &'static str,
    fallback: Option<&'static str>,
) -> Option<&'static str> {
    let written = sources
        .file_value(var)
        .or_else(|| fallback.and_then(|f| sources.file_value(f)))?;
    let from_environment = |v: &'static str| std::env::var(v).ok().map(|value| (value, v));
    let (value, from) = match (from_environment(var), sources.file_value(var), fallback) {
        (Some(set), _, _) => set,
        (None, Some(_), _) | (None, None, None) => return None,
        (None, None, Some(fallback)) => from_environment(fallback)?,
    };
    (value != written).then_some(from)
}

/// How to put the setup's identity back in `setting`, by where its value comes from.
fn fix(sources: &Sources, setting: &str) -> String {
    match sources.origin(setting) {
        Origin::Environment => format!("unset {setting} in the environment"),
        Origin::File => format!(
            "the credentials file itself names it in {setting}: run `portal setup` to write \
             the part's own"
        ),
        Origin::Fallback(from) => format!("{setting} is unset and {from} is not the part's"),
        Origin::Default => format!("{setting} is unset: its default is the administrator's"),
    }
}

/// The database and broker URLs `command`, a part, connects with, each with its setting.
fn connections(command: &Command) -> Vec<(&'static str, Kind, String)> {
    let pg = |setting: &'static str, url: &str| (setting, Kind::Postgres, url.to_owned());
    let broker = |link: platform::settings::Link| (link.setting, Kind::Rabbitmq, link.urls);
    match command {
        Command::AuthService(c) => {
            let s = &c.settings;
            vec![
                pg("AUTH_DATABASE_URL", &s.db.auth_database_url),
                broker(s.relay.broker_link(&s.broker.amqp_url)),
            ]
        }
        Command::Relay(c) => vec![
            pg("AUTH_DATABASE_URL", &c.db.auth_database_url),
            broker(c.relay.broker_link(&c.broker.amqp_url)),
        ],
        Command::UserService(c) => vec![
            pg("USER_DATABASE_URL", &c.db.user_database_url),
            broker(c.service.broker_link(&c.broker)),
        ],
        Command::AppointmentService(c) => vec![
            pg("APPOINTMENT_DATABASE_URL", &c.db.appointment_database_url),
            broker(c.service.broker_link(&c.broker)),
        ],
        Command::SyncAdmin(c) => {
            let o = &c.operator;
            vec![
                pg("OPERATOR_AUTH_DATABASE_URL", &o.operator_auth_database_url),
                pg("OPERATOR_USER_DATABASE_URL", &o.operator_user_database_url),
                pg(
                    "OPERATOR_APPOINTMENT_DATABASE_URL",
                    &o.operator_appointment_database_url,
                ),
                broker(o.broker_link()),
            ]
        }
        _ => Vec::new(),
    }
}

/// Who `url` (of `setting`) logs in as, and whether that is a superuser or an administrator.
async fn who(setting: &'static str, kind: Kind, url: &str) -> Finding {
    match kind {
        Kind::Rabbitmq => platform::privilege::inspect(&Identity::rabbitmq(setting, url)).await,
        Kind::Postgres => match platform::db::lazy_pool(url, 1) {
            Ok(pool) => {
                let finding =
                    platform::privilege::inspect(&Identity::postgres(setting, &pool)).await;
                pool.close().await;
                finding
            }
            Err(e) => Finding::Unknown(format!("{e:#}")),
        },
    }
}

/// The first line of clap's error, without its `error: ` (the rest is usage and help).
pub(crate) fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim_start_matches("error: ")
        .to_owned()
}
