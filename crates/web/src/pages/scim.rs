//! `/admin/scim` (admins only): the bearer tokens SCIM clients — a directory such as Microsoft
//! Entra ID or Okta — present at the gateway's `/scim/v2` to provision users, over the
//! auth-service's admin API (`/api/v1/auth/admin/scim-tokens`):
//! - `GET /admin/scim`: every token (name, created, by whom, last used, live or revoked), a
//!   "Revoke" button per live token, and the "New SCIM token" form;
//! - `POST /admin/scim`: creates a token and answers with its secret, shown on that page only
//!   (in a read-only field with a copy button) beside the tenant URL to paste with it; a
//!   refused name comes back in the form with the API's words;
//! - `POST /admin/scim/{id}/revoke`: a confirmation page first (revoking cuts the directory off
//!   at its next request, and cannot be undone), then the revocation and the list again.
//!
//! Everyone else gets the 403 page; every POST carries the session's CSRF token.

use super::admin::{admin_only, refuse_admin_post};
use super::PageForm;
use crate::page::{layout, PageError};
use crate::staff::Staff;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::FixedOffset;
use contract::api::{CreatedScimToken, ScimToken};
use contract::Timestamp;
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::HashMap;
use uuid::Uuid;

/// The longest name the API takes (it says so itself when refusing one; the field stops there).
const NAME_MAX: usize = 100;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// The token just revoked, said at the top of the list.
    revoked: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct NewTokenForm {
    csrf: Option<String>,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    csrf: Option<String>,
    /// `yes` once the admin confirmed on the confirmation page.
    confirm: Option<String>,
}

/// Where the directory sends its SCIM requests: the gateway as this portal reaches it
/// (GATEWAY_URL), `/scim/v2` under it. Behind a proxy the directory may know the gateway by
/// another name; the page says so beside it.
fn tenant_url(state: &AppState) -> String {
    format!("{}/scim/v2", state.api.base().trim_end_matches('/'))
}

/// A time to the minute (the API keeps `lastUsedAt` to the minute), in the clinic's offset.
fn at(t: Timestamp, offset: FixedOffset) -> String {
    t.as_datetime()
        .with_timezone(&offset)
        .format("%a %-d %b %Y, %H:%M")
        .to_string()
}

/// The admins who created the tokens, by name where the auth-service still knows them (else
/// their id): one lookup per admin, and there are few.
async fn creators(staff: &Staff, state: &AppState, tokens: &[ScimToken]) -> HashMap<Uuid, String> {
    let api = staff.api(state);
    let mut names = HashMap::new();
    for token in tokens {
        let id = token.created_by.0;
        if names.contains_key(&id) {
            continue;
        }
        let name = match api.user(id).await {
            Ok(u) => format!("{} {}", u.first_name, u.last_name),
            Err(_) => id.to_string(),
        };
        names.insert(id, name);
    }
    names
}

fn tokens_table(
    staff: &Staff,
    tokens: &[ScimToken],
    creators: &HashMap<Uuid, String>,
    offset: FixedOffset,
) -> Markup {
    html! {
        @if tokens.is_empty() {
            p { "No SCIM token yet: no directory can provision users." }
        } @else {
            div class="table-scroll" { table {
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Created" }
                    th scope="col" { "Created by" } th scope="col" { "Last used" }
                    th scope="col" { "State" } th scope="col" { "Actions" }
                } }
                tbody { @for t in tokens { tr {
                    td { (t.name) }
                    td { (at(t.created_at, offset)) }
                    td { (creators.get(&t.created_by.0).map_or("-", String::as_str)) }
                    td { (t.last_used_at.map_or("never".to_owned(), |u| at(u, offset))) }
                    td {
                        @if let Some(revoked) = t.revoked_at {
                            span class="badge bad" { "Revoked" } " " (at(revoked, offset))
                        } @else {
                            span class="badge ok" { "Live" }
                        }
                    }
                    td class="actions" {
                        @if t.revoked_at.is_none() {
                            form method="post" action=(format!("/admin/scim/{}/revoke", t.id)) {
                                input type="hidden" name="csrf" value=(staff.session.csrf);
                                // Its accessible name starts with the visible text (WCAG 2.5.3)
                                // and says which token: every row has a "Revoke".
                                button type="submit" aria-label=(format!("Revoke {}", t.name)) { "Revoke" }
                            }
                        }
                    }
                } } }
            } }
        }
    }
}

