//! Logging set-up: `RUST_LOG` wins, otherwise `info` for our crates and `warn` for the rest,
//! except the AMQP client's own I/O thread: every failure it sees reaches our code as an error,
//! which is logged once with its context (one line per outage and recovery), while its own
//! lines repeat them and race with the runtime's shutdown at exit ("A Tokio 1.x context was
//! found, but it is being shutdown"). `RUST_LOG=lapin=debug` brings them back.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,lapin=off,portal=info,auth_service=info,user_service=info,\
             appointment_service=info,consumer=info,gateway=info,web=info,platform=info,ops=info",
        )
    });
    // A second init (tests, embedded use) is harmless.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .try_init();
}
