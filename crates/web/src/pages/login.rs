//! `/login`, its second step and `/logout`. A failed login shows one message whatever the cause
//! (unknown email, wrong password, inactive account), so the page tells nothing about accounts;
//! "too many attempts" (429: per address at the gateway, per account and address in the
//! auth-service) and an expired temporary password (only ever told to the right password) are
//! said apart. A right password that a second factor must follow shows the second step (with
//! the key to add to an authenticator app when an admin must enrol first); a newly enrolled
//! factor's recovery codes are shown once, after it. Logging out ends the session here and in
//! the auth-service (its refresh token is revoked).

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

/// A form that outlived its session (a login page left open on a ward tablet, or the portal
/// restarted): the login again with a fresh token rather than a dead end.
fn expired_form(state: &AppState, session: &Current, next: &str, email: &str) -> Response {
    let page = login_page(
        session,
        next,
        email,
        Some("This page had expired. Enter your password again."),
    );
    with_cookie(state, session, StatusCode::FORBIDDEN, page)
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
        return Ok(expired_form(&state, &session, &next, form.email.trim()));
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
        Ok(answer) => Ok(signed_in(&state, &session, &answer, next)),
        // A right password that a second factor must follow: the second step's page.
        Err(api_client::Error::SecondFactor(challenge)) => {
            second_factor_page(&state, &session, client, &next, &challenge.challenge, None).await
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

/// Signs the visitor in with `answer` and goes on to `next` (or to the password change a
/// temporary password asks for); recovery codes of a newly enrolled factor are shown first.
fn signed_in(
    state: &AppState,
    session: &Current,
    answer: &contract::api::LoginResponse,
    next: String,
) -> Response {
    let signed = state.sessions.sign_in(&session.id, SignedIn::of(answer));
    let to = if answer.user.must_change_password {
        "/account/password".to_owned()
    } else {
        next
    };
    let response = match &answer.recovery_codes {
        Some(codes) => recovery_codes_page(&to, codes).into_response(),
        None => Redirect::to(&to).into_response(),
    };
    session::with_cookie(
        response,
        &Sessions::cookie(&signed.id, state.secure_cookies),
    )
}

/// The recovery codes of a factor enrolled just now: shown once, to be kept somewhere safe.
pub(super) fn recovery_codes_page(next: &str, codes: &[String]) -> Markup {
    let body = html! {
        p role="status" {
            "Your second factor is set up. Keep these recovery codes somewhere safe, away from \
             your phone: each signs you in once if the phone is lost. They are not shown again."
        }
        ol id="recovery-codes" class="codes" {
            @for code in codes { li { code { (code) } } }
        }
        p { a href=(next) { "Continue" } }
    };
    layout("Recovery codes", None, body)
}

/// The second step of a sign-in: a code from the authenticator app (or a recovery code); for
/// an admin who must enrol first, the key to add to the app comes with it.
async fn second_factor_page(
    state: &AppState,
    session: &Current,
    client: Option<std::net::IpAddr>,
    next: &str,
    challenge: &str,
    message: Option<&str>,
) -> Result<Response, PageError> {
    let enrolment = match api(state, None)
        .on_behalf_of(client)
        .enrol_at_login(challenge)
        .await
    {
        Ok(enrolment) => Some(enrolment),
        // Enrolled already: the usual second step.
        Err(e) if e.status().is_some_and(|s| s.as_u16() == 409) => None,
        Err(e) if e.status().is_some_and(|s| s.as_u16() == 401) => {
            let page = login_page(
                session,
                next,
                "",
                Some("This sign-in has expired. Enter your password again."),
            );
            return Ok(with_cookie(state, session, StatusCode::UNAUTHORIZED, page));
        }
        Err(e) => return Err(PageError::from_api(e)),
    };
    let title = if enrolment.is_some() {
        "Set up your second factor"
    } else {
        "Second step"
    };
    let body = html! {
        @if let Some(message) = message {
            p class="problem" role="alert" { (message) }
        }
        @if let Some(e) = &enrolment {
            p {
                "Your account must sign in with a second factor. Add this key to an \
                 authenticator app (Microsoft Authenticator, Google Authenticator or another), \
                 then enter the six-digit code it shows."
            }
            p { "Key: " code id="second-factor-key" { (e.secret) } }
            p { a href=(e.otpauth_uri) { "Add to an authenticator app on this device" } }
        }
        form class="stacked" method="post" action="/login/second-factor" {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="next" value=(next);
            input type="hidden" name="challenge" value=(challenge);
            (code_field("Code from your authenticator app, or a recovery code"))
            div { button type="submit" { "Continue" } }
        }
    };
    let status = if message.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    Ok(with_cookie(
        state,
        session,
        status,
        layout(title, None, body),
    ))
}

/// The field for a second factor's code, labelled `label`.
pub(super) fn code_field(label: &str) -> Markup {
    html! {
        div {
            label for="code" { (label) }
            input id="code" name="code" type="text" autocomplete="one-time-code"
                inputmode="numeric" spellcheck="false";
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct SecondFactorForm {
    csrf: Option<String>,
    next: Option<String>,
    #[serde(default)]
    challenge: String,
    #[serde(default)]
    code: String,
}

/// `POST /login/second-factor`: the code for the challenge of a right password.
pub async fn second_factor(
    State(state): State<AppState>,
    Visitor { session, client }: Visitor,
    PageForm(form): PageForm<SecondFactorForm>,
) -> Result<Response, PageError> {
    let next = safe_next(form.next.as_deref());
    if session.new {
        return Ok(expired_form(&state, &session, &next, ""));
    }
    check_csrf(&session, form.csrf.as_deref())?;
    let answer = api(&state, None)
        .on_behalf_of(client)
        .login_second_factor(&form.challenge, form.code.trim())
        .await;
    let again = |message: &'static str| {
        let page = login_page(&session, &next, "", Some(message));
        with_cookie(&state, &session, StatusCode::UNAUTHORIZED, page)
    };
    match answer {
        Ok(answer) => Ok(signed_in(&state, &session, &answer, next)),
        Err(api_client::Error::Refused { body, .. }) if body.error == "second_factor_refused" => {
            second_factor_page(
                &state,
                &session,
                client,
                &next,
                &form.challenge,
                Some("That code did not work. Enter the code the app shows now; each code works once."),
            )
            .await
        }
        Err(e) if e.status().is_some_and(|s| s.as_u16() == 429) => Ok(again(
            "Too many wrong codes just now. Wait a few minutes, then sign in again.",
        )),
        Err(e) if e.status().is_some_and(|s| matches!(s.as_u16(), 400 | 401 | 422)) => Ok(again(
            "This sign-in has expired or had too many wrong codes. Enter your password again.",
        )),
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
