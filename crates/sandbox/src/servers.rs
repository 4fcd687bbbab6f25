//! Servers of a test's own, for tests that stop, kill or restart PostgreSQL or RabbitMQ: the
//! machine's servers (and every test running beside this one) are never touched.
//!
//! - [`PrivatePostgres`]: `initdb` into a temporary directory, a free port, trust auth for
//!   `postgres` on 127.0.0.1; started, stopped and restarted with `pg_ctl`.
//! - [`PrivateRabbit`]: a RabbitMQ node with its own name, AMQP and distribution ports, config,
//!   data and log directories (Debian's `rabbitmq-server`), beside the machine's default node;
//!   its application stopped and started with `rabbitmqctl -n <node>`.
//!
//! Either can also serve TLS with a self-signed certificate for `localhost` (`start_with_tls`).
//!
//! Both are removed when dropped. As root (CI), the servers run as the `postgres` and
//! `rabbitmq` users, who own their directories; PostgreSQL refuses to run as root.

use crate::process::free_port;
use anyhow::{anyhow, bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `program args` as `user` when this process is root (`runuser`), else as itself; fails
/// with its output when it fails.
fn run_as(
    user: Option<&str>,
    program: &str,
    args: &[&str],
    envs: &[(&str, String)],
) -> anyhow::Result<Output> {
    let mut cmd = match user {
        Some(user) if nix::unistd::Uid::effective().is_root() => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--", program]);
            c
        }
        _ => Command::new(program),
    };
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Gives `dir` (recursively) to `user` when this process is root.
fn give_to(user: &str, dir: &Path) -> anyhow::Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    let owner = nix::unistd::User::from_name(user)
        .context("looking up a user")?
        .ok_or_else(|| anyhow!("no {user} user on this machine"))?;
    let status = Command::new("chown")
        .args(["-R", &format!("{}:{}", owner.uid, owner.gid)])
        .arg(dir)
        .status()
        .context("cannot run chown")?;
    if !status.success() {
        bail!("chown {} failed", dir.display());
    }
    Ok(())
}

/// Makes a self-signed certificate for `localhost` and 127.0.0.1 with `openssl`, as `owner`,
/// the key readable by its owner only (servers refuse others). It is its own trust anchor: a
/// client trusts it through `SSL_CERT_FILE=<cert>`. rustls checks the subject alternative names,
/// not the common name, and refuses a CA certificate as a server's, hence `CA:FALSE`.
fn self_signed_certificate(owner: Option<&str>, cert: &str, key: &str) -> anyhow::Result<()> {
    run_as(
        owner,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        &[],
    )?;
    run_as(owner, "chmod", &["600", key], &[])?;
    Ok(())
}

/// A fresh directory under `/var/tmp` (readable by the servers' users, unlike a private
/// temporary directory of root's).
fn fresh_dir(label: &str) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from("/var/tmp").join(format!("{label}-{}", crate::world::random_id(10)));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// A PostgreSQL server of this test's own.
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    /// Serves TLS with a self-signed certificate (`ssl=on`).
    tls: bool,
}

