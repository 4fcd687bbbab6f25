//! `/admin/sync` (admins only): the state of the synchronisation on one page, from the sync
//! admin API — the outbox backlog and the age of its oldest event, each consumer's queue
//! (messages, consumers, retries), its dead-letter queue with the first messages' reasons, a
//! requeue action and, for an untrusted publisher's messages (which are never requeued), a
//! discard action, the last verify with a "Verify now" action (run in the background; the page
//! refreshes itself while it runs and shows how far it is), and one user's event trail.

use super::admin::{admin_only, refuse_admin_post, ActionForm};
use super::appointments::when;
use super::PageForm;
use crate::page::{layout, PageError};
use crate::staff::Staff;
use crate::AppState;
use api_client::ApiClient;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::FixedOffset;
use contract::api::AuditEntry;
use contract::sync_status::{
    ConsumerFigures, DeadLetters, OutboxFigures, QueueCounts, SyncStatus, VerifyRun, VerifyState,
};
use maud::{html, Markup};
use serde::Deserialize;

/// Dead letters listed per queue on the page.
const FIRST_DEAD_LETTERS: usize = 5;

/// Seconds between refreshes while a verify runs (the `Refresh` header: no JavaScript).
const REFRESH_WHILE_VERIFYING: &str = "3";

#[derive(Debug, Default, Deserialize)]
pub struct SyncQuery {
    /// Whose event trail to show: an email or a user id.
    user: Option<String>,
    /// Set after a requeue: how many went back, from which queue.
    requeued: Option<u32>,
    /// Set after a requeue that kept an untrusted publisher's messages back: how many.
    kept: Option<u32>,
    /// Set after a discard: how many untrusted publisher's messages were dropped.
    discarded: Option<u32>,
    from: Option<String>,
}

fn figure(n: Option<u32>) -> String {
    n.map_or_else(|| "?".to_owned(), |n| n.to_string())
}

