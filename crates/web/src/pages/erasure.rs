//! Erasure of a person's data in the portal (admins only), over the auth-service's
//! `…/admin/users/{id}/erasure`:
//! - on a user's page ([`section`]): "Erase personal data…" for an inactive person with no
//!   offboarding running, else why not yet; an erased person's page says when they were erased
//!   and offers nothing to do;
//! - `GET /admin/users/{id}/erasure` ([`show`]): the confirmation form (what erasure does and
//!   that it cannot be undone, a reason, a tick), or the erasure's record once erased;
//! - `POST /admin/users/{id}/erasure` ([`erase`]): erases, removes the person's messages from
//!   the dead-letter and retry queues, and shows the record, the purge's result and the command
//!   that proves nothing is left.
//!
//! Pages after the erasure name the person by their pseudonymous id only: the point is to
//! forget the rest.

use super::admin::{admin_only, refuse_admin_post};
use super::appointments::when;
use super::user_edit;
use super::{field_error, PageForm};
use crate::page::{layout, PageError};
use crate::staff::Staff;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::FixedOffset;
use contract::api::{Erasure, ErasureRequest};
use contract::{Timestamp, UserSnapshot};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

/// The longest reason the auth-service takes.
const REASON_MAX: usize = 500;

fn date(t: Timestamp, offset: FixedOffset) -> String {
    when(t.as_datetime(), offset)
}

/// The user page's erasure section: the way to the confirmation when erasure is allowed, why
/// not when it is not, and for an erased person the date and the way to the record (nothing
/// else). `offboarding_running`: `None` when it could not be read (the API still refuses then).
pub(crate) fn section(
    user: &UserSnapshot,
    offboarding_running: Option<bool>,
    offset: FixedOffset,
) -> Markup {
    let id = user.user_id.0;
    html! {
        section aria-labelledby="erasure" {
            h2 id="erasure" { "Erasure" }
            @if let Some(erased) = user.erased_at {
                p id="erased" { strong { "Erased on " (date(erased, offset)) "." } }
                p {
                    "Their personal data was replaced by placeholders here and in the history; "
                    "each copy forgets it once it has the erasure's version (propagation, "
                    "above). The record stays under the id " code { (id) } " and can no longer "
                    "change."
                }
                p { a href=(format!("/admin/users/{id}/erasure")) { "See the erasure record" } }
            } @else if user.is_active {
                p class="hint" {
                    "Erasing personal data is possible once the person is deactivated or "
                    "offboarded."
                }
            } @else if offboarding_running == Some(true) {
                p class="hint" { "Erasing personal data is possible once the offboarding has finished." }
            } @else {
                p {
                    "On request (UK GDPR art. 17), the person's name, email and phone can be "
                    "erased from every part of the system. You are asked to confirm first."
                }
                p { a href=(format!("/admin/users/{id}/erasure")) { "Erase personal data…" } }
            }
        }
    }
}

/// The confirmation form as typed.
#[derive(Debug, Default, Deserialize)]
pub struct EraseForm {
    csrf: Option<String>,
    #[serde(default)]
    reason: String,
    confirm: Option<String>,
}

/// What is wrong with a submitted confirmation form.
#[derive(Debug, Default)]
struct Problems {
    reason: Option<String>,
    confirm: Option<String>,
    /// The API's refusal, for the form as a whole.
    form: Option<String>,
}

impl EraseForm {
    /// The request, or what is wrong with the form.
    fn request(&self) -> Result<ErasureRequest, Problems> {
        let mut problems = Problems::default();
        let reason = self.reason.trim();
        let length = reason.chars().count();
        if length == 0 {
            problems.reason = Some("Enter why the data is erased (no personal data).".into());
        } else if length > REASON_MAX {
            problems.reason = Some(format!(
                "The reason may be at most {REASON_MAX} characters; this one has {length}."
            ));
        }
        if self.confirm.as_deref() != Some("yes") {
            problems.confirm =
                Some("Tick the box to confirm that erasure cannot be undone.".into());
        }
        if problems.reason.is_some() || problems.confirm.is_some() {
            return Err(problems);
        }
        Ok(ErasureRequest {
            reason: reason.to_owned(),
        })
    }
}

