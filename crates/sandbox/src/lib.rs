//! Private worlds for the tests, the benchmark and the chaos run, so each can run beside
//! anything else on the same servers and leave nothing behind.
//!
//! Layout:
//! - [`args`]: the server settings of the tools that build their own sandbox.
//! - [`backup`]: a sandbox's database dumped with `pg_dump -Fc` and restored with `pg_restore`,
//!   as `docs/operations.md` backs up and restores an install.
//! - [`world`]: a [`Sandbox`]: databases `<base>_<name>`, a RabbitMQ vhost, a JWT key pair and a
//!   work directory, all removed by [`Sandbox::cleanup`] (or on drop).
//! - [`process`]: services as child processes of the `portal` binary on free ports, with
//!   readiness checks, logs, SIGTERM / SIGKILL and peak memory.
//! - [`in_process`]: a service running inside the test process, stopped like SIGTERM does.
//! - [`servers`]: a private PostgreSQL server and a private RabbitMQ node, for tests that stop,
//!   kill or restart a server.
//! - [`proxy`]: a TCP proxy whose link can be cut and restored.
//! - [`poll`]: waiting with a deadline instead of sleeping.
//! - [`logs`]: the lines the code under test logged on the test's thread (security events).
//! - [`http`], [`amqp`], [`events`], [`db`]: what tests of every crate do with the servers:
//!   JSON requests read as status and body, bodies published straight to a queue, user events
//!   written by hand, counts read from a database.
//! - [`auth`], [`users`], [`appointments`]: each service's test helpers, for its own tests and
//!   the whole system's: its configuration on a sandbox, started in-process, a pool on its
//!   database, and what its tests do to it (users written through the store, logins, events
//!   published straight to a consumer's queue, tokens signed with the sandbox's key).
//! - [`system`]: the one builder every test starts the system, or any part of it, with:
//!   [`System::builder`]`(&sb).users().gateway().start()` and so on, seeded and backfilled on
//!   request, with pools on the databases and the checks the tests share.
//!
//! The typed HTTP client the tests and tools drive the API with is [`api_client::ApiClient`],
//! re-exported here.

pub mod amqp;
pub mod appointments;
pub mod args;
pub mod auth;
pub mod backup;
pub mod db;
pub mod events;
pub mod http;
pub mod in_process;
pub mod logs;
pub mod poll;
pub mod process;
pub mod proxy;
pub mod servers;
pub mod system;
pub mod unit;
pub mod users;
pub mod world;

pub use api_client::ApiClient;
pub use args::ServerArgs;
pub use in_process::Running;
/// The RabbitMQ management API client (production code: the least-privilege setup uses it).
pub use platform::rabbit_admin as management;
pub use poll::{poll_until, wait_for_user_version, SETTLE};
pub use system::{System, SystemBuilder};
pub use world::{Sandbox, Servers};

/// The password every account that tests and tools create for themselves is given.
pub const TEST_PASSWORD: &str = "correct-horse-battery";

/// Logs of the code under test go to the test's output (`warn` unless `RUST_LOG` says more).
pub fn init_test_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}
