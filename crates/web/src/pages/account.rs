//! `/account/password`: change the password. While the account must change its password every
//! other page sends the user here. A change ends every session of the account in the
//! auth-service, so the portal signs in again with the new password and carries on.

use super::PageForm;
use crate::page::{layout, PageError};
use crate::session::{self, Sessions, SignedIn};
use crate::staff::{api, Staff};
use crate::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

fn password_page(staff: &Staff, message: Option<&str>) -> Markup {
    let body = html! {
        @if staff.signed.user.must_change_password {
            p class="problem" role="alert" {
                "Your password was set by an admin or the system. Choose your own before using the portal."
            }
        }
        @if let Some(message) = message {
            p class="problem" role="alert" { (message) }
        }
        form class="stacked" method="post" action="/account/password" {
            input type="hidden" name="csrf" value=(staff.session.csrf);
            div {
                label for="currentPassword" { "Current password" }
                input id="currentPassword" name="currentPassword" type="password" autocomplete="current-password";
            }
            div {
                label for="newPassword" { "New password" }
                input id="newPassword" name="newPassword" type="password" autocomplete="new-password";
                p { "At least 8 characters; not a common password, not your name or email." }
            }
            div {
                label for="confirmPassword" { "New password again" }
                input id="confirmPassword" name="confirmPassword" type="password" autocomplete="new-password";
            }
            div { button type="submit" { "Change password" } }
        }
    };
    layout(
        "Change password",
        Some((&staff.signed, &staff.session)),
        body,
    )
}

pub async fn form(staff: Staff) -> Markup {
    password_page(&staff, None)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordForm {
    csrf: Option<String>,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

pub async fn change(
    State(state): State<AppState>,
    staff: Staff,
    PageForm(form): PageForm<PasswordForm>,
) -> Result<Response, PageError> {
    staff.check_csrf(form.csrf.as_deref())?;
    let again = |message: &str| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            password_page(&staff, Some(message)),
        )
            .into_response()
    };
    if form.new_password != form.confirm_password {
        return Ok(again("The two new passwords differ."));
    }
    match staff
        .api(&state)
        .change_password(&form.current_password, &form.new_password)
        .await
    {
        Ok(_) => {}
        Err(api_client::Error::Refused { status, body })
            if matches!(status.as_u16(), 400 | 422) =>
        {
            let message = match body.field.as_deref() {
                Some("currentPassword") => "The current password is not right.".to_owned(),
                _ => body
                    .message
                    .split_once(": ")
                    .map_or(body.message.clone(), |(_, m)| {
                        format!("The new password {m}.")
                    }),
            };
            return Ok(again(&message));
        }
        Err(e) => return Ok(staff.failed(&state, e)),
    }
    // The change ended every session of the account: sign in again with the new password.
    let email = staff.signed.user.email.as_str().to_owned();
    match api(&state, None)
        .on_behalf_of(staff.client)
        .login(&email, &form.new_password)
        .await
    {
        Ok(answer) => {
            let session = state
                .sessions
                .sign_in(&staff.session.id, SignedIn::of(&answer));
            Ok(session::with_cookie(
                Redirect::to("/").into_response(),
                &Sessions::cookie(&session.id, state.secure_cookies),
            ))
        }
        // Changed, but the new login did not go through (a limit, an outage): say so, so the
        // old password is not tried again.
        Err(_) => {
            state.sessions.end(&staff.session.id);
            Ok(Redirect::to("/login?changed=1").into_response())
        }
    }
}
