//! The settings several parts read, as `clap` groups a command flattens (each part's own
//! settings live next to the part, in its crate's `settings` module): where the broker is,
//! whether the least-privilege setup manages the schema and topology, where the auth-service is
//! for the parts that check its tokens, how long its tokens live (one value for the signer and
//! every verifier), how often the verifiers fetch its keys, whether plaintext connections
//! to other machines are allowed, and who besides this machine may read `/metrics`. Every default is a constant defined once, read by clap and by
//! the code that needs it.

use crate::duration::Interval;
use crate::jwt::{KeySource, VerifierConfig, MAX_ACCESS_TTL_SECONDS, MIN_ACCESS_TTL_SECONDS};
use anyhow::Context;
use clap::Args;
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// RabbitMQ on this machine as a development install has it.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The auth-service where `portal up` and a one-machine install run it.
pub const DEFAULT_AUTH_SERVICE_URL: &str = "http://127.0.0.1:3001";
/// Access tokens live five minutes unless told otherwise.
pub const DEFAULT_TOKEN_TTL_SECONDS: i64 = crate::jwt::DEFAULT_ACCESS_TTL_SECONDS;
/// The verifiers fetch the auth-service's keys every minute unless told otherwise.
pub const DEFAULT_JWKS_REFRESH: Duration = crate::jwt::DEFAULT_KEY_REFRESH;
/// The longest JWKS_REFRESH: with the auth-service withdrawing a key within seconds of its
/// time, a withdrawn key then stops working everywhere within two minutes.
pub const MAX_JWKS_REFRESH: Duration = Duration::from_secs(60);

/// The broker every part connects to unless it has an identity of its own.
#[derive(Args, Debug, Clone)]
pub struct BrokerArgs {
    /// RabbitMQ [default: amqp://guest:***@127.0.0.1:5672/%2f] (its value is never shown: it
    /// holds a password). A cluster: one URL per node, comma-separated; connections take the
    /// first node that answers and move to another when theirs is lost (as every *_AMQP_URL).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = DEFAULT_AMQP_URL,
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: String,
}

/// Whether `portal setup` owns the schema and the broker topology.
#[derive(Args, Debug, Clone)]
pub struct SetupStateArgs {
    /// Set by `portal setup` in the credentials file: the schema and the broker topology are the
    /// setup's, so the services (under identities that may change neither) only check them.
    #[arg(long, env = "MANAGED_BY_SETUP")]
    pub managed_by_setup: bool,
}

/// Where a part finds the auth-service: its public keys (every part that checks tokens) and,
/// for the gateway, the replicas it routes to.
#[derive(Args, Debug, Clone)]
pub struct AuthLocationArgs {
    /// The auth-service as the other parts reach it; several replicas comma-separated
    /// [default: http://127.0.0.1:3001; under `portal up`, the auth-service it runs].
    #[arg(long, env = "AUTH_SERVICE_URL")]
    pub auth_service_url: Option<String>,
    /// Where the other parts fetch the auth-service's public keys
    /// [default: AUTH_SERVICE_URL/api/v1/auth/.well-known/jwks.json, each replica's in turn].
    #[arg(long, env = "JWKS_URL")]
    pub jwks_url: Option<String>,
}

impl AuthLocationArgs {
    /// AUTH_SERVICE_URL, else `fallback` (the standard address, or the one `portal up` bound).
    pub fn auth_service_url_or(&self, fallback: &str) -> String {
        self.auth_service_url
            .clone()
            .unwrap_or_else(|| fallback.to_owned())
    }

    /// [`Self::jwks_url_or`] and the setting it comes from, for the plaintext rule.
    pub fn jwks_link(&self, fallback: &str) -> Link {
        let setting = match self.jwks_url {
            Some(_) => "JWKS_URL",
            None => "JWKS_URL (from AUTH_SERVICE_URL)",
        };
        Link::http(setting, self.jwks_url_or(fallback))
    }