fn age(seconds: f64) -> String {
    match seconds {
        s if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        s if s < 120.0 => format!("{s:.1} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s => format!("{:.1} h", s / 3600.0),
    }
}

fn outbox_section(outbox: Option<&OutboxFigures>) -> Markup {
    html! {
        section aria-labelledby="outbox" {
            h2 id="outbox" { "Outbox (auth_db)" }
            @match outbox {
                None => p class="problem" { "Not available: see above." },
                Some(o) if o.unpublished == 0 => p { span class="badge ok" { "0 waiting" } " Every event is published." },
                Some(o) => p {
                    span class="badge wait" { (o.unpublished) " waiting" }
                    @if let Some(s) = o.oldest_unpublished_age_seconds { " The oldest has waited " (age(s)) "." }
                },
            }
        }
    }
}

fn queue_cell(q: &QueueCounts) -> Markup {
    html! {
        @if let Some(problem) = &q.problem { span class="problem" { "cannot read: " (problem) } }
        @else { (figure(q.messages)) }
    }
}

/// A consumer's last receipt: the lag of its batch, and how long before `now` it came.
fn last_receipt(c: &ConsumerFigures, now: &contract::Timestamp) -> String {
    match (c.last_receipt_lag_ms, &c.last_receipt_at) {
        (Some(lag), Some(at)) => {
            let ago = (now.as_datetime() - at.as_datetime())
                .num_milliseconds()
                .max(0) as f64
                / 1000.0;
            format!("lag {}, {} ago", age(lag as f64 / 1000.0), age(ago))
        }
        _ => "none yet".to_owned(),
    }
}

fn consumers_section(consumers: Option<&[ConsumerFigures]>, now: &contract::Timestamp) -> Markup {
    html! {
        section aria-labelledby="queues" {
            h2 id="queues" { "Consumer queues (RabbitMQ)" }
            @match consumers {
                None => p class="problem" { "Not available: see above." },
                Some(consumers) => div class="table-scroll" { table {
                    thead { tr {
                        th scope="col" { "Consumer" } th scope="col" { "Queue" }
                        th scope="col" { "Messages" } th scope="col" { "Consumers" }
                        th scope="col" { "Retrying" } th scope="col" { "Dead letters" }
                        th scope="col" { "Last receipt" }
                    } }
                    tbody { @for c in consumers { tr {
                        td { (c.consumer) }
                        td { code { (c.queue.name) } }
                        td { (queue_cell(&c.queue)) }
                        td {
                            (figure(c.queue.consumers))
                            @if c.queue.consumers == Some(0) { " " span class="badge wait" { "none attached" } }
                        }
                        td { (c.retrying) }
                        td {
                            (queue_cell(&c.dead_letter))
                            @if c.dead_letter.messages.is_some_and(|n| n > 0) { " " span class="badge bad" { "needs attention" } }
                        }
                        td { (last_receipt(c, now)) }
                    } } }
                } },
            }
        }
    }
}

fn dead_letter_section(staff: &Staff, letters: &DeadLetters) -> Markup {
    let heading = format!("dlq-{}", letters.queue.replace('.', "-"));
    let requeueable = letters.messages.saturating_sub(letters.untrusted);
    html! {
        section aria-labelledby=(heading) {
            h2 id=(heading) { "Dead letters in " code { (letters.queue) } }
            p { (letters.messages) " messages; the first " (letters.first.len()) ":" }
            div class="table-scroll" { table {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "Reason" } th scope="col" { "Routing key" }
                    th scope="col" { "First failure" } th scope="col" { "Detail" }
                } }
                tbody { @for m in &letters.first { tr {
                    td { (m.position) } td { (m.reason) } td { (m.routing_key) }
                    td { (m.first_failure) }
                    td {
                        (m.detail)
                        @if let Some(why) = &m.cannot_requeue { " " span class="badge bad" { (why) } }
                    }
                } } }
            } }
            @if letters.untrusted > 0 {
                p class="problem" {
                    (letters.untrusted) " of them from an untrusted publisher: never requeued (it would "
                    "apply a forged change); they can only be discarded."
                }
            }
            @if requeueable > 0 {
                form method="post" action=(format!("/admin/sync/requeue/{}", letters.queue)) {
                    input type="hidden" name="csrf" value=(staff.session.csrf);
                    button type="submit" aria-label=(format!("Requeue every message of {} an untrusted publisher did not send", letters.queue)) {
                        @if letters.untrusted == 0 { "Requeue all " (letters.messages) }
                        @else { "Requeue the other " (requeueable) }
                    }
                }
            }
            @if letters.untrusted > 0 {
                form method="post" action=(format!("/admin/sync/discard/{}", letters.queue)) {
                    input type="hidden" name="csrf" value=(staff.session.csrf);
                    button type="submit" aria-label=(format!("Discard the untrusted publisher's messages of {}", letters.queue)) {
                        "Discard " (letters.untrusted) " untrusted"
                    }
                }
            }
        }
    }
}

fn verify_section(staff: &Staff, verify: Option<&VerifyRun>, offset: FixedOffset) -> Markup {
    let running = verify.is_some_and(|v| v.state == VerifyState::Running);
    html! {
        section aria-labelledby="verify" {
            h2 id="verify" { "Verify" }
            @match verify {
                None => p { "No verify has run since the sync admin service started." },
                Some(run) => {
                    p {
                        @match run.state {
                            VerifyState::Running => {
                                "Running since " (when(run.started_at.as_datetime(), offset)) ": "
                                progress max="100" value=(format!("{:.0}", run.percent())) { (format!("{:.0}%", run.percent())) }
                                " " (format!("{:.0}%", run.percent()))
                                @if let Some(users) = run.users { " of " (users) " users per copy" }
                            },
                            VerifyState::Finished => "Last run finished ",
                            VerifyState::Failed => "Last run failed ",
                        }
                        @if let Some(done) = run.finished_at { (when(done.as_datetime(), offset)) "." }
                    }
                    ul class="verify" { @for c in &run.copies { li {
                        strong { (c.service) " (" (c.database) ")" } ": "
                        @if let Some(error) = &c.error { span class="badge bad" { "not compared" } " " (error) }
                        @else if c.in_sync == Some(true) { span class="badge ok" { "in sync" } " " (c.checked) " users compared" }
                        @else if c.in_sync == Some(false) {
                            span class="badge bad" { "drift" } " " (c.summary.clone().unwrap_or_default())
                            ul { @for d in &c.differences { li { (d) } } }
                        }
                        @else { (c.checked) " users compared so far" }
                    } } }
                }
            }
            @if !running {
                form method="post" action="/admin/sync/verify" {
                    input type="hidden" name="csrf" value=(staff.session.csrf);
                    button type="submit" { "Verify now" }
                }
                p class="hint" { "Repairs: " code { "portal reconcile" } " on the operator's machine." }
            }
        }
    }
}