impl PrivatePostgres {
    /// `initdb` and start, on a free port; takes a second or two.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// Like [`PrivatePostgres::start`], also serving TLS with a self-signed certificate made
    /// by `openssl` (clients then connect with `sslmode=require`).
    pub fn start_with_tls() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> anyhow::Result<Self> {
        let versions = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL's binaries are not in /usr/lib/postgresql")?;
        let mut versions: Vec<(u32, PathBuf)> = versions
            .filter_map(|e| {
                let e = e.ok()?;
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort();
        let (_, bin) = versions
            .pop()
            .ok_or_else(|| anyhow!("no PostgreSQL version under /usr/lib/postgresql"))?;
        let dir = fresh_dir("portal-pg")?;
        give_to("postgres", &dir)?;
        let server = Self {
            port: free_port()?,
            dir,
            bin,
            tls,
        };
        let data = server.data_dir();
        run_as(
            Some("postgres"),
            &server.tool("initdb"),
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
            &[],
        )?;
        if tls {
            let (cert, key) = server.tls_files();
            self_signed_certificate(Some("postgres"), &cert, &key)?;
        }
        server.pg_ctl_start()?;
        Ok(server)
    }

    /// The certificate and key of a TLS server.
    fn tls_files(&self) -> (String, String) {
        let path = |name: &str| self.dir.join(name).display().to_string();
        (path("server.crt"), path("server.key"))
    }

    fn tool(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        if self.tls {
            let (cert, key) = self.tls_files();
            options += &format!(" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key}");
        }
        let log = self.dir.join("log").display().to_string();
        run_as(
            Some("postgres"),
            &self.tool("pg_ctl"),
            &[
                "-D",
                &self.data_dir(),
                "-l",
                &log,
                "-o",
                &options,
                "-w",
                "start",
            ],
            &[],
        )?;
        Ok(())
    }

    fn pg_ctl_stop(&self, mode: &str) -> anyhow::Result<()> {
        run_as(
            Some("postgres"),
            &self.tool("pg_ctl"),
            &["-D", &self.data_dir(), "-m", mode, "-w", "stop"],
            &[],
        )?;
        Ok(())
    }

    /// The server's certificate (PEM), for a client's `sslrootcert`, when started with TLS.
    pub fn certificate(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// `postgres://postgres@127.0.0.1:<port>` (no database).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Stops (fast: open connections are ended) and starts again on the same port.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.pg_ctl_stop("fast")?;
        self.pg_ctl_start()
    }

    pub fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl_stop("fast")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl_stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RabbitMQ node of this test's own, with guest/guest on its default vhost.
pub struct PrivateRabbit {
    dir: PathBuf,
    pub node: String,
    pub port: u16,
    /// The AMQPS port, when started with TLS.
    pub tls_port: Option<u16>,
    /// The management API's port, when started with it.
    pub management_port: Option<u16>,
}

impl PrivateRabbit {
    /// Starts the node and waits until it runs; takes several seconds.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false, false)
    }

    /// Like [`PrivateRabbit::start`], also serving AMQPS with a self-signed certificate for
    /// `localhost` ([`PrivateRabbit::certificate`]); see [`PrivateRabbit::tls_url`].
    pub fn start_with_tls() -> anyhow::Result<Self> {
        Self::start_with(true, false)
    }

    /// Like [`PrivateRabbit::start`], with the management plugin on a port of its own
    /// ([`PrivateRabbit::management_url`]): for `portal setup`, which creates users with it.
    pub fn start_with_management() -> anyhow::Result<Self> {
        Self::start_with(false, true)
    }

    fn start_with(tls: bool, management: bool) -> anyhow::Result<Self> {
        let dir = fresh_dir("portal-rmq")?;
        let id = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("portal-rmq")
            .to_owned();
        let port = node_port()?;
        let plugins = if management {
            "[rabbitmq_management].\n"
        } else {
            "[].\n"
        };
        std::fs::write(dir.join("enabled_plugins"), plugins)?;
        // Its own config file: the default node's pins the listener to 5672.
        let mut config =
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n");
        let management_port = if management {
            let management_port = node_port()?;
            config.push_str(&format!(
                "management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {management_port}\n"
            ));
            Some(management_port)
        } else {
            None
        };
        let tls_port = if tls {
            let tls_port = node_port()?;
            let path = |name: &str| dir.join(name).display().to_string();
            self_signed_certificate(None, &path("server.crt"), &path("server.key"))?;
            config.push_str(&format!(
                "listeners.ssl.default = 127.0.0.1:{tls_port}\n\
                 ssl_options.cacertfile = {crt}\n\
                 ssl_options.certfile = {crt}\n\
                 ssl_options.keyfile = {key}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                crt = path("server.crt"),
                key = path("server.key"),
            ));
            Some(tls_port)
        } else {
            None
        };
        std::fs::write(dir.join("rabbitmq.conf"), config)?;
        give_to("rabbitmq", &dir)?;
        let node = Self {
            node: format!("{id}@localhost"),
            port,
            tls_port,
            management_port,
            dir,
        };
        node.start_node()?;
        Ok(node)
    }

    /// The node's certificate (PEM), for a client's `SSL_CERT_FILE`, when started with TLS.
    pub fn certificate(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// `amqps://guest:guest@localhost:<tls port>/%2f`, when started with TLS.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|port| format!("amqps://guest:guest@localhost:{port}/%2f"))
    }

    /// `http://127.0.0.1:<port>`, when started with the management plugin.
    pub fn management_url(&self) -> Option<String> {
        self.management_port
            .map(|port| format!("http://127.0.0.1:{port}"))
    }

    /// What `rabbitmqctl -n <node> <args>` prints.
    pub fn ctl_output(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-q", "-n", &self.node];
        all.extend_from_slice(args);
        let out = run_as(None, "rabbitmqctl", &all, &[])?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn env(&self) -> anyhow::Result<Vec<(&'static str, String)>> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        Ok(vec![
            ("RABBITMQ_NODENAME", self.node.clone()),
            ("RABBITMQ_DIST_PORT", node_port()?.to_string()),
            ("RABBITMQ_CONFIG_FILE", d("rabbitmq")),
            ("RABBITMQ_MNESIA_BASE", d("mnesia")),
            ("RABBITMQ_LOG_BASE", d("log")),
            ("RABBITMQ_PID_FILE", d("pid")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", d("enabled_plugins")),
        ])
    }

    /// Starts the node. The distribution port [`PrivateRabbit::env`] found free can be taken
    /// by another test's server before the node binds it; the node then dies before it writes
    /// its pid file or a log (a CI run once failed so), and is started again with other ports.
    fn start_node(&self) -> anyhow::Result<()> {
        let mut attempt = 1;
        loop {
            run_as(None, "rabbitmq-server", &["-detached"], &self.env()?)?;
            match self.await_startup() {
                Err(e) if attempt < 3 && !self.dir.join("pid").exists() => {
                    eprintln!(
                        "RabbitMQ node {} died at start ({e:#}); starting it again",
                        self.node
                    );
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    /// Waits until the broker application runs. `await_startup` fails at once while the node
    /// has not registered with epmd yet (the first seconds after `-detached`), so it is asked
    /// again until the deadline — or until it is clear the node died at start: no pid file
    /// [`NODE_BOOT_TIMEOUT`] after `-detached`.
    fn await_startup(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        let deadline = started + NODE_START_TIMEOUT;
        loop {
            match self.ctl(&["await_startup", "--timeout", "120"]) {
                Ok(()) => return Ok(()),
                Err(e)
                    if started.elapsed() >= NODE_BOOT_TIMEOUT
                        && !self.dir.join("pid").exists() =>
                {
                    return Err(e.context(format!(
                        "RabbitMQ node {} wrote no pid file within {NODE_BOOT_TIMEOUT:?}",
                        self.node
                    )))
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!(
                        "RabbitMQ node {} did not start within {NODE_START_TIMEOUT:?}; its log is in {}",
                        self.node,
                        self.dir.join("log").display()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    fn ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        self.ctl_output(args).map(|_| ())
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Stops the broker application (every connection drops, the port closes); the node stays.
    pub fn stop_app(&self) -> anyhow::Result<()> {
        self.ctl(&["stop_app"])
    }

    pub fn start_app(&self) -> anyhow::Result<()> {
        self.ctl(&["start_app"])?;
        self.await_startup()
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        // With the pid file, `stop` returns once the node's process has exited, so its
        // directory is not removed under a node still writing to it.
        // A node that never started has no pid file, and `stop <pid file>` would then wait for
        // ever (a CI run once hung there): nothing to stop.
        let pid_file = self.dir.join("pid");
        if pid_file.exists() {
            let _ = self.ctl(&["stop", &pid_file.display().to_string()]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How long a private node may take to start (Erlang boots in a few seconds; a loaded machine
/// takes longer).
const NODE_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a starting node may take to write its pid file (the first thing its start script
/// does) before it is taken for dead.
const NODE_BOOT_TIMEOUT: Duration = Duration::from_secs(30);

/// The Erlang distribution ports the CLI tools (`rabbitmqctl`) take for themselves: the default
/// node's distribution port (25672) + 10000 and the ten after it. A node listening there would
/// collide with the very tools that manage it.
const CLI_DIST_PORTS: std::ops::RangeInclusive<u16> = 35672..=35682;

/// A free port for a private node, outside [`CLI_DIST_PORTS`].
fn node_port() -> anyhow::Result<u16> {
    loop {
        let port = free_port()?;
        if !CLI_DIST_PORTS.contains(&port) {
            return Ok(port);
        }
    }
}
