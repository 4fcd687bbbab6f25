//! SCIM 2.0 (RFC 7643, RFC 7644) service provider at `/scim/v2`: a hospital's directory
//! (Microsoft Entra ID, Okta, …) creates, changes, deactivates and deletes staff here. Every
//! change goes through the same store as the admin API's ([`crate::store::change_user`]), so it
//! is one versioned change with its event like any other.
//!
//! - [`tokens`]: the clients' bearer tokens (SCIM only; every use logged).
//! - [`discovery`]: `ServiceProviderConfig`, `ResourceTypes`, `Schemas`.
//! - [`resource`]: a portal user as a SCIM `User`, and a SCIM `User` as the portal's fields.
//! - [`filter`]: the `filter` parameter, turned into SQL with bound values.
//! - [`patch`]: `PATCH` operations applied to the user's SCIM form (then stored as a `PUT`).
//! - [`users`]: the `/Users` endpoints.

pub mod discovery;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod tokens;
pub mod users;

use crate::http::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use contract::Role;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// SCIM's media type; plain `application/json` is accepted and answered too (RFC 7644 §3.1).
pub const MEDIA_TYPE: &str = "application/scim+json";
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const SEARCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// How SCIM maps the directory onto the portal.
#[derive(Debug, Clone)]
pub struct ScimConfig {
    /// A `roles` value (compared without regard to case) to the portal role it gives.
    pub role_map: BTreeMap<String, Role>,
    /// The role of a user created without a `roles` value; `None`: such a create is refused.
    pub default_role: Option<Role>,
    /// The public URL of `/scim/v2` for `meta.location`; `None`: from the request's host.
    pub base_url: Option<String>,
}

/// The mapping when SCIM_ROLE_MAP is not set: each clinical role by its own name. An admin is
/// never made (nor unmade) by a directory unless the mapping names `admin` on purpose.
pub const DEFAULT_ROLE_MAP: &str =
    "doctor=doctor,nurse=nurse,pharmacist=pharmacist,consultant=consultant";

impl Default for ScimConfig {
    fn default() -> Self {
        Self {
            role_map: parse_role_map(DEFAULT_ROLE_MAP).unwrap_or_default(),
            default_role: None,
            base_url: None,
        }
    }
}

/// `value=role,value=role`: SCIM_ROLE_MAP's form.
pub fn parse_role_map(raw: &str) -> Result<BTreeMap<String, Role>, String> {
    let mut map = BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (value, role) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected value=role"))?;
        let role: Role = role
            .trim()
            .parse()
            .map_err(|_| format!("{pair:?}: {:?} is not a portal role", role.trim()))?;
        let value = value.trim().to_lowercase();
        if value.is_empty() {
            return Err(format!("{pair:?}: the value is empty"));
        }
        map.insert(value, role);
    }
    if map.is_empty() {
        return Err("names no value".into());
    }
    Ok(map)
}

impl ScimConfig {
    /// The portal role a `roles` value gives, if the mapping knows it.
    pub fn role_for(&self, value: &str) -> Option<Role> {
        self.role_map.get(&value.trim().to_lowercase()).copied()
    }

    /// The value shown for `role` when the client's own value no longer applies: the first
    /// mapped value that gives it, else the role's name.
    pub fn value_for(&self, role: Role) -> String {
        self.role_map
            .iter()
            .find(|(_, r)| **r == role)
            .map_or_else(|| role.as_str().to_owned(), |(v, _)| v.clone())
    }

    /// Whether SCIM may give or take `role` (only roles the mapping names).
    pub fn manages(&self, role: Role) -> bool {
        self.role_map.values().any(|r| *r == role) || self.default_role == Some(role)
    }
}

/// A SCIM error (RFC 7644 §3.12): its status, `scimType` and detail, in SCIM's error form.
#[derive(Debug)]
pub struct ScimError {
    pub status: StatusCode,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn new(
        status: StatusCode,
        scim_type: Option<&'static str>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidValue"), detail)
    }
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidSyntax"), detail)
    }
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidFilter"), detail)
    }
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidPath"), detail)
    }
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("mutability"), detail)
    }
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, Some("uniqueness"), detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, detail)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, detail)
    }
}

