//! `/account/second-factor`: a signed-in user's second factor — whether they have one and how
//! many recovery codes are left; setting one up (the key for the authenticator app, then a code
//! made with it, then the recovery codes, shown once). Under ADMIN_MFA=required admins are made
//! to enrol at sign-in instead (the login's second step); under `optional` anyone may enrol here.

use super::PageForm;
use crate::page::layout;
use crate::staff::Staff;
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

pub async fn show(State(state): State<AppState>, staff: Staff) -> Response {
    let status = match staff.api(&state).second_factor().await {
        Ok(status) => status,
        Err(e) => return staff.failed(&state, e),
    };
    let body = html! {
        @if status.enrolled {
            p role="status" {
                "Your account signs in with a second factor: after your password, a code from "
                "your authenticator app. " (status.recovery_codes_left) " recovery codes are left."
            }
            p { "Lost the phone? An admin can reset your second factor; you then set it up again." }
        } @else {
            p {
                "A second factor makes a stolen password useless on its own: after your "
                "password you enter a code from an authenticator app on your phone."
                @if status.required { " Your account must have one." }
            }
            form method="post" action="/account/second-factor" {
                input type="hidden" name="csrf" value=(staff.session.csrf);
                button type="submit" { "Set up a second factor" }
            }
        }
    };
    layout("Second factor", Some((&staff.signed, &staff.session)), body).into_response()
}

#[derive(Debug, Deserialize)]
pub struct StartForm {
    csrf: Option<String>,
}

/// The key and the form for the first code.
fn key_page(
    staff: &Staff,
    key: &contract::api::SecondFactorEnrolment,
    message: Option<&str>,
) -> Response {
    let body = html! {
        @if let Some(message) = message { p class="problem" role="alert" { (message) } }
        p {
            "Add this key to an authenticator app (Microsoft Authenticator, Google "
            "Authenticator or another), then enter the six-digit code it shows."
        }
        p { "Key: " code id="second-factor-key" { (key.secret) } }
        p { a href=(key.otpauth_uri) { "Add to an authenticator app on this device" } }
        form class="stacked" method="post" action="/account/second-factor/confirm" {
            input type="hidden" name="csrf" value=(staff.session.csrf);
            (super::login::code_field("Code from your authenticator app"))
            div { button type="submit" { "Confirm" } }
        }
    };
    let status = if message.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    (
        status,
        layout(
            "Set up your second factor",
            Some((&staff.signed, &staff.session)),
            body,
        ),
    )
        .into_response()
}

/// `POST /account/second-factor`: starts enrolling (the same key for ten minutes).
pub async fn start(
    State(state): State<AppState>,
    staff: Staff,
    PageForm(form): PageForm<StartForm>,
) -> Response {
    if let Err(refused) = staff.check_csrf(form.csrf.as_deref()) {
        return refused.into_response();
    }
    match staff.api(&state).enrol_second_factor().await {
        Ok(key) => key_page(&staff, &key, None),
        Err(e) => staff.failed(&state, e),
    }
}

#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    csrf: Option<String>,
    #[serde(default)]
    code: String,
}

/// `POST /account/second-factor/confirm`: the first code; the recovery codes, once.
pub async fn confirm(
    State(state): State<AppState>,
    staff: Staff,
    PageForm(form): PageForm<ConfirmForm>,
) -> Response {
    if let Err(refused) = staff.check_csrf(form.csrf.as_deref()) {
        return refused.into_response();
    }
    let api = staff.api(&state);
    match api.confirm_second_factor(form.code.trim()).await {
        Ok(codes) => (
            StatusCode::OK,
            super::login::recovery_codes_page("/account/second-factor", &codes.recovery_codes),
        )
            .into_response(),
        Err(api_client::Error::Refused { status, .. }) if status.as_u16() == 422 => {
            // The same key again (kept for ten minutes), with what went wrong.
            match api.enrol_second_factor().await {
                Ok(key) => key_page(
                    &staff,
                    &key,
                    Some("That code did not work. Enter the code the app shows now."),
                ),
                Err(e) => staff.failed(&state, e),
            }
        }
        Err(e) => staff.failed(&state, e),
    }
}
