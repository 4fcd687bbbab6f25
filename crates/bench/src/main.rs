//! `portal-bench`: see `portal-bench --help` (also run as `portal bench`).

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::telemetry::init("portal-bench");
    platform::exit::exit_code(bench::run(bench::BenchArgs::parse()).await)
}
