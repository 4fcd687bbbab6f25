//! `portal-chaos`: see `portal-chaos --help` (also run as `portal chaos`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: chaos::ChaosArgs = platform::exit::parse_args();
    if let Err(e) = platform::telemetry::init("portal-chaos") {
        return platform::exit::exit_code(Err(platform::exit::Failure::usage(anyhow::anyhow!(e))));
    }
    platform::exit::exit_code(chaos::run(args).await)
}
