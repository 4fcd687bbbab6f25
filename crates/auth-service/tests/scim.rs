//! SCIM 2.0 at `/scim/v2` against a real auth-service and PostgreSQL: the request bodies
//! Microsoft Entra ID and Okta are documented to send, each change stored as a versioned change
//! with its event, `ETag`/`If-Match`, filters, paging and sorting, DELETE as deactivation, SCIM's
//! error form, and tokens that open SCIM and nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use sandbox::auth;
use sandbox::http::{get, post};
use sandbox::Sandbox;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

/// One SCIM request with the client's token; the status, the body and the ETag.
async fn scim(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
    if_match: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/scim+json")
            .body(b.to_string());
    }
    if let Some(tag) = if_match {
        req = req.header("if-match", tag);
    }
    let resp = req.send().await.expect("answer");
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if status != 204 && status != 304 {
        assert_eq!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/scim+json"),
            "{url}"
        );
    }
    (status, resp.json().await.unwrap_or(Value::Null), etag)
}

fn assert_scim_error(status: u16, body: &Value, expected: u16, scim_type: Option<&str>) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(
        body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
        "{body}"
    );
    assert_eq!(body["status"], json!(expected.to_string()), "{body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    if let Some(t) = scim_type {
        assert_eq!(body["scimType"], json!(t), "{body}");
    }
}

