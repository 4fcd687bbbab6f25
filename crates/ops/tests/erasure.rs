//! `ops::erasure` against the real PostgreSQL and RabbitMQ, in a sandbox of its own (databases
//! `pt_<id>_*`, a vhost): an erased person's email, names and phone planted where an erasure
//! cannot reach (another database, a jsonb column, two columns of one row, a partitioned table,
//! a dead letter) are each found and named, while a database and queues holding only the
//! placeholders and other people are clean; the purge takes the person's messages out of a
//! dead-letter queue, a retry queue and the unrouted queue, and leaves every other message (a
//! tombstone and an unreadable body included) in its order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::topology::{ConsumerQueues, APPOINTMENT_SERVICE, UNROUTED_QUEUE, USER_SERVICE};
use contract::{Email, Envelope, EventType, Role, Timestamp, UserId, UserSnapshot};
use ops::erasure::{self, Database, ErasureError, Place};
use platform::erasure::{Fingerprints, Found};
use sandbox::{poll_until, Sandbox, SETTLE};
use sqlx::PgPool;
use uuid::Uuid;

// The erased person: unmistakable values, never written anywhere but where a test plants them.
const EMAIL: &str = "zebulon.quix@example.org";
const FIRST: &str = "Zebulon";
const LAST: &str = "Quixwort-Amberley";
const PHONE: &str = "+44 7700 900123";

/// A sandbox with `auth_db` migrated, holding the erased person as the erasure leaves them
/// (placeholders only) with their `erasures` row, both consumers registered and their queues
/// declared.
struct World {
    sb: Sandbox,
    auth: PgPool,
    user: Uuid,
}

impl World {
    async fn new() -> Self {
        let sb = Sandbox::for_test().await;
        let auth = sandbox::auth::pool(&sb).await;
        let placeholder = contract::erasure::email(UserId(Uuid::new_v4()));
        let new = auth_service::store::NewUser::staff(
            placeholder.as_str(),
            contract::erasure::FIRST_NAME,
            contract::erasure::LAST_NAME,
            Role::Doctor,
            "not a hash anyone can log in with".into(),
        )
        .unwrap();
        let user = auth_service::store::insert_user(&auth, new)
            .await
            .unwrap()
            .id;
        // Its placeholder email is made from its own id, as the erasure writes it.
        sqlx::query(
            "UPDATE users SET email = $2, is_active = false, erased_at = now() WHERE id = $1",
        )
        .bind(user)
        .bind(contract::erasure::email(UserId(user)).as_str())
        .execute(&auth)
        .await
        .unwrap();
        let prints = Fingerprints::new(EMAIL, FIRST, LAST, Some(PHONE)).unwrap();
        sqlx::query(
            "INSERT INTO erasures (user_id, requested_by, reason, user_version, fingerprints) \
             VALUES ($1, $2, 'a test', 2, $3::jsonb)",
        )
        .bind(user)
        .bind(Uuid::new_v4())
        .bind(serde_json::to_string(&prints).unwrap())
        .execute(&auth)
        .await
        .unwrap();
        let broker_user = platform::amqp::broker_user(&sb.amqp_url);
        for name in [USER_SERVICE, APPOINTMENT_SERVICE] {
            auth_service::consumers::register(&auth, name, true, &broker_user)
                .await
                .unwrap();
        }
        platform::amqp::ensure_topology(
            &sb.amqp_url,
            &[USER_SERVICE, APPOINTMENT_SERVICE].map(ConsumerQueues::for_consumer),
        )
        .await
        .unwrap();
        Self { sb, auth, user }
    }

    /// A database of the sandbox made by `sql` (statements separated by `;`).
    async fn database(&self, name: &str, sql: &str) -> Database {
        let url = self.sb.recreate_database(name).await.unwrap();
        let pool = platform::db::lazy_pool(&url, 1).unwrap();
        sqlx::raw_sql(sql).execute(&pool).await.unwrap();
        pool.close().await;
        Database::from_url(&url).unwrap()
    }

    fn auth_db(&self) -> Database {
        Database::from_url(&self.sb.database_url("auth")).unwrap()
    }

    async fn verify(&self, databases: &[Database]) -> erasure::Report {
        erasure::verify(
            &self.auth,
            self.user,
            databases,
            &self.sb.amqp_url,
            &mut |_| {},
        )
        .await
        .unwrap()
    }

