//! `portal bench` and `portal chaos`: the benchmark and the chaos run are programs of their own
//! (`portal-bench`, `portal-chaos`), so none of their code is in this production binary. These
//! commands keep the users' commands working: they run the program installed beside this one,
//! with the same settings and this binary as the one whose services it starts.

use super::Failure;
use crate::settings::Sources;
use anyhow::{anyhow, Context};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Replaces this process with `portal-<tool> <args>`; returns only when that cannot start.
/// The tool gets the servers to make its own databases and vhost on, nothing of the install's
/// identities: its services are its own.
pub fn exec(sources: &Sources, tool: &str, args: &[OsString]) -> Result<(), Failure> {
    let me = std::env::current_exe().context("cannot find this executable")?;
    let program = me.with_file_name(format!("portal-{tool}"));
    if !program.is_file() {
        return Err(anyhow!(
            "portal {tool} runs {}, which is not installed beside portal; build it with \
             `cargo build --release -p {tool}` (or run `cargo build --release`)",
            program.display()
        )
        .into());
    }
    // The tools make databases and vhosts of their own: under the least-privilege setup the
    // services' identities may not, so they get the administrative credentials instead.
    let managed_by_setup = sources
        .get("MANAGED_BY_SETUP")
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let (database, amqp) = if managed_by_setup {
        (
            sources
                .get("ADMIN_DATABASE_URL")
                .unwrap_or_else(|| crate::cli::DEFAULT_ADMIN_DATABASE_URL.to_owned()),
            sources
                .get("ADMIN_AMQP_URL")
                .unwrap_or_else(|| platform::settings::DEFAULT_AMQP_URL.to_owned()),
        )
    } else {
        (
            sources
                .get("AUTH_DATABASE_URL")
                .unwrap_or_else(|| auth_service::settings::DEFAULT_DATABASE_URL.to_owned()),
            sources
                .get("AMQP_URL")
                .unwrap_or_else(|| platform::settings::DEFAULT_AMQP_URL.to_owned()),
        )
    };
    let error = Command::new(&program)
        .args(args)
        .env("AUTH_DATABASE_URL", &database)
        .env("AMQP_URL", &amqp)
        .env("PORTAL_BIN", &me)
        .exec();
    Err(anyhow!("cannot run {}: {error}", program.display()).into())
}
