//! `portal bench` and `portal chaos`: the benchmark and the chaos run are programs of their own
//! (`portal-bench`, `portal-chaos`), so none of their code is in this production binary. These
//! commands keep the users' commands working: they run the program installed beside this one,
//! with the same settings and this binary as the one whose services it starts.

use super::Failure;
use crate::cli::Settings;
use anyhow::{anyhow, Context};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Replaces this process with `portal-<tool> <args>`; returns only when that cannot start.
pub fn exec(s: &Settings, tool: &str, args: &[OsString]) -> Result<(), Failure> {
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
    let admin_or = |var: &str, default: &str, own: &str| {
        if s.managed_by_setup {
            std::env::var(var).unwrap_or_else(|_| default.to_owned())
        } else {
            own.to_owned()
        }
    };
    let database = admin_or(
        "ADMIN_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
        &s.auth_database_url,
    );
    let amqp = admin_or(
        "ADMIN_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        &s.amqp_url,
    );
    let error = Command::new(&program)
        .args(args)
        .env("AUTH_DATABASE_URL", &database)
        .env("USER_DATABASE_URL", &database)
        .env("AMQP_URL", &amqp)
        // Its services are its own: they must not read this install's credentials file.
        .env("PORTAL_CREDENTIALS", "none")
        .env("RELAY_BATCH_SIZE", s.relay_batch_size.to_string())
        .env("RELAY_IN_FLIGHT", s.relay_in_flight.to_string())
        .env("CONSUMER_PREFETCH", s.consumer_prefetch.to_string())
        .env("CONSUMER_BATCH_SIZE", s.consumer_batch_size.to_string())
        .env("PORTAL_BIN", &me)
        .exec();
    Err(anyhow!("cannot run {}: {error}", program.display()).into())
}
