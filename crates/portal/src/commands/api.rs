//! How the commands that talk to the admin API (`portal users`, `import`, `events`, `status`)
//! reach it, and the exit code each of its errors deserves.

use super::Failure;
use crate::cli::ApiClientArgs;
use anyhow::anyhow;
use api_client::ApiClient;

/// The exit code an API error deserves: 2 unreachable, 1 refused (with the API's message).
pub fn api_failure(e: api_client::Error) -> Failure {
    match e {
        api_client::Error::Unreachable { .. } => Failure::unreachable(e),
        other => Failure::from(anyhow!(other)),
    }
}

/// A client logged in as PORTAL_TOKEN, or as PORTAL_EMAIL / PORTAL_PASSWORD.
pub async fn connect(args: &ApiClientArgs) -> Result<ApiClient, Failure> {
    // An admin's password or token travels to PORTAL_URL: TLS, or this machine.
    let api = platform::settings::Link::http("PORTAL_URL", args.url.as_str());
    super::check_links(&args.network, &[api])?;
    let client = ApiClient::new(args.url.trim_end_matches('/')).map_err(api_failure)?;
    match (&args.token, &args.login_email, &args.login_password) {
        (Some(token), _, _) => Ok(client.authenticated(token.clone())),
        (None, Some(email), Some(password)) => {
            client.logged_in(email, password).await.map_err(api_failure)
        }
        _ => {
            Err(anyhow!("set PORTAL_TOKEN, or PORTAL_EMAIL and PORTAL_PASSWORD of an admin").into())
        }
    }
}
