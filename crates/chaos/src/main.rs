//! `portal-chaos`: see `portal-chaos --help` (also run as `portal chaos`).

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    platform::telemetry::init("portal-chaos");
    platform::exit::exit_code(chaos::run(chaos::ChaosArgs::parse()).await)
}
