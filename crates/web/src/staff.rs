//! Who is asking. [`Visitor`]: any request, with its session (created when absent). [`Staff`]:
//! a signed-in user; anyone else is sent to `/login` and comes back to the page asked for. A
//! user whose password must change is sent to `/account/password` from every other page. The
//! access token is renewed with the refresh token when due; a session the auth-service has
//! ended (logout elsewhere, deactivation, expiry) returns to `/login` with a message.

use crate::page::PageError;
use crate::session::{self, Current, SignedIn};
use crate::AppState;
use api_client::ApiClient;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use std::time::Instant;

/// Any request's session.
pub struct Visitor {
    pub session: Current,
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let id = session::cookie_id(&parts.headers);
        Ok(Self {
            session: state.sessions.current(id.as_deref()),
        })
    }
}

/// A signed-in user and their session.
pub struct Staff {
    pub session: Current,
    pub signed: SignedIn,
}

/// The path and query asked for, as `/login?next=` carries it.
fn asked_for(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned()
}

/// `/login`, remembering where to come back to.
pub fn to_login(next: &str, expired: bool) -> Response {
    let next: String = url_encode(next);
    let expired = if expired { "&expired=1" } else { "" };
    Redirect::to(&format!("/login?next={next}{expired}")).into_response()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where a login may send the browser back to: a path of this site only (never `//host` or a
/// URL, which would make the login page an open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let id = session::cookie_id(&parts.headers);
        let session = state.sessions.current(id.as_deref());
        let Some(mut signed) = session.signed.clone() else {
            return Err(to_login(&asked_for(parts), false));
        };
        if Instant::now() >= signed.renew_at {
            match api(state, None).refresh(&signed.refresh).await {
                Ok(answer) => {
                    signed = SignedIn::of(&answer);
                    state.sessions.renew(&session.id, signed.clone());
                }
                Err(e) if e.status().is_some_and(|s| s.as_u16() == 401) => {
                    state.sessions.end(&session.id);
                    return Err(to_login(&asked_for(parts), true));
                }
                Err(e) => return Err(PageError::from_api(e).into_response()),
            }
        }
        let path = parts.uri.path();
        if signed.user.must_change_password && path != "/account/password" && path != "/logout" {
            return Err(Redirect::to("/account/password").into_response());
        }
        Ok(Self { session, signed })
    }
}

impl Staff {
    /// The API as this user.
    pub fn api(&self, state: &AppState) -> ApiClient {
        api(state, Some(&self.signed.access))
    }

    /// A form's CSRF token checked against the session's: 403 page when missing or wrong.
    pub fn check_csrf(&self, token: Option<&str>) -> Result<(), PageError> {
        check_csrf(&self.session, token)
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
        assert_eq!(safe_next(Some("//evil.example/x")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
        assert_eq!(url_encode("/a?b=c&d"), "/a%3Fb%3Dc%26d");
    }
}
