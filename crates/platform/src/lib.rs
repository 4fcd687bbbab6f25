//! Plumbing the services share, so each service's code is only about its own job.
//!
//! Layout:
//! - [`addresses`]: comma-separated lists of URLs (a broker cluster's nodes, a service's
//!   replicas).
//! - [`duration`]: durations as people write them (`90s`, `15m`, `1h 30m`).
//! - [`exit`]: exit codes every binary shares (0, 1 failed, 2 unreachable, 64 usage), and
//!   command-line parsing that keeps to them.
//! - [`db`]: create a database if absent, open a pool with timeouts.
//! - [`erasure`]: keyed fingerprints of an erased person's data, and the search for them.
//! - [`migrations`]: where a database's schema stands against a binary's migrations (pending,
//!   unknown to it, edited after they ran).
//! - [`build`]: the version and git commit of this build.
//! - [`amqp`]: connect to RabbitMQ on tokio; declare the user-event topology idempotently.
//! - [`jwt`]: the Ed25519 key pair and its rotation (retired keys withdrawn after their kept
//!   time), signing (auth-service only), and verification (everyone: keys fetched again on a
//!   timer, lifetimes capped), with a cache of tokens already verified.
//! - [`memory`]: malloc returns large buffers to the system when they are freed.
//! - [`client_addr`]: the client's address (the peer, or `X-Forwarded-For` behind our proxy).
//! - [`hardening`]: security headers on every answer, a log line per 401/403.
//! - [`http`]: the JSON error type, a JSON extractor with JSON rejections, the auth extractor,
//!   health answers and serving until shutdown within [`http::Limits`] (the accept loop, with
//!   its timeouts and per-address connection cap, is the private `connections` module).
//! - [`metrics`]: a Prometheus registry per service, `GET /metrics`, the HTTP layer that counts
//!   requests and writes access lines.
//! - [`trace`]: one W3C trace id from the gateway's request to each consumer's apply.
//! - [`backoff`]: capped exponential backoff with jitter for reconnect loops.
//! - [`privilege`]: whether a part connects as a PostgreSQL superuser or a RabbitMQ
//!   administrator while the least-privilege setup manages the install (said loudly, gauged).
//! - [`rabbit_admin`]: the RabbitMQ management API (users, permissions, vhosts, connections).
//! - [`secret`]: URLs without passwords for messages; owner-only files and directories.
//! - [`settings`]: the settings several parts read (broker, setup state, where the
//!   auth-service is, the tokens' lifetime, the key refresh, plaintext to other machines) as
//!   `clap` groups, with their defaults defined once.
//! - [`service`]: the `Service` trait every service's `Application` implements.
//! - [`shutdown`]: SIGTERM / Ctrl-C as a cancellation token.
//! - [`telemetry`]: tracing set-up.

pub mod addresses;
pub mod amqp;
pub mod backoff;
pub mod build;
pub mod client_addr;
mod connections;
pub mod control;
pub mod db;
pub mod duration;
pub mod erasure;
pub mod exit;
pub mod hardening;
pub mod http;
pub mod jwt;
pub mod memory;
pub mod metrics;
pub mod migrations;
pub mod privilege;
pub mod rabbit_admin;
pub mod secret;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
