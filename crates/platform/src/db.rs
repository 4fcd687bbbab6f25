//! PostgreSQL helpers: database creation and pools that fail fast instead of hanging.

use crate::secret::redact_url;
use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// How long a request waits for a pooled connection before it is answered 503.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The database name in a connection URL.
pub fn database_name(url: &str) -> anyhow::Result<String> {
    let opts = PgConnectOptions::from_str(url)
        .with_context(|| format!("bad database URL {}", redact_url(url)))?;
    opts.get_database()
        .map(str::to_owned)
        .with_context(|| format!("database URL {} names no database", redact_url(url)))
}

/// Creates the database named in `url` when it does not exist yet (connecting to `postgres` on
/// the same server). Safe to call concurrently.
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let name = database_name(url)?;
    let admin = connect_options(url)?
        .database("postgres")
        .disable_statement_logging();
    let mut conn = sqlx::PgConnection::connect_with(&admin)
        .await
        .with_context(|| format!("cannot reach PostgreSQL for {}", redact_url(url)))?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&create).execute(&mut conn).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it between our check and our CREATE (42P04; 23505 when
            // both reach the catalog's unique index at once).
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create database {name}")),
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// Creates the database named in `url` if absent, opens a pool of `max_connections` and applies
/// `migrations` (the owning service's); `label` names the database in errors.
pub async fn prepare(
    url: &str,
    max_connections: u32,
    migrations: &sqlx::migrate::Migrator,
    label: &str,
) -> anyhow::Result<PgPool> {
    ensure_database(url).await?;
    let pool = lazy_pool(url, max_connections)?;
    migrations
        .run(&pool)
        .await
        .with_context(|| format!("cannot migrate {label}"))?;
    Ok(pool)
}

/// Opens a pool of `max_connections` on a database whose schema someone else migrates (the
/// least-privilege setup: this process's role may not change the schema), after checking that
/// every migration of `migrations` is applied; `label` names the database in errors.
pub async fn open_migrated(
    url: &str,
    max_connections: u32,
    migrations: &sqlx::migrate::Migrator,
    label: &str,
) -> anyhow::Result<PgPool> {
    let pool = lazy_pool(url, max_connections)?;
    let standing = crate::migrations::standing(&pool, migrations)
        .await
        .with_context(|| format!("cannot read the schema version of {label}"))?;
    // Only an older schema stops the service: a newer one is the operator's call (`portal
    // migrate status` reports it), and the setup refuses an edited migration when it migrates.
    let missing: Vec<i64> = standing.pending.iter().map(|m| m.version).collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "the schema of {label} lacks migrations {missing:?} of this build: run `portal setup` \
             (it migrates as the schema's owner)"
        );
    }
    Ok(pool)
}

/// A service's pool: [`prepare`] (create and migrate) when it may change the schema, or, when the
/// least-privilege setup owns the schema (`managed_by_setup`), [`open_migrated`] (check it).
pub async fn open(
    url: &str,
    max_connections: u32,
    managed_by_setup: bool,
    migrations: &sqlx::migrate::Migrator,
    label: &str,
) -> anyhow::Result<PgPool> {
    if managed_by_setup {
        open_migrated(url, max_connections, migrations, label).await
    } else {
        prepare(url, max_connections, migrations, label).await
    }
}

/// Creates database `name` owned by `owner` when absent (true when this call created it), or
/// hands an existing one to `owner`. Safe when another process creates it at the same moment.
pub async fn create_database_owned(
    admin: &mut sqlx::PgConnection,
    name: &str,
    owner: &str,
) -> anyhow::Result<bool> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *admin)
            .await?;
    if !exists {
        let create = format!("CREATE DATABASE \"{name}\" OWNER \"{owner}\"");
        match sqlx::query(&create).execute(&mut *admin).await {
            Ok(_) => return Ok(true),
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create database {name}")),
        }
    }
    sqlx::query(&format!("ALTER DATABASE \"{name}\" OWNER TO \"{owner}\""))
        .execute(&mut *admin)
        .await
        .with_context(|| format!("cannot hand database {name} to {owner}"))?;
    Ok(false)
}

/// The connection options of `url`. A URL that chooses no `sslmode` (and no `PGSSLMODE` in the
/// environment) gets the mode its server's place calls for, never libpq's `prefer`, which
/// encrypts without checking who answers (anyone on the path can stand in for the server):
/// - a server on this machine (127.0.0.0/8, `::1`, `localhost`, a Unix socket): no TLS. The
///   bytes never leave the kernel, so TLS protects nothing there and costs CPU on both ends
///   (BENCHMARKS.md, the HTTP row);
/// - any other server: `verify-full`, TLS with the server's certificate checked against the
///   system's CAs (`SSL_CERT_FILE`, or `sslrootcert=` in the URL) and its name against the
///   URL's host. A server without TLS is then refused rather than reached in plaintext.
///
/// An `sslmode` the operator gives (in the URL or `PGSSLMODE`) is always obeyed.
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    options_for(url, std::env::var_os("PGSSLMODE").is_some())
}

/// [`connect_options`] with whether `PGSSLMODE` is set given (so tests do not depend on the
/// environment they run in).
fn options_for(url: &str, pgsslmode_set: bool) -> anyhow::Result<PgConnectOptions> {
    let opts = PgConnectOptions::from_str(url)
        .with_context(|| format!("bad database URL {}", redact_url(url)))?;
    if names_sslmode(url) || pgsslmode_set {
        return Ok(opts);
    }
    Ok(if on_this_machine(&opts) {
        opts.ssl_mode(PgSslMode::Disable)
    } else {
        opts.ssl_mode(PgSslMode::VerifyFull)
    })
}

