//! `/admin/users` (admins only): the users of `auth_db` with filters (role, active, a search by
//! name or email) and paging, each with a badge comparing its `userVersion` in the auth-service
//! with the directory's copy — "in sync", or "syncing…" while the change is on its way — so an
//! admin sees a change arrive; a form to create a user (the temporary password is shown once,
//! with a copy button), and per user: activate or deactivate, reset the password or (another
//! user's) second factor, and links to the user's page (`user_edit`: profile, role,
//! propagation, offboarding) by name and by "Edit"; requests for
//! an account, approved with a role or declined. Everyone else gets a 403 page.

use super::PageForm;
use crate::page::{layout, PageError};
use crate::staff::Staff;
use crate::AppState;
use api_client::ListFilter;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use contract::{Role, UserSnapshot};
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;

const PAGE: u32 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct UsersQuery {
    role: Option<String>,
    active: Option<String>,
    q: Option<String>,
    page: Option<u32>,
}

impl UsersQuery {
    fn filter(&self) -> ListFilter {
        let nonempty = |v: &Option<String>| {
            v.as_ref()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        ListFilter {
            role: nonempty(&self.role).filter(|r| r.parse::<Role>().is_ok()),
            is_active: match self.active.as_deref() {
                Some("yes") => Some(true),
                Some("no") => Some(false),
                _ => None,
            },
            q: nonempty(&self.q),
            limit: Some(PAGE),
            offset: Some(self.page.unwrap_or(0).saturating_mul(PAGE)),
        }
    }

    /// This query's link to page `page`.
    fn link(&self, page: u32) -> String {
        let enc = crate::staff::url_encode;
        format!(
            "/admin/users?role={}&active={}&q={}&page={page}",
            enc(self.role.as_deref().unwrap_or("")),
            enc(self.active.as_deref().unwrap_or("")),
            enc(self.q.as_deref().unwrap_or("")),
        )
    }
}

fn badge(user: &UserSnapshot, copies: &HashMap<uuid::Uuid, Option<i64>>) -> Markup {
    let synced = copies
        .get(&user.user_id.0)
        .is_some_and(|v| *v >= user.user_version);
    html! {
        @if synced { span class="badge ok" { "in sync" } }
        @else { span class="badge wait" { "syncing…" } }
    }
}

/// The new-user form's fields as typed (kept when it comes back with an error).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewUserForm {
    csrf: Option<String>,
    #[serde(default)]
    email: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    phone_number: String,
}

/// The 403 page for anyone but an admin.
pub(crate) fn admin_only(staff: &Staff) -> Option<Response> {
    (staff.signed.user.role != Role::Admin)
        .then(|| PageError::forbidden("This page is for admins.").into_response())
}

/// What refuses an admin form's POST: the 403 page for anyone but an admin, or for a missing
/// or wrong CSRF token.
pub(crate) fn refuse_admin_post(staff: &Staff, csrf: Option<&str>) -> Option<Response> {
    admin_only(staff).or_else(|| {
        staff
            .check_csrf(csrf)
            .err()
            .map(IntoResponse::into_response)
    })
}

/// What an admin form's POST about one id needs first: [`refuse_admin_post`], then the id
/// (the 404 page when it is not one).
fn admin_post_on(staff: &Staff, csrf: Option<&str>, id: &str) -> Result<uuid::Uuid, Box<Response>> {
    if let Some(refused) = refuse_admin_post(staff, csrf) {
        return Err(Box::new(refused));
    }
    id.parse()
        .map_err(|_| Box::new(PageError::not_found().into_response()))
}

fn new_user_form(staff: &Staff, values: &NewUserForm, problem: Option<&str>) -> Markup {
    html! {
        h2 { "New user" }
        @if let Some(problem) = problem { p class="problem" role="alert" { (problem) } }
        form class="stacked" method="post" action="/admin/users" {
            input type="hidden" name="csrf" value=(staff.session.csrf);
            div { label for="email" { "Email" }
                  input id="email" name="email" type="email" value=(values.email); }
            div { label for="firstName" { "First name" }
                  input id="firstName" name="firstName" type="text" value=(values.first_name); }
            div { label for="lastName" { "Last name" }
                  input id="lastName" name="lastName" type="text" value=(values.last_name); }
            div { label for="newRole" { "Role" }
                  select id="newRole" name="role" {
                      @for r in Role::ALL {
                          option value=(r.as_str()) selected[values.role == r.as_str()] { (r.as_str()) }
                      }
                  } }
            div { label for="phoneNumber" { "Phone (optional)" }
                  input id="phoneNumber" name="phoneNumber" type="tel" value=(values.phone_number); }
            div { button type="submit" { "Create user" } }
        }
    }
}

/// A temporary password, shown once, selectable without JavaScript.
fn temporary_page(staff: &Staff, title: &str, who: &UserSnapshot, password: &str) -> Response {
    let body = html! {
        p class="notice" role="status" {
            (who.first_name) " " (who.last_name) " (" (who.email.as_str()) "): their temporary "
            "password is below, shown only now. They must change it at their first login."
        }
        div class="stacked" {
            label for="temporaryPassword" { "Temporary password" }
            input id="temporaryPassword" type="text" readonly value=(password);
            button type="button" data-copy="temporaryPassword" hidden { "Copy" }
            span class="hint" data-copied-for="temporaryPassword" role="status" {}
        }
        script src="/static/copy.js" {}
        p { a href="/admin/users" { "Back to the users" } }
    };
    layout(title, Some((&staff.signed, &staff.session)), body).into_response()
}

