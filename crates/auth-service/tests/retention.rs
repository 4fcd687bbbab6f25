//! The event store's monthly partitions (migration 0012, `auth_service::retention`) against a
//! real PostgreSQL: an event of a month without a partition lands in DEFAULT and moves to its
//! month's partition once maintenance creates it; maintenance keeps months ahead created; the
//! retention drops only whole partitions that end before the cutoff; and a database migrated
//! from the single outbox keeps every stored event, with the same seq, tx_id and bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use auth_service::retention::{self, MONTHS_AHEAD};
use chrono::{DateTime, Datelike, Duration as Days, TimeZone, Utc};
use sandbox::{auth, Sandbox};
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

/// The partition name of the month (UTC) of `t`.
fn month_of(t: DateTime<Utc>) -> String {
    format!("event_store_{:04}_{:02}", t.year(), t.month())
}

/// The first instant of the month `months` after `t`'s.
fn month_start(t: DateTime<Utc>, months: i32) -> DateTime<Utc> {
    let index = t.year() * 12 + t.month0() as i32 + months;
    Utc.with_ymd_and_hms(
        index.div_euclid(12),
        index.rem_euclid(12) as u32 + 1,
        1,
        0,
        0,
        0,
    )
    .unwrap()
}

async fn partitions(db: &PgPool) -> BTreeSet<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'event_store'::regclass",
    )
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// Writes one stored event created at `at` (the history of a test, written straight into the
/// store); returns its seq.
async fn stored_at(db: &PgPool, at: DateTime<Utc>) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO event_store (seq, event_id, event_type, user_id, user_version, body, created_at) \
         VALUES (nextval('outbox_seq_seq'), $1, 'user.updated', $2, 1, '{\"at\": 1}', $3) \
         RETURNING seq",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(at)
    .fetch_one(db)
    .await
    .unwrap()
}

/// The partition that holds the event `seq`.
async fn home(db: &PgPool, seq: i64) -> Option<String> {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM event_store WHERE seq = $1")
        .bind(seq)
        .fetch_optional(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn months_are_created_ahead_rows_leave_default_and_retention_drops_only_whole_old_months() {
    let sb = Sandbox::for_test().await;
    let db = auth::pool(&sb).await;
    let now = Utc::now();
    let ahead: BTreeSet<String> = (0..=MONTHS_AHEAD)
        .map(|m| month_of(month_start(now, m)))
        .collect();
    let made = partitions(&db).await;
    assert!(
        made.is_superset(&ahead) && made.contains("event_store_default"),
        "the migration made this month and {MONTHS_AHEAD} ahead: {made:?}"
    );

    // A month that has no partition (the last one ahead, dropped by hand as if the maintenance
    // had not run for months; and two months of the past): its events go to DEFAULT.
    let last_ahead = month_of(month_start(now, MONTHS_AHEAD));
    sqlx::query(&format!("DROP TABLE {last_ahead}"))
        .execute(&db)
        .await
        .unwrap();
    let future = stored_at(&db, month_start(now, MONTHS_AHEAD) + Days::days(3)).await;
    let old = stored_at(&db, now - Days::days(130)).await;
    let older = stored_at(&db, now - Days::days(100)).await;
    let recent = stored_at(&db, now - Days::days(40)).await;
    let current = stored_at(&db, now).await;
    for seq in [future, old, older] {
        assert_eq!(home(&db, seq).await.as_deref(), Some("event_store_default"));
    }

    // Maintenance: the month ahead again, and every month with rows in DEFAULT, which leave it.
    let done = retention::maintain(&db, None, now).await.unwrap();
    let expected: BTreeSet<String> = [
        last_ahead.clone(),
        month_of(now - Days::days(130)),
        month_of(now - Days::days(100)),
        month_of(now - Days::days(40)),
    ]
    .into_iter()
    .filter(|m| !made.contains(m) || *m == last_ahead)
    .collect();
    assert_eq!(
        done.created.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{done:?}"
    );
    assert!(
        done.dropped.is_empty(),
        "nothing expires without a retention"
    );
    assert_eq!(home(&db, future).await, Some(last_ahead));
    assert_eq!(home(&db, old).await, Some(month_of(now - Days::days(130))));
    assert_eq!(
        sandbox::db::count(&db, "SELECT count(*) FROM event_store_default").await,
        0
    );
    let again = retention::maintain(&db, None, now).await.unwrap();
    assert_eq!(
        again,
        retention::Maintained::default(),
        "nothing more to do"
    );

    // Retention of 60 days: the partitions that end before the cutoff go, whole; the month the
    // cutoff falls in stays (it holds younger days), and so does everything after it.
    let keep = Duration::from_secs(60 * 86_400);
    let cutoff = retention::cutoff(now, keep).unwrap();
    let before: BTreeSet<String> = partitions(&db).await;
    let done = retention::maintain(&db, Some(keep), now).await.unwrap();
    let gone: BTreeSet<String> = done.dropped.iter().cloned().collect();
    let ends = |name: &str| -> Option<DateTime<Utc>> {
        let (year, month) = name.strip_prefix("event_store_")?.split_once('_')?;
        let start = Utc
            .with_ymd_and_hms(year.parse().ok()?, month.parse().ok()?, 1, 0, 0, 0)
            .single()?;
        Some(month_start(start, 1))
    };
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|p| ends(p).is_some_and(|end| end <= cutoff))
        .cloned()
        .collect();
    assert_eq!(gone, expected);
    assert!(gone.contains(&month_of(now - Days::days(100))), "{gone:?}");
    assert!(
        !gone.contains(&month_of(cutoff)),
        "the cutoff's month is not whole"
    );
    assert_eq!(home(&db, old).await, None);
    assert_eq!(home(&db, older).await, None);
    for seq in [recent, current, future] {
        assert!(
            home(&db, seq).await.is_some(),
            "event {seq} is younger and stays"
        );
    }
    let after = partitions(&db).await;
    assert!(
        after.contains("event_store_default"),
        "DEFAULT is never dropped"
    );
    assert_eq!(
        after,
        before.difference(&gone).cloned().collect(),
        "nothing but whole expired partitions was removed"
    );
    // The partitions that expired are gone, not detached and left behind.
    for name in &gone {
        let left: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(name)
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(left, None, "{name}");
    }
}

/// The migrations of `auth_db` before the event store left the outbox.
fn before_the_event_store() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            auth_service::MIGRATIONS
                .iter()
                .filter(|m| m.version < 12)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    migrator.set_locking(true);
    migrator
}

