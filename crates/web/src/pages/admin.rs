//! `/admin/users` (admins only): the users of `auth_db` with filters (role, active, a search by
//! name or email) and paging, each with a badge comparing its `userVersion` in the auth-service
//! with the directory's copy — "in sync", or "syncing…" while the change is on its way — so an
//! admin sees a change arrive. Everyone else gets a 403 page.

use crate::page::{layout, PageError};
use crate::staff::Staff;
use crate::AppState;
use api_client::ListFilter;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
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
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'@' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
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

pub async fn users(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<UsersQuery>,
) -> Response {
    if staff.signed.user.role != Role::Admin {
        return PageError::forbidden("This page is for admins.").into_response();
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
    let page = query.page.unwrap_or(0);
    let pages = u32::try_from((users.total + i64::from(PAGE) - 1) / i64::from(PAGE)).unwrap_or(0);
    let selected_role = query.role.clone().unwrap_or_default();
    let selected_active = query.active.clone().unwrap_or_default();
    let body = html! {
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
            } }
            tbody {
                @for u in &users.items {
                    tr {
                        td { (u.first_name) " " (u.last_name) }
                        td { (u.email.as_str()) }
                        td { (u.role.as_str()) }
                        td { @if u.is_active { "yes" } @else { "no" } }
                        td { (u.user_version.map_or("-".to_owned(), |v| v.to_string())) }
                        td { (badge(u, &copies)) }
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
    };
    layout("Users", Some((&staff.signed, &staff.session)), body).into_response()
}
