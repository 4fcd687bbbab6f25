//! `GET /admin/offboarding`: the stalled, running and recently finished sagas.

use super::{at, policy_words, state_badge};
use crate::page::layout;
use crate::pages::admin::admin_only;
use crate::staff::Staff;
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::FixedOffset;
use contract::api::Offboarding;
use maud::{html, Markup};
use uuid::Uuid;

/// One list of sagas; `why` adds the stalled reason column.
fn saga_table(sagas: &[&Offboarding], why: bool, offset: FixedOffset) -> Markup {
    html! {
        div class="table-scroll" { table {
            thead { tr {
                th scope="col" { "Person" } th scope="col" { "Email" } th scope="col" { "State" }
                th scope="col" { "Started" } th scope="col" { "Finished" }
                th scope="col" { "Future appointments" }
                @if why { th scope="col" { "Why stalled" } }
            } }
            tbody { @for s in sagas { tr {
                td { a href=(format!("/admin/offboarding/{}", s.id)) aria-label=(format!("Offboarding of {}", s.name)) { (s.name) } }
                td { (s.email) }
                td { (state_badge(s)) }
                td { (at(s.created_at, offset)) }
                td { (s.finished_at.map_or("-".to_owned(), |t| at(t, offset))) }
                td { (policy_words(s.policy)) }
                @if why { td { (s.stalled_reason.as_deref().unwrap_or("-")) } }
            } } }
        } }
    }
}

/// `GET /admin/offboarding`: stalled, running (the others) and recent finished sagas.
pub async fn list(State(state): State<AppState>, staff: Staff) -> Response {
    if let Some(refused) = admin_only(&staff) {
        return refused;
    }
    let api = staff.api(&state);
    let (stalled, running, recent) = tokio::join!(
        api.offboardings(Some("stalled")),
        api.offboardings(Some("running")),
        api.offboardings(None),
    );
    let (stalled, running, recent) = match (stalled, running, recent) {
        (Ok(s), Ok(r), Ok(n)) => (s.items, r.items, n.items),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return staff.failed(&state, e),
    };
    // Each saga once: stalled first, then the other running ones, then the finished ones.
    let stalled_ids: Vec<Uuid> = stalled.iter().map(|s| s.id).collect();
    let running_rest: Vec<&Offboarding> = running
        .iter()
        .filter(|s| !stalled_ids.contains(&s.id))
        .collect();
    let finished: Vec<&Offboarding> = recent
        .iter()
        .filter(|s| s.state.is_terminal() && !stalled_ids.contains(&s.id))
        .collect();
    let stalled: Vec<&Offboarding> = stalled.iter().collect();
    let offset = state.utc_offset;
    let body = html! {
        p {
            "An offboarding is started from the person's page ("
            a href="/admin/users" { "Users" } ", then the person). "
            a href="/admin/offboarding" { "Refresh" }
        }
        section aria-labelledby="stalled" {
            h2 id="stalled" { "Stalled" }
            @if stalled.is_empty() { p { "None." } }
            @else {
                p class="problem" role="alert" { (stalled.len()) " waiting longer than they should." }
                (saga_table(&stalled, true, offset))
            }
        }
        section aria-labelledby="running" {
            h2 id="running" { "Running" }
            @if running_rest.is_empty() { p { "None." } }
            @else { (saga_table(&running_rest, false, offset)) }
        }
        section aria-labelledby="recent" {
            h2 id="recent" { "Recently finished" }
            @if finished.is_empty() { p { "None yet." } }
            @else { (saga_table(&finished, false, offset)) }
        }
    };
    layout("Offboarding", Some((&staff.signed, &staff.session)), body).into_response()
}
