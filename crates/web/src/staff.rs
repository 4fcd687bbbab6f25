//! Who is asking. [`Visitor`]: any request, with its session (a new visitor's when absent: the
//! login form's, which is not stored). [`Staff`]: a signed-in user; anyone else is sent to `/login` and comes back to the
//! page asked for (with a message when their session has ended). A user whose password must
//! change is sent to `/account/password` from every other page. The access token is renewed
//! with the refresh token when due, one renewal per session at a time; when the API refuses the
//! user's token (the session was ended: expiry, deactivation, a password change elsewhere), the
//! portal's session ends too and the user returns to `/login` with a message.

use crate::page::PageError;
use crate::session::{self, Current, SignedIn};
use crate::AppState;
use api_client::ApiClient;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use platform::client_addr::ClientAddr;
use std::net::IpAddr;
use std::time::Instant;

/// Any request's session, and the address of the person asking.
pub struct Visitor {
    pub session: Current,
    pub client: Option<IpAddr>,
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let id = session::cookie_id(&parts.headers, state.secure_cookies);
        Ok(Self {
            session: state.sessions.current(id.as_deref()),
            client: ClientAddr::of(parts).0,
        })
    }
}

/// A signed-in user, their session, and their address (forwarded to the gateway).
pub struct Staff {
    pub session: Current,
    pub signed: SignedIn,
    pub client: Option<IpAddr>,
    /// The page asked for (where a new login comes back to).
    pub path: String,
}

/// The path and query asked for, as `/login?next=` carries it.
fn asked_for(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned()
}

/// `/login`, remembering where to come back to; `expired` adds "your session has ended".
pub fn to_login(next: &str, expired: bool) -> Response {
    let next: String = url_encode(next);
    let expired = if expired { "&expired=1" } else { "" };
    Redirect::to(&format!("/login?next={next}{expired}")).into_response()
}

/// `s` as a query-string value: letters, digits, `-_.~`, `/` and `@` as they are (readable,
/// and legal in a query), everything else percent-encoded.
pub fn url_encode(s: &str) -> String {
    const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/')
        .remove(b'@');
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// Where a login may send the browser back to: a path of this site only — never `//host`,
/// `/\\host`, a URL, or anything with a control character or space (browsers drop tabs and
/// line breaks from URLs, so `/\t/host` would become `//host`).
pub fn safe_next(next: Option<&str>) -> String {
    let ok = |n: &str| {
        n.starts_with('/')
            && !matches!(n.as_bytes().get(1), Some(b'/' | b'\\'))
            && !n
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
    };
    match next {
        Some(n) if ok(n) => n.to_owned(),
        _ => "/".to_owned(),
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let path = asked_for(parts);
        let id = session::cookie_id(&parts.headers, state.secure_cookies);
        let client = ClientAddr::of(parts).0;
        // A cookie whose session is gone (expired, the portal restarted): "your session has
        // ended"; no cookie at all, or a visitor's (the login page's): just the login.
        let Some(session) = id.as_deref().and_then(|id| state.sessions.find(id)) else {
            let ended = id
                .as_deref()
                .is_some_and(|id| !state.sessions.is_visitor(id));
            return Err(to_login(&path, ended));
        };
        let Some(mut signed) = session.signed.clone() else {
            return Err(to_login(&path, false));
        };
        if Instant::now() >= signed.renew_at {
            signed = renew(state, &session.id, client, &path).await?;
        }
        let p = parts.uri.path();
        if signed.user.must_change_password && p != "/account/password" && p != "/logout" {
            return Err(Redirect::to("/account/password").into_response());
        }
        Ok(Self {
            session,
            signed,
            client,
            path,
        })
    }
}

/// Renews session `id`'s tokens: one renewal at a time per session (the second waits and finds
/// the first's tokens), run to its end even if the browser goes away meanwhile (a rotated token
/// that was never stored would sign the user out at the next request).
async fn renew(
    state: &AppState,
    id: &str,
    client: Option<IpAddr>,
    path: &str,
) -> Result<SignedIn, Response> {
    let ended = || to_login(path, true);
    let lock = state.sessions.renewal_lock(id).ok_or_else(ended)?;
    let _renewing = lock.lock().await;
    let current = state
        .sessions
        .find(id)
        .and_then(|c| c.signed)
        .ok_or_else(ended)?;
    if Instant::now() < current.renew_at {
        return Ok(current); // renewed by the request that held the lock before
    }
    let api = api(state, None).on_behalf_of(client);
    let sessions = state.sessions.clone();
    let session = id.to_owned();
    let renewal = tokio::spawn(async move {
        let answer = api.refresh(&current.refresh).await?;
        let signed = SignedIn::of(&answer);
        sessions.renew(&session, signed.clone());
        Ok::<_, api_client::Error>(signed)
    });
    match renewal.await {
        Ok(Ok(signed)) => Ok(signed),
        Ok(Err(e)) if e.status().is_some_and(|s| s.as_u16() == 401) => {
            state.sessions.end(id);
            Err(ended())
        }
        Ok(Err(e)) => Err(PageError::from_api(e).into_response()),
        Err(_) => Err(PageError::unavailable("Try again in a moment.").into_response()),
    }
}

impl Staff {
    /// The API as this user, on their behalf.
    pub fn api(&self, state: &AppState) -> ApiClient {
        api(state, Some(&self.signed.access)).on_behalf_of(self.client)
    }

    /// A form's CSRF token checked against the session's: 403 page when missing or wrong.
    pub fn check_csrf(&self, token: Option<&str>) -> Result<(), PageError> {
        check_csrf(&self.session, token)
    }

    /// What an API failure means here: a refused token (401) ends the session and returns to
    /// the login, which comes back to this page; anything else is an error page.
    pub fn failed(&self, state: &AppState, e: api_client::Error) -> Response {
        if e.status().is_some_and(|s| s.as_u16() == 401) {
            state.sessions.end(&self.session.id);
            return to_login(&self.path, true);
        }
        PageError::from_api(e).into_response()
    }
}

/// The CSRF check of any form.
pub fn check_csrf(session: &Current, token: Option<&str>) -> Result<(), PageError> {
    match token {
        Some(t) if session::same_token(t, &session.csrf) => Ok(()),
        _ => Err(PageError::forbidden(
            "This form has expired or did not come from this site. Go back, reload the page \
             and try again.",
        )),
    }
}

/// The API through the gateway, with `token` as bearer when given.
pub fn api(state: &AppState, token: Option<&str>) -> ApiClient {
    match token {
        Some(t) => state.api.clone().authenticated(t),
        None => state.api.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_only_returns_to_a_page_of_this_site() {
        assert_eq!(safe_next(Some("/appointments/new")), "/appointments/new");
        assert_eq!(
            safe_next(Some("/appointments?from=x")),
            "/appointments?from=x"
        );
        for bad in [
            "//evil.example/x",
            "https://evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
        assert_eq!(url_encode("/a?b=c&d"), "/a%3Fb%3Dc%26d");
    }
}
