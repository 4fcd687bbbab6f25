//! Admin user management (admin bearer token required). Every change runs in one transaction
//! that locks the user, bumps `userVersion` and writes its event (see `store::change_user`).

use super::auth::Profile;
use super::AppState;
use crate::bulk::{self, Created};
use crate::store::{self, Outcome, ProfileChange, UserChange};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use contract::api::{
    AuditEntry, BulkCreateRequest, BulkCreateResponse, BulkItem, BulkStatus, CreateUserRequest,
    CreateUserResponse, ErrorBody, Page, RoleRequest, UpdateUserRequest, BULK_MAX_USERS,
};
use contract::{Email, EventType, PersonName, PhoneNumber, Role, UserSnapshot, ValidationError};
use directory::http::ListParams;
use platform::http::{ApiError, ApiJson, ApiQuery, Authenticated};
use serde::Deserialize;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/users", post(create_user).get(list_users))
        .route("/admin/users/bulk", post(bulk_create))
        .route("/admin/users/{id}", get(show_user).patch(update_user))
        .route("/admin/users/{id}/activate", post(activate))
        .route("/admin/users/{id}/deactivate", post(deactivate))
        .route("/admin/users/{id}/role", put(set_role))
        .route("/admin/users/{id}/reset-password", post(reset_password))
        .route("/admin/users/{id}/events", get(user_events))
}

/// The caller must hold an admin token AND still be an active admin now: a token outlives a
/// deactivation or demotion by up to its lifetime, and admin powers should not. (A change checks
/// the second part in the statement that locks its user: [`store::change_user_by_admin`].)
pub(super) async fn require_current_admin(
    state: &AppState,
    caller: &Authenticated,
) -> Result<(), ApiError> {
    caller.require_admin()?;
    if store::is_active_admin(&state.db, caller.0.sub).await? {
        Ok(())
    } else {
        Err(store::StoreError::NotAdmin.into())
    }
}

pub(super) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ValidationError::new("id", "must be a UUID").into())
}

/// Runs one change in its own transaction and answers the user as it now is.
async fn apply(
    state: &AppState,
    caller: &Authenticated,
    id: &str,
    change: UserChange,
) -> Result<Json<UserSnapshot>, ApiError> {
    caller.require_admin()?;
    let id = match parse_id(id) {
        Ok(id) => id,
        Err(bad) => {
            // A caller who is no longer an admin learns that first, whatever the id.
            require_current_admin(state, caller).await?;
            return Err(bad);
        }
    };
    let event_type = change.event_type();
    let mut tx = state.db.begin().await?;
    let outcome = store::change_user_by_admin(&mut tx, caller.0.sub, id, change).await?;
    tx.commit().await?;
    if let Outcome::Changed(user) = &outcome {
        tracing::info!(
            user_id = %user.id, version = user.version(), event = event_type.as_str(),
            by = %caller.0.sub, "user changed by admin"
        );
    }
    Ok(Json(outcome.user().snapshot()?))
}

async fn list_users(
    State(state): State<AppState>,
    caller: Authenticated,
    ListParams(query): ListParams,
) -> Result<Json<Page<UserSnapshot>>, ApiError> {
    require_current_admin(&state, &caller).await?;
    directory::http::user_page(&state.db, &query).await
}

