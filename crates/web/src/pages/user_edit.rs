//! `/admin/users/{id}` (also at `/admin/users/{id}/edit`; admins only): one user's page — the
//! propagation line, the offboarding section ([`super::offboarding`]) and the erasure section
//! ([`super::erasure`]), the profile (email, names, phone) and role, each saved through the
//! admin API as its own versioned change. A refused change comes back with the values as typed
//! and the API's words; the last active admin cannot be demoted. An erased person's page shows
//! only when they were erased and how far that has reached: there is nothing left to change.

use super::admin::{admin_only, refuse_admin_post};
use super::offboarding::{user_sections, UserSections};
use super::PageForm;
use crate::page::{layout, PageError};
use crate::staff::Staff;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use contract::api::UpdateUserRequest;
use contract::{Role, UserSnapshot};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

/// The profile form's fields as typed.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileForm {
    csrf: Option<String>,
    #[serde(default)]
    email: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    phone_number: String,
}

impl ProfileForm {
    fn of(user: &UserSnapshot) -> Self {
        Self {
            csrf: None,
            email: user.email.as_str().to_owned(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            phone_number: user.phone_number.clone().unwrap_or_default(),
        }
    }

    /// Only what differs from `user`: an unchanged field is not sent, so saving an untouched
    /// form writes no event.
    fn changes(&self, user: &UserSnapshot) -> UpdateUserRequest {
        let now = Self::of(user);
        let changed = |typed: &str, stored: &str| {
            let typed = typed.trim();
            (typed != stored).then(|| typed.to_owned())
        };
        UpdateUserRequest {
            email: changed(&self.email, &now.email),
            first_name: changed(&self.first_name, &now.first_name),
            last_name: changed(&self.last_name, &now.last_name),
            phone_number: changed(&self.phone_number, &now.phone_number)
                .map(|p| (!p.is_empty()).then_some(p)),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct EditQuery {
    /// What was just saved, for the notice.
    saved: Option<String>,
}

fn page(
    staff: &Staff,
    user: &UserSnapshot,
    values: &ProfileForm,
    problem: Option<&str>,
    notice: Option<&str>,
    sections: &UserSections,
) -> Markup {
    let id = user.user_id.0;
    let name = format!("{} {}", user.first_name, user.last_name);
    if user.is_erased() {
        let body = html! {
            @if let Some(problem) = problem { p class="problem" role="alert" { (problem) } }
            p { "User " code { (id) } " · version "
                (user.user_version.map_or("-".to_owned(), |v| v.to_string())) }
            (sections.propagation)
            (sections.erasure)
            p { a href="/admin/users" { "Back to the users" } }
        };
        return layout("Erased user", Some((&staff.signed, &staff.session)), body);
    }
    let body = html! {
        @if let Some(notice) = notice { p class="notice" role="status" { (notice) } }
        @if let Some(problem) = problem { p class="problem" role="alert" { (problem) } }
        p { (name) " · version " (user.user_version.map_or("-".to_owned(), |v| v.to_string()))
            " · " @if user.is_active { "active" } @else { "inactive" } }
        (sections.propagation)
        h2 { "Profile" }
        form class="stacked" method="post" action=(format!("/admin/users/{id}/edit")) {
            input type="hidden" name="csrf" value=(staff.session.csrf);
            div { label for="email" { "Email" }
                  input id="email" name="email" type="email" value=(values.email); }
            div { label for="firstName" { "First name" }
                  input id="firstName" name="firstName" type="text" value=(values.first_name); }
            div { label for="lastName" { "Last name" }
                  input id="lastName" name="lastName" type="text" value=(values.last_name); }
            div { label for="phoneNumber" { "Phone (optional)" }
                  input id="phoneNumber" name="phoneNumber" type="tel" value=(values.phone_number); }
            div { button type="submit" { "Save profile" } }
        }
        h2 { "Role" }
        form class="stacked" method="post" action=(format!("/admin/users/{id}/role")) {
            input type="hidden" name="csrf" value=(staff.session.csrf);
            div { label for="role" { "Role" }
                  select id="role" name="role" {
                      @for r in Role::ALL {
                          option value=(r.as_str()) selected[user.role == r] { (r.as_str()) }
                      }
                  } }
            div { button type="submit" { "Change role" } }
        }
        (sections.offboarding)
        (sections.erasure)
        p { a href=(format!("/admin/users?q={}", crate::staff::url_encode(user.email.as_str()))) { "Back to the users" } }
    };
    layout(&name, Some((&staff.signed, &staff.session)), body)
}

/// The user's page as it stands (the offboarding form coming back with its problems).
pub(super) fn user_page(staff: &Staff, user: &UserSnapshot, sections: &UserSections) -> Markup {
    page(staff, user, &ProfileForm::of(user), None, None, sections)
}

/// The user, or the page that says why not.
pub(super) async fn load(
    staff: &Staff,
    state: &AppState,
    id: &str,
) -> Result<UserSnapshot, Response> {
    let Ok(id) = id.parse::<Uuid>() else {
        return Err(PageError::not_found().into_response());
    };
    staff
        .api(state)
        .user(id)
        .await
        .map_err(|e| staff.failed(state, e))
}

pub async fn form(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Query(query): Query<EditQuery>,
) -> Response {
    if let Some(refused) = admin_only(&staff) {
        return refused;
    }
    let user = match load(&staff, &state, &id).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let notice = match query.saved.as_deref() {
        Some("profile") => Some("Profile saved."),
        Some("role") => Some("Role changed."),
        Some("nothing") => Some("Nothing had changed."),
        _ => None,
    };
    let sections = user_sections(&staff, &state, &user, None).await;
    page(
        &staff,
        &user,
        &ProfileForm::of(&user),
        None,
        notice,
        &sections,
    )
    .into_response()
}

/// `POST /admin/users/{id}/edit`.
pub async fn save(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    PageForm(values): PageForm<ProfileForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, values.csrf.as_deref()) {
        return refused;
    }
    let user = match load(&staff, &state, &id).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let changes = values.changes(&user);
    let unchanged = changes.email.is_none()
        && changes.first_name.is_none()
        && changes.last_name.is_none()
        && changes.phone_number.is_none();
    let back = format!("/admin/users/{}/edit", user.user_id.0);
    if unchanged {
        return Redirect::to(&format!("{back}?saved=nothing")).into_response();
    }
    match staff
        .api(&state)
        .update_user(user.user_id.0, &changes)
        .await
    {
        Ok(_) => Redirect::to(&format!("{back}?saved=profile")).into_response(),
        Err(api_client::Error::Refused { status, body })
            if matches!(status.as_u16(), 409 | 422) =>
        {
            let sections = user_sections(&staff, &state, &user, None).await;
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                page(&staff, &user, &values, Some(&body.message), None, &sections),
            )
                .into_response()
        }
        Err(e) => staff.failed(&state, e),
    }
}

#[derive(Debug, Deserialize)]
pub struct RoleForm {
    csrf: Option<String>,
    #[serde(default)]
    role: String,
}

/// `POST /admin/users/{id}/role`.
pub async fn role(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    PageForm(form): PageForm<RoleForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, form.csrf.as_deref()) {
        return refused;
    }
    let user = match load(&staff, &state, &id).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let back = format!("/admin/users/{}/edit", user.user_id.0);
    if user.role.as_str() == form.role {
        return Redirect::to(&format!("{back}?saved=nothing")).into_response();
    }
    match staff.api(&state).set_role(user.user_id.0, &form.role).await {
        Ok(_) => Redirect::to(&format!("{back}?saved=role")).into_response(),
        Err(api_client::Error::Refused { status, body })
            if matches!(status.as_u16(), 409 | 422) =>
        {
            let sections = user_sections(&staff, &state, &user, None).await;
            (
                StatusCode::CONFLICT,
                page(
                    &staff,
                    &user,
                    &ProfileForm::of(&user),
                    Some(&body.message),
                    None,
                    &sections,
                ),
            )
                .into_response()
        }
        Err(e) => staff.failed(&state, e),
    }
}