/// The "New SCIM token" form, with the name as typed and the API's words when refused.
fn new_token_form(staff: &Staff, name: &str, problem: Option<&str>) -> Markup {
    html! {
        form class="stacked" method="post" action="/admin/scim" {
            input type="hidden" name="csrf" value=(staff.session.csrf);
            div {
                label for="scimName" { "Name" }
                input id="scimName" name="name" type="text" maxlength=(NAME_MAX)
                    autocomplete="off" aria-describedby=(if problem.is_some() { "scimNameHint scimName-error" } else { "scimNameHint" })
                    aria-invalid=[problem.map(|_| "true")] value=(name);
                p class="hint" id="scimNameHint" {
                    "Who will hold the token, e.g. entra-production: one token per directory, so "
                    "each can be revoked alone. Every request it makes is logged under this name."
                }
                @if let Some(problem) = problem {
                    p class="field-error" id="scimName-error" { (problem) }
                }
            }
            div { button type="submit" { "Create SCIM token" } }
        }
    }
}

/// The list page; `name` and `problem` fill the form after a refused creation, `revoked` says
/// which token was just revoked.
async fn list_page(
    state: &AppState,
    staff: &Staff,
    name: &str,
    problem: Option<&str>,
    revoked: Option<Uuid>,
) -> Result<Markup, Response> {
    let tokens = staff
        .api(state)
        .scim_tokens()
        .await
        .map_err(|e| staff.failed(state, e))?;
    let creators = creators(staff, state, &tokens).await;
    let just_revoked =
        revoked.and_then(|id| tokens.iter().find(|t| t.id == id && t.revoked_at.is_some()));
    let live = tokens.iter().filter(|t| t.revoked_at.is_none()).count();
    let body = html! {
        @if let Some(t) = just_revoked {
            p class="notice" role="status" {
                "The SCIM token " strong { (t.name) } " is revoked: the directory holding it is "
                "refused from its next request on."
            }
        }
        @if problem.is_some() {
            p class="problem" role="alert" { "The token was not created: see the name below." }
        }
        p {
            "A directory (Microsoft Entra ID, Okta) creates, updates and deactivates the portal's "
            "users through SCIM at " code { (tenant_url(state)) } ", signing in with a token "
            "from this page. Users it deactivates lose access at once, as when an admin does it."
        }
        section aria-labelledby="tokens" {
            h2 id="tokens" { "Tokens" }
            p { (tokens.len()) " in all, " (live) " live." }
            (tokens_table(staff, &tokens, &creators, state.utc_offset))
        }
        section aria-labelledby="new-token" {
            h2 id="new-token" { "New SCIM token" }
            p {
                "The secret is shown once, on the next page, to paste into the directory. "
                "The portal keeps only a hash of it."
            }
            (new_token_form(staff, name, problem))
        }
        p { a href="/admin/users" { "Back to the users" } }
    };
    Ok(layout(
        "SCIM tokens",
        Some((&staff.signed, &staff.session)),
        body,
    ))
}

/// `GET /admin/scim`.
pub async fn list(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<ListQuery>,
) -> Response {
    if let Some(refused) = admin_only(&staff) {
        return refused;
    }
    let revoked = query.revoked.as_deref().and_then(|id| id.parse().ok());
    match list_page(&state, &staff, "", None, revoked).await {
        Ok(page) => page.into_response(),
        Err(response) => response,
    }
}

