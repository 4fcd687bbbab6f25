//! A service running inside the test process (built by the same `Application::build` the
//! `portal` binary uses), stopped the way SIGTERM stops the real one.

use anyhow::Context;
use platform::service::Service;
use std::future::Future;
use std::net::SocketAddr;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Running {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Runs `service` on a task of its own.
    pub fn start<S: Service>(service: S) -> Self {
        let addr = service
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(service.run_until_stopped(shutdown.clone()));
        Self {
            addr,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Builds a service with `build` (e.g. `Application::build(config)`) and runs it; panics with
    /// the service's name when it cannot be built (tests).
    pub async fn launch<S: Service>(build: impl Future<Output = anyhow::Result<S>>) -> Self {
        match build.await {
            Ok(service) => Self::start(service),
            Err(e) => panic!("cannot build the {}: {e:#}", S::NAME),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the service the way SIGTERM does and waits until it has finished.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(h) => h.await.context("service task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
