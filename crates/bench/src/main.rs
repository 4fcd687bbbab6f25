//! `portal-bench`: see `portal-bench --help` (also run as `portal bench`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: bench::BenchArgs = platform::exit::parse_args();
    if let Err(e) = platform::telemetry::init("portal-bench") {
        return platform::exit::exit_code(Err(platform::exit::Failure::usage(anyhow::anyhow!(e))));
    }
    platform::exit::exit_code(bench::run(args).await)
}