/// The confirmation page: what erasure does, what it cannot undo, the form. `blocked`: why the
/// person cannot be erased now (the form is then left out).
fn confirmation(
    staff: &Staff,
    user: &UserSnapshot,
    values: &EraseForm,
    problems: &Problems,
    blocked: Option<&str>,
) -> Markup {
    let id = user.user_id.0;
    let name = format!("{} {}", user.first_name, user.last_name);
    let described = |field: &str, problem: Option<&String>| match problem {
        Some(_) => format!("{field}-hint {field}-error"),
        None => format!("{field}-hint"),
    };
    let invalid = |problem: Option<&String>| problem.map(|_| "true");
    let body = html! {
        @if let Some(problem) = blocked.or(problems.form.as_deref()) {
            p class="problem" role="alert" { (problem) }
        }
        @if problems.reason.is_some() || problems.confirm.is_some() {
            p class="problem" role="alert" { "Some fields need attention; your entries are kept." }
        }
        p { strong { (name) } " (" (user.email.as_str()) "), user id " code { (id) } }
        h2 { "What erasure does" }
        ul {
            li { "Their email, first and last name and phone number are replaced by placeholders in the auth-service, in every copy (the directory, the appointment-service, every registered consumer) and in the stored history of their changes." }
            li { "Their messages waiting in dead-letter and retry queues are removed." }
            li { "Their appointments stay, as clinical records, under their id and shown as “former clinician”." }
            li { "What stays: the id, role, dates and version, and this erasure (who, when, why)." }
        }
        p class="problem" {
            strong { "Erasure cannot be undone." }
            " The personal data cannot be brought back, not even from the history, and the "
            "account can never be activated or changed again."
        }
        @if blocked.is_none() {
            form class="stacked" method="post" action=(format!("/admin/users/{id}/erasure")) {
                input type="hidden" name="csrf" value=(staff.session.csrf);
                div {
                    label for="erasureReason" { "Reason (required)" }
                    p class="hint" id="erasureReason-hint" {
                        "Kept with the erasure record: write no personal data here, for example "
                        "“erasure request of 2026-12-01, ticket 4711”."
                    }
                    textarea id="erasureReason" name="reason" rows="3" required maxlength=(REASON_MAX)
                        aria-describedby=(described("erasureReason", problems.reason.as_ref()))
                        aria-invalid=[invalid(problems.reason.as_ref())] { (values.reason) }
                    (field_error("erasureReason", problems.reason.as_ref()))
                }
                div {
                    div class="choice" {
                        input type="checkbox" id="erasureConfirm" name="confirm" value="yes" required
                            aria-describedby=[problems.confirm.as_ref().map(|_| "erasureConfirm-error")]
                            aria-invalid=[invalid(problems.confirm.as_ref())];
                        label for="erasureConfirm" { "I understand that erasure cannot be undone" }
                    }
                    (field_error("erasureConfirm", problems.confirm.as_ref()))
                }
                div { button type="submit" class="danger" { "Erase personal data of " (name) } }
            }
        }
        p { a href=(format!("/admin/users/{id}")) { "No, back to the user page" } }
    };
    layout(
        "Erase personal data?",
        Some((&staff.signed, &staff.session)),
        body,
    )
}

/// What became of the person's messages in the queues.
enum Purge {
    /// Done now, in words.
    Done(String),
    /// Not done, or not in every queue: why.
    Failed(String),
    /// Not asked here (the record's page): when it was last done, if ever.
    Recorded(Option<Timestamp>),
}

/// Removes the erased person's messages from every registered consumer's dead-letter and retry
/// queues (the sync admin API; the erasure itself is done, so a failure here is said on the
/// record's page with the operator's command, never an error page).
async fn purge(staff: &Staff, state: &AppState, id: Uuid, offset: FixedOffset) -> Purge {
    match staff.api(state).purge_erasure(id).await {
        Ok(p) => {
            let removed = match p.removed {
                1 => "1 message".to_owned(),
                n => format!("{n} messages"),
            };
            let queues = match p.queues.len() {
                1 => "1 queue".to_owned(),
                n => format!("{n} queues"),
            };
            if p.failed.is_empty() {
                let at = p.queues_purged_at.map(|t| format!(", {}", date(t, offset)));
                Purge::Done(format!(
                    "{removed} removed ({queues} searched){}",
                    at.unwrap_or_default()
                ))
            } else {
                Purge::Failed(format!(
                    "{removed} removed, but {}",
                    p.failed.join("; ").trim_end_matches('.')
                ))
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, user_id = %id, "erasure: the queues were not purged");
            Purge::Failed(
                PageError::from_api(e)
                    .message
                    .trim_end_matches('.')
                    .to_owned(),
            )
        }
    }
}

