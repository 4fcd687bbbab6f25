//! What every service of the system is to whoever runs it (`portal up`, `portal <service>`, the
//! tests): built and bound first, then run until a cancellation token says stop.

use std::future::Future;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// A service that is built (databases prepared, port bound) and ready to run.
pub trait Service: Send + 'static {
    /// The name people read (`auth-service`).
    const NAME: &'static str;

    /// Where it listens (port 0 at build time picks a free one).
    fn local_addr(&self) -> std::io::Result<SocketAddr>;

    /// Serves until `shutdown` is cancelled, then finishes what is in hand and returns.
    fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}