    /// Puts `bodies` straight into `queue`, in order, each with its event id as its
    /// `message-id` (as the relay publishes them) when it is an event.
    async fn publish(&self, queue: &str, bodies: &[Vec<u8>]) {
        let publisher = platform::amqp::broker_user(&self.sb.amqp_url);
        for body in bodies {
            let properties = match serde_json::from_slice::<Envelope>(body) {
                Ok(e) => platform::amqp::event_properties(
                    &e.event_id.to_string(),
                    e.event_type.as_str(),
                    &publisher,
                ),
                Err(_) => platform::amqp::persistent(&publisher),
            };
            sandbox::amqp::publish_one(&self.sb.amqp_url, queue, body, properties)
                .await
                .unwrap();
        }
    }

    /// What `queue` holds, oldest first, each as its `eventId` (or its text when it is not an
    /// event), left in place; polled until it equals `expected`.
    async fn holds(&self, queue: &str, expected: &[String]) {
        poll_until(SETTLE, &format!("{queue} holding {expected:?}"), || async {
            let now = self.contents(queue).await;
            (now == expected).then_some(())
        })
        .await;
    }

    async fn contents(&self, queue: &str) -> Vec<String> {
        let opened = ops::dlq::open(&self.sb.amqp_url, queue, "test look", &[])
            .await
            .unwrap();
        let all = ops::dlq::peek(&opened, usize::MAX).await.unwrap();
        let seen = all.iter().map(|m| label(&m.delivery.data)).collect();
        opened.close().await;
        seen
    }
}

