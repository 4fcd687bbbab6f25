//! `portal healthcheck PART`: for a container's `HEALTHCHECK`, a probe or a script. It asks one
//! part whether it is ready (`GET /health/ready`, which every part serves, the relay on its
//! own small port) where that part's settings say it listens, read exactly as `portal PART`
//! reads them (environment, credentials file, defaults), so the check and the part cannot
//! disagree about the address. A part listening on every address (0.0.0.0, ::) is asked on
//! loopback. One line says which URL answered what: exit 0 on a 2xx answer; 1 on any other
//! answer, or none within `--timeout`; 64 when the part's settings are bad (the part refuses
//! to start on them too).

use super::Failure;
use crate::cli::{Command, HealthcheckCommand, Part};
use crate::settings::Sources;
use anyhow::anyhow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

pub async fn run(c: &HealthcheckCommand, sources: &Sources) -> Result<(), Failure> {
    let url = ready_url(listen_addr(c.part, sources)?);
    let http = reqwest::Client::builder()
        .timeout(c.timeout)
        // The part is on this machine: a proxy from the environment (HTTP_PROXY in a
        // container) would answer for it, and a redirect is not a ready part.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| anyhow!("cannot build the HTTP client: {e}"))?;
    match http.get(&url).send().await {
        Ok(answer) if answer.status().is_success() => {
            println!("{url} answered {}", answer.status());
            Ok(())
        }
        Ok(answer) => {
            let status = answer.status();
            let body: serde_json::Value = answer.json().await.unwrap_or_default();
            Err(anyhow!("{url} answered {status}{}", unavailable(&body)).into())
        }
        Err(e) => Err(anyhow!("{url}: {}", no_answer(&e, c.timeout)).into()),
    }
}

/// Where `part` listens, read from its own settings, and the setting(s) that say so; a bad
/// setting, or a port chosen at start (0), is a usage error naming it.
fn listen_addr(part: Part, sources: &Sources) -> Result<SocketAddr, Failure> {
    let name = part.command();
    let (cli, _) = sources.parse_from(["portal", name]).map_err(|e| {
        Failure::usage(anyhow!(
            "{name}: {}",
            super::config::first_line(&e.to_string())
        ))
    })?;
    let (addr, setting) = match cli.command {
        Command::AuthService(c) => (c.settings.service.auth_addr, "AUTH_ADDR"),
        Command::UserService(c) => (c.service.user_addr, "USER_ADDR"),
        Command::AppointmentService(c) => (c.service.appointment_addr, "APPOINTMENT_ADDR"),
        Command::SyncAdmin(c) => (c.sync_admin.sync_admin_addr, "SYNC_ADMIN_ADDR"),
        Command::Gateway(c) => (c.gateway.gateway_addr, "GATEWAY_ADDR"),
        Command::Web(c) => (SocketAddr::new(c.web.web_host, c.web.web_port), "WEB_PORT"),
        Command::Relay(c) => (c.http.addr(), "RELAY_HTTP_PORT"),
        _ => return Err(Failure::usage(anyhow!("{name} is not a part"))),
    };
    if addr.port() == 0 {
        return Err(Failure::usage(anyhow!(
            "{name}: {setting} gives port 0, a free port the part chooses at start, which a \
             healthcheck cannot know: give the part a port of its own"
        )));
    }
    Ok(to_ask(addr))
}

/// The address to ask a part listening on `addr`: the same, except every address (0.0.0.0,
/// ::), which is no address to connect to, becomes loopback of the same family.
fn to_ask(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn ready_url(addr: SocketAddr) -> String {
    format!("http://{addr}/health/ready")
}

/// What a readiness answer says is down (` (unavailable: auth_db, broker)`), or nothing.
fn unavailable(body: &serde_json::Value) -> String {
    let down: Vec<&str> = body["unavailable"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i.as_str()).collect())
        .unwrap_or_default();
    match down.is_empty() {
        true => String::new(),
        false => format!(" (unavailable: {})", down.join(", ")),
    }
}

/// Why nothing answered, in the fewest words: the timeout, or the innermost cause (`Connection
/// refused (os error 111)`) rather than reqwest's chain of wrappers.
fn no_answer(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {timeout:?}");
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("no answer: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_address_is_asked_on_loopback_and_any_other_as_it_is() {
        let ask = |a: &str| to_ask(a.parse().unwrap()).to_string();
        assert_eq!(ask("0.0.0.0:3001"), "127.0.0.1:3001");
        assert_eq!(ask("[::]:3001"), "[::1]:3001");
        assert_eq!(ask("10.0.0.5:3001"), "10.0.0.5:3001");
        assert_eq!(ask("127.0.0.1:3005"), "127.0.0.1:3005");
        assert_eq!(
            ready_url(to_ask("[::]:3100".parse().unwrap())),
            "http://[::1]:3100/health/ready"
        );
    }

    #[test]
    fn a_readiness_answer_names_what_is_down() {
        let body =
            serde_json::json!({"status": "unavailable", "unavailable": ["auth_db", "broker"]});
        assert_eq!(unavailable(&body), " (unavailable: auth_db, broker)");
        assert_eq!(
            unavailable(&serde_json::json!({"status": "ready", "unavailable": []})),
            ""
        );
        assert_eq!(unavailable(&serde_json::Value::Null), "");
    }
}
