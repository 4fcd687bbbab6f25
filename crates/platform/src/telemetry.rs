//! Logging set-up: `RUST_LOG` wins, otherwise `info` for our crates and `warn` for the rest.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,portal=info,auth_service=info,user_service=info,gateway=info,platform=info",
        )
    });
    // A second init (tests, embedded use) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}
