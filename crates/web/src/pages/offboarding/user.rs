//! The user page's part of offboarding: the propagation line, the user's latest offboarding,
//! the "Offboard…" form and its checks, and `POST /admin/users/{id}/offboard` (`start`).

use super::{at, delay, policy_words, state_badge};
use crate::page::PageError;
use crate::pages::admin::refuse_admin_post;
use crate::pages::field_error;
use crate::pages::user_edit;
use crate::pages::PageForm;
use crate::staff::Staff;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::FixedOffset;
use contract::api::{ConsumerPropagation, Offboarding, Propagation};
use contract::control::AppointmentPolicy;
use contract::UserSnapshot;
use maud::{html, Markup};
use serde::Deserialize;

/// The longest reason the auth-service takes.
const REASON_MAX: usize = 500;

/// Where one consumer stands with the user's `version`: its delay when it holds it, else
/// "waiting (has vN of vM)" or "no receipt yet".
fn consumer_words(c: &ConsumerPropagation, version: i64) -> String {
    let state = if c.current {
        c.delay_seconds
            .map_or_else(|| "up to date".to_owned(), delay)
    } else {
        match c.user_version {
            Some(v) => format!("waiting (has v{v} of v{version})"),
            None => "no receipt yet".to_owned(),
        }
    };
    let optional = if c.required { "" } else { " (not required)" };
    format!("{} {state}{optional}", c.consumer)
}

/// The propagation line: "Deactivated · user-service 0.06 s · appointment-service 0.07 s".
fn propagation_line(p: &Propagation) -> Markup {
    html! {
        p id="propagation" {
            strong { "Propagation:" } " "
            @if p.is_active { "Active" } @else { "Deactivated" }
            @for c in &p.consumers {
                " · "
                @if c.current { (consumer_words(c, p.user_version)) }
                @else { span class="badge wait" { (consumer_words(c, p.user_version)) } }
            }
            @if p.consumers.is_empty() { " · no consumer registered" }
        }
    }
}

/// What a failed secondary read says in the page (the page itself still shows).
fn cannot_read(what: &str, e: api_client::Error) -> String {
    let why = match e.status().map(|s| s.as_u16()) {
        Some(404) => "the auth-service does not know it.".to_owned(),
        _ => PageError::from_api(e).message,
    };
    format!("{what} cannot be read right now: {why}")
}

/// The "Offboard…" form as typed.
#[derive(Debug, Default, Deserialize)]
pub struct OffboardForm {
    csrf: Option<String>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    policy: String,
    confirm: Option<String>,
}

/// What is wrong with a submitted "Offboard…" form.
#[derive(Debug, Default)]
pub(crate) struct OffboardProblems {
    reason: Option<String>,
    policy: Option<String>,
    confirm: Option<String>,
    /// The API's refusal, for the form as a whole.
    form: Option<String>,
}

impl OffboardProblems {
    fn any_field(&self) -> bool {
        self.reason.is_some() || self.policy.is_some() || self.confirm.is_some()
    }
}

impl OffboardForm {
    /// The request, or what is wrong with the form.
    fn request(&self, name: &str) -> Result<contract::api::OffboardingRequest, OffboardProblems> {
        let mut problems = OffboardProblems::default();
        let reason = self.reason.trim();
        let length = reason.chars().count();
        if length == 0 {
            problems.reason = Some(format!("Enter why {name} is leaving."));
        } else if length > REASON_MAX {
            problems.reason = Some(format!(
                "The reason may be at most {REASON_MAX} characters; this one has {length}."
            ));
        }
        let policy = self.policy.parse::<AppointmentPolicy>().ok();
        if policy.is_none() {
            problems.policy = Some("Choose what becomes of their future appointments.".into());
        }
        if self.confirm.as_deref() != Some("yes") {
            problems.confirm = Some("Tick the box to confirm the offboarding.".into());
        }
        match policy {
            Some(policy) if !problems.any_field() => Ok(contract::api::OffboardingRequest {
                reason: reason.to_owned(),
                policy,
            }),
            _ => Err(problems),
        }
    }
}

/// What the user's page shows of propagation and offboarding.
pub(crate) struct UserSections {
    /// The propagation line, under the person's summary.
    pub propagation: Markup,
    /// The latest offboarding and the "Offboard…" form.
    pub offboarding: Markup,
    /// Erasure: the way to it, why not yet, or when the person was erased
    /// ([`crate::pages::erasure::section`]; it needs to know whether an offboarding runs).
    pub erasure: Markup,
}

/// A form coming back with its problems.
pub(crate) type Returned<'a> = Option<(&'a OffboardForm, &'a OffboardProblems)>;

