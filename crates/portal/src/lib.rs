//! The `portal` command line: runs the services (together or alone), seeds, and verifies that
//! `user_db` matches `auth_db`.
//!
//! Layout:
//! - [`cli`]: the commands and their environment-backed settings (defaults shown in `--help`).
//! - [`commands`]: one module per command.
//!
//! The recovery tools themselves (verify, reconcile, replay) are the `ops` crate.

pub mod cli;
pub mod commands;