fn trail_section(
    user: Option<&str>,
    trail: Option<Result<Vec<AuditEntry>, String>>,
    offset: FixedOffset,
) -> Markup {
    html! {
        section aria-labelledby="trail" {
            h2 id="trail" { "One user's event trail" }
            form class="filters" method="get" action="/admin/sync" {
                div {
                    label for="user" { "Email or user id" }
                    input id="user" name="user" type="search" value=(user.unwrap_or_default());
                }
                div { button type="submit" { "Show events" } }
            }
            @match trail {
                None => {},
                Some(Err(problem)) => p class="problem" role="alert" { (problem) },
                Some(Ok(events)) => {
                    p { (events.len()) " events, oldest first" }
                    div class="table-scroll" { table {
                        thead { tr {
                            th scope="col" { "Seq" } th scope="col" { "Stored" } th scope="col" { "Type" }
                            th scope="col" { "Version" } th scope="col" { "Published" }
                            th scope="col" { "Trace id" }
                        } }
                        tbody { @for e in &events { tr {
                            td { (e.seq) }
                            td { (when(e.created_at.as_datetime(), offset)) }
                            td { (e.event_type) }
                            td { (e.user_version.map_or("-".to_owned(), |v| v.to_string())) }
                            td { @match (e.published_at, e.published) {
                                (Some(t), _) => (when(t.as_datetime(), offset)),
                                (None, true) => "yes",
                                (None, false) => span class="badge wait" { "waiting in the outbox" },
                            } }
                            td { code { (e.trace_id.as_deref().unwrap_or("-")) } }
                        } } }
                    } }
                },
            }
        }
    }
}

/// The trail of `user` (email or id); a person's words when there is none.
async fn trail(
    staff: &Staff,
    state: &AppState,
    api: &ApiClient,
    user: &str,
) -> Result<Result<Vec<AuditEntry>, String>, Response> {
    let id = match api.resolve(user).await {
        Ok(id) => id,
        Err(api_client::Error::Invalid(_)) => {
            return Ok(Err(format!("No user with the email or id {user:?}.")))
        }
        Err(e) => return Err(staff.failed(state, e)),
    };
    match api.user_events(id, None, None).await {
        Ok(page) => Ok(Ok(page.items)),
        Err(api_client::Error::Refused { status, .. }) if status.as_u16() == 404 => {
            Ok(Err(format!("No user with the email or id {user:?}.")))
        }
        Err(e) => Err(staff.failed(state, e)),
    }
}

