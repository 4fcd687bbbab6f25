//! The `portal` command line: runs the services (together or alone), seeds, and verifies that
//! `user_db` matches `auth_db`.
//!
//! Layout:
//! - [`cli`]: the commands and their environment-backed settings (defaults shown in `--help`).
//! - [`commands`]: one module per command.
//! - [`bench`]: `portal bench`, the end-to-end benchmark in its own databases and vhost.
//! - [`chaos`]: the chaos run (`portal chaos`), faults injected under load, then verify.
//!
//! The recovery tools themselves (verify, reconcile, replay) are the `ops` crate.

pub mod bench;
pub mod chaos;
pub mod cli;
pub mod commands;
pub mod rabbit_admin;
