//! End-to-end tests: what only the whole system can show. A user written in the auth-service
//! reaches the user-service through the outbox, the relay and RabbitMQ (through the gateway, in
//! any order, whatever fails meanwhile), and the `portal` binary operates it. Real PostgreSQL and
//! RabbitMQ, the services started through the same `Application::build` the binary uses, each
//! test in its own sandbox (databases, vhost, keys), so they run in parallel. What one service
//! does on its own is tested in that service's crate.
//!
//! The parts a test runs in this process from its start come from `sandbox::System::builder`;
//! a part started later (or again) and each service's own helpers come from `sandbox::auth`,
//! `sandbox::users` and `sandbox::appointments`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod appointments;
mod backup;
mod cli;
mod convergence;
mod copies;
mod deploy;
mod erasure;
mod faults;
mod healthcheck;
mod identities;
mod keys;
mod lifecycle;
mod migrate;
mod observability;
mod offboarding;
mod pipeline;
mod privileges;
mod python_consumer;
mod recovery;
mod replicas;
mod restarts;
mod scim;
mod scim_tokens;
mod starts;
mod tls;
mod transport;
