//! Exit codes scripts can trust, the same for every binary: 0 success, 1 it ran and said no
//! (verify found differences, a refusal, a failed run), 2 a database or the broker could not be
//! reached, 64 (`EX_USAGE`) the command line or the configuration is wrong — a mistake that
//! trying again cannot mend, so a systemd unit does not restart on it.

use std::process::ExitCode;

/// A failure with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

/// The exit code of a usage or configuration error (sysexits' `EX_USAGE`).
pub const USAGE: u8 = 64;

impl Failure {
    /// Exit 64: a bad flag, setting or credentials file.
    pub fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            code: USAGE,
            error: error.into(),
        }
    }

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

/// Parses the command line as `T`: `--help` and `--version` print and exit 0; any other
/// mistake prints clap's message and exits 64 (clap's own `exit` would use 2, the code that
/// means "a server is unreachable").
pub fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) => exit_on_clap_error(e),
    }
}

/// Prints a clap error (or the help or version it carries) and exits: 0 for help and version,
/// 64 otherwise.
pub fn exit_on_clap_error(e: clap::Error) -> ! {
    let code = if e.use_stderr() { i32::from(USAGE) } else { 0 };
    let _ = e.print();
    std::process::exit(code)
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
