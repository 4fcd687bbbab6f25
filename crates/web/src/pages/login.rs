//! `/login` and `/logout`. A failed login shows one message whatever the cause (unknown email,
//! wrong password, inactive account), so the page tells nothing about accounts; "too many
//! attempts" (429: per address at the gateway, per email in the auth-service) and an expired
//! temporary password (only ever told to the right password) are said apart.
//! Logging out ends the session here and in the auth-service (its refresh token is revoked).

use super::PageForm;
use crate::page::{layout, PageError};
use crate::session::{self, Current, Sessions, SignedIn};
use crate::staff::{api, check_csrf, safe_next, Visitor};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    expired: Option<String>,
    signed_out: Option<String>,
    changed: Option<String>,
}

fn login_page(session: &Current, next: &str, email: &str, message: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(message) = message {
            p class="problem" role="alert" { (message) }
        }
        form class="stacked" method="post" action="/login" {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="next" value=(next);
            div {
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" value=(email);
            }
            div {
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password";
            }
            div { button type="submit" { "Log in" } }
        }
    };
    layout("Log in", None, body)
}

/// The page, with the session cookie set when the visitor had none.
fn with_cookie(state: &AppState, session: &Current, status: StatusCode, page: Markup) -> Response {
    let response = (status, page).into_response();
    if session.new {
        return session::with_cookie(
            response,
            &Sessions::cookie(&session.id, state.secure_cookies),
        );
    }
    response
}

pub async fn form(
    State(state): State<AppState>,
    Visitor { session, .. }: Visitor,
    Query(query): Query<LoginQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    if session.signed.is_some() {
        return Redirect::to(&next).into_response();
    }
    let message = if query.expired.is_some() {
        Some("Your session has ended. Log in again to continue.")
    } else if query.signed_out.is_some() {
        Some("You have logged out.")
    } else if query.changed.is_some() {
        Some("Your password was changed. Log in with the new one.")
    } else {
        None
    };
    let page = login_page(&session, &next, "", message);
    with_cookie(&state, &session, StatusCode::OK, page)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf: Option<String>,
    next: Option<String>,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn submit(
    State(state): State<AppState>,
    Visitor { session, client }: Visitor,
    PageForm(form): PageForm<LoginForm>,
) -> Result<Response, PageError> {
    let next = safe_next(form.next.as_deref());
    if session.new {
        // The form outlived its session (a login page left open on a ward tablet, or the
        // portal restarted): offer it again with a fresh token rather than a dead end.
        let page = login_page(
            &session,
            &next,
            form.email.trim(),
            Some("This page had expired. Enter your password again."),
        );
        return Ok(with_cookie(&state, &session, StatusCode::FORBIDDEN, page));
    }
    check_csrf(&session, form.csrf.as_deref())?;
    let answer = api(&state, None)
        .on_behalf_of(client)
        .login(form.email.trim(), &form.password)
        .await;
    let refused = |message: &str| {
        let page = login_page(&session, &next, form.email.trim(), Some(message));
        with_cookie(&state, &session, StatusCode::UNAUTHORIZED, page)
    };
    match answer {
        Ok(answer) => {
            let must_change = answer.user.must_change_password;
            let signed_in = state.sessions.sign_in(&session.id, SignedIn::of(&answer));
            let to = if must_change {
                "/account/password".to_owned()
            } else {
                next
            };
            Ok(session::with_cookie(
                Redirect::to(&to).into_response(),
                &Sessions::cookie(&signed_in.id, state.secure_cookies),
            ))
        }
        // Said only to whoever typed the right temporary password (the auth-service checks it
        // first), so it tells nothing about other accounts.
        Err(api_client::Error::Refused { body, .. })
            if body.error == "temporary_password_expired" =>
        {
            Ok(refused(
                "This temporary password has expired. Ask an administrator to reset your \
                 password; they will give you a new temporary one.",
            ))
        }
        Err(api_client::Error::Refused { body, .. }) if body.error == "temporary_password_used" => {
            Ok(refused(
                "This temporary password has been used already: it works once. Ask an \
                 administrator to reset your password; they will give you a new temporary one.",
            ))
        }
        // Too many attempts: from this address (the gateway) or at this email (the
        // auth-service, which counts unknown emails alike): either way nothing about accounts.
        Err(e) if e.status().is_some_and(|s| s.as_u16() == 429) => Ok(refused(
            "Too many login attempts just now. Wait a few minutes, then try again.",
        )),
        Err(e)
            if e.status()
                .is_some_and(|s| matches!(s.as_u16(), 400 | 401 | 422)) =>
        {
            Ok(refused(
                "That email and password did not let you in. Check them and try again; after \
                 several failures the account waits a few minutes.",
            ))
        }
        Err(e) => Err(PageError::from_api(e)),
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
}

pub async fn logout(
    State(state): State<AppState>,
    Visitor { session, client }: Visitor,
    PageForm(form): PageForm<LogoutForm>,
) -> Result<Response, PageError> {
    // A session that is already gone has nothing to end: the cookie is cleared, no check.
    if session.signed.is_some() {
        check_csrf(&session, form.csrf.as_deref())?;
    }
    if let Some(signed) = state.sessions.end(&session.id) {
        // Ends the session in the auth-service too; if it cannot be reached, the refresh token
        // expires on its own and this portal has forgotten it already.
        if let Err(e) = api(&state, None)
            .on_behalf_of(client)
            .logout(&signed.refresh)
            .await
        {
            tracing::warn!(error = %e, "logout: the auth-service did not revoke the session");
        }
    }
    Ok(session::with_cookie(
        Redirect::to("/login?signed_out=1").into_response(),
        &Sessions::cleared(state.secure_cookies),
    ))
}
