//! The layout every page shares (header with who is signed in, the pages their role may use,
//! and logout), and the error pages: 403, 404, and 503 naming the part that is down. No page
//! shows a stack trace: an unexpected failure is logged and answered with a plain 500 page.

use crate::session::{Current, SignedIn};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use contract::Role;
use maud::{html, Markup, DOCTYPE};

/// A page: `title`, the signed-in user (for the header), the session (for the logout form's
/// CSRF token) and the body.
pub fn layout(title: &str, who: Option<(&SignedIn, &Current)>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Clinical portal" }
                link rel="stylesheet" href="/static/portal.css";
            }
            body {
                header class="top" {
                    a class="brand" href="/" { "Clinical portal" }
                    @if let Some((signed, session)) = who {
                        nav aria-label="Main" {
                            ul {
                                @for (href, label) in links(signed.user.role) {
                                    li { a href=(href) { (label) } }
                                }
                            }
                        }
                        form class="logout" method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            span class="who" { (signed.user.first_name) " " (signed.user.last_name) " (" (signed.user.role) ")" }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The pages a role may use, as (path, label).
pub fn links(role: Role) -> Vec<(&'static str, &'static str)> {
    let mut links = vec![("/", "Home")];
    if matches!(role, Role::Admin | Role::Nurse | Role::Doctor) {
        links.push(("/appointments/new", "New appointment"));
    }
    links.push(("/appointments", "Appointments"));
    if role == Role::Admin {
        links.push(("/admin/users", "Users"));
        links.push(("/admin/offboarding", "Offboarding"));
        links.push(("/admin/sync", "Sync status"));
    }
    links.push(("/account/password", "Change password"));
    links.push(("/account/second-factor", "Second factor"));
    links
}

/// An error answered as a page.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl PageError {
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            title: "Not allowed",
            message: message.into(),
        }
    }

    pub fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            title: "Page not found",
            message: "There is no such page.".into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Temporarily unavailable",
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "Bad request",
            message: message.into(),
        }
    }

    /// What an API failure means to the person at the screen. 502/503/504 name the part that is
    /// down, as the gateway does; anything unexpected is logged and shown without detail.
    pub fn from_api(e: api_client::Error) -> Self {
        match &e {
            api_client::Error::Unreachable { .. } => Self::unavailable(
                "The portal cannot reach the gateway right now. Try again in a moment.",
            ),
            api_client::Error::Refused { status, body } => match status.as_u16() {
                // Handlers end the session on a 401 before it gets here ([`Staff::failed`]).
                401 => Self {
                    status: StatusCode::UNAUTHORIZED,
                    title: "Session ended",
                    message: "Your session has ended. Log in again to continue.".into(),
                },
                403 => Self::forbidden(body.message.clone()),
                429 => Self::unavailable(
                    "Too many requests from this device just now. Wait a minute, then try again.",
                ),
                404 => Self::not_found(),
                // The gateway names the part: "user-service is unreachable; try again shortly".
                502..=504 => Self::unavailable(format!(
                    "Part of the system cannot be reached: {}.",
                    body.message.trim_end_matches('.')
                )),
                _ => Self::internal(&e),
            },
            api_client::Error::Unexpected { .. }
            | api_client::Error::Invalid(_)
            | api_client::Error::SecondFactor(_) => Self::internal(&e),
        }
    }

    fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "unexpected answer from the API");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            title: "Something went wrong",
            message: "The portal could not complete this request. Try again; if it keeps \
                      happening, tell the IT desk the time it happened."
                .into(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = html! {
            p class="error" role="alert" { (self.message) }
            p { a href="/" { "Home" } }
        };
        (self.status, layout(self.title, None, body)).into_response()
    }
}