impl From<sqlx::Error> for ScimError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "SCIM request failed in the database");
        // Only an outage is worth the client's retry; anything else would fail again.
        if platform::db::is_unavailable(&e) {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "the user database is unavailable; try again",
            )
        } else {
            Self::internal("the change could not be stored (the service's log says why)")
        }
    }
}

impl From<crate::store::StoreError> for ScimError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::DuplicateEmail => Self::uniqueness("another user has this email address"),
            StoreError::NotFound => Self::not_found("no such user"),
            e @ (StoreError::LastActiveAdmin | StoreError::NotAdmin | StoreError::Erased) => {
                Self::new(StatusCode::CONFLICT, None, e.to_string())
            }
            StoreError::Db(e) => e.into(),
            StoreError::Corrupt(detail) => Self::internal(detail),
        }
    }
}

impl From<contract::ValidationError> for ScimError {
    fn from(e: contract::ValidationError) -> Self {
        Self::invalid_value(e.to_string())
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            body["scimType"] = json!(t);
        }
        let mut response = scim_json(self.status, &body);
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scim\""),
            );
        }
        response
    }
}

/// `body` as `application/scim+json` with `status`.
pub fn scim_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}

/// The SCIM client a request comes from: a live token's holder.
#[derive(Debug, Clone)]
pub struct ScimClient(pub tokens::Client);

impl FromRequestParts<AppState> for ScimClient {
    type Rejection = ScimError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ScimError> {
        let unauthorized =
            |why: &str| ScimError::new(StatusCode::UNAUTHORIZED, None, why.to_owned());
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("a SCIM bearer token is required"))?;
        let secret = header
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map(|_| header[7..].trim())
            .ok_or_else(|| unauthorized("expected Authorization: Bearer <SCIM token>"))?;
        match tokens::check(&state.db, secret).await? {
            Some(client) => {
                // Every use of a token is in the security log, under the token's name.
                tracing::info!(target: "security", event = "scim_request", token = %client.name, method = %parts.method, path = %parts.uri.path(), "SCIM request");
                Ok(ScimClient(client))
            }
            None => {
                tracing::warn!(target: "security", event = "scim_refused", path = %parts.uri.path(), "SCIM request with an unknown or revoked token");
                Err(unauthorized("unknown or revoked SCIM token"))
            }
        }
    }
}

/// The public URL of `/scim/v2`: SCIM_BASE_URL, else the host the client asked for (the
/// gateway passes it on as `X-Forwarded-Host`).
pub fn base_url(config: &ScimConfig, headers: &HeaderMap) -> String {
    if let Some(base) = &config.base_url {
        return base.trim_end_matches('/').to_owned();
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic()))
    };
    let host = text("x-forwarded-host")
        .or_else(|| text("host"))
        .unwrap_or("localhost");
    let proto = match text("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    format!("{proto}://{host}/scim/v2")
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/ServiceProviderConfig",
            get(discovery::service_provider_config),
        )
        .route("/ResourceTypes", get(discovery::resource_types))
        .route("/ResourceTypes/{id}", get(discovery::resource_type))
        .route("/Schemas", get(discovery::schemas))
        .route("/Schemas/{id}", get(discovery::schema))
        .merge(users::router())
        .fallback(not_found)
}

async fn not_found(_client: ScimClient) -> ScimError {
    ScimError::not_found("no such SCIM endpoint")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_maps_parse_and_refuse_nonsense() {
        let map = parse_role_map("Doctors=doctor, RN = nurse").expect("parses");
        assert_eq!(map.get("doctors"), Some(&Role::Doctor));
        assert_eq!(map.get("rn"), Some(&Role::Nurse));
        assert!(parse_role_map("doctors").is_err());
        assert!(parse_role_map("x=surgeon").is_err());
        assert!(parse_role_map(" , ").is_err());
        let config = ScimConfig::default();
        assert_eq!(config.role_for("DOCTOR"), Some(Role::Doctor));
        assert_eq!(config.role_for("admin"), None);
        assert!(!config.manages(Role::Admin));
    }
}