/// True when the URL's query sets the TLS mode (sqlx reads both spellings).
fn names_sslmode(url: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            key.eq_ignore_ascii_case("sslmode") || key.eq_ignore_ascii_case("ssl-mode")
        })
    })
}

/// Whether the connection stays on this machine: a loopback host (as the plaintext rule of the
/// other settings says, [`crate::settings::is_loopback_host`]) or a Unix socket (where
/// PostgreSQL offers no TLS at all).
fn on_this_machine(opts: &PgConnectOptions) -> bool {
    opts.get_socket().is_some()
        || opts.get_host().starts_with('/')
        || crate::settings::is_loopback_host(opts.get_host())
}

/// A pool for `url` whose acquire times out, so callers get an error rather than a hang when the
/// database is down. Connecting is lazy: the service starts even when the database is not up yet.
pub fn lazy_pool(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let opts = connect_options(url)?.disable_statement_logging();
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(opts))
}

/// True when the error means the database could not be reached (as opposed to a bad query).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        // Something accepted the connection and closed it before answering the TLS request
        // (a proxy or load balancer in front of a database that is down): sqlx reports the
        // empty answer as a protocol error, but it is an outage like a refused connection.
        sqlx::Error::Protocol(message) => message.contains("SSLRequest"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_on_this_machine_without_a_chosen_sslmode_is_reached_without_tls() {
        assert!(names_sslmode("postgres://u@db.example/x?sslmode=require"));
        assert!(names_sslmode(
            "postgres://u@h/x?application_name=a&SSL-MODE=disable"
        ));
        assert!(!names_sslmode("postgres://u@h/x?application_name=sslmode"));
        assert!(!names_sslmode("postgres://u@h/x"));
        let mode = |url: &str| options_for(url, false).unwrap().get_ssl_mode();
        for url in [
            "postgres://u:pw@127.0.0.1:5432/x",
            "postgres://u@127.0.0.2/x",
            "postgres://u@localhost/x",
            "postgres://u@[::1]:5432/x",
            "postgres:///x?host=/var/run/postgresql",
            "postgres://%2Fvar%2Frun%2Fpostgresql/x",
        ] {
            assert!(matches!(mode(url), PgSslMode::Disable), "{url}");
        }
        for url in [
            "postgres://u:pw@10.0.0.5:5432/x",
            "postgres://u@db.clinic.internal/x",
            "postgres://u@localhost.example/x",
            "postgres://u@[2001:db8::1]/x",
            "postgres://u@postgres:5432/auth_db",
        ] {
            assert!(matches!(mode(url), PgSslMode::VerifyFull), "{url}");
        }
        // A mode the operator chose is obeyed, here or elsewhere, in the URL or PGSSLMODE.
        assert!(matches!(
            mode("postgres://u@db.clinic.internal/x?sslmode=require"),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode("postgres://u@db.clinic.internal/x?sslmode=disable"),
            PgSslMode::Disable
        ));
        assert!(matches!(
            mode("postgres://u@127.0.0.1/x?sslmode=verify-full"),
            PgSslMode::VerifyFull
        ));
        // With PGSSLMODE set, sqlx's own reading of it stands.
        let url = "postgres://u@db.clinic.internal/x";
        assert_eq!(
            format!("{:?}", options_for(url, true).unwrap().get_ssl_mode()),
            format!(
                "{:?}",
                PgConnectOptions::from_str(url).unwrap().get_ssl_mode()
            )
        );
    }

    /// Against the machine's PostgreSQL (which offers TLS on Debian): the loopback default is a
    /// plain connection, and an explicit `sslmode=require` still gets TLS.
    #[tokio::test]
    async fn the_loopback_default_is_plain_and_a_chosen_mode_is_obeyed() {
        // Either half left out would let the test pass having checked nothing: it says why.
        assert!(
            std::env::var_os("PGSSLMODE").is_none(),
            "PGSSLMODE is set, and the operator's choice wins everywhere: unset it to run this test"
        );
        // The tests' server, as the sandbox names it.
        let server = std::env::var("TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        assert!(
            server.contains("127.0.0.1") || server.contains("localhost"),
            "TEST_DATABASE_URL names a remote server, which keeps its own TLS mode: this test needs \
             one on loopback"
        );
        let base = format!("{}/postgres", server.trim_end_matches('/'));
        let server_offers_tls: bool = {
            let pool = lazy_pool(&base, 1).expect("pool");
            let on: String = sqlx::query_scalar("SHOW ssl")
                .fetch_one(&pool)
                .await
                .expect("PostgreSQL is reachable");
            on == "on"
        };
        let uses_tls = |url: String| async move {
            let pool = lazy_pool(&url, 1).expect("pool");
            let ssl: bool =
                sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .fetch_one(&pool)
                    .await
                    .expect("query");
            ssl
        };
        assert!(!uses_tls(base.clone()).await, "loopback without sslmode");
        assert!(
            server_offers_tls,
            "the test server has ssl = off, so a chosen sslmode cannot be checked: Debian's \
             PostgreSQL offers TLS with its snakeoil certificate; turn ssl on"
        );
        assert!(uses_tls(format!("{base}?sslmode=require")).await);
    }
}