    /// Where the auth-service publishes its public keys: JWKS_URL, else each replica's of
    /// [`Self::auth_service_url_or`] in turn.
    pub fn jwks_url_or(&self, fallback: &str) -> String {
        self.jwks_url.clone().unwrap_or_else(|| {
            crate::addresses::split(&self.auth_service_url_or(fallback))
                .into_iter()
                .map(|base| format!("{}{}", base.trim_end_matches('/'), crate::jwt::JWKS_PATH))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

/// A count of at least 1 (`value_parser = platform::settings::positive` for a `usize`).
pub fn positive(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{raw:?} is not a whole number")),
    }
}

/// How long access tokens live: the auth-service signs them for this long and every part that
/// checks them refuses one claiming to live longer, so one value governs both.
#[derive(Args, Debug, Clone)]
pub struct TokenLifetimeArgs {
    /// Lifetime of access tokens, in seconds (60 to 900): the auth-service signs them for this
    /// long (a client renews them with its refresh token) and every part that checks them
    /// refuses a token claiming to live longer, so give every part the same value.
    #[arg(long, env = "TOKEN_TTL_SECONDS", default_value_t = DEFAULT_TOKEN_TTL_SECONDS, value_parser = clap::value_parser!(i64).range(MIN_ACCESS_TTL_SECONDS..=MAX_ACCESS_TTL_SECONDS))]
    pub token_ttl_seconds: i64,
}

/// How often a part that checks tokens fetches the auth-service's public keys.
#[derive(Args, Debug, Clone)]
pub struct KeyRefreshArgs {
    /// How often the auth-service's public keys are fetched again (1s to 1m), so a key it
    /// withdraws stops working here within two minutes; a failed fetch keeps the keys held.
    #[arg(long, env = "JWKS_REFRESH", default_value_t = Interval(DEFAULT_JWKS_REFRESH), value_parser = parse_jwks_refresh)]
    pub jwks_refresh: Interval,
}

/// JWKS_REFRESH: at least a second (every verifier fetching more often would load the
/// auth-service for nothing), at most [`MAX_JWKS_REFRESH`].
fn parse_jwks_refresh(raw: &str) -> Result<Interval, String> {
    match raw.parse::<Interval>()? {
        Interval(d) if d > MAX_JWKS_REFRESH => Err(format!(
            "at most {}, so a withdrawn key stops working within two minutes",
            humantime::format_duration(MAX_JWKS_REFRESH)
        )),
        Interval(d) if d < Duration::from_secs(1) => Err("at least 1s".into()),
        interval => Ok(interval),
    }
}

/// Who besides this machine may read a part's `/metrics`: the parts that face users (the
/// gateway, the web portal) read it.
#[derive(Args, Debug, Clone, Default)]
pub struct MetricsArgs {
    /// A bearer token (at least 32 characters, e.g. `openssl rand -hex 32`) with which a
    /// scraper on another machine reads /metrics (`Authorization: Bearer …`); its value is never
    /// shown [default: none: only this machine reads /metrics, others get 404].
    #[arg(long, env = "METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

impl MetricsArgs {
    /// The token, checked (a usage error names the setting, never its value); empty is none.
    pub fn token(&self) -> anyhow::Result<Option<crate::metrics::MetricsToken>> {
        match self.metrics_token.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(value) => crate::metrics::MetricsToken::new(value).map(Some),
        }
    }
}

/// Whether a part may talk to other machines in plaintext.
#[derive(Args, Debug, Clone, Default)]
pub struct NetworkArgs {
    /// Allow plaintext connections to other machines (amqp:// to the broker, http:// to another
    /// part or to the key set), on a network you trust; each such URL is then logged in a
    /// warning at start. Without it they are refused (exit 64): only TLS (amqps://, https://),
    /// or this machine (127.0.0.0/8, ::1, localhost).
    #[arg(long, env = "ALLOW_PLAINTEXT_NETWORK")]
    pub allow_plaintext_network: bool,
}

/// Whether `host` (as a URL writes it: `localhost`, `127.0.0.1`, `[::1]`) is this machine:
/// `localhost`, 127.0.0.0/8 or ::1 (also as `::ffff:127.x.y.z`). Other names are not, even if
/// they resolve here: what a name resolves to can change.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") || host.eq_ignore_ascii_case("localhost.") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// What a URL setting between the parts speaks, for the plaintext rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// HTTP between the parts: `https://`, or `http://` to this machine.
    Http,
    /// The broker: `amqps://`, or `amqp://` to this machine.
    Amqp,
}

impl LinkKind {
    /// The scheme with TLS and the one without.
    fn schemes(self) -> (&'static str, &'static str) {
        match self {
            LinkKind::Http => ("https", "http"),
            LinkKind::Amqp => ("amqps", "amqp"),
        }
    }
}

/// One URL setting a part connects with: its name (for messages), what it speaks, and its value
/// (a comma-separated list: a broker cluster's nodes, a service's replicas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub setting: &'static str,
    pub kind: LinkKind,
    pub urls: String,
}

impl Link {
    pub fn http(setting: &'static str, urls: impl Into<String>) -> Self {
        Self {
            setting,
            kind: LinkKind::Http,
            urls: urls.into(),
        }
    }