#[tokio::test]
async fn a_database_migrated_from_the_single_outbox_keeps_every_event_in_the_store() {
    let sb = Sandbox::for_test().await;
    let url = sb.recreate_database("auth").await.unwrap();
    let db = PgPool::connect(&url).await.unwrap();
    before_the_event_store().run(&db).await.unwrap();
    // History as the old outbox held it: months apart, published or not, traced or not, written
    // by several transactions, with bytes a jsonb column would not keep.
    for (days, published) in [(200, true), (95, true), (31, true), (2, true), (0, false)] {
        let mut tx = db.begin().await.unwrap();
        for i in 0..3 {
            sqlx::query(
                "INSERT INTO outbox (event_id, event_type, user_id, user_version, body, \
                                     created_at, published_at, trace_id) \
                 VALUES ($1, 'user.updated', $2, $3, $4::json, now() - make_interval(days => $5), \
                         CASE WHEN $6 THEN now() END, $7)",
            )
            .bind(Uuid::new_v4())
            .bind(Uuid::new_v4())
            .bind(i64::from(i) + 1)
            .bind(format!(
                "{{\"eventType\":  \"user.updated\", \"n\": {i}, \"n\": {days}}}"
            ))
            .bind(days)
            .bind(published)
            .bind((i == 1).then(|| format!("{:032x}", i + days)))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    type Row = (i64, String, String, String, DateTime<Utc>, Option<String>);
    let read = |table: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_as::<_, Row>(&format!(
                "SELECT seq, event_id::text, body::text, tx_id::text, created_at, trace_id \
                 FROM {table} ORDER BY seq"
            ))
            .fetch_all(&db)
            .await
            .unwrap()
        }
    };
    let old = read("outbox").await;
    assert_eq!(old.len(), 15);

    auth_service::MIGRATIONS.run(&db).await.unwrap();
    let stored = read("event_store").await;
    assert_eq!(
        stored, old,
        "every event, with its seq, tx_id, time and exact bytes"
    );
    assert_eq!(
        sandbox::db::count(&db, "SELECT count(*) FROM event_store_default").await,
        0,
        "each row in a partition of its month"
    );
    let homes: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT tableoid::regclass::text, created_at FROM event_store")
            .fetch_all(&db)
            .await
            .unwrap();
    for (home, created) in homes {
        assert_eq!(home, month_of(created));
    }
    // The outbox stays the relay's: the unpublished rows wait there still.
    assert_eq!(auth::unpublished(&db).await, 3);
    // New events keep numbering after the migrated ones, in both tables alike.
    let user = auth::create_user(&db, "after@clinic.test", contract::Role::Nurse).await;
    let (queued, kept): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT seq FROM outbox WHERE user_id = $1), \
                (SELECT seq FROM event_store WHERE user_id = $1)",
    )
    .bind(user)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(queued, kept);
    assert!(queued > old.last().unwrap().0);
    db.close().await;
}