/// A message as [`World::holds`] names it.
fn label(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["eventId"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// A user event about `user` with these values, and its label.
fn event(
    user: Uuid,
    kind: EventType,
    email: &str,
    names: (&str, &str),
    phone: Option<&str>,
) -> (Vec<u8>, String) {
    let snapshot = UserSnapshot {
        user_id: UserId(user),
        email: Email::parse(email).unwrap(),
        first_name: names.0.into(),
        last_name: names.1.into(),
        role: Role::Doctor,
        phone_number: phone.map(str::to_owned),
        is_active: true,
        must_change_password: false,
        created_at: Timestamp::now(),
        updated_at: Some(Timestamp::now()),
        user_version: Some(1),
        previous_role: None,
        changed_fields: None,
        erased_at: None,
    };
    let body = serde_json::to_vec(&Envelope::new(kind, snapshot)).unwrap();
    let label = label(&body);
    (body, label)
}

/// The person's own event, as it was before the erasure.
fn theirs(user: Uuid, kind: EventType) -> (Vec<u8>, String) {
    event(user, kind, EMAIL, (FIRST, LAST), Some(PHONE))
}

/// Someone else's event (sharing the first name: not the person).
fn others(n: u32) -> (Vec<u8>, String) {
    event(
        Uuid::new_v4(),
        EventType::Updated,
        &format!("colleague{n}@example.org"),
        (FIRST, "Smith"),
        Some("+44 7700 900999"),
    )
}

/// The person's tombstone: the placeholders and `erasedAt`, no personal data.
fn tombstone(user: Uuid) -> (Vec<u8>, String) {
    let (body, _) = theirs(user, EventType::Updated);
    let envelope: Envelope = serde_json::from_slice(&body).unwrap();
    let erased = contract::erasure::erase(&envelope.payload, Timestamp::now());
    let body = serde_json::to_vec(&Envelope::new(EventType::Erased, erased)).unwrap();
    let label = label(&body);
    (body, label)
}

fn found(email: bool, name: bool, phone: bool) -> Found {
    Found { email, name, phone }
}

#[tokio::test]
async fn verify_names_each_planted_trace_in_a_table_or_a_dead_letter_and_moves_nothing() {
    let w = World::new().await;
    let elsewhere = w
        .database(
            "elsewhere",
            "CREATE TABLE contacts (id int, note text); \
             INSERT INTO contacts VALUES (1, 'please write to Zebulon.Quix@example.org'), \
                                         (2, 'please write to someone.else@example.org'); \
             CREATE SCHEMA reporting; \
             CREATE TABLE reporting.profiles (id int, data jsonb); \
             INSERT INTO reporting.profiles VALUES \
               (1, '{\"contact\":{ \"phone\" :   \"+44 7700-900-123\" }, \"n\": [1,2]}'), \
               (2, '{\"contact\":{\"phone\":\"+44 7700 900124\"}}'); \
             CREATE TABLE people (id int, given text, family text); \
             INSERT INTO people VALUES (1, 'Zebulon', 'Smith'), (2, 'zebulon', 'QUIXWORT-amberley'); \
             CREATE TABLE visits (at date, who text) PARTITION BY RANGE (at); \
             CREATE TABLE visits_2025 PARTITION OF visits FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); \
             CREATE TABLE visits_2026 PARTITION OF visits FOR VALUES FROM ('2026-01-01') TO ('2027-01-01'); \
             INSERT INTO visits VALUES ('2025-05-01', 'another person'), \
                                       ('2026-05-01', 'mailto:zebulon.quix@example.org');",
        )
        .await;
    let queues = ConsumerQueues::for_consumer(USER_SERVICE);
    let (other, other_id) = others(1);
    let (their, their_id) = event(w.user, EventType::Updated, EMAIL, (FIRST, LAST), None);
    w.publish(&queues.dead_letter, &[other, their]).await;

    let report = w.verify(&[w.auth_db(), elsewhere]).await;

    let rows: Vec<(String, String, Option<String>, Found)> = report
        .hits
        .iter()
        .filter_map(|h| match &h.place {
            Place::Row {
                database,
                schema,
                table,
                partition,
                ..
            } => {
                assert!(
                    database.ends_with("_elsewhere"),
                    "auth_db holds only placeholders: {h}"
                );
                Some((schema.clone(), table.clone(), partition.clone(), h.found))
            }
            Place::Message { .. } => None,
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "public".into(),
                "contacts".into(),
                None,
                found(true, false, false)
            ),
            (
                "public".into(),
                "people".into(),
                None,
                found(false, true, false)
            ),
            (
                "public".into(),
                "visits".into(),
                Some("visits_2026".into()),
                found(true, false, false)
            ),
            (
                "reporting".into(),
                "profiles".into(),
                None,
                found(false, false, true)
            ),
        ],
        "{:#?}",
        report.hits
    );
    let lines: Vec<String> = report.hits.iter().map(ToString::to_string).collect();
    let contacts = format!("{}.public.contacts (ctid (0,1)): email", elsewhere_name(&w));
    assert!(lines.contains(&contacts), "{lines:#?}");
    let message = format!(
        "queue {} message 2 (message-id {their_id}): email, name",
        queues.dead_letter
    );
    assert!(lines.contains(&message), "{lines:#?}");
    assert_eq!(report.hits_total, 5, "{lines:#?}");
    assert!(!report.is_clean());
    assert_eq!(report.summary(), "erasure verify: 5 hits");
    assert!(report.unreachable.is_empty(), "{:?}", report.unreachable);
    assert!(report.not_searched.is_empty(), "{:?}", report.not_searched);
    // Both databases, every queue of both consumers and the unrouted queue.
    assert_eq!(report.databases.len(), 2);
    assert_eq!(report.queues.len(), 2 * (2 + queues.retries.len()) + 1);
    assert!(report.queues.contains(&UNROUTED_QUEUE.to_owned()));
    assert_eq!(report.messages, 2);

    // The dead letters are where they were, in their order.
    w.holds(&queues.dead_letter, &[other_id, their_id]).await;
}

fn elsewhere_name(w: &World) -> String {
    format!("{}_elsewhere", w.sb.base)
}

#[tokio::test]
async fn verify_finds_nothing_where_only_the_placeholders_and_other_people_are() {
    let w = World::new().await;
    let placeholder = contract::erasure::email(UserId(w.user));
    let clean = w
        .database(
            "clean",
            &format!(
                "CREATE TABLE copy (id uuid, email text, first_name text, last_name text, \
                   phone text, extra jsonb); \
                 INSERT INTO copy VALUES ('{user}', '{placeholder}', 'Erased', 'User', NULL, \
                   '{{\"note\": \"former clinician\"}}'), \
                   (gen_random_uuid(), 'zebulon.quix@example.com', 'Zebulon', 'Smith', \
                   '+44 7700 900124', '{{\"also\": \"Quixwort\"}}'), \
                   (gen_random_uuid(), 'amy.amberley@example.org', 'Amy', 'Amberley', NULL, NULL);",
                user = w.user
            ),
        )
        .await;
    let queues = ConsumerQueues::for_consumer(USER_SERVICE);
    let (other, _) = others(2);
    let (erased, _) = tombstone(w.user);
    w.publish(&queues.dead_letter, &[other, erased]).await;

    let report = w.verify(&[w.auth_db(), clean]).await;
    assert!(report.is_clean(), "{:#?}", report.hits);
    assert!(report.unreachable.is_empty() && report.not_searched.is_empty());
    assert_eq!(report.messages, 2);
    assert!(report.rows >= 3, "{report:?}");
    assert_eq!(
        report.summary(),
        format!(
            "erasure verify: no trace of {} in 2 databases ({} rows) and {} queues (2 messages)",
            w.user,
            report.rows,
            report.queues.len()
        )
    );

    // Someone never erased has no record to search by.
    let stranger = Uuid::new_v4();
    let refused = erasure::verify(&w.auth, stranger, &[], &w.sb.amqp_url, &mut |_| {}).await;
    assert!(
        matches!(refused, Err(ErasureError::NotErased(id)) if id == stranger),
        "{refused:?}"
    );
}

#[tokio::test]
async fn purge_takes_the_persons_messages_out_of_dead_letter_retry_and_unrouted_queues_in_order() {
    let w = World::new().await;
    let users = ConsumerQueues::for_consumer(USER_SERVICE);
    let appointments = ConsumerQueues::for_consumer(APPOINTMENT_SERVICE);
    let retry = users.retries.last().unwrap().name.clone();
    let (o1, o1_id) = others(1);
    let (o2, o2_id) = others(2);
    let (o3, o3_id) = others(3);
    let (o4, o4_id) = others(4);
    let (a, _) = theirs(w.user, EventType::Updated);
    let (b, _) = theirs(w.user, EventType::Updated);
    let (c, _) = theirs(w.user, EventType::Created);
    let (t, t_id) = tombstone(w.user);
    let garbage = b"not json, whose is it?".to_vec();
    w.publish(&users.dead_letter, &[o1, a, o2, t, garbage.clone()])
        .await;
    w.publish(&retry, &[b, o3]).await;
    w.publish(UNROUTED_QUEUE, &[c]).await;
    w.publish(&appointments.dead_letter, &[o4]).await;

    let (logs, _capturing) = sandbox::logs::Captured::start();
    let done = erasure::purge(&w.auth, &w.sb.amqp_url, w.user, "a test")
        .await
        .unwrap();

    let counts: Vec<(&str, u32, u32)> = done
        .queues
        .iter()
        .filter(|q| q.of > 0)
        .map(|q| (q.queue.as_str(), q.removed, q.of))
        .collect();
    assert_eq!(
        counts,
        [
            (appointments.dead_letter.as_str(), 0, 1),
            (retry.as_str(), 1, 2),
            (users.dead_letter.as_str(), 1, 5),
            (UNROUTED_QUEUE, 1, 1),
        ]
    );
    assert_eq!(done.removed(), 3);
    assert!(done.failed.is_empty(), "{:?}", done.failed);
    let recorded: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT queues_purged_at FROM erasures WHERE user_id = $1")
            .bind(w.user)
            .fetch_one(&w.auth)
            .await
            .unwrap();
    assert!(recorded.is_some());
    assert_eq!(recorded, done.queues_purged_at);
    // One security line per queue purged, each naming who asked.
    let lines = logs.lines_with(&["erased_person_messages_purged", "a test"]);
    assert_eq!(lines.len(), done.queues.len(), "{lines:#?}");

    // Everything else stays, in its order: the tombstone, and the body no one can read.
    let garbage = String::from_utf8(garbage).unwrap();
    w.holds(&users.dead_letter, &[o1_id, o2_id, t_id, garbage])
        .await;
    w.holds(&retry, &[o3_id]).await;
    w.holds(UNROUTED_QUEUE, &[]).await;
    w.holds(&appointments.dead_letter, &[o4_id]).await;
    let report = w.verify(&[]).await;
    assert!(report.is_clean(), "{:#?}", report.hits);

    // A person not erased: nothing is purged on a wrong id.
    let refused = erasure::purge(&w.auth, &w.sb.amqp_url, Uuid::new_v4(), "a test").await;
    assert!(
        matches!(refused, Err(ErasureError::NotErased(_))),
        "{refused:?}"
    );
}
