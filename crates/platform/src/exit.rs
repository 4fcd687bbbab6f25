//! Exit codes scripts can trust, the same for every binary: 0 success, 1 it ran and said no
//! (verify found differences, a refusal, a failed run), 2 a database or the broker could not be
//! reached.

use std::process::ExitCode;

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    /// Exit 2: a dependency could not be reached.
    pub fn unreachable(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: 2,
            error: error.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Self { code: 1, error }
    }
}

/// Prints a failure as `error: …` on stderr and turns the result into the process's exit code.
pub fn exit_code(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            eprintln!("error: {error:#}");
            ExitCode::from(code)
        }
    }
}