    pub fn amqp(setting: &'static str, urls: impl Into<String>) -> Self {
        Self {
            setting,
            kind: LinkKind::Amqp,
            urls: urls.into(),
        }
    }
}

/// The rule itself, without side effects: each URL of the list `urls` (of `setting`) that
/// would travel in plaintext to another machine, as it may be shown (no password). TLS and this
/// machine are fine. A URL that does not parse, or of another scheme, is an error naming the
/// setting (the value is shown only with its password hidden, or not at all).
pub fn plaintext_remote(kind: LinkKind, setting: &str, urls: &str) -> anyhow::Result<Vec<String>> {
    let (tls, plain) = kind.schemes();
    let mut remote = Vec::new();
    for raw in crate::addresses::split(urls) {
        let shown = crate::secret::redact_url(raw);
        let url =
            url::Url::parse(raw).with_context(|| format!("{setting}: {shown} is not a URL"))?;
        let scheme = url.scheme();
        if scheme == tls {
            continue;
        }
        anyhow::ensure!(
            scheme == plain,
            "{setting}: {shown} is {scheme}://, not {tls}:// (or {plain}://)"
        );
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host,
            // `amqp:user:pw@host` (no `//`) has no host at all: it cannot be what was meant.
            _ if url.cannot_be_a_base() => {
                anyhow::bail!("{setting}: {shown} names no host ({plain}://host:port/…)")
            }
            // `amqp:///vhost`: the client's default host, this machine.
            _ => "localhost",
        };
        if !is_loopback_host(host) {
            remote.push(shown);
        }
    }
    Ok(remote)
}

/// What to write instead of a plaintext URL, by its scheme.
fn tls_advice(shown: &str) -> &'static str {
    let scheme = shown.split_once("://").map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "amqp" => "amqps:// (RabbitMQ's TLS port, 5671 by default)",
        "http" => "https://",
        _ => "TLS (amqps://, https://, sslmode=verify-full)",
    }
}

/// The plaintext URLs already warned about: a process (`portal up`) building several parts from
/// one setting says so once.
static WARNED_PLAINTEXT: Mutex<Option<HashSet<String>>> = Mutex::new(None);

impl NetworkArgs {
    /// Whether `setting` may connect in plaintext to `host` (`shown`: its URL as it may be
    /// shown, without a password): to this machine, always; to another, only with
    /// ALLOW_PLAINTEXT_NETWORK, and then with one loud warning. Every URL setting of a
    /// plaintext scheme (`http`, `amqp`) between the parts is checked here.
    pub fn permit_plaintext(&self, setting: &str, shown: &str, host: &str) -> anyhow::Result<()> {
        if is_loopback_host(host) {
            return Ok(());
        }
        self.allow_or_refuse(setting, shown)
    }