/// The user's events in the event store, oldest first: (type, version).
async fn events(pool: &PgPool, id: Uuid) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT event_type, user_version FROM event_store WHERE user_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn stored(pool: &PgPool, id: Uuid) -> (String, String, String, Option<String>, bool, i64) {
    sqlx::query_as(
        "SELECT email, last_name, role, phone_number, is_active, user_version FROM users WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

struct Scim {
    base: String,
    token: String,
    pool: PgPool,
    admin: String,
    api: String,
}

async fn start(sb: &Sandbox) -> (Scim, sandbox::Running) {
    let running = auth::start(auth::config(sb)).await;
    let api = running.url();
    let pool = auth::pool(sb).await;
    let admin = auth::admin_token(&pool, &api).await;
    let (s, created) = post(
        &format!("{api}/api/v1/auth/admin/scim-tokens"),
        Some(&admin),
        &json!({"name": "entra-test"}),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let token = created["secret"].as_str().unwrap().to_owned();
    assert!(token.starts_with("scim_"), "{created}");
    (
        Scim {
            base: format!("{api}/scim/v2"),
            token,
            pool,
            admin,
            api,
        },
        running,
    )
}

#[tokio::test]
async fn entra_provisions_changes_and_deprovisions_a_clinician() {
    let sb = Sandbox::for_test().await;
    let (c, _running) = start(&sb).await;
    use reqwest::Method as M;

    // Entra's create (its documented body, the enterprise extension included).
    let entra_user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
        "userName": "Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1@clinic.test",
        "active": true,
        "displayName": "Rudo Moyo",
        "emails": [{"primary": true, "type": "work", "value": "rudo.moyo@clinic.test"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Rudo Moyo", "familyName": "Moyo", "givenName": "Rudo"},
        "roles": [{"primary": "True", "type": "WindowsAzureActiveDirectoryRole", "value": "doctor"}],
        "title": "Registrar",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Surgery"}
    });
    // Entra looks the user up first: not there.
    let filter = "userName eq \"Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1@clinic.test\"";
    let list_url = format!("{}/Users?filter={}", c.base, urlencode(filter));
    let (s, b, _) = scim(M::GET, &list_url, &c.token, None, None).await;
    assert_eq!((s, b["totalResults"].clone()), (200, json!(0)), "{b}");
    let (s, created, etag) = scim(
        M::POST,
        &format!("{}/Users", c.base),
        &c.token,
        Some(&entra_user),
        None,
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(created["userName"], entra_user["userName"]);
    assert_eq!(created["externalId"], entra_user["externalId"]);
    assert_eq!(created["emails"], entra_user["emails"]);
    assert_eq!(created["active"], json!(true));
    assert_eq!(etag.as_deref(), Some("W/\"1\""));
    assert_eq!(created["meta"]["version"], json!("W/\"1\""));
    let (email, _, role, _, active, version) = stored(&c.pool, id).await;
    assert_eq!(
        (email.as_str(), role.as_str(), active, version),
        ("rudo.moyo@clinic.test", "doctor", true, 1)
    );
    assert_eq!(events(&c.pool, id).await, vec![("user.created".into(), 1)]);
    // Found by userName (any case), by externalId, by email.
    for f in [
        filter.to_uppercase().replace("USERNAME EQ", "userName eq"),
        "externalId eq \"0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef\"".to_owned(),
        "emails.value eq \"RUDO.MOYO@clinic.test\" and active eq true".to_owned(),
    ] {
        let (s, b, _) = scim(
            M::GET,
            &format!("{}/Users?filter={}", c.base, urlencode(&f)),
            &c.token,
            None,
            None,
        )
        .await;
        assert_eq!((s, b["totalResults"].clone()), (200, json!(1)), "{f}: {b}");
        assert_eq!(b["Resources"][0]["id"], json!(id.to_string()));
    }

    // Entra's PATCH of several attributes at once: capital O and op names, a value filter.
    let patch = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
    "Operations": [
        {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "rudo.moyo-sibanda@clinic.test"},
        {"op": "Replace", "path": "name.familyName", "value": "Moyo-Sibanda"},
        {"op": "Add", "path": "phoneNumbers[type eq \"work\"].value", "value": "+263 77 123 4567"},
        {"op": "Replace", "path": "displayName", "value": "Rudo Moyo-Sibanda"},
        {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Medicine"}
    ]});
    let user_url = format!("{}/Users/{id}", c.base);
    let (s, b, etag) = scim(M::PATCH, &user_url, &c.token, Some(&patch), Some("W/\"1\"")).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["name"]["familyName"], json!("Moyo-Sibanda"));
    assert_eq!(
        etag.as_deref(),
        Some("W/\"2\""),
        "one profile change is one version"
    );
    let (email, last, _, phone, _, version) = stored(&c.pool, id).await;
    assert_eq!(
        (email.as_str(), last.as_str(), phone.as_deref(), version),
        (
            "rudo.moyo-sibanda@clinic.test",
            "Moyo-Sibanda",
            Some("+263 77 123 4567"),
            2
        )
    );
    // A stale If-Match is refused and changes nothing.
    let (s, b, _) = scim(M::PATCH, &user_url, &c.token, Some(&patch), Some("W/\"1\"")).await;
    assert_scim_error(s, &b, 412, None);

    // Entra's deactivation: `active` as the string "False".
    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    let (s, b, _) = scim(M::PATCH, &user_url, &c.token, Some(&off), None).await;
    assert_eq!((s, b["active"].clone()), (200, json!(false)), "{b}");
    assert_eq!(
        events(&c.pool, id).await,
        vec![
            ("user.created".into(), 1),
            ("user.updated".into(), 2),
            ("user.deactivated".into(), 3)
        ]
    );
    // The same PATCH again changes nothing: no version, no event.
    let (s, _, etag) = scim(M::PATCH, &user_url, &c.token, Some(&off), None).await;
    assert_eq!((s, etag.as_deref()), (200, Some("W/\"3\"")));

    // DELETE: deactivated and kept, but no longer seen through SCIM.
    let (s, b, _) = scim(M::DELETE, &user_url, &c.token, None, None).await;
    assert_eq!(s, 204, "{b}");
    let (s, b, _) = scim(M::GET, &user_url, &c.token, None, None).await;
    assert_scim_error(s, &b, 404, None);
    let (s, b, _) = scim(M::GET, &list_url, &c.token, None, None).await;
    assert_eq!((s, b["totalResults"].clone()), (200, json!(0)), "{b}");
    let (_, _, _, _, active, version) = stored(&c.pool, id).await;
    assert_eq!((active, version), (false, 3), "the record stays, inactive");
    // The admin API still has the person (a clinical record is never removed).
    let (s, b) = get(
        &format!("{}/api/v1/auth/admin/users/{id}", c.api),
        Some(&c.admin),
    )
    .await;
    assert_eq!((s, b["isActive"].clone()), (200, json!(false)), "{b}");
}

#[tokio::test]
async fn okta_creates_replaces_and_deactivates_without_a_path() {
    let sb = Sandbox::for_test().await;
    let (c, _running) = start(&sb).await;
    use reqwest::Method as M;
    // Okta's create: userName is the email, no roles value but a default role is not set here,
    // so the role comes through `roles` as Okta's app profile sends it (a plain string value).
    let okta_user = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "tendai.ncube@clinic.test",
        "name": {"givenName": "Tendai", "familyName": "Ncube"},
        "emails": [{"primary": true, "value": "tendai.ncube@clinic.test", "type": "work"}],
        "displayName": "Tendai Ncube",
        "locale": "en-US",
        "externalId": "00u1abcd",
        "groups": [],
        "password": "not-taken-from-the-directory",
        "roles": ["nurse"],
        "active": true
    });
    let (s, created, _) = scim(
        M::POST,
        &format!("{}/Users", c.base),
        &c.token,
        Some(&okta_user),
        None,
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(stored(&c.pool, id).await.2, "nurse");
    // The same userName again: 409 uniqueness.
    let (s, b, _) = scim(
        M::POST,
        &format!("{}/Users", c.base),
        &c.token,
        Some(&okta_user),
        None,
    )
    .await;
    assert_scim_error(s, &b, 409, Some("uniqueness"));
    // Okta's PUT of the whole user: a new role and name; each kind of change is its own event.
    let mut replaced = okta_user.clone();
    replaced["id"] = json!(id.to_string());
    replaced["name"]["familyName"] = json!("Ncube-Dube");
    replaced["roles"] = json!([{"value": "pharmacist", "primary": true}]);
    let user_url = format!("{}/Users/{id}", c.base);
    let (s, b, _) = scim(M::PUT, &user_url, &c.token, Some(&replaced), None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["roles"],
        json!([{"value": "pharmacist", "primary": true}])
    );
    assert_eq!(
        events(&c.pool, id).await,
        vec![
            ("user.created".into(), 1),
            ("user.updated".into(), 2),
            ("user.role.changed".into(), 3)
        ]
    );
    // Okta's deactivation: replace without a path, the value an object.
    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": false}}]});
    let (s, b, _) = scim(M::PATCH, &user_url, &c.token, Some(&off), None).await;
    assert_eq!((s, b["active"].clone()), (200, json!(false)), "{b}");
    assert!(!stored(&c.pool, id).await.4);
    // And back.
    let on = json!({"Operations": [{"op": "replace", "value": {"active": true}}]});
    let (s, b, _) = scim(M::PATCH, &user_url, &c.token, Some(&on), None).await;
    assert_eq!((s, b["active"].clone()), (200, json!(true)), "{b}");
    assert_eq!(
        events(&c.pool, id).await.last().unwrap().0,
        "user.activated"
    );
}

#[tokio::test]
async fn bad_requests_get_scim_errors_and_change_nothing() {
    let sb = Sandbox::for_test().await;
    let (c, _running) = start(&sb).await;
    use reqwest::Method as M;
    let users = format!("{}/Users", c.base);
    let good = json!({"userName": "a.b@clinic.test", "name": {"givenName": "A", "familyName": "B"},
                      "roles": [{"value": "doctor"}]});
    let mut cases = vec![];
    let mut v = good.clone();
    v["roles"] = json!([{"value": "surgeon"}]);
    cases.push((v, "invalidValue"));
    let mut v = good.clone();
    v["roles"] = json!([{"value": "admin"}]);
    cases.push((v, "invalidValue"));
    let mut v = good.clone();
    v["userName"] = json!("ab");
    cases.push((v, "invalidValue"));
    let mut v = good.clone();
    v["name"] = json!({"givenName": "A"});
    cases.push((v, "invalidValue"));
    let mut v = good.clone();
    v["phoneNumbers"] = json!([{"value": "call me"}]);
    cases.push((v, "invalidValue"));
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("roles");
    cases.push((v, "invalidValue"));
    for (body, kind) in cases {
        let (s, b, _) = scim(M::POST, &users, &c.token, Some(&body), None).await;
        assert_scim_error(s, &b, 400, Some(kind));
    }
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email = 'a.b@clinic.test'")
            .fetch_one(&c.pool)
            .await
            .unwrap();
    assert_eq!(count, 0);
    // Not JSON.
    let resp = reqwest::Client::new()
        .post(&users)
        .bearer_auth(&c.token)
        .header("content-type", "application/scim+json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    let s = resp.status().as_u16();
    assert_scim_error(s, &resp.json().await.unwrap(), 400, Some("invalidSyntax"));
    // Filters it cannot read.
    for f in ["password eq \"x\"", "userName xx \"a\"", "userName eq"] {
        let (s, b, _) = scim(
            M::GET,
            &format!("{users}?filter={}", urlencode(f)),
            &c.token,
            None,
            None,
        )
        .await;
        assert_scim_error(s, &b, 400, Some("invalidFilter"));
    }
    // Unknown user, unknown endpoint.
    let (s, b, _) = scim(
        M::GET,
        &format!("{users}/{}", Uuid::new_v4()),
        &c.token,
        None,
        None,
    )
    .await;
    assert_scim_error(s, &b, 404, None);
    let (s, b, _) = scim(M::GET, &format!("{}/Groups", c.base), &c.token, None, None).await;
    assert_scim_error(s, &b, 404, None);
    // A patch naming id.
    let (s, created, _) = scim(M::POST, &users, &c.token, Some(&good), None).await;
    assert_eq!(s, 201, "{created}");
    let (s, b, _) = scim(
        M::PATCH,
        &format!("{users}/{}", created["id"].as_str().unwrap()),
        &c.token,
        Some(&json!({"Operations": [{"op": "replace", "path": "id", "value": "x"}]})),
        None,
    )
    .await;
    assert_scim_error(s, &b, 400, Some("mutability"));
}

#[tokio::test]
async fn scim_tokens_open_scim_only_and_stop_when_revoked() {
    let sb = Sandbox::for_test().await;
    let (c, _running) = start(&sb).await;
    use reqwest::Method as M;
    let users = format!("{}/Users", c.base);
    // No token, a made-up one, an admin's JWT: 401 in SCIM's form, with WWW-Authenticate.
    for token in ["", "scim_madeup", c.admin.as_str()] {
        let resp = reqwest::Client::new()
            .get(&users)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        assert!(resp.headers().contains_key("www-authenticate"));
        let b: Value = resp.json().await.unwrap();
        assert_scim_error(401, &b, 401, None);
    }
    // The SCIM token opens nothing else.
    let (s, _) = get(
        &format!("{}/api/v1/auth/admin/users", c.api),
        Some(&c.token),
    )
    .await;
    assert_eq!(s, 401);
    // Only an admin creates tokens; a live name is unique.
    auth::create_user(&c.pool, "nurse@clinic.test", Role::Nurse).await;
    let nurse = auth::login(&c.api, "nurse@clinic.test", sandbox::TEST_PASSWORD).await;
    let tokens = format!("{}/api/v1/auth/admin/scim-tokens", c.api);
    let (s, _) = post(&tokens, Some(&nurse), &json!({"name": "x"})).await;
    assert_eq!(s, 403);
    let (s, b) = post(&tokens, Some(&c.admin), &json!({"name": "entra-test"})).await;
    assert_eq!(s, 409, "{b}");
    // Listed without the secret; last use recorded.
    let (s, _, _) = scim(M::GET, &users, &c.token, None, None).await;
    assert_eq!(s, 200);
    let (s, list) = get(&tokens, Some(&c.admin)).await;
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("secret").is_none());
    assert!(list[0]["lastUsedAt"].is_string(), "{list}");
    let id = list[0]["id"].as_str().unwrap();
    let (s, b) = post(&format!("{tokens}/{id}/revoke"), Some(&c.admin), &json!({})).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["revokedAt"].is_string());
    let (s, b, _) = scim(M::GET, &users, &c.token, None, None).await;
    assert_scim_error(s, &b, 401, None);
    // Creation and revocation are in the security events.
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind FROM security_events WHERE kind LIKE 'scim_token_%' ORDER BY id",
    )
    .fetch_all(&c.pool)
    .await
    .unwrap();
    assert_eq!(kinds, ["scim_token_created", "scim_token_revoked"]);
}