/// The page that shows a new token's secret, its one appearance.
fn secret_page(state: &AppState, staff: &Staff, created: &CreatedScimToken) -> Response {
    let body = html! {
        p class="notice" role="status" {
            "The SCIM token " strong { (created.token.name) } " is created. Paste the secret token "
            "and the tenant URL below into the directory's SCIM provisioning settings."
        }
        p class="problem" {
            strong { "Copy the secret token now: it will not be shown again." }
            " The portal keeps only a hash of it. If it is lost, revoke the token and create "
            "another."
        }
        div class="stacked" {
            label for="scimSecret" { "Secret token" }
            input id="scimSecret" type="text" readonly autocomplete="off" spellcheck="false"
                aria-describedby="scimSecretHint" value=(created.secret);
            button type="button" data-copy="scimSecret" aria-label="Copy the secret token" hidden { "Copy" }
            " " span class="hint" data-copied-for="scimSecret" role="status" {}
            p class="hint" id="scimSecretHint" {
                "In Microsoft Entra ID: the “Secret Token” field of the enterprise application's "
                "provisioning. In Okta: the “API token” (HTTP header authentication)."
            }
        }
        div class="stacked" {
            label for="scimTenantUrl" { "Tenant URL" }
            input id="scimTenantUrl" type="text" readonly spellcheck="false"
                aria-describedby="scimTenantUrlHint" value=(tenant_url(state));
            button type="button" data-copy="scimTenantUrl" aria-label="Copy the tenant URL" hidden { "Copy" }
            " " span class="hint" data-copied-for="scimTenantUrl" role="status" {}
            p class="hint" id="scimTenantUrlHint" {
                "Entra ID's “Tenant URL”, Okta's “SCIM connector base URL”. This is the gateway "
                "as the portal reaches it: if the directory reaches the gateway at another "
                "address, use that address followed by /scim/v2."
            }
        }
        script src="/static/copy.js" {}
        p { a href="/admin/scim" { "Back to the SCIM tokens" } }
    };
    layout(
        "SCIM token created",
        Some((&staff.signed, &staff.session)),
        body,
    )
    .into_response()
}

/// `POST /admin/scim`: the new token's secret page, or the list with the form refused.
pub async fn create(
    State(state): State<AppState>,
    staff: Staff,
    PageForm(form): PageForm<NewTokenForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, form.csrf.as_deref()) {
        return refused;
    }
    match staff.api(&state).create_scim_token(form.name.trim()).await {
        Ok(created) => secret_page(&state, &staff, &created),
        // A name taken by a live token (409) or not a name (422): the API's words, by the field.
        Err(api_client::Error::Refused { status, body })
            if matches!(status.as_u16(), 409 | 422) =>
        {
            match list_page(&state, &staff, &form.name, Some(&body.message), None).await {
                Ok(page) => (StatusCode::UNPROCESSABLE_ENTITY, page).into_response(),
                Err(response) => response,
            }
        }
        Err(e) => staff.failed(&state, e),
    }
}

/// `POST /admin/scim/{id}/revoke`: without `confirm=yes`, the confirmation page; with it, the
/// revocation, then the list saying so. A token revoked already goes back to the list.
pub async fn revoke(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    PageForm(form): PageForm<RevokeForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, form.csrf.as_deref()) {
        return refused;
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return PageError::not_found().into_response();
    };
    let api = staff.api(&state);
    let back = || Redirect::to(&format!("/admin/scim?revoked={id}")).into_response();
    if form.confirm.as_deref() == Some("yes") {
        return match api.revoke_scim_token(id).await {
            Ok(_) => back(),
            Err(e) => staff.failed(&state, e),
        };
    }
    // The API has no read of one token: the list has it.
    let tokens = match api.scim_tokens().await {
        Ok(tokens) => tokens,
        Err(e) => return staff.failed(&state, e),
    };
    let Some(token) = tokens.iter().find(|t| t.id == id) else {
        return PageError::not_found().into_response();
    };
    if token.revoked_at.is_some() {
        return back();
    }
    let body = html! {
        p {
            "Revoking " strong { (token.name) } " refuses the directory that holds it from its "
            "next request on: it can no longer create, update or deactivate users until it is "
            "given a new token. This cannot be undone."
        }
        form method="post" action=(format!("/admin/scim/{id}/revoke")) {
            input type="hidden" name="csrf" value=(staff.session.csrf);
            input type="hidden" name="confirm" value="yes";
            button type="submit" { "Yes, revoke " (token.name) }
        }
        p { a href="/admin/scim" { "No, back to the SCIM tokens" } }
    };
    layout(
        &format!("Revoke the SCIM token {}?", token.name),
        Some((&staff.signed, &staff.session)),
        body,
    )
    .into_response()
}
