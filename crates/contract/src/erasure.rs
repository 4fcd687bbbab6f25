//! What an erased person's record holds instead of their personal data (contract 1.1): the
//! placeholders every copy stores and every `user.erased` event carries, so an erased user is
//! still one valid snapshot (the same code keeps, compares and verifies it) and nothing that
//! identifies them is left.

use crate::domain::{Email, UserId};
use crate::event::UserSnapshot;
use crate::time::Timestamp;

/// The first name an erased person's record holds.
pub const FIRST_NAME: &str = "Erased";
/// The last name an erased person's record holds.
pub const LAST_NAME: &str = "User";
/// The domain of an erased person's placeholder email (RFC 2606's `.invalid`: never delivered).
pub const EMAIL_DOMAIN: &str = "erased.invalid";
/// How a clinical record names an erased clinician (the appointment-service's appointments).
pub const FORMER_CLINICIAN: &str = "former clinician";

/// The placeholder email of an erased user: unique per user (the auth-service's emails are),
/// and plainly not an address.
pub fn email(user: UserId) -> Email {
    // A UUID's text is 36 characters of [0-9a-f-]: always a valid local part.
    match Email::parse(&format!("erased-{user}@{EMAIL_DOMAIN}")) {
        Ok(email) => email,
        Err(_) => unreachable!("a UUID always makes a valid placeholder email"),
    }
}

/// True when `email` is an erased user's placeholder.
pub fn is_placeholder_email(email: &str) -> bool {
    email.ends_with(&format!("@{EMAIL_DOMAIN}"))
}

/// `snapshot` with every personal field replaced by its placeholder and `erasedAt` set; the
/// id, role, activation, times and version stay (they identify no one outside the system).
pub fn erase(snapshot: &UserSnapshot, erased_at: Timestamp) -> UserSnapshot {
    UserSnapshot {
        email: email(snapshot.user_id),
        first_name: FIRST_NAME.to_owned(),
        last_name: LAST_NAME.to_owned(),
        phone_number: None,
        erased_at: Some(erased_at),
        changed_fields: None,
        ..snapshot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event, Envelope, EventType, Role};

    #[test]
    fn an_erased_snapshot_keeps_who_it_was_in_the_system_and_nothing_personal() {
        let user = UserId::new();
        let before = UserSnapshot {
            user_id: user,
            email: Email::parse("zebulon.quix@example.org").expect("email"),
            first_name: "Zebulon".into(),
            last_name: "Quixwort".into(),
            role: Role::Doctor,
            phone_number: Some("+44 7700 900123".into()),
            is_active: false,
            must_change_password: false,
            created_at: Timestamp::now(),
            updated_at: Some(Timestamp::now()),
            user_version: Some(7),
            previous_role: None,
            changed_fields: Some(vec!["lastName".into()]),
            erased_at: None,
        };
        let after = erase(&before, Timestamp::now());
        assert_eq!(
            (after.user_id, after.role, after.user_version),
            (user, Role::Doctor, Some(7))
        );
        assert!(after.is_erased() && !before.is_erased());
        let body =
            serde_json::to_string(&Envelope::new(EventType::Erased, after)).expect("serialises");
        for personal in ["zebulon", "Zebulon", "Quixwort", "7700", "example.org"] {
            assert!(!body.contains(personal), "{personal} left in {body}");
        }
        // Still a valid event for every reader of the contract.
        let decoded = event::decode(body.as_bytes()).expect("a valid event");
        assert_eq!(decoded.event_type, EventType::Erased);
        assert!(is_placeholder_email(decoded.payload.email.as_str()));
    }
}
