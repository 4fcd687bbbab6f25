//! `portal config check`: each part's settings read as `portal <part>` would read them now,
//! checked (clap's own checks, then every URL parsed, then the plaintext rule: no `amqp://` or
//! `http://` to another machine without ALLOW_PLAINTEXT_NETWORK), and printed with where each
//! value came from, secrets redacted. What a person runs after editing an environment file,
//! before restarting anything.

use super::Failure;
use crate::cli::{Cli, ConfigCommand, Part};
use crate::settings::{Origin, Sources};
use anyhow::anyhow;
use clap::parser::ValueSource;
use clap::CommandFactory;

pub fn run(command: ConfigCommand, sources: &Sources) -> Result<(), Failure> {
    let ConfigCommand::Check { part } = command;
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
        match check(part, sources) {
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

/// The effective settings of `part`, one line each, or what is wrong with them.
fn check(part: Part, sources: &Sources) -> Result<Vec<String>, Vec<String>> {
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

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .trim_start_matches("error: ")
        .to_owned()
}