pub async fn create(
    State(state): State<AppState>,
    staff: Staff,
    PageForm(values): PageForm<NewUserForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, values.csrf.as_deref()) {
        return refused;
    }
    let phone = values.phone_number.trim();
    let request = contract::api::CreateUserRequest {
        email: values.email.trim().to_owned(),
        first_name: values.first_name.trim().to_owned(),
        last_name: values.last_name.trim().to_owned(),
        role: values.role.clone(),
        phone_number: (!phone.is_empty()).then(|| phone.to_owned()),
    };
    match staff.api(&state).create_user(&request).await {
        Ok(created) => temporary_page(
            &staff,
            "User created",
            &created.user,
            &created.temporary_password,
        ),
        Err(api_client::Error::Refused { status, body })
            if matches!(status.as_u16(), 409 | 422) =>
        {
            let page = layout(
                "Users",
                Some((&staff.signed, &staff.session)),
                html! {
                    (new_user_form(&staff, &values, Some(&body.message)))
                    p { a href="/admin/users" { "Back to the users" } }
                },
            );
            (StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
        }
        Err(e) => staff.failed(&state, e),
    }
}

/// A form that carries nothing but its CSRF token (an action button).
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    pub csrf: Option<String>,
}

/// `POST /admin/users/{id}/{activate|deactivate|reset-password}`.
pub async fn action(
    State(state): State<AppState>,
    staff: Staff,
    Path((id, action)): Path<(String, String)>,
    PageForm(form): PageForm<ActionForm>,
) -> Response {
    let id = match admin_post_on(&staff, form.csrf.as_deref(), &id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let api = staff.api(&state);
    let done = match action.as_str() {
        "activate" => api.activate(id).await.map(|_| ()),
        "deactivate" => api.deactivate(id).await.map(|_| ()),
        "reset-second-factor" => api.reset_second_factor(id).await,
        "reset-password" => {
            return match api.reset_password(id).await {
                Ok(reset) => temporary_page(
                    &staff,
                    "Password reset",
                    &reset.user,
                    &reset.temporary_password,
                ),
                Err(e) => staff.failed(&state, e),
            }
        }
        _ => return PageError::not_found().into_response(),
    };
    match done {
        Ok(()) => Redirect::to("/admin/users").into_response(),
        Err(api_client::Error::Refused { status, body }) if status.as_u16() == 409 => {
            PageError::forbidden(body.message).into_response()
        }
        Err(e) => staff.failed(&state, e),
    }
}

pub async fn users(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<UsersQuery>,
) -> Response {
    if let Some(refused) = admin_only(&staff) {
        return refused;
    }
    let api = staff.api(&state);
    let filter = query.filter();
    let users = match api.list_users(&filter).await {
        Ok(page) => page,
        Err(e) => return staff.failed(&state, e),
    };
    // The directory's copy of the same users (same filters, same order); a user not on its
    // page yet shows "syncing…".
    let copies: HashMap<uuid::Uuid, Option<i64>> = match api.directory_as_admin(&filter).await {
        Ok(page) => page
            .items
            .into_iter()
            .map(|u| (u.user_id.0, u.user_version))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "admin users: the directory cannot be reached");
            HashMap::new()
        }
    };
    // Requests for an account wait here for an admin (none unless REGISTRATION_ENABLED).
    let requests = match api.registrations().await {
        Ok(requests) => requests,
        Err(e) => return staff.failed(&state, e),
    };
    let page = query.page.unwrap_or(0);
    let pages = u32::try_from((users.total + i64::from(PAGE) - 1) / i64::from(PAGE)).unwrap_or(0);
    let selected_role = query.role.clone().unwrap_or_default();
    let selected_active = query.active.clone().unwrap_or_default();
    let body = html! {
        p {
            "Directories that provision users (Microsoft Entra ID, Okta) sign in with "
            a href="/admin/scim" { "SCIM tokens" } "."
        }
        form class="filters" method="get" action="/admin/users" {
            div {
                label for="role" { "Role" }
                select id="role" name="role" {
                    option value="" { "Any" }
                    @for r in Role::ALL {
                        option value=(r.as_str()) selected[selected_role == r.as_str()] { (r.as_str()) }
                    }
                }
            }
            div {
                label for="active" { "Active" }
                select id="active" name="active" {
                    option value="" { "Any" }
                    option value="yes" selected[selected_active == "yes"] { "Active" }
                    option value="no" selected[selected_active == "no"] { "Inactive" }
                }
            }
            div {
                label for="q" { "Name or email" }
                input id="q" name="q" type="search" value=(query.q.clone().unwrap_or_default());
            }
            div { button type="submit" { "Filter" } }
        }
        p { (users.total) " users" }
        div class="table-scroll" { table {
            thead { tr {
                th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Role" }
                th scope="col" { "Active" } th scope="col" { "Version" } th scope="col" { "Directory" }
                th scope="col" { "Actions" }
            } }
            tbody {
                @for u in &users.items {
                    tr {
                        td { a href=(format!("/admin/users/{}", u.user_id.0)) { (u.first_name) " " (u.last_name) } }
                        td { (u.email.as_str()) }
                        td { (u.role.as_str()) }
                        td { @if u.is_active { "yes" } @else { "no" } }
                        td { (u.user_version.map_or("-".to_owned(), |v| v.to_string())) }
                        td { (badge(u, &copies)) }
                        td class="actions" {
                            @let id = u.user_id.0;
                            @let name = format!("{} {}", u.first_name, u.last_name);
                            form method="post" action=(format!("/admin/users/{id}/{}", if u.is_active { "deactivate" } else { "activate" })) {
                                input type="hidden" name="csrf" value=(staff.session.csrf);
                                button type="submit" aria-label=(format!("{} {name}", if u.is_active { "Deactivate" } else { "Activate" })) {
                                    @if u.is_active { "Deactivate" } @else { "Activate" }
                                }
                            }
                            a href=(format!("/admin/users/{id}/edit")) aria-label=(format!("Edit {name}")) { "Edit" }
                            form method="post" action=(format!("/admin/users/{id}/reset-password")) {
                                input type="hidden" name="csrf" value=(staff.session.csrf);
                                button type="submit" aria-label=(format!("Reset password of {name}")) { "Reset password" }
                            }
                            @if id != staff.signed.user.user_id.0 {
                                form method="post" action=(format!("/admin/users/{id}/reset-second-factor")) {
                                    input type="hidden" name="csrf" value=(staff.session.csrf);
                                    button type="submit" aria-label=(format!("Reset second factor of {name}")) { "Reset second factor" }
                                }
                            }
                        }
                    }
                }
            }
        } }
        @if pages > 1 {
            nav aria-label="Pages" class="pager" {
                @if page > 0 { a href=(query.link(page - 1)) { "Previous" } " " }
                "Page " (page + 1) " of " (pages)
                @if page + 1 < pages { " " a href=(query.link(page + 1)) { "Next" } }
            }
        }
        @if !requests.is_empty() {
            h2 { "Requests for an account" }
            p {
                "Approving creates the account with the role you choose and a temporary password "
                "to hand over in person; what the requester typed never signs in."
            }
            div class="table-scroll" { table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Email" } th scope="col" { "Says" }
                    th scope="col" { "Received" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for r in &requests {
                        @let name = format!("{} {}", r.first_name, r.last_name);
                        tr {
                            td { (name) }
                            td { (r.email) }
                            td { (r.requested_role.as_deref().unwrap_or("-")) }
                            td { (r.requested_at) }
                            td class="actions" {
                                form method="post" action=(format!("/admin/registrations/{}/approve", r.id)) {
                                    input type="hidden" name="csrf" value=(staff.session.csrf);
                                    label for=(format!("role-{}", r.id)) { "Role for " (name) }
                                    select id=(format!("role-{}", r.id)) name="role" {
                                        @for role in Role::ALL {
                                            option value=(role.as_str()) selected[r.requested_role.as_deref() == Some(role.as_str())] { (role.as_str()) }
                                        }
                                    }
                                    button type="submit" aria-label=(format!("Approve {name}")) { "Approve" }
                                }
                                form method="post" action=(format!("/admin/registrations/{}/decline", r.id)) {
                                    input type="hidden" name="csrf" value=(staff.session.csrf);
                                    button type="submit" aria-label=(format!("Decline {name}")) { "Decline" }
                                }
                            }
                        }
                    }
                }
            } }
        }
        (new_user_form(&staff, &NewUserForm::default(), None))
    };
    layout("Users", Some((&staff.signed, &staff.session)), body).into_response()
}

#[derive(Debug, Deserialize)]
pub struct ApproveForm {
    csrf: Option<String>,
    #[serde(default)]
    role: String,
}

/// `POST /admin/registrations/{id}/approve`: the account, with its temporary password shown once.
pub async fn approve(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    PageForm(form): PageForm<ApproveForm>,
) -> Response {
    let id = match admin_post_on(&staff, form.csrf.as_deref(), &id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    match staff.api(&state).approve_registration(id, &form.role).await {
        Ok(created) => temporary_page(
            &staff,
            "Request approved",
            &created.user,
            &created.temporary_password,
        ),
        Err(api_client::Error::Refused { status, body })
            if matches!(status.as_u16(), 409 | 422) =>
        {
            PageError::bad_request(body.message).into_response()
        }
        Err(e) => staff.failed(&state, e),
    }
}

/// `POST /admin/registrations/{id}/decline`.
pub async fn decline(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    PageForm(form): PageForm<ActionForm>,
) -> Response {
    let id = match admin_post_on(&staff, form.csrf.as_deref(), &id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    match staff.api(&state).decline_registration(id).await {
        Ok(()) => Redirect::to("/admin/users").into_response(),
        Err(e) => staff.failed(&state, e),
    }
}
