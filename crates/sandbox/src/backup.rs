//! A sandbox's databases backed up and restored with PostgreSQL's own tools, the way
//! `docs/operations.md` tells an operator to: `pg_dump -Fc` of one database, and `pg_restore`
//! into that database recreated empty, without the dump's owners and grants (on an install,
//! `portal setup` puts its own back).

use crate::Sandbox;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// `tool` (`pg_dump`, `pg_restore`) of the newest PostgreSQL under `/usr/lib/postgresql`, else
/// the one on `PATH`: a dump needs a client at least as new as the server, and Debian's wrapper
/// on `PATH` may pick an older one when several are installed.
pub fn pg_tool(tool: &str) -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let path = entry.path().join("bin").join(tool);
            path.is_file().then_some((major, path))
        })
        .max_by_key(|(major, _)| *major);
    newest.map_or_else(|| PathBuf::from(tool), |(_, path)| path)
}

/// Runs `cmd` with only the caller's `PATH` (its connection is all in its arguments) and fails
/// with its standard error when it does.
async fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = crate::process::isolated_async(cmd)
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `pg_dump -Fc` of the sandbox's database `name` into `file`, as the server's administrator.
pub async fn dump(sb: &Sandbox, name: &str, file: &Path) -> anyhow::Result<()> {
    run(
        Command::new(pg_tool("pg_dump"))
            .arg("--format=custom")
            .arg("--file")
            .arg(file)
            .arg(sb.database_url(name)),
        &format!("pg_dump of {name}"),
    )
    .await
}

/// Drops the sandbox's database `name` (ending its connections: stop what uses it first),
/// creates it empty and restores `file` into it as the server's administrator, without the
/// dump's owners and grants: everything is the administrator's until the setup hands it to
/// the migration role and grants each part its rights again.
pub async fn restore(sb: &Sandbox, name: &str, file: &Path) -> anyhow::Result<()> {
    let url = sb.recreate_database(name).await?;
    run(
        Command::new(pg_tool("pg_restore"))
            .args(["--no-owner", "--no-acl", "--exit-on-error", "--dbname"])
            .arg(url)
            .arg(file),
        &format!("pg_restore of {name}"),
    )
    .await
}