/// The erasure's record: who, when, why, the version every copy ends at, the queues, and the
/// command that checks that nothing is left.
fn record_page(
    staff: &Staff,
    erasure: &Erasure,
    requester: &str,
    purged: &Purge,
    offset: FixedOffset,
    fresh: bool,
) -> Markup {
    let id = erasure.user_id.0;
    let body = html! {
        @if fresh {
            p class="notice" role="status" {
                "The personal data of user " code { (id) } " is erased. Every copy forgets it "
                "once it has version v" (erasure.user_version) "."
            }
        }
        @if let Purge::Failed(why) = purged {
            div class="problem" role="alert" {
                p { "The dead-letter and retry queues were not all purged: " (why) "." }
                p { "Run on the portal's machine: " code { "portal erasure purge " (id) } }
            }
        }
        dl class="facts" {
            dt { "User id" } dd { code { (id) } }
            dt { "Version" } dd { "v" (erasure.user_version) }
            dt { "Erased" } dd { (date(erasure.erased_at, offset)) }
            dt { "Requested by" } dd { (requester) }
            dt { "Reason" } dd { (erasure.reason) }
            dt { "Queues purged" } dd id="purge" {
                @match purged {
                    Purge::Done(words) => (words),
                    Purge::Failed(_) => "not yet",
                    Purge::Recorded(Some(at)) => (date(*at, offset)),
                    Purge::Recorded(None) => { "not yet: " code { "portal erasure purge " (id) } }
                }
            }
        }
        h2 { "Check that nothing is left" }
        p {
            "This command, run on the portal's machine, searches every database, the stored "
            "history and every consumer's queues for the person's data, and succeeds only when "
            "it finds none:"
        }
        pre { code id="verify-command" { "portal erasure verify " (id) } }
        p { a href="/admin/users" { "Back to the users" } }
    };
    layout(
        &format!("Erasure of user {id}"),
        Some((&staff.signed, &staff.session)),
        body,
    )
}

/// The admin who erased, by name when the auth-service still knows them.
async fn requested_by(staff: &Staff, state: &AppState, erasure: &Erasure) -> String {
    match staff.api(state).user(erasure.requested_by).await {
        Ok(u) if !u.is_erased() => format!("{} {}", u.first_name, u.last_name),
        _ => erasure.requested_by.to_string(),
    }
}

/// Why `user` cannot be erased now, if so (the API says the same with a 409; asked first so
/// the form is not offered in vain).
async fn blocked(staff: &Staff, state: &AppState, user: &UserSnapshot) -> Option<String> {
    if user.is_active {
        return Some(
            "This person is still active: deactivate or offboard them before erasing their data."
                .into(),
        );
    }
    match staff.api(state).offboarding_of(user.user_id.0).await {
        Ok(saga) if !saga.state.is_terminal() => Some(
            "An offboarding of this person is still running: erase their data once it has \
             finished."
                .into(),
        ),
        // None, finished, or unreadable: the API decides when the form is sent.
        _ => None,
    }
}

/// The erased person's record page (read now).
async fn recorded(staff: &Staff, state: &AppState, id: Uuid) -> Response {
    match staff.api(state).erasure_of(id).await {
        Ok(erasure) => {
            let requester = requested_by(staff, state, &erasure).await;
            let purged = Purge::Recorded(erasure.queues_purged_at);
            record_page(
                staff,
                &erasure,
                &requester,
                &purged,
                state.utc_offset,
                false,
            )
            .into_response()
        }
        Err(e) => staff.failed(state, e),
    }
}