/// The user page's sections for `user`; each read that fails is said in its section, never
/// fails the page.
pub(crate) async fn user_sections(
    staff: &Staff,
    state: &AppState,
    user: &UserSnapshot,
    returned: Returned<'_>,
) -> UserSections {
    let api = staff.api(state);
    let id = user.user_id.0;
    let (propagation, latest) = tokio::join!(api.propagation(id), api.offboarding_of(id));
    let propagation = match propagation {
        Ok(p) => propagation_line(&p),
        Err(e) => {
            tracing::warn!(error = %e, user_id = %id, "user page: propagation not read");
            html! { p id="propagation" class="problem" { (cannot_read("Propagation", e)) } }
        }
    };
    let latest = match latest {
        Ok(saga) => Ok(Some(saga)),
        Err(e) if e.status().is_some_and(|s| s.as_u16() == 404) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, user_id = %id, "user page: offboarding not read");
            Err(cannot_read("Offboardings", e))
        }
    };
    let running = match &latest {
        Ok(saga) => Some(saga.as_ref().is_some_and(|s| !s.state.is_terminal())),
        Err(_) => None,
    };
    let erasure = crate::pages::erasure::section(user, running, state.utc_offset);
    let offboarding = offboarding_section(staff, user, latest, returned, state.utc_offset);
    UserSections {
        propagation,
        offboarding,
        erasure,
    }
}

fn offboarding_section(
    staff: &Staff,
    user: &UserSnapshot,
    latest: Result<Option<Offboarding>, String>,
    returned: Returned<'_>,
    offset: FixedOffset,
) -> Markup {
    let id = user.user_id.0;
    let name = format!("{} {}", user.first_name, user.last_name);
    let running = matches!(&latest, Ok(Some(s)) if !s.state.is_terminal());
    let no_problems = OffboardProblems::default();
    let empty = OffboardForm::default();
    let (values, problems) = returned.unwrap_or((&empty, &no_problems));
    let reassign = values.policy.is_empty() || values.policy == "reassign";
    let described =
        |field: &str, problem: Option<&String>| problem.map(|_| format!("{field}-error"));
    let invalid = |problem: Option<&String>| problem.map(|_| "true");
    html! {
        section aria-labelledby="offboarding" {
            h2 id="offboarding" { "Offboarding" }
            @match &latest {
                Err(problem) => p class="problem" { (problem) },
                Ok(None) => p { "No offboarding of " (name) " so far." },
                Ok(Some(saga)) if !saga.state.is_terminal() => p {
                    (state_badge(saga)) " An offboarding of " (name) " runs since "
                    (at(saga.created_at, offset)) ". "
                    a href=(format!("/admin/offboarding/{}", saga.id)) { "Follow the offboarding" }
                },
                Ok(Some(saga)) => p {
                    "Last offboarding: " (state_badge(saga))
                    @if let Some(done) = saga.finished_at { " finished " (at(done, offset)) }
                    ". "
                    a href=(format!("/admin/offboarding/{}", saga.id)) { "See the offboarding" }
                },
            }
            @if id == staff.signed.user.user_id.0 {
                p class="hint" { "You cannot offboard yourself: another admin can." }
            } @else if !running {
                details open[returned.is_some()] {
                    summary { "Offboard…" }
                    @if let Some(problem) = &problems.form { p class="problem" role="alert" { (problem) } }
                    @if problems.any_field() {
                        p class="problem" role="alert" { "Some fields need attention; your entries are kept." }
                    }
                    p {
                        "Offboarding deactivates " (name) " at once (their sessions end), waits until "
                        "every part of the system has the change, then moves or cancels their future "
                        "appointments as chosen here."
                    }
                    form class="stacked" method="post" action=(format!("/admin/users/{id}/offboard")) {
                        input type="hidden" name="csrf" value=(staff.session.csrf);
                        div {
                            label for="offboardReason" { "Reason (required)" }
                            textarea id="offboardReason" name="reason" rows="3" required
                                maxlength=(REASON_MAX)
                                aria-describedby=[described("offboardReason", problems.reason.as_ref())]
                                aria-invalid=[invalid(problems.reason.as_ref())] { (values.reason) }
                            (field_error("offboardReason", problems.reason.as_ref()))
                        }
                        fieldset aria-describedby=[described("offboardPolicy", problems.policy.as_ref())] {
                            legend { "Future appointments" }
                            div class="choice" {
                                input type="radio" id="policyReassign" name="policy" value="reassign" checked[reassign];
                                label for="policyReassign" { (policy_words(AppointmentPolicy::Reassign)) }
                            }
                            div class="choice" {
                                input type="radio" id="policyCancel" name="policy" value="cancel" checked[values.policy == "cancel"];
                                label for="policyCancel" { (policy_words(AppointmentPolicy::Cancel)) }
                            }
                            (field_error("offboardPolicy", problems.policy.as_ref()))
                        }
                        div {
                            div class="choice" {
                                input type="checkbox" id="offboardConfirm" name="confirm" value="yes" required
                                    aria-describedby=[described("offboardConfirm", problems.confirm.as_ref())]
                                    aria-invalid=[invalid(problems.confirm.as_ref())];
                                label for="offboardConfirm" { "I confirm: deactivate " (name) " now and resolve their future appointments" }
                            }
                            (field_error("offboardConfirm", problems.confirm.as_ref()))
                        }
                        div { button type="submit" { "Offboard " (name) } }
                    }
                }
            }
        }
    }
}