pub async fn show(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<SyncQuery>,
) -> Response {
    if let Some(refused) = admin_only(&staff) {
        return refused;
    }
    let api = staff.api(&state);
    let status: SyncStatus = match api.sync_status().await {
        Ok(status) => status,
        Err(api_client::Error::Refused { status, .. }) if status.as_u16() == 404 => {
            return PageError::unavailable(
                "The sync admin API is not configured on the gateway (SYNC_ADMIN_URL).",
            )
            .into_response()
        }
        Err(e) => return staff.failed(&state, e),
    };
    let mut dead_letters = Vec::new();
    for c in status.consumers.iter().flatten() {
        if c.dead_letter.messages.is_some_and(|n| n > 0) {
            match api
                .dead_letters(&c.dead_letter.name, FIRST_DEAD_LETTERS)
                .await
            {
                Ok(letters) => dead_letters.push(letters),
                Err(e) => {
                    tracing::warn!(error = %e, queue = c.dead_letter.name, "sync page: dead letters not read")
                }
            }
        }
    }
    let user = query
        .user
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let trail = match user {
        Some(user) => match trail(&staff, &state, &api, user).await {
            Ok(trail) => Some(trail),
            Err(response) => return response,
        },
        None => None,
    };
    let running = status
        .verify
        .as_ref()
        .is_some_and(|v| v.state == VerifyState::Running);
    let body = html! {
        p { "As of " (when(status.at.as_datetime(), state.utc_offset)) ". " a href="/admin/sync" { "Refresh" } }
        @if let (Some(n), Some(from)) = (query.requeued, &query.from) {
            p class="notice" role="status" {
                (n) " messages requeued from " code { (from) } "."
                @if let Some(kept) = query.kept.filter(|k| *k > 0) {
                    " " (kept) " kept back: untrusted publisher, can only be discarded."
                }
            }
        }
        @if let (Some(n), Some(from)) = (query.discarded, &query.from) {
            p class="notice" role="status" { (n) " untrusted messages discarded from " code { (from) } "." }
        }
        @if !status.unavailable.is_empty() {
            div class="problem" role="alert" {
                p { "Some figures cannot be read right now:" }
                ul { @for u in &status.unavailable { li { (u) } } }
            }
        }
        (outbox_section(status.outbox.as_ref()))
        (consumers_section(status.consumers.as_deref(), &status.at))
        @for letters in &dead_letters { (dead_letter_section(&staff, letters)) }
        (verify_section(&staff, status.verify.as_ref(), state.utc_offset))
        (trail_section(user, trail, state.utc_offset))
    };
    let page = layout("Sync status", Some((&staff.signed, &staff.session)), body);
    if running {
        ([(header::REFRESH, REFRESH_WHILE_VERIFYING)], page).into_response()
    } else {
        page.into_response()
    }
}

/// `POST /admin/sync/verify`: starts a verify (or finds the one running) and shows its progress.
pub async fn verify(
    State(state): State<AppState>,
    staff: Staff,
    PageForm(form): PageForm<ActionForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, form.csrf.as_deref()) {
        return refused;
    }
    match staff.api(&state).start_verify().await {
        // No fragment: the `Refresh` of a URL with one would only scroll, never reload.
        Ok(_) => Redirect::to("/admin/sync").into_response(),
        Err(e) => staff.failed(&state, e),
    }
}

/// `POST /admin/sync/requeue/{queue}`: every message of that dead-letter queue back to its
/// consumer.
pub async fn requeue(
    State(state): State<AppState>,
    staff: Staff,
    Path(queue): Path<String>,
    PageForm(form): PageForm<ActionForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, form.csrf.as_deref()) {
        return refused;
    }
    match staff.api(&state).requeue_dead_letters(&queue).await {
        Ok(done) => {
            // `kept` only when something was kept back: the plain requeue's address is as it was.
            let kept = match done.kept_back {
                0 => String::new(),
                n => format!("&kept={n}"),
            };
            Redirect::to(&format!(
                "/admin/sync?requeued={}{kept}&from={}",
                done.requeued,
                crate::staff::url_encode(&done.queue)
            ))
            .into_response()
        }
        Err(e) => staff.failed(&state, e),
    }
}

/// `POST /admin/sync/discard/{queue}`: every untrusted publisher's message of that dead-letter
/// queue dropped for good (the sync admin API logs who did it).
pub async fn discard(
    State(state): State<AppState>,
    staff: Staff,
    Path(queue): Path<String>,
    PageForm(form): PageForm<ActionForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, form.csrf.as_deref()) {
        return refused;
    }
    match staff
        .api(&state)
        .discard_untrusted_dead_letters(&queue)
        .await
    {
        Ok(done) => Redirect::to(&format!(
            "/admin/sync?discarded={}&from={}",
            done.discarded,
            crate::staff::url_encode(&done.queue)
        ))
        .into_response(),
        Err(e) => staff.failed(&state, e),
    }
}
