//! One module per `portal` command.

pub mod api;
pub mod config;
pub mod consumer;
pub mod dlq;
pub mod docs;
pub mod erasure;
pub mod healthcheck;
pub mod import;
pub mod migrate;
pub mod offboard;
pub mod reconcile;
pub mod replay;
pub mod scim;
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
        ops::OpsError::Failed(e) => start_failure(e, Failure::from),
    }
}

/// The exit code of a part or a tool that could not start: 64 when its configuration is the
/// problem (an AMQP URL that names no broker user: `platform::amqp::NoBrokerUser`), else
/// `otherwise`'s.
pub fn start_failure(e: anyhow::Error, otherwise: fn(anyhow::Error) -> Failure) -> Failure {
    if e.chain().any(|c| c.is::<platform::amqp::NoBrokerUser>()) {
        Failure::usage(e)
    } else {
        otherwise(e)
    }
}

/// Exit 64 unless every URL of `links` is TLS or this machine, or ALLOW_PLAINTEXT_NETWORK allows
/// it (then one warning per URL): checked at start, before anything connects, so a plaintext
/// URL to another machine is a configuration error that names its setting, not a silent leak.
pub fn check_links(
    network: &platform::settings::NetworkArgs,
    links: &[platform::settings::Link],
) -> Result<(), Failure> {
    network.check(links).map_err(Failure::usage)
}

/// Exit 64 unless `url` names its broker user: a part that publishes under it (the relay, the
/// operator's tools) is never started under a guessed one.
pub fn require_broker_user(url: &str) -> Result<String, Failure> {
    platform::amqp::broker_user_of(url).map_err(Failure::usage)
}

/// Who is at the keyboard, for the security log: the OS user (its name as the session says,
/// and the uid, which the session cannot change) and the broker user.
pub fn who(tool: &str, broker_user: &str) -> String {
    let name = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "?".to_owned());
    // /proc/self belongs to the process's user.
    #[cfg(unix)]
    let uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").map_or_else(|_| "?".to_owned(), |m| m.uid().to_string())
    };
    #[cfg(not(unix))]
    let uid = "?";
    format!("OS user {name} (uid {uid}) as broker user {broker_user} ({tool})")
}
