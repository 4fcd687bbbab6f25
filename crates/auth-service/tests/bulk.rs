//! `bulk::create_users` writes exactly what `store::create_user` would, many at a time: each
//! user at version 1 with one `user.created` outbox event carrying its snapshot, in input order,
//! and a duplicate email fails the whole call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auth_service::bulk;
use auth_service::store::{NewUser, StoreError};
use contract::{Email, Envelope, EventType, PersonName, PhoneNumber, Role};
use sandbox::auth;
use sandbox::Sandbox;

fn user(email: &str, phone: Option<&str>) -> NewUser {
    NewUser {
        email: Email::parse(email).unwrap(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
        first_name: PersonName::parse("firstName", "Rudo").unwrap(),
        last_name: PersonName::parse("lastName", "Chikwanha").unwrap(),
        role: Role::Nurse,
        phone_number: phone.map(|p| PhoneNumber::parse(p).unwrap()),
        is_active: true,
        must_change_password: false,
    }
}

#[tokio::test]
async fn bulk_users_get_their_created_events_in_order_and_duplicates_fail_the_batch() {
    let sb = Sandbox::for_test().await;
    let pool = auth::pool(&sb).await;

    let mut tx = pool.begin().await.unwrap();
    let rows = bulk::create_users(
        &mut tx,
        vec![
            user("a@bulk.example", Some("+263 77 000 0001")),
            user("B@bulk.example", None),
            user("c@bulk.example", None),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[1].email, "b@bulk.example");

    let events: Vec<(String, String)> =
        sqlx::query_as("SELECT event_type, body::text FROM event_store ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(events.len(), 3);
    for (row, (event_type, body)) in rows.iter().zip(&events) {
        assert_eq!(event_type, "user.created");
        let envelope: Envelope = serde_json::from_str(body).unwrap();
        assert_eq!(envelope.event_type, EventType::Created);
        assert_eq!(envelope.payload, row.snapshot().unwrap());
        assert_eq!(envelope.payload.user_version, Some(1));
        let stored = auth_service::store::find_by_id(&pool, row.id)
            .await
            .unwrap()
            .expect("row stored");
        assert_eq!(stored.snapshot().unwrap(), row.snapshot().unwrap());
    }

    let mut tx = pool.begin().await.unwrap();
    let duplicate = bulk::create_users(
        &mut tx,
        vec![user("d@bulk.example", None), user("A@BULK.example", None)],
    )
    .await;
    assert!(matches!(duplicate, Err(StoreError::DuplicateEmail)));
    tx.rollback().await.unwrap();
    assert_eq!(auth_service::store::count_users(&pool).await.unwrap(), 3);
}