#[tokio::test]
async fn lists_page_sort_and_shape_their_answer() {
    let sb = Sandbox::for_test().await;
    let (c, _running) = start(&sb).await;
    use reqwest::Method as M;
    let users = format!("{}/Users", c.base);
    for (given, family) in [("Ann", "Zulu"), ("Ben", "Banda"), ("Cat", "Moyo")] {
        let body = json!({"userName": format!("{}@clinic.test", given.to_lowercase()),
                          "name": {"givenName": given, "familyName": family},
                          "roles": [{"value": "nurse"}]});
        let (s, b, _) = scim(M::POST, &users, &c.token, Some(&body), None).await;
        assert_eq!(s, 201, "{b}");
    }
    let f = urlencode("userName ew \"@clinic.test\" and not (userName sw \"admin\")");
    let (s, b, _) = scim(
        M::GET,
        &format!("{users}?filter={f}&sortBy=name.familyName&sortOrder=descending&startIndex=2&count=1&attributes=name.familyName"),
        &c.token,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["totalResults"], json!(3), "{b}");
    assert_eq!(b["startIndex"], json!(2));
    assert_eq!(b["itemsPerPage"], json!(1));
    let only = &b["Resources"][0];
    assert_eq!(only["name"], json!({"familyName": "Moyo"}), "{b}");
    assert!(
        only["id"].is_string() && only.get("userName").is_none(),
        "{b}"
    );
    // The same through POST /Users/.search, with excludedAttributes.
    let (s, b, _) = scim(
        M::POST,
        &format!("{users}/.search"),
        &c.token,
        Some(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                     "filter": "name.familyName eq \"banda\"", "excludedAttributes": ["emails"]}),
        ),
        None,
    )
    .await;
    assert_eq!((s, b["totalResults"].clone()), (200, json!(1)), "{b}");
    assert!(b["Resources"][0].get("emails").is_none(), "{b}");
    // Discovery describes what is supported.
    let (s, b, _) = scim(
        M::GET,
        &format!("{}/ServiceProviderConfig", c.base),
        &c.token,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(b["patch"]["supported"], json!(true));
    assert_eq!(b["etag"]["supported"], json!(true));
    let (s, b, _) = scim(
        M::GET,
        &format!(
            "{}/Schemas/urn:ietf:params:scim:schemas:core:2.0:User",
            c.base
        ),
        &c.token,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let names: Vec<&str> = b["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert!(
        names.contains(&"roles") && names.contains(&"active"),
        "{names:?}"
    );
}

#[tokio::test]
async fn admins_stay_in_the_portals_hands() {
    let sb = Sandbox::for_test().await;
    let (c, _running) = start(&sb).await;
    use reqwest::Method as M;
    let admin: Uuid = sqlx::query_scalar("SELECT id FROM users WHERE role = 'admin'")
        .fetch_one(&c.pool)
        .await
        .unwrap();
    let url = format!("{}/Users/{admin}", c.base);
    // Seen (a directory may match it), never changed: no re-email, no deactivation, no delete.
    let (s, shown, _) = scim(M::GET, &url, &c.token, None, None).await;
    assert_eq!(s, 200, "{shown}");
    let mut replaced = shown.clone();
    replaced["emails"] = json!([{"value": "taken-over@evil.test", "primary": true}]);
    let (s, b, _) = scim(M::PUT, &url, &c.token, Some(&replaced), None).await;
    assert_scim_error(s, &b, 400, Some("mutability"));
    let off = json!({"Operations": [{"op": "replace", "path": "active", "value": false}]});
    let (s, b, _) = scim(M::PATCH, &url, &c.token, Some(&off), None).await;
    assert_scim_error(s, &b, 400, Some("mutability"));
    let (s, b, _) = scim(M::DELETE, &url, &c.token, None, None).await;
    assert_scim_error(s, &b, 400, Some("mutability"));
    let (email, _, role, _, active, version) = stored(&c.pool, admin).await;
    assert!(!email.contains("evil"));
    assert_eq!((role.as_str(), active, version), ("admin", true, 1));
}

#[tokio::test]
async fn a_deleted_person_provisioned_again_is_the_same_record() {
    let sb = Sandbox::for_test().await;
    let (c, _running) = start(&sb).await;
    use reqwest::Method as M;
    let users = format!("{}/Users", c.base);
    let body = json!({"userName": "rehire@clinic.test", "externalId": "e-1",
                      "name": {"givenName": "Re", "familyName": "Hire"},
                      "roles": [{"value": "nurse"}]});
    let (s, first, _) = scim(M::POST, &users, &c.token, Some(&body), None).await;
    assert_eq!(s, 201, "{first}");
    let url = format!("{users}/{}", first["id"].as_str().unwrap());
    let (s, _, _) = scim(M::DELETE, &url, &c.token, None, None).await;
    assert_eq!(s, 204);
    let (s, again, _) = scim(M::POST, &users, &c.token, Some(&body), None).await;
    assert_eq!(s, 201, "{again}");
    assert_eq!(again["id"], first["id"], "the same record");
    assert_eq!(again["active"], json!(true));
    let (s, b, _) = scim(M::GET, &url, &c.token, None, None).await;
    assert_eq!((s, b["active"].clone()), (200, json!(true)), "{b}");
}

#[tokio::test]
async fn scim_only_changes_move_the_etag_and_odd_input_gets_scim_errors() {
    let sb = Sandbox::for_test().await;
    let (c, _running) = start(&sb).await;
    use reqwest::Method as M;
    let users = format!("{}/Users", c.base);
    let body = json!({"userName": "etag@clinic.test", "name": {"givenName": "E", "familyName": "Tag"},
                      "roles": [{"value": "nurse"}]});
    let (s, created, etag) = scim(M::POST, &users, &c.token, Some(&body), None).await;
    assert_eq!((s, etag.as_deref()), (201, Some("W/\"1\"")), "{created}");
    let url = format!("{users}/{}", created["id"].as_str().unwrap());
    // Only the externalId: no new version of the record, but a new ETag.
    let patch = json!({"Operations": [{"op": "add", "path": "externalId", "value": "x-9"}]});
    let (s, b, etag) = scim(M::PATCH, &url, &c.token, Some(&patch), Some("W/\"1\"")).await;
    assert_eq!((s, etag.as_deref()), (200, Some("W/\"1.1\"")), "{b}");
    let (s, b, _) = scim(M::PATCH, &url, &c.token, Some(&patch), Some("W/\"1\"")).await;
    assert_scim_error(s, &b, 412, None);
    // `name` with one sub-attribute keeps the other; a record change starts the count again.
    let patch =
        json!({"Operations": [{"op": "replace", "path": "name", "value": {"familyName": "Moyo"}}]});
    let (s, b, etag) = scim(M::PATCH, &url, &c.token, Some(&patch), None).await;
    assert_eq!((s, etag.as_deref()), (200, Some("W/\"2\"")), "{b}");
    assert_eq!(b["name"], json!({"givenName": "E", "familyName": "Moyo"}));
    // Numbers that are not, a filter nested beyond reason, an externalId past its limit.
    let (s, b, _) = scim(M::GET, &format!("{users}?count=abc"), &c.token, None, None).await;
    assert_scim_error(s, &b, 400, Some("invalidValue"));
    let deep = format!("{}userName eq \"a\"{}", "(".repeat(3000), ")".repeat(3000));
    let (s, b, _) = scim(
        M::POST,
        &format!("{users}/.search"),
        &c.token,
        Some(&json!({"filter": deep})),
        None,
    )
    .await;
    assert_scim_error(s, &b, 400, Some("invalidFilter"));
    let long =
        json!({"Operations": [{"op": "replace", "path": "externalId", "value": "x".repeat(300)}]});
    let (s, b, _) = scim(M::PATCH, &url, &c.token, Some(&long), None).await;
    assert_scim_error(s, &b, 400, Some("invalidValue"));
    // The service is still there.
    let (s, _, _) = scim(M::GET, &url, &c.token, None, None).await;
    assert_eq!(s, 200);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
