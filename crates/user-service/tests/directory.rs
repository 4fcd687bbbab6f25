//! The directory API (`/api/v1/users`): refusals with the right status and a JSON error body (no
//! token 401, an unknown user 404, a malformed id or filter 422); what a colleague sees (active
//! clinical staff, name, role and phone) against what an admin sees (everyone, every field); and
//! a token refused once its user is inactive in this copy. Its tokens are the auth-service's,
//! signed here with the sandbox's key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use sandbox::events::user_event;
use sandbox::http::{assert_json_error, get};
use sandbox::users;
use sandbox::{wait_for_user_version, Sandbox, SETTLE};
use serde_json::{json, Value};
use uuid::Uuid;

#[tokio::test]
async fn directory_errors_are_json_with_the_right_status() {
    let sb = Sandbox::for_test().await;
    let users = users::start(users::config(&sb)).await;
    let base = users.url();
    let doctor = users::token(&sb, Role::Doctor);

    // 401: no token.
    let (s, b) = get(&format!("{base}/api/v1/users"), None).await;
    assert_json_error(s, &b, 401);
    // Unknown user id → 404, bad id → 422.
    let (s, b) = get(
        &format!("{base}/api/v1/users/{}", uuid::Uuid::new_v4()),
        Some(&doctor),
    )
    .await;
    assert_json_error(s, &b, 404);
    let (s, b) = get(&format!("{base}/api/v1/users/nope"), Some(&doctor)).await;
    assert_json_error(s, &b, 422);
    let (s, b) = get(&format!("{base}/api/v1/users?role=wizard"), Some(&doctor)).await;
    assert_json_error(s, &b, 422);
}

/// Ids of a page's items, and the field names of its first item.
fn listed(page: &Value) -> (Vec<String>, Vec<String>) {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    let ids = items
        .iter()
        .filter_map(|u| u["userId"].as_str().map(str::to_owned))
        .collect();
    let mut fields: Vec<String> = items
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    fields.sort();
    (ids, fields)
}

#[tokio::test]
async fn a_colleague_sees_active_clinical_staff_by_name_role_and_phone_and_an_admin_sees_all() {
    let sb = Sandbox::for_test().await;
    let users = users::start(users::config(&sb)).await;
    let pool = users::pool(&sb).await;
    let base = users.url();
    let (doctor, retired, admin, pharmacist, nurse) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let mut with_phone = user_event(pharmacist, Some(1), "pharm@clinic.test", "pharmacist", true);
    with_phone["payload"]["phoneNumber"] = json!("+263 77 201 0008");
    users::publish_events(
        &sb,
        &[
            user_event(doctor, Some(1), "doc@clinic.test", "doctor", true),
            user_event(retired, Some(2), "retired@clinic.test", "doctor", false),
            user_event(admin, Some(1), "boss@clinic.test", "admin", true),
            with_phone,
            user_event(nurse, Some(1), "nurse@clinic.test", "nurse", true),
        ],
    )
    .await;
    wait_for_user_version(&pool, nurse, 1, SETTLE).await;

    let as_nurse = users::token_for(&sb, nurse, Role::Nurse);
    let (s, page) = get(&format!("{base}/api/v1/users?limit=500"), Some(&as_nurse)).await;
    assert_eq!(s, 200, "{page}");
    let (mut ids, fields) = listed(&page);
    ids.sort();
    let mut colleagues = vec![
        doctor.to_string(),
        pharmacist.to_string(),
        nurse.to_string(),
    ];
    colleagues.sort();
    assert_eq!(ids, colleagues, "active clinical staff only: {page}");
    assert_eq!(page["total"], 3, "{page}");
    assert_eq!(
        fields,
        ["firstName", "lastName", "phoneNumber", "role", "userId"],
        "a colleague's fields only: {page}"
    );
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["phoneNumber"] == "+263 77 201 0008"),
        "{page}"
    );
    // Asking for more does not show more: inactive users, admins, searches by email address.
    for query in [
        "isActive=false",
        "role=admin",
        "q=boss%40clinic.test",
        "q=retired",
    ] {
        let (s, page) = get(&format!("{base}/api/v1/users?{query}"), Some(&as_nurse)).await;
        assert_eq!(
            (s, page["total"].as_i64()),
            (200, Some(0)),
            "{query}: {page}"
        );
    }
    for hidden in [retired, admin] {
        let (s, b) = get(&format!("{base}/api/v1/users/{hidden}"), Some(&as_nurse)).await;
        assert_json_error(s, &b, 404);
    }
    let (s, one) = get(&format!("{base}/api/v1/users/{doctor}"), Some(&as_nurse)).await;
    assert_eq!((s, one.get("email")), (200, None), "{one}");

    let as_admin = users::token_for(&sb, admin, Role::Admin);
    let (s, page) = get(&format!("{base}/api/v1/users?limit=500"), Some(&as_admin)).await;
    assert_eq!((s, page["total"].as_i64()), (200, Some(5)), "{page}");
    let (_, fields) = listed(&page);
    for field in ["email", "isActive", "mustChangePassword", "userVersion"] {
        assert!(
            fields.contains(&field.to_owned()),
            "an admin sees {field}: {fields:?}"
        );
    }
    let (s, one) = get(&format!("{base}/api/v1/users/{retired}"), Some(&as_admin)).await;
    assert_eq!((s, one["isActive"].as_bool()), (200, Some(false)), "{one}");
}

#[tokio::test]
async fn the_token_of_a_user_inactive_in_this_copy_is_refused() {
    let sb = Sandbox::for_test().await;
    let users = users::start(users::config(&sb)).await;
    let pool = users::pool(&sb).await;
    let base = users.url();
    let nurse = Uuid::new_v4();
    users::publish_events(
        &sb,
        &[user_event(
            nurse,
            Some(1),
            "nurse@clinic.test",
            "nurse",
            true,
        )],
    )
    .await;
    wait_for_user_version(&pool, nurse, 1, SETTLE).await;
    let token = users::token_for(&sb, nurse, Role::Nurse);
    assert_eq!(
        get(&format!("{base}/api/v1/users"), Some(&token)).await.0,
        200
    );

    users::publish_events(
        &sb,
        &[user_event(
            nurse,
            Some(2),
            "nurse@clinic.test",
            "nurse",
            false,
        )],
    )
    .await;
    wait_for_user_version(&pool, nurse, 2, SETTLE).await;
    for path in ["/api/v1/users".to_owned(), format!("/api/v1/users/{nurse}")] {
        let (s, b) = get(&format!("{base}{path}"), Some(&token)).await;
        assert_json_error(s, &b, 401);
        assert_eq!(b["message"], "this account is deactivated", "{b}");
    }
}