    /// A plaintext URL to another machine: refused, or allowed with one warning.
    fn allow_or_refuse(&self, setting: &str, shown: &str) -> anyhow::Result<()> {
        self.refuse_unless_allowed(setting, shown)?;
        let first = WARNED_PLAINTEXT
            .lock()
            .map(|mut warned| {
                warned
                    .get_or_insert_with(HashSet::new)
                    .insert(format!("{setting} {shown}"))
            })
            .unwrap_or(true);
        if first {
            tracing::warn!(
                target: "security",
                event = "plaintext_network",
                setting,
                url = shown,
                "ALLOW_PLAINTEXT_NETWORK=true: {setting} is reached in PLAINTEXT at {shown}; anyone \
                 on the network path can read or alter what passes"
            );
        }
        Ok(())
    }

    /// The refusal of a plaintext URL to another machine, naming the setting and the ways out;
    /// nothing when ALLOW_PLAINTEXT_NETWORK is set.
    fn refuse_unless_allowed(&self, setting: &str, shown: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.allow_plaintext_network,
            "{setting}: {shown} is a plaintext connection to another machine, which anyone on \
             the network path could read or alter; use {}, or this machine (127.0.0.1, ::1, \
             localhost), or set ALLOW_PLAINTEXT_NETWORK=true on a network you trust",
            tls_advice(shown)
        );
        Ok(())
    }

    /// Checks the comma-separated URLs of `setting`: each of the TLS scheme, or of the plaintext
    /// one as [`NetworkArgs::permit_plaintext`] allows (a warning per URL when allowed).
    pub fn check_urls(&self, kind: LinkKind, setting: &str, urls: &str) -> anyhow::Result<()> {
        plaintext_remote(kind, setting, urls)?
            .iter()
            .try_for_each(|shown| self.allow_or_refuse(setting, shown))
    }

    /// Checks the comma-separated HTTP(S) URLs of `setting`: each `https://`, or `http://` as
    /// [`NetworkArgs::permit_plaintext`] allows.
    pub fn check_http_urls(&self, setting: &str, urls: &str) -> anyhow::Result<()> {
        self.check_urls(LinkKind::Http, setting, urls)
    }

    /// Checks the comma-separated AMQP URLs of `setting` (a broker cluster's nodes): each
    /// `amqps://`, or `amqp://` as [`NetworkArgs::permit_plaintext`] allows.
    pub fn check_amqp_urls(&self, setting: &str, urls: &str) -> anyhow::Result<()> {
        self.check_urls(LinkKind::Amqp, setting, urls)
    }

    /// Checks every link a part is about to connect with (see [`NetworkArgs::check_urls`]): at
    /// start, before anything connects.
    pub fn check(&self, links: &[Link]) -> anyhow::Result<()> {
        links
            .iter()
            .try_for_each(|link| self.check_urls(link.kind, link.setting, &link.urls))
    }

    /// What [`NetworkArgs::check`] would refuse, without logging anything (`portal config
    /// check`).
    pub fn verdict(&self, links: &[Link]) -> anyhow::Result<()> {
        for link in links {
            for shown in plaintext_remote(link.kind, link.setting, &link.urls)? {
                self.refuse_unless_allowed(link.setting, &shown)?;
            }
        }
        Ok(())
    }
}

/// What a part that checks the auth-service's tokens reads to build its verifier, from the
/// groups its command flattens.
#[derive(Debug, Clone, Copy)]
pub struct TokenChecks<'a> {
    pub location: &'a AuthLocationArgs,
    pub lifetime: &'a TokenLifetimeArgs,
    pub refresh: &'a KeyRefreshArgs,
    pub network: &'a NetworkArgs,
}

