//! One module per `portal` command.

pub mod dlq;
pub mod reconcile;
pub mod replay;
pub mod seed;
pub mod serve;
pub mod up;
pub mod users;
pub mod verify;

/// A failure with the exit code scripts should see: 1 for "it ran and said no", 2 for "a
/// dependency could not be reached".
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn unreachable(error: anyhow::Error) -> Self {
        Self { code: 2, error }
    }
}

/// The exit code an [`ops::OpsError`] deserves.
pub fn failure(e: ops::OpsError) -> Failure {
    match e {
        ops::OpsError::Unreachable(_) => Failure::unreachable(e.into()),
        ops::OpsError::Failed(e) => Failure::from(e),
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self { code: 1, error }
    }
}
