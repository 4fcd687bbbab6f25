//! User events written by hand, as JSON a test adjusts before it publishes them (an older
//! version, no `userVersion` like the portal's original producer, a bad role, version `2.0`…).

use serde_json::{json, Value};
use uuid::Uuid;

/// A valid `user.updated` event carrying the full snapshot of `user`, as the auth-service
/// publishes it; without `userVersion` when `version` is `None`.
pub fn user_event(
    user: Uuid,
    version: Option<i64>,
    email: &str,
    role: &str,
    active: bool,
) -> Value {
    let mut payload = json!({
        "userId": user, "email": email, "firstName": "Farai", "lastName": "Ncube", "role": role,
        "phoneNumber": null, "isActive": active, "mustChangePassword": false,
        "createdAt": "2026-02-07T10:00:00.000Z",
    });
    if let Some(v) = version {
        payload["userVersion"] = json!(v);
    }
    json!({
        "eventId": Uuid::new_v4(), "eventType": "user.updated", "timestamp": "2026-02-07T10:00:00.000Z",
        "source": "auth-service", "version": "1.0", "payload": payload,
    })
}

/// The bytes of `event` as they travel.
pub fn body(event: &Value) -> Vec<u8> {
    serde_json::to_vec(event).unwrap_or_default()
}