/// `GET /admin/users/{id}/erasure`.
pub async fn show(State(state): State<AppState>, staff: Staff, Path(id): Path<String>) -> Response {
    if let Some(refused) = admin_only(&staff) {
        return refused;
    }
    let user = match user_edit::load(&staff, &state, &id).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    if user.is_erased() {
        return recorded(&staff, &state, user.user_id.0).await;
    }
    let why = blocked(&staff, &state, &user).await;
    let page = confirmation(
        &staff,
        &user,
        &EraseForm::default(),
        &Problems::default(),
        why.as_deref(),
    );
    if why.is_some() {
        (StatusCode::CONFLICT, page).into_response()
    } else {
        page.into_response()
    }
}

/// `POST /admin/users/{id}/erasure`: erases (a form with problems comes back as typed), purges
/// the queues, and shows the record.
pub async fn erase(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    PageForm(form): PageForm<EraseForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, form.csrf.as_deref()) {
        return refused;
    }
    let user = match user_edit::load(&staff, &state, &id).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let id = user.user_id.0;
    if user.is_erased() {
        // Sent twice (a reload, another admin first): the record that exists.
        return Redirect::to(&format!("/admin/users/{id}/erasure")).into_response();
    }
    let (status, problems) = match form.request() {
        Ok(request) => match staff.api(&state).erase(id, &request).await {
            Ok(erasure) => {
                let purged = purge(&staff, &state, id, state.utc_offset).await;
                let requester = requested_by(&staff, &state, &erasure).await;
                return record_page(
                    &staff,
                    &erasure,
                    &requester,
                    &purged,
                    state.utc_offset,
                    true,
                )
                .into_response();
            }
            // Refused as asked (still active, an offboarding running, a reason it will not
            // take): said on the form, which keeps what was typed.
            Err(api_client::Error::Refused { status, body })
                if matches!(status.as_u16(), 403 | 409 | 422) =>
            {
                let problems = Problems {
                    form: Some(body.message),
                    ..Problems::default()
                };
                (
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::CONFLICT),
                    problems,
                )
            }
            Err(e) => return staff.failed(&state, e),
        },
        Err(problems) => (StatusCode::UNPROCESSABLE_ENTITY, problems),
    };
    (status, confirmation(&staff, &user, &form, &problems, None)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_checked_before_anything_is_asked() {
        let empty = EraseForm {
            reason: "  ".into(),
            ..EraseForm::default()
        };
        let problems = empty.request().unwrap_err();
        assert!(problems.reason.is_some() && problems.confirm.is_some());
        let long = EraseForm {
            reason: "x".repeat(REASON_MAX + 1),
            confirm: Some("yes".into()),
            ..EraseForm::default()
        };
        let problems = long.request().unwrap_err();
        assert!(problems.reason.is_some() && problems.confirm.is_none());
        let good = EraseForm {
            reason: " ticket 4711 ".into(),
            confirm: Some("yes".into()),
            ..EraseForm::default()
        };
        assert_eq!(good.request().unwrap().reason, "ticket 4711");
    }

    #[test]
    fn an_erased_persons_section_says_when_and_offers_nothing_to_do() {
        let user = UserSnapshot {
            user_id: contract::UserId(Uuid::nil()),
            email: contract::erasure::email(contract::UserId(Uuid::nil())),
            first_name: contract::erasure::FIRST_NAME.into(),
            last_name: contract::erasure::LAST_NAME.into(),
            role: contract::Role::Doctor,
            phone_number: None,
            is_active: false,
            must_change_password: false,
            created_at: Timestamp::now(),
            updated_at: None,
            user_version: Some(9),
            previous_role: None,
            changed_fields: None,
            erased_at: Some(Timestamp::now()),
        };
        let offset = FixedOffset::east_opt(0).unwrap();
        let html = section(&user, Some(false), offset).into_string();
        assert!(html.contains("Erased on "), "{html}");
        assert!(
            !html.contains("<form") && !html.contains("Erase personal data"),
            "{html}"
        );
        let inactive = UserSnapshot {
            erased_at: None,
            ..user.clone()
        };
        let html = section(&inactive, Some(false), offset).into_string();
        assert!(html.contains(">Erase personal data…</a>"), "{html}");
        let html = section(&inactive, Some(true), offset).into_string();
        assert!(!html.contains("Erase personal data…"), "{html}");
        let active = UserSnapshot {
            is_active: true,
            ..inactive
        };
        let html = section(&active, None, offset).into_string();
        assert!(!html.contains("Erase personal data…"), "{html}");
    }
}
