//! The portal's routes: one module per group of pages, the stylesheet, health, and the 404
//! page for everything else.

mod account;
mod admin;
mod appointments;
mod erasure;
mod home;
mod login;
mod offboarding;
mod scim;
mod second_factor;
mod sync;
mod user_edit;

use crate::page::PageError;
use crate::AppState;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(home::show))
        .route("/login", get(login::form).post(login::submit))
        .route("/login/second-factor", post(login::second_factor))
        .route("/logout", post(login::logout))
        .route(
            "/appointments/new",
            get(appointments::form).post(appointments::book),
        )
        .route("/appointments", get(appointments::list))
        .route("/appointments/{id}", get(appointments::show))
        .route(
            "/account/password",
            get(account::form).post(account::change),
        )
        .route(
            "/account/second-factor",
            get(second_factor::show).post(second_factor::start),
        )
        .route(
            "/account/second-factor/confirm",
            post(second_factor::confirm),
        )
        .route("/admin/users", get(admin::users).post(admin::create))
        .route("/admin/users/{id}", get(user_edit::form))
        .route(
            "/admin/users/{id}/edit",
            get(user_edit::form).post(user_edit::save),
        )
        .route("/admin/users/{id}/role", post(user_edit::role))
        .route("/admin/users/{id}/offboard", post(offboarding::start))
        .route(
            "/admin/users/{id}/erasure",
            get(erasure::show).post(erasure::erase),
        )
        .route("/admin/users/{id}/{action}", post(admin::action))
        .route("/admin/registrations/{id}/approve", post(admin::approve))
        .route("/admin/registrations/{id}/decline", post(admin::decline))
        .route("/admin/offboarding", get(offboarding::list))
        .route("/admin/offboarding/{id}", get(offboarding::show))
        .route("/admin/offboarding/{id}/cancel", post(offboarding::cancel))
        .route("/admin/scim", get(scim::list).post(scim::create))
        .route("/admin/scim/{id}/revoke", post(scim::revoke))
        .route("/admin/sync", get(sync::show))
        .route("/admin/sync/verify", post(sync::verify))
        .route("/admin/sync/requeue/{queue}", post(sync::requeue))
        .route("/admin/sync/discard/{queue}", post(sync::discard))
        .route("/static/portal.css", get(stylesheet))
        .route("/static/copy.js", get(copy_script))
        .route("/health/live", get(platform::http::live))
        .route("/health/ready", get(ready))
        .fallback(|| async { PageError::not_found() })
        .with_state(state)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/portal.css"),
    )
}

/// The one script: a "Copy" button beside a value to copy (the temporary password). Without
/// JavaScript the button stays hidden and the value is selectable as ever.
async fn copy_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/copy.js"),
    )
}

/// Ready when the gateway answers its liveness check.
async fn ready(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let url = format!("{}/health/live", state.api.base().trim_end_matches('/'));
    let up = state
        .http
        .get(&url)
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    let status = if up {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let down: Vec<&str> = if up { vec![] } else { vec!["gateway"] };
    (
        status,
        axum::Json(serde_json::json!({
            "status": if up { "ready" } else { "unavailable" },
            "unavailable": down,
        })),
    )
}

/// A form body read leniently: a browser's `application/x-www-form-urlencoded` fields as text;
/// anything else is a 400 page, never axum's plain-text rejection.
pub struct PageForm<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for PageForm<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = PageError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, PageError> {
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|f| Self(f.0))
            .map_err(|e| PageError::bad_request(format!("The form could not be read: {e}")))
    }
}

/// A form field's problem, under the field, with the id its `aria-describedby` names.
pub(crate) fn field_error(id: &str, problem: Option<&String>) -> maud::Markup {
    maud::html! {
        @if let Some(problem) = problem { p class="field-error" id=(format!("{id}-error")) { (problem) } }
    }
}
