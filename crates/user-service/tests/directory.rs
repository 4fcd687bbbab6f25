//! The directory API (`/api/v1/users`) answers refusals with the right status and a JSON error
//! body: no token 401, an unknown user 404, a malformed id or filter 422. Its tokens are the
//! auth-service's, signed here with the sandbox's key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::Role;
use sandbox::http::{assert_json_error, get};
use sandbox::Sandbox;

mod common;

#[tokio::test]
async fn directory_errors_are_json_with_the_right_status() {
    let sb = Sandbox::for_test().await;
    let users = common::start(common::config(&sb)).await;
    let base = users.url();
    let doctor = common::token(&sb, Role::Doctor);

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