impl TokenChecks<'_> {
    /// The verifier's configuration: the keys at JWKS_URL, else at each replica's of
    /// AUTH_SERVICE_URL, else `fallback`'s ([`AuthLocationArgs::jwks_url_or`]), which must be
    /// HTTPS or this machine unless ALLOW_PLAINTEXT_NETWORK (a configuration error otherwise:
    /// keys fetched in plaintext could be swapped for an attacker's); tokens living at most
    /// TOKEN_TTL_SECONDS; the keys fetched again every JWKS_REFRESH.
    pub fn verifier(&self, fallback: &str) -> anyhow::Result<VerifierConfig> {
        let keys = self.location.jwks_link(fallback);
        self.network.check(std::slice::from_ref(&keys))?;
        Ok(
            VerifierConfig::new(KeySource::Jwks(keys.urls), self.lifetime.token_ttl_seconds)
                .refreshed_every(self.refresh.jwks_refresh.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        location: AuthLocationArgs,
        #[command(flatten)]
        lifetime: TokenLifetimeArgs,
        #[command(flatten)]
        refresh: KeyRefreshArgs,
        #[command(flatten)]
        network: NetworkArgs,
    }

    fn verifier(args: &[&str]) -> anyhow::Result<VerifierConfig> {
        let c = Command::try_parse_from(std::iter::once("test").chain(args.iter().copied()))?;
        TokenChecks {
            location: &c.location,
            lifetime: &c.lifetime,
            refresh: &c.refresh,
            network: &c.network,
        }
        .verifier(DEFAULT_AUTH_SERVICE_URL)
    }

    #[test]
    fn loopback_hosts_are_this_machine_and_nothing_else() {
        for host in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.9.8.7",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        assert!(is_loopback_host("[::ffff:127.0.0.1]"));
        for host in [
            "10.1.2.3",
            "128.0.0.1",
            "[::2]",
            "localhost.evil.example",
            "auth",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    /// The rule for URLs between the parts, on its own: TLS anywhere, plaintext to this
    /// machine; plaintext elsewhere is what the parts refuse (or, allowed, warn about), each
    /// URL of a list on its own.
    #[test]
    fn plaintext_to_another_machine_is_found_in_every_url_of_a_list() {
        let remote = |kind, urls: &str| plaintext_remote(kind, "X_URL", urls).unwrap();
        for fine in [
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "amqp://u:p@localhost:5681/v,amqp://u:p@127.0.0.1:5682/v,amqp://u:p@[::1]:5683/v",
            "amqp:///%2f",
            "amqps://u:p@mq.clinic.internal:5671/%2f",
            "amqps://u:p@10.0.0.11:5671/%2f,amqps://u:p@10.0.0.12:5671/%2f",
            "AMQP://u:p@LOCALHOST/%2f",
        ] {
            assert!(remote(LinkKind::Amqp, fine).is_empty(), "{fine}");
        }
        assert_eq!(
            remote(
                LinkKind::Amqp,
                "amqp://u:secret@127.0.0.1:5672/v, amqp://u:secret@mq2.clinic.internal:5672/v"
            ),
            ["amqp://u:***@mq2.clinic.internal:5672/v"],
            "the remote node of a cluster, its password hidden"
        );
        assert_eq!(remote(LinkKind::Amqp, "amqp://10.0.0.5/%2f").len(), 1);
        assert_eq!(remote(LinkKind::Amqp, "amqp://rabbitmq:5672/%2f").len(), 1);
        for fine in [
            "http://127.0.0.1:3001",
            "http://localhost:3002/,http://[::1]:3003",
            "https://10.0.0.11:3001,https://auth.clinic.internal",
        ] {
            assert!(remote(LinkKind::Http, fine).is_empty(), "{fine}");
        }
        assert_eq!(
            remote(
                LinkKind::Http,
                "https://10.0.0.11:3001,http://10.0.0.12:3001"
            ),
            ["http://10.0.0.12:3001/"]
        );
        // Compose's service names are not this machine: what a name resolves to can change.
        assert_eq!(remote(LinkKind::Http, "http://auth-service:3001").len(), 1);
        // Another scheme, or no URL at all, is named without its password.
        for (kind, bad) in [
            (LinkKind::Amqp, "http://127.0.0.1:5672"),
            (LinkKind::Http, "amqp://127.0.0.1:3001"),
            (LinkKind::Amqp, "amqp:guest:hunter2@nowhere"),
            (LinkKind::Http, "not a url"),
        ] {
            let e = plaintext_remote(kind, "X_URL", bad)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("X_URL: ") && !e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn a_plaintext_url_to_another_machine_is_refused_unless_allowed() {
        let refused = NetworkArgs::default();
        let allowed = NetworkArgs {
            allow_plaintext_network: true,
        };
        let links = [
            Link::amqp(
                "USER_SERVICE_AMQP_URL",
                "amqp://u:pw@mq.clinic.internal:5672/%2f",
            ),
            Link::http("GATEWAY_URL", "http://127.0.0.1:3000"),
        ];
        let e = refused.check(&links).unwrap_err().to_string();
        assert!(
            e.starts_with("USER_SERVICE_AMQP_URL: amqp://u:***@mq.clinic.internal:5672/%2f")
                && e.contains("amqps://")
                && e.contains("ALLOW_PLAINTEXT_NETWORK=true")
                && !e.contains("pw@"),
            "{e}"
        );
        assert_eq!(
            refused.verdict(&links).unwrap_err().to_string(),
            e,
            "config check says what the start says"
        );
        allowed.check(&links).unwrap();
        allowed.verdict(&links).unwrap();
        let e = refused
            .check(&[Link::http("SYNC_ADMIN_URL", "http://10.0.0.11:3004")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("SYNC_ADMIN_URL: ") && e.contains("https://"),
            "{e}"
        );
        // TLS and this machine need nothing.
        refused
            .check(&[
                Link::amqp("AMQP_URL", "amqps://u:pw@mq.clinic.internal:5671/%2f"),
                Link::amqp("AMQP_URL", DEFAULT_AMQP_URL),
                Link::http("AUTH_SERVICE_URL", DEFAULT_AUTH_SERVICE_URL),
            ])
            .unwrap();
    }

    #[test]
    fn the_key_set_url_must_be_https_or_this_machine() {
        let v = verifier(&[]).unwrap();
        assert!(
            matches!(&v.source, KeySource::Jwks(url) if url == "http://127.0.0.1:3001/api/v1/auth/.well-known/jwks.json")
        );
        assert_eq!(v.max_lifetime_seconds, DEFAULT_TOKEN_TTL_SECONDS);
        assert_eq!(v.refresh, DEFAULT_JWKS_REFRESH);
        for ok in [
            "https://auth.clinic.example/api/v1/auth/.well-known/jwks.json",
            "http://localhost:3001/jwks",
            "http://127.0.0.1:3001/jwks,https://10.0.0.12:3001/jwks",
            "http://[::1]:3001/jwks",
        ] {
            verifier(&["--jwks-url", ok]).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        let refused = verifier(&[
            "--jwks-url",
            "http://10.1.2.3/api/v1/auth/.well-known/jwks.json",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            refused.contains("JWKS_URL") && refused.contains("ALLOW_PLAINTEXT_NETWORK"),
            "{refused}"
        );
        // One replica in plaintext elsewhere is enough to refuse; so is the derived URL.
        assert!(verifier(&["--jwks-url", "https://a.example/j,http://b.example/j"]).is_err());
        let derived = verifier(&["--auth-service-url", "http://auth:3001"])
            .unwrap_err()
            .to_string();
        assert!(derived.contains("AUTH_SERVICE_URL"), "{derived}");
        assert!(verifier(&["--jwks-url", "ftp://127.0.0.1/jwks"]).is_err());
        assert!(verifier(&["--jwks-url", "not a url"]).is_err());
        // Allowed on a trusted network (with a warning).
        verifier(&[
            "--jwks-url",
            "http://10.1.2.3/api/v1/auth/.well-known/jwks.json",
            "--allow-plaintext-network",
        ])
        .unwrap();
    }

    #[test]
    fn the_lifetime_and_refresh_are_bounded() {
        let v = verifier(&["--token-ttl-seconds", "600", "--jwks-refresh", "5s"]).unwrap();
        assert_eq!(
            (v.max_lifetime_seconds, v.refresh),
            (600, Duration::from_secs(5))
        );
        assert!(verifier(&["--token-ttl-seconds", "3600"]).is_err());
        assert!(verifier(&["--jwks-refresh", "2m"]).is_err());
        assert!(verifier(&["--jwks-refresh", "0s"]).is_err());
        assert!(verifier(&["--jwks-refresh", "10ms"]).is_err());
    }
}
