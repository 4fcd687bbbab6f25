//! `/Users` (RFC 7644 §3): list and search with filter, paging and sorting; create; read;
//! replace (`PUT`); `PATCH`; `DELETE` as deactivation (a clinical system keeps the record: the
//! person is deactivated everywhere and, while inactive, no longer seen through SCIM). Each write
//! locks the user, checks `If-Match` against the user's version, and changes the user through
//! [`store::change_user`]: a profile change, a role change and an activation are each one
//! versioned change with its event, exactly as through the admin API.

use super::discovery::MAX_RESULTS;
use super::filter::{self, Bind};
use super::resource::{get_ci, hidden_by_name, to_scim, Desired, ScimRow, ALL, VIEW};
use super::{base_url, scim_json, ScimClient, ScimConfig, ScimError, LIST_SCHEMA, USER_SCHEMA};
use crate::http::AppState;
use crate::store::{self, NewUser, Outcome, ProfileChange, UserChange};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use contract::Role;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/Users", get(list).post(create))
        .route("/Users/.search", post(search))
        .route(
            "/Users/{id}",
            get(show).put(replace).patch(patch).delete(delete),
        )
        .route("/.search", post(search_everything))
}

/// The query of a list or a search.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    filter: Option<String>,
    // Numbers as text, read here: a bad one is SCIM's `invalidValue`, not axum's plain 400.
    start_index: Option<String>,
    count: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    attributes: Option<String>,
    excluded_attributes: Option<String>,
}

fn sort_column(attr: &str) -> Result<&'static str, ScimError> {
    let plain = attr
        .strip_prefix(USER_SCHEMA)
        .map(|a| a.trim_start_matches(':'))
        .unwrap_or(attr)
        .to_ascii_lowercase();
    Ok(match plain.as_str() {
        "id" => "u.id",
        "username" => "lower(coalesce(s.user_name, u.email))",
        "externalid" => "s.external_id",
        "emails" | "emails.value" => "u.email",
        "name.givenname" => "lower(u.first_name)",
        "name.familyname" => "lower(u.last_name)",
        "displayname" => "lower(u.first_name || ' ' || u.last_name)",
        "meta.created" => "u.created_at",
        "meta.lastmodified" => "coalesce(u.updated_at, u.created_at)",
        "active" => "u.is_active",
        _ => return Err(ScimError::invalid_value(format!("cannot sort by {attr:?}"))),
    })
}

