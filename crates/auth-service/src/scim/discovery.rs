//! SCIM discovery (RFC 7644 §4): what this service provider supports, its one resource type
//! (`User`) and the schemas. The `User` schema lists exactly the attributes the portal keeps,
//! with the portal's requirements (a name, a work email and a role are needed to sign someone in
//! and show them in the directory); the three schemas that describe discovery itself are RFC
//! 7643 §7's, in `meta_schemas.json`.

use super::{base_url, scim_json, ScimClient, ScimConfig, ScimError, LIST_SCHEMA, USER_SCHEMA};
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

const META_SCHEMAS: &str = include_str!("meta_schemas.json");

/// The largest page `GET /Users` answers (`count` above it is lowered to it).
pub const MAX_RESULTS: i64 = 500;

pub async fn service_provider_config(
    State(state): State<AppState>,
    _client: ScimClient,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&state.security.scim, &headers);
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": false},
            "sort": {"supported": true},
            "etag": {"supported": true},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "A token an admin creates with `portal scim token create NAME` \
                                (or on the web portal's SCIM page), sent as \
                                `Authorization: Bearer <token>`.",
                "primary": true,
            }],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{base}/ServiceProviderConfig"),
            },
        }),
    )
}

fn user_resource_type(base: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "A member of staff: admin, doctor, nurse, pharmacist or consultant.",
        "schema": USER_SCHEMA,
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
    })
}

fn list(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": resources.len(),
        "startIndex": 1,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

pub async fn resource_types(
    State(state): State<AppState>,
    _client: ScimClient,
    headers: HeaderMap,
) -> Response {
    let base = base_url(&state.security.scim, &headers);
    scim_json(StatusCode::OK, &list(vec![user_resource_type(&base)]))
}

pub async fn resource_type(
    State(state): State<AppState>,
    _client: ScimClient,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    if id != "User" {
        return Err(ScimError::not_found(format!("no resource type {id:?}")));
    }
    let base = base_url(&state.security.scim, &headers);
    Ok(scim_json(StatusCode::OK, &user_resource_type(&base)))
}

/// One attribute of the `User` schema.
fn attribute(name: &str, kind: &str, required: bool, description: &str) -> Value {
    json!({
        "name": name,
        "type": kind,
        "multiValued": false,
        "description": description,
        "required": required,
        "caseExact": false,
        "mutability": "readWrite",
        "returned": "default",
        "uniqueness": "none",
    })
}

/// A multi-valued complex attribute with `value`, `type` and `primary`.
fn multi_valued(name: &str, required: bool, description: &str, types: &[&str]) -> Value {
    let mut value_attr = attribute("value", "string", true, "The value.");
    if name == "roles" {
        value_attr["description"] = json!("A role value that SCIM_ROLE_MAP maps to a portal role.");
    }
    let mut attr = attribute(name, "complex", required, description);
    attr["multiValued"] = json!(true);
    let mut sub = vec![value_attr];
    if !types.is_empty() {
        let mut t = attribute("type", "string", false, "The kind of value.");
        t["canonicalValues"] = json!(types);
        sub.push(t);
    }
    sub.push(attribute(
        "primary",
        "boolean",
        false,
        "The value the portal keeps when there are several.",
    ));
    attr["subAttributes"] = json!(sub);
    attr
}

/// The `User` schema: what the portal keeps, and what it needs.
pub fn user_schema(config: &ScimConfig, base: &str) -> Value {
    let mut user_name = attribute(
        "userName",
        "string",
        true,
        "Unique identifier for the user, typically the directory's sign-in name (UPN). When it \
         is an email address and no email is given, it is the portal's sign-in email.",
    );
    user_name["uniqueness"] = json!("server");
    let mut name = attribute(
        "name",
        "complex",
        true,
        "The person's name, as staff see it.",
    );
    name["subAttributes"] = json!([
        attribute(
            "givenName",
            "string",
            true,
            "Given name (1 to 100 characters)."
        ),
        attribute(
            "familyName",
            "string",
            true,
            "Family name (1 to 100 characters)."
        ),
    ]);
    let mut display = attribute(
        "displayName",
        "string",
        false,
        "Given and family name (derived; read only).",
    );
    display["mutability"] = json!("readOnly");
    let mut roles = multi_valued(
        "roles",
        true,
        "The portal role, from the primary (or only) value through SCIM_ROLE_MAP.",
        &[],
    );
    let values: Vec<&String> = config.role_map.keys().collect();
    roles["subAttributes"][0]["canonicalValues"] = json!(values);
    let mut active = attribute(
        "active",
        "boolean",
        true,
        "Whether the person may sign in; false deactivates them everywhere (their sessions end).",
    );
    active["caseExact"] = json!(false);
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": USER_SCHEMA,
        "name": "User",
        "description": "A member of staff of the clinical portal.",
        "attributes": [
            user_name,
            name,
            display,
            multi_valued(
                "emails",
                true,
                "Work email: the primary (else the `work`, else the first) value is the \
                 portal's sign-in email.",
                &["work"],
            ),
            multi_valued(
                "phoneNumbers",
                false,
                "Phone: the primary (else the `work`, else the first) value is shown to \
                 colleagues (5 to 20 digits).",
                &["work", "mobile"],
            ),
            roles,
            active,
        ],
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{USER_SCHEMA}")},
    })
}

/// Every schema this provider describes.
fn all_schemas(config: &ScimConfig, base: &str) -> Result<Vec<Value>, ScimError> {
    let mut meta: Vec<Value> = serde_json::from_str(META_SCHEMAS)
        .map_err(|e| ScimError::internal(format!("meta_schemas.json: {e}")))?;
    for schema in &mut meta {
        let id = schema["id"].as_str().unwrap_or_default().to_owned();
        schema["meta"] =
            json!({"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")});
    }
    let mut all = vec![user_schema(config, base)];
    all.extend(meta);
    Ok(all)
}

pub async fn schemas(
    State(state): State<AppState>,
    _client: ScimClient,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let base = base_url(&state.security.scim, &headers);
    Ok(scim_json(
        StatusCode::OK,
        &list(all_schemas(&state.security.scim, &base)?),
    ))
}

pub async fn schema(
    State(state): State<AppState>,
    _client: ScimClient,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    let base = base_url(&state.security.scim, &headers);
    all_schemas(&state.security.scim, &base)?
        .into_iter()
        .find(|s| s["id"] == json!(id))
        .map(|s| scim_json(StatusCode::OK, &s))
        .ok_or_else(|| ScimError::not_found(format!("no schema {id:?}")))
}