async fn show_user(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<UserSnapshot>, ApiError> {
    require_current_admin(&state, &caller).await?;
    let user = store::find_by_id(&state.db, parse_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(Json(user.snapshot()?))
}

async fn update_user(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateUserRequest>,
) -> Result<Json<UserSnapshot>, ApiError> {
    let change = UserChange::Profile(ProfileChange {
        email: req.email.as_deref().map(Email::parse).transpose()?,
        first_name: req
            .first_name
            .as_deref()
            .map(|n| PersonName::parse("firstName", n))
            .transpose()?,
        last_name: req
            .last_name
            .as_deref()
            .map(|n| PersonName::parse("lastName", n))
            .transpose()?,
        phone_number: req
            .phone_number
            .map(|p| {
                p.filter(|p| !p.trim().is_empty())
                    .as_deref()
                    .map(PhoneNumber::parse)
                    .transpose()
            })
            .transpose()?,
    });
    apply(&state, &caller, &id, change).await
}

async fn activate(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<UserSnapshot>, ApiError> {
    apply(&state, &caller, &id, UserChange::Activate).await
}

async fn deactivate(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<UserSnapshot>, ApiError> {
    apply(&state, &caller, &id, UserChange::Deactivate).await
}

async fn set_role(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RoleRequest>,
) -> Result<Json<UserSnapshot>, ApiError> {
    let change = UserChange::SetRole(req.role.parse::<Role>()?);
    apply(&state, &caller, &id, change).await
}

/// `POST /admin/users/{id}/reset-password`: a new random temporary password, shown only in
/// this answer, which the user must change at the next login. Like every change it gets its
/// version and its `user.updated` event (which carries no password or hash), and it ends the
/// user's sessions.
async fn reset_password(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<CreateUserResponse>, ApiError> {
    let (temporary_password, hash) = state.temporary_password()?;
    let change = UserChange::Password {
        hash,
        must_change_password: true,
    };
    let Json(user) = apply(&state, &caller, &id, change).await?;
    tracing::info!(target: "security", event = "password_reset", user_id = %user.user_id.0, by = %caller.0.sub, "password reset by an admin");
    Ok(Json(CreateUserResponse {
        user,
        temporary_password,
    }))
}

/// Creates an active account that must change its random temporary password at first login.
async fn create_user(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<CreateUserResponse>), ApiError> {
    require_current_admin(&state, &caller).await?;
    let profile = Profile::parse(&req)?;
    let (temporary_password, hash) = state.temporary_password()?;
    let mut tx = state.db.begin().await?;
    let user = store::create_user(&mut tx, profile.into_new_user(hash, true, true)).await?;
    tx.commit().await?;
    // Ids, not emails: logs at INFO carry no personal data.
    tracing::info!(user_id = %user.id, role = %user.role, by = %caller.0.sub, "user created by admin");
    Ok((
        StatusCode::CREATED,
        Json(CreateUserResponse {
            user: user.snapshot()?,
            temporary_password,
        }),
    ))
}

/// `POST /admin/users/bulk`: up to [`BULK_MAX_USERS`] accounts in one transaction, each
/// active with a temporary password that must be changed at first login. An invalid item is
/// answered with its reason and the others are created; an email that exists (or appears
/// earlier in the request) creates nothing, so sending the same list again is harmless.
async fn bulk_create(
    State(state): State<AppState>,
    caller: Authenticated,
    ApiJson(req): ApiJson<BulkCreateRequest>,
) -> Result<Json<BulkCreateResponse>, ApiError> {
    require_current_admin(&state, &caller).await?;
    if req.users.is_empty() || req.users.len() > BULK_MAX_USERS {
        return Err(ValidationError::new(
            "users",
            format!("must hold 1 to {BULK_MAX_USERS} accounts"),
        )
        .into());
    }
    let _turn = state
        .bulk_turn
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("the service is shutting down"))?;
    let mut items: Vec<Option<BulkItem>> = vec![None; req.users.len()];
    let mut valid: Vec<usize> = Vec::with_capacity(req.users.len());
    let mut new_users = Vec::with_capacity(req.users.len());
    let mut passwords = Vec::with_capacity(req.users.len());
    let mut seen = std::collections::HashSet::new();
    for (index, item) in req.users.iter().enumerate() {
        let profile = Profile::parse(item).and_then(|p| {
            if seen.insert(p.email.as_str().to_owned()) {
                Ok(p)
            } else {
                Err(ValidationError::new("email", "appears more than once in this request").into())
            }
        });
        match profile {
            Ok(profile) => {
                let (temporary_password, hash) = state.temporary_password()?;
                valid.push(index);
                passwords.push(temporary_password);
                new_users.push(profile.into_new_user(hash, true, true));
            }
            Err(e) => items[index] = Some(invalid_item(index, e)),
        }
    }
    let mut conn = state.db.acquire().await?;
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let outcomes = bulk::create_missing(&mut tx, new_users).await?;
    tx.commit().await?;
    // The statements of a thousand accounts grew this connection's buffers to megabytes; back in
    // the pool they would stay that size, in every connection a bulk request ever used.
    sqlx::Connection::shrink_buffers(&mut *conn);
    drop(conn);
    for ((index, outcome), temporary_password) in valid.into_iter().zip(outcomes).zip(passwords) {
        items[index] = Some(match outcome {
            Created::New(row) => BulkItem {
                index,
                status: BulkStatus::Created,
                user_id: Some(contract::UserId(row.id)),
                temporary_password: Some(temporary_password),
                error: None,
            },
            Created::Existing(id) => BulkItem {
                index,
                status: BulkStatus::Exists,
                user_id: Some(contract::UserId(id)),
                temporary_password: None,
                error: None,
            },
        });
    }
    let items: Vec<BulkItem> = items.into_iter().flatten().collect();
    let count = |s: BulkStatus| items.iter().filter(|i| i.status == s).count();
    let answer = BulkCreateResponse {
        created: count(BulkStatus::Created),
        existing: count(BulkStatus::Exists),
        invalid: count(BulkStatus::Invalid),
        items,
    };
    tracing::info!(
        created = answer.created, existing = answer.existing, invalid = answer.invalid,
        by = %caller.0.sub, "users imported by admin"
    );
    Ok(Json(answer))
}

fn invalid_item(index: usize, e: ApiError) -> BulkItem {
    BulkItem {
        index,
        status: BulkStatus::Invalid,
        user_id: None,
        temporary_password: None,
        error: Some(ErrorBody {
            error: e.code.to_owned(),
            message: e.message,
            field: e.field.map(str::to_owned),
        }),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    since: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

/// `GET /admin/users/{id}/events?since=&type=`: the user's audit trail, oldest first.
async fn user_events(
    State(state): State<AppState>,
    caller: Authenticated,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    require_current_admin(&state, &caller).await?;
    let id = parse_id(&id)?;
    let since = q
        .since
        .as_deref()
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| ValidationError::new("since", "must be an ISO-8601 timestamp"))
        })
        .transpose()?;
    if let Some(t) = q.event_type.as_deref() {
        if EventType::parse(t).is_none() {
            return Err(ValidationError::new(
                "type",
                "must be a user event type such as user.updated",
            )
            .into());
        }
    }
    if store::find_by_id(&state.db, id).await?.is_none() {
        return Err(ApiError::not_found("no such user"));
    }
    let events =
        crate::event_store::user_history(&state.db, id, since, q.event_type.as_deref()).await?;
    let items = events
        .into_iter()
        .map(|e| AuditEntry {
            seq: e.event.seq,
            event_id: e.event.event_id,
            event_type: e.event.event_type,
            user_version: e.event.user_version,
            created_at: e.event.created_at.into(),
            published_at: e.published_at.map(Into::into),
            published: e.published,
            trace_id: e.event.trace_id,
            event: serde_json::from_str(&e.event.body).unwrap_or(serde_json::Value::Null),
        })
        .collect::<Vec<_>>();
    let total = items.len() as i64;
    Ok(Json(Page { items, total }))
}