fn list_of(raw: &Option<String>) -> Vec<String> {
    raw.as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `user` with only the `include`d attributes (plus `id` and `schemas`), or without the
/// `exclude`d ones (RFC 7644 §3.4.2.5).
fn project(user: Value, include: &[String], exclude: &[String]) -> Value {
    let Value::Object(mut all) = user else {
        return user;
    };
    let split = |path: &str| -> (String, Option<String>) {
        let plain = path
            .strip_prefix(USER_SCHEMA)
            .map(|p| p.trim_start_matches(':'))
            .unwrap_or(path);
        match plain.split_once('.') {
            Some((a, s)) => (a.to_owned(), Some(s.to_owned())),
            None => (plain.to_owned(), None),
        }
    };
    let key = |obj: &Map<String, Value>, name: &str| {
        obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
    };
    if !include.is_empty() {
        let mut kept = Map::new();
        for always in ["schemas", "id"] {
            if let Some(v) = all.get(always) {
                kept.insert(always.to_owned(), v.clone());
            }
        }
        for path in include {
            let (attr, sub) = split(path);
            let Some(k) = key(&all, &attr) else { continue };
            match (sub, all.get(&k)) {
                (None, Some(v)) => {
                    kept.insert(k, v.clone());
                }
                (Some(sub), Some(Value::Object(o))) => {
                    if let Some(sk) = key(o, &sub) {
                        let entry = kept.entry(k).or_insert_with(|| json!({}));
                        if let (Value::Object(e), Some(v)) = (entry, o.get(&sk)) {
                            e.insert(sk, v.clone());
                        }
                    }
                }
                (Some(sub), Some(Value::Array(items))) => {
                    let picked: Vec<Value> = items
                        .iter()
                        .filter_map(|i| i.as_object())
                        .filter_map(|o| {
                            key(o, &sub).and_then(|sk| o.get(&sk).map(|v| json!({ sk: v })))
                        })
                        .collect();
                    kept.insert(k, Value::Array(picked));
                }
                _ => {}
            }
        }
        return Value::Object(kept);
    }
    for path in exclude {
        let (attr, sub) = split(path);
        if attr.eq_ignore_ascii_case("id") || attr.eq_ignore_ascii_case("schemas") {
            continue;
        }
        let Some(k) = key(&all, &attr) else { continue };
        match sub {
            None => {
                all.remove(&k);
            }
            Some(sub) => {
                if let Some(Value::Object(o)) = all.get_mut(&k) {
                    if let Some(sk) = key(o, &sub) {
                        o.remove(&sk);
                    }
                }
            }
        }
    }
    Value::Object(all)
}

async fn run_list(
    state: &AppState,
    headers: &HeaderMap,
    q: ListQuery,
) -> Result<Response, ScimError> {
    let config = &state.security.scim;
    let condition = match q.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => Some(filter::to_sql(f, 1)?),
        None => None,
    };
    let number =
        |name: &str, raw: &Option<String>, default: i64| match raw.as_deref().map(str::trim) {
            None | Some("") => Ok(default),
            Some(n) => n.parse::<i64>().map_err(|_| {
                ScimError::invalid_value(format!("{name} must be an integer, not {n:?}"))
            }),
        };
    let start = number("startIndex", &q.start_index, 1)?.max(1);
    let count = number("count", &q.count, 100)?.clamp(0, MAX_RESULTS);
    let order = match &q.sort_by {
        Some(by) => {
            let desc = q
                .sort_order
                .as_deref()
                .is_some_and(|o| o.eq_ignore_ascii_case("descending"));
            format!(
                "{} {} NULLS LAST, u.created_at, u.id",
                sort_column(by)?,
                if desc { "DESC" } else { "ASC" }
            )
        }
        None => "u.created_at, u.id".to_owned(),
    };
    let (where_sql, binds) = match condition {
        Some(sql) => (format!(" AND {}", sql.condition), sql.binds),
        None => (String::new(), Vec::new()),
    };
    let view = &*VIEW;
    let page_sql = format!(
        "{view}{where_sql} ORDER BY {order} LIMIT {count} OFFSET {}",
        start - 1
    );
    let count_sql = format!("SELECT count(*) FROM ({view}{where_sql}) matched");
    let mut page = sqlx::query_as::<_, ScimRow>(&page_sql);
    let mut total = sqlx::query_scalar::<_, i64>(&count_sql);
    for b in binds {
        (page, total) = match b {
            Bind::Text(t) => (page.bind(t.clone()), total.bind(t)),
            Bind::Bool(v) => (page.bind(v), total.bind(v)),
            Bind::Time(t) => (page.bind(t), total.bind(t)),
        };
    }
    let rows = page.fetch_all(&state.db).await?;
    let total = total.fetch_one(&state.db).await?;
    let base = base_url(config, headers);
    let include = list_of(&q.attributes);
    let exclude = list_of(&q.excluded_attributes);
    let resources: Vec<Value> = rows
        .iter()
        .map(|r| project(to_scim(r, config, &base), &include, &exclude))
        .collect();
    Ok(scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    ))
}

