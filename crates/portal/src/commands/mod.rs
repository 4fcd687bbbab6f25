//! One module per `portal` command.

pub mod api;
pub mod config;
pub mod dlq;
pub mod docs;
pub mod import;
pub mod reconcile;
pub mod replay;
pub mod seed;
pub mod serve;
pub mod setup;
pub mod status;
pub mod tools;
pub mod up;
pub mod users;
pub mod verify;

pub use platform::exit::Failure;

/// The exit code an [`ops::OpsError`] deserves.
pub fn failure(e: ops::OpsError) -> Failure {
    match e {
        ops::OpsError::Unreachable(_) => Failure::unreachable(e),
        ops::OpsError::Failed(e) => Failure::from(e),
    }
}
