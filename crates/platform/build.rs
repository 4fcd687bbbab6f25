//! Records the git commit the binaries are built from, for `--version` and build info: the
//! `PORTAL_GIT_COMMIT` variable (`unknown` outside a git checkout, e.g. a source tarball).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PORTAL_GIT_COMMIT={commit}");
    // Built again when HEAD moves: a new commit, a checkout, a branch that advances (its loose
    // ref under refs/heads, or packed-refs once `git pack-refs` moved it there). Only paths that
    // exist are named: cargo takes a missing file for a changed one, and would run this script
    // (and compile every crate above `platform`) on every build.
    for name in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name]) {
            if std::path::Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