async fn list(
    State(state): State<AppState>,
    _client: ScimClient,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, ScimError> {
    run_list(&state, &headers, q).await
}

fn json_body(body: &Bytes) -> Result<Value, ScimError> {
    serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not JSON: {e}")))
}

/// `POST /Users/.search`: a list whose query is in the body.
async fn search(
    State(state): State<AppState>,
    _client: ScimClient,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let body = json_body(&body)?;
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a SearchRequest must be an object"))?;
    let text = |name: &str| get_ci(obj, name).and_then(Value::as_str).map(str::to_owned);
    let int = |name: &str| {
        get_ci(obj, name).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let joined = |name: &str| {
        get_ci(obj, name).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
    };
    let q = ListQuery {
        filter: text("filter"),
        start_index: int("startIndex"),
        count: int("count"),
        sort_by: text("sortBy"),
        sort_order: text("sortOrder"),
        attributes: joined("attributes"),
        excluded_attributes: joined("excludedAttributes"),
    };
    run_list(&state, &headers, q).await
}

/// `POST /.search` over every resource type: there is one, so it is not offered (501, as
/// RFC 7644 §3.12 says for what a provider does not support).
async fn search_everything(_client: ScimClient) -> ScimError {
    ScimError::new(
        StatusCode::NOT_IMPLEMENTED,
        None,
        "search across resource types is not supported; use POST /Users/.search",
    )
}

/// One user of the SCIM view; locked for the transaction when `tx` is given.
async fn load(
    db: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    lock: bool,
) -> Result<Option<ScimRow>, ScimError> {
    let view = &*VIEW;
    let sql = format!(
        "{view} AND u.id = $1{}",
        if lock { " FOR UPDATE OF u" } else { "" }
    );
    Ok(sqlx::query_as(&sql).bind(id).fetch_optional(db).await?)
}

fn parse_id(raw: &str) -> Result<Uuid, ScimError> {
    raw.parse()
        .map_err(|_| ScimError::not_found(format!("no user {raw:?}")))
}

/// The answer with a user: its SCIM form, `ETag` and (on creation) `Location`.
fn user_response(
    status: StatusCode,
    row: &ScimRow,
    config: &ScimConfig,
    headers: &HeaderMap,
) -> Response {
    shaped_user_response(status, row, config, headers, &[], &[])
}

/// [`user_response`] with only the `include`d attributes, or without the `exclude`d ones.
fn shaped_user_response(
    status: StatusCode,
    row: &ScimRow,
    config: &ScimConfig,
    headers: &HeaderMap,
    include: &[String],
    exclude: &[String],
) -> Response {
    let base = base_url(config, headers);
    let user = to_scim(row, config, &base);
    let location = user["meta"]["location"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut response = scim_json(status, &project(user, include, exclude));
    if let Ok(tag) = HeaderValue::from_str(&row.etag()) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    if status == StatusCode::CREATED {
        if let Ok(loc) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, loc);
        }
    }
    response
}

/// `If-Match` (RFC 7644 §3.14): the user's ETag, or `*`.
fn check_if_match(headers: &HeaderMap, row: &ScimRow) -> Result<(), ScimError> {
    let Some(wanted) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let current = row.etag();
    let strong = current.trim_start_matches("W/");
    let ok = wanted
        .split(',')
        .map(str::trim)
        .any(|w| w == "*" || w == current || w.trim_start_matches("W/") == strong);
    if ok {
        Ok(())
    } else {
        Err(ScimError::new(
            StatusCode::PRECONDITION_FAILED,
            None,
            format!("the user changed: it is at version {current}, not {wanted}"),
        ))
    }
}

async fn show(
    State(state): State<AppState>,
    _client: ScimClient,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ScimError> {
    let row = load(&state.db, parse_id(&id)?, false)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    let tag = row.etag();
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"))
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(shaped_user_response(
        StatusCode::OK,
        &row,
        &state.security.scim,
        &headers,
        &list_of(&q.attributes),
        &list_of(&q.excluded_attributes),
    ))
}

/// Refuses a `userName` another user has (its own, or its email when it has none).
async fn check_user_name(
    tx: &mut Transaction<'_, Postgres>,
    user_name: &str,
    except: Option<Uuid>,
) -> Result<(), ScimError> {
    let taken: Option<Uuid> = sqlx::query_scalar(
        "SELECT u.id FROM users u LEFT JOIN scim_users s ON s.user_id = u.id \
         WHERE lower(coalesce(s.user_name, u.email)) = lower($1) \
           AND u.id IS DISTINCT FROM $2 LIMIT 1",
    )
    .bind(user_name)
    .bind(except)
    .fetch_optional(&mut **tx)
    .await?;
    match taken {
        Some(_) => Err(ScimError::uniqueness(format!(
            "userName {user_name:?} is taken by another user"
        ))),
        None => Ok(()),
    }
}

/// Keeps what SCIM said of user `id` beside the record. `record_changed`: this write gave
/// the record a new version (which starts the SCIM-only count again); else a change of what is
/// kept here counts one more SCIM-only change (the ETag moves with it).
async fn keep(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    d: &Desired,
    record_changed: bool,
) -> Result<(), ScimError> {
    sqlx::query(
        "INSERT INTO scim_users (user_id, user_name, external_id, emails, phone_numbers, roles) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (user_id) DO UPDATE SET user_name = $2, external_id = $3, emails = $4, \
           phone_numbers = $5, roles = $6, deleted_at = NULL, \
           scim_version = CASE WHEN $7 THEN 0 \
             WHEN (scim_users.user_name, scim_users.external_id, scim_users.emails, \
                   scim_users.phone_numbers, scim_users.roles) \
                  IS DISTINCT FROM ($2, $3, $4, $5, $6) \
             THEN scim_users.scim_version + 1 ELSE scim_users.scim_version END, \
           changed_at = CASE WHEN (scim_users.user_name, scim_users.external_id, \
                   scim_users.emails, scim_users.phone_numbers, scim_users.roles) \
                  IS DISTINCT FROM ($2, $3, $4, $5, $6) \
             THEN now() ELSE scim_users.changed_at END",
    )
    .bind(id)
    .bind(&d.user_name)
    .bind(&d.external_id)
    .bind(&d.emails)
    .bind(&d.phone_numbers)
    .bind(&d.roles)
    .bind(record_changed)
    .execute(&mut **tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("scim_users_user_name") => {
            ScimError::uniqueness(format!(
                "userName {:?} is taken by another user",
                d.user_name
            ))
        }
        _ => e.into(),
    })?;
    Ok(())
}

async fn create(
    State(state): State<AppState>,
    client: ScimClient,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let config = &state.security.scim;
    let desired = Desired::parse(&json_body(&body)?, config)?;
    let role = desired.role.or(config.default_role).ok_or_else(|| {
        ScimError::invalid_value("roles is required: a value SCIM_ROLE_MAP maps to a portal role")
    })?;
    // Nobody knows this password: the person signs in once an admin gives them a temporary
    // one (`portal users reset-password`), or by the way the hospital sets up.
    let (_, hash) = state
        .temporary_password()
        .map_err(|e| ScimError::internal(e.message))?;
    let mut tx = state.db.begin().await?;
    guard_admins(&mut tx).await?;
    // A person deleted through SCIM (deactivated, hidden) and provisioned again: the same
    // record, active again, rather than a conflict on a name nobody can see.
    let hidden: Option<ScimRow> = sqlx::query_as(&format!(
        "{} WHERE {} ORDER BY u.created_at LIMIT 1 FOR UPDATE OF u",
        ALL.as_str(),
        hidden_by_name()
    ))
    .bind(&desired.user_name)
    .bind(desired.email.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(before) = hidden {
        let mut desired = desired;
        desired.active = Some(desired.active.unwrap_or(true));
        write(&mut tx, config, &before, &desired).await?;
        let row = load(&mut *tx, before.id, false)
            .await?
            .ok_or_else(|| ScimError::internal("the user is not in the SCIM view"))?;
        tx.commit().await?;
        tracing::info!(user_id = %row.id, version = row.version(), token = %client.0.name, "user deleted through SCIM provisioned again: the same record");
        return Ok(user_response(StatusCode::CREATED, &row, config, &headers));
    }
    check_user_name(&mut tx, &desired.user_name, None).await?;
    let created = store::create_user(
        &mut tx,
        NewUser {
            email: desired.email.clone(),
            password_hash: hash,
            first_name: desired.first_name.clone(),
            last_name: desired.last_name.clone(),
            role,
            phone_number: desired.phone.clone(),
            is_active: desired.active.unwrap_or(true),
            must_change_password: true,
        },
    )
    .await?;
    keep(&mut tx, created.id, &desired, true).await?;
    let row = load(&mut *tx, created.id, false)
        .await?
        .ok_or_else(|| ScimError::internal("the new user is not in the SCIM view"))?;
    tx.commit().await?;
    tracing::info!(user_id = %row.id, version = row.version(), token = %client.0.name, "user created through SCIM");
    Ok(user_response(StatusCode::CREATED, &row, config, &headers))
}

/// Makes user `before` what `desired` says, one store change per kind of change.
async fn write(
    tx: &mut Transaction<'_, Postgres>,
    config: &ScimConfig,
    before: &ScimRow,
    desired: &Desired,
) -> Result<(), ScimError> {
    refuse_unmanaged(config, before)?;
    check_user_name(tx, &desired.user_name, Some(before.id)).await?;
    let mut changes = vec![UserChange::Profile(ProfileChange {
        email: Some(desired.email.clone()),
        first_name: Some(desired.first_name.clone()),
        last_name: Some(desired.last_name.clone()),
        phone_number: Some(desired.phone.clone()),
    })];
    if let Some(role) = desired.role.filter(|r| r.as_str() != before.role) {
        changes.push(UserChange::SetRole(role));
    }
    match desired.active {
        Some(true) if !before.is_active => changes.push(UserChange::Activate),
        Some(false) if before.is_active => changes.push(UserChange::Deactivate),
        _ => {}
    }
    let mut record_changed = false;
    for change in changes {
        let kind = change.event_type();
        if let Outcome::Changed(user) = store::change_user(tx, before.id, change).await? {
            record_changed = true;
            tracing::info!(user_id = %user.id, version = user.version(), event = kind.as_str(), "user changed through SCIM");
        }
    }
    keep(tx, before.id, desired, record_changed).await
}

/// Refuses any SCIM write to a user whose role SCIM does not manage (an admin, unless
/// SCIM_ROLE_MAP names admin): the portal's admins are changed in the portal, so a directory —
/// or whoever holds its token — can neither deactivate, re-email nor reactivate one.
fn refuse_unmanaged(config: &ScimConfig, user: &ScimRow) -> Result<(), ScimError> {
    match user.role.parse::<Role>() {
        Ok(role) if config.manages(role) => Ok(()),
        _ => Err(ScimError::mutability(format!(
            "this user is a portal {}: SCIM does not change them (SCIM_ROLE_MAP does not name \
             that role); change them in the portal",
            user.role
        ))),
    }
}

/// Takes the lock that serialises changes which could remove an active admin, before any
/// user's row lock: the store takes it in that order too, so the two cannot deadlock.
async fn guard_admins(tx: &mut Transaction<'_, Postgres>) -> Result<(), ScimError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(store::ADMIN_GUARD_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Locks user `id`, checks `If-Match`, applies `change` to its SCIM form and stores the result.
async fn update(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    change: impl FnOnce(Value) -> Result<Value, ScimError>,
) -> Result<Response, ScimError> {
    let config = &state.security.scim;
    let id = parse_id(id)?;
    let mut tx = state.db.begin().await?;
    guard_admins(&mut tx).await?;
    let before = load(&mut *tx, id, true)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    check_if_match(headers, &before)?;
    // Before the body is read: an admin's own form names a role SCIM does not map.
    refuse_unmanaged(config, &before)?;
    let base = base_url(config, headers);
    let wanted = change(to_scim(&before, config, &base))?;
    let desired = Desired::parse(&wanted, config)?;
    write(&mut tx, config, &before, &desired).await?;
    let after = load(&mut *tx, id, false)
        .await?
        .ok_or_else(|| ScimError::internal("the user left the SCIM view"))?;
    tx.commit().await?;
    Ok(user_response(StatusCode::OK, &after, config, headers))
}

async fn replace(
    State(state): State<AppState>,
    _client: ScimClient,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let body = json_body(&body)?;
    update(&state, &headers, &id, |_| Ok(body)).await
}

async fn patch(
    State(state): State<AppState>,
    _client: ScimClient,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ScimError> {
    let body = json_body(&body)?;
    update(&state, &headers, &id, |mut user| {
        super::patch::apply(&mut user, &body)?;
        Ok(user)
    })
    .await
}

/// `DELETE`: the person is deactivated (their sessions end, every copy hears it) and no longer
/// seen through SCIM while inactive; the record stays, as a clinical system's must.
async fn delete(
    State(state): State<AppState>,
    client: ScimClient,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let id = parse_id(&id)?;
    let mut tx = state.db.begin().await?;
    guard_admins(&mut tx).await?;
    let before = load(&mut *tx, id, true)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("no user {id}")))?;
    check_if_match(&headers, &before)?;
    refuse_unmanaged(&state.security.scim, &before)?;
    if before.is_active {
        store::change_user(&mut tx, id, UserChange::Deactivate).await?;
    }
    sqlx::query(
        "INSERT INTO scim_users (user_id, user_name, deleted_at) VALUES ($1, $2, now()) \
         ON CONFLICT (user_id) DO UPDATE SET deleted_at = now()",
    )
    .bind(id)
    .bind(before.user_name.as_deref().unwrap_or(&before.email))
    .execute(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some("scim_users_user_name") => {
            ScimError::uniqueness("another user's userName is this user's email")
        }
        _ => e.into(),
    })?;
    tx.commit().await?;
    tracing::info!(user_id = %id, token = %client.0.name, "user deleted through SCIM: deactivated, the record kept");
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_and_excluded_attributes_shape_the_answer() {
        let user = json!({"schemas": [USER_SCHEMA], "id": "1", "userName": "a",
                          "name": {"givenName": "A", "familyName": "B"}, "active": true});
        let only = project(
            user.clone(),
            &["userName".into(), "name.familyName".into()],
            &[],
        );
        assert_eq!(
            only,
            json!({"schemas": [USER_SCHEMA], "id": "1", "userName": "a",
                   "name": {"familyName": "B"}})
        );
        let without = project(user, &[], &["active".into(), "id".into()]);
        assert!(without.get("active").is_none());
        assert_eq!(without["id"], json!("1"));
    }

    #[test]
    fn if_match_takes_the_etag_weak_or_strong() {
        let row = ScimRow::sample;
        let mut h = HeaderMap::new();
        assert!(check_if_match(&h, &row(3, 0)).is_ok());
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"3\""));
        assert!(check_if_match(&h, &row(3, 0)).is_ok());
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"3\""));
        assert!(check_if_match(&h, &row(3, 0)).is_ok());
        let e = check_if_match(&h, &row(4, 0)).expect_err("stale");
        assert_eq!(e.status, StatusCode::PRECONDITION_FAILED);
        // A SCIM-only change since (a new userName) moves the ETag too.
        assert!(check_if_match(&h, &row(3, 1)).is_err());
        assert_eq!(row(3, 1).etag(), "W/\"3.1\"");
    }
}
