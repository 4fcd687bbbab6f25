//! The `portal` command line: runs the services (together or alone), seeds, and verifies that
//! every copy matches `auth_db`.
//!
//! Layout:
//! - [`cli`]: the commands, each flattening the settings groups of the parts it runs (defined
//!   next to each part; defaults shown in `--help`).
//! - [`settings`]: where settings come from (flag, environment, credentials file, fallback,
//!   default), read into the command line without touching the process's environment.
//! - [`commands`]: one module per command.
//!
//! The recovery tools themselves (verify, reconcile, replay) are the `ops` crate.

pub mod cli;
pub mod commands;
pub mod settings;