/// `POST /admin/users/{id}/offboard`: starts the offboarding (or finds the one running) and
/// goes to its page; a form with problems comes back on the user's page, as typed.
pub async fn start(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    PageForm(form): PageForm<OffboardForm>,
) -> Response {
    if let Some(refused) = refuse_admin_post(&staff, form.csrf.as_deref()) {
        return refused;
    }
    let user = match user_edit::load(&staff, &state, &id).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let name = format!("{} {}", user.first_name, user.last_name);
    let problems = match form.request(&name) {
        Ok(request) => match staff.api(&state).offboard(user.user_id.0, &request).await {
            Ok(saga) => {
                return Redirect::to(&format!("/admin/offboarding/{}", saga.id)).into_response()
            }
            // Refused as asked (themselves, a conflict, a value the API will not take): said on
            // the form, which keeps what was typed.
            Err(api_client::Error::Refused { status, body })
                if matches!(status.as_u16(), 403 | 409 | 422) =>
            {
                OffboardProblems {
                    form: Some(body.message),
                    ..OffboardProblems::default()
                }
            }
            Err(e) => return staff.failed(&state, e),
        },
        Err(problems) => problems,
    };
    let sections = user_sections(&staff, &state, &user, Some((&form, &problems))).await;
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        user_edit::user_page(&staff, &user, &sections),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::Timestamp;
    use uuid::Uuid;

    fn consumer(name: &str, version: Option<i64>, current: bool) -> ConsumerPropagation {
        ConsumerPropagation {
            consumer: name.into(),
            required: true,
            user_version: version,
            applied_at: None,
            delay_seconds: current.then_some(0.0612),
            current,
        }
    }

    #[test]
    fn the_propagation_line_says_each_consumers_delay_or_what_it_waits_for() {
        let mut p = Propagation {
            user_id: contract::UserId(Uuid::nil()),
            user_version: 4,
            is_active: false,
            changed_at: Timestamp::now(),
            consumers: vec![
                consumer("user-service", Some(4), true),
                consumer("appointment-service", Some(4), true),
            ],
        };
        let text = |p: &Propagation| {
            let html = propagation_line(p).into_string();
            // The words without the tags.
            let mut out = String::new();
            let mut tag = false;
            for c in html.chars() {
                match c {
                    '<' => tag = true,
                    '>' => tag = false,
                    c if !tag => out.push(c),
                    _ => {}
                }
            }
            out
        };
        assert_eq!(
            text(&p),
            "Propagation: Deactivated · user-service 0.06 s · appointment-service 0.06 s"
        );
        p.is_active = true;
        p.consumers = vec![
            consumer("user-service", Some(3), false),
            consumer("appointment-service", None, false),
        ];
        p.consumers[1].required = false;
        assert_eq!(
            text(&p),
            "Propagation: Active · user-service waiting (has v3 of v4) · appointment-service no \
             receipt yet (not required)"
        );
        assert_eq!(delay(90.0), "2 min");
        assert_eq!(delay(7200.0), "2.0 h");
    }

    #[test]
    fn the_form_is_checked_before_anything_is_asked() {
        let form = OffboardForm {
            csrf: None,
            reason: "  ".into(),
            policy: "keep".into(),
            confirm: None,
        };
        let problems = form.request("Ann Dube").unwrap_err();
        assert_eq!(
            problems.reason.as_deref(),
            Some("Enter why Ann Dube is leaving.")
        );
        assert!(problems.policy.is_some() && problems.confirm.is_some());
        let long = OffboardForm {
            reason: "x".repeat(501),
            policy: "cancel".into(),
            confirm: Some("yes".into()),
            ..OffboardForm::default()
        };
        assert!(long.request("A").unwrap_err().reason.is_some());
        let good = OffboardForm {
            reason: " left the clinic ".into(),
            policy: "cancel".into(),
            confirm: Some("yes".into()),
            ..OffboardForm::default()
        };
        let request = good.request("A").unwrap();
        assert_eq!(request.reason, "left the clinic");
        assert_eq!(request.policy, AppointmentPolicy::Cancel);
    }
}
