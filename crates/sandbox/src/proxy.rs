//! A TCP proxy whose link can be cut and restored, to inject network faults between a service
//! and PostgreSQL or RabbitMQ without touching the shared servers.

use anyhow::{anyhow, Context};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    pub addr: SocketAddr,
    /// `true` while the link is up; each connection watches it and drops when it turns false.
    up: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, _) = watch::channel(true);
        let up = Arc::new(tx);
        let up_for_task = up.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*up_for_task.borrow() {
                    drop(client); // link cut: refuse by closing at once
                    continue;
                }
                let mut watch = up_for_task.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let mut client = client;
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watch.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Self { addr, up, task })
    }

    /// A proxy in front of the server of `url` (PostgreSQL, AMQP, …), and `url` rewritten to go
    /// through it: the same user, database or vhost, the proxy's address.
    pub async fn in_front_of(url: &str) -> anyhow::Result<(Self, String)> {
        let mut parsed = url::Url::parse(url)
            .with_context(|| format!("bad URL {}", crate::world::redact(url)))?;
        let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
        let port = parsed
            .port_or_known_default()
            .with_context(|| format!("no port in {}", crate::world::redact(url)))?;
        let target = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .with_context(|| format!("{host} resolves to no address"))?;
        let proxy = Self::start(target).await?;
        parsed
            .set_ip_host(proxy.addr.ip())
            .map_err(|()| anyhow!("cannot set the host of {}", crate::world::redact(url)))?;
        parsed
            .set_port(Some(proxy.addr.port()))
            .map_err(|()| anyhow!("cannot set the port of {}", crate::world::redact(url)))?;
        Ok((proxy, parsed.to_string()))
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
