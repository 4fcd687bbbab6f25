//! `portal bench soak` in its CI form: the whole system for 45 s at 100 changes/s with the
//! outbox cleanup's grace shortened to 5 s (OUTBOX_KEEP_PUBLISHED_SECS, through the soak's
//! settings), in databases and a vhost of its own. It must pass: the outbox never outgrew its
//! bound, the event store grew by exactly the events written, both copies ended in sync; and
//! it leaves nothing behind. The long form (10 minutes) is BENCHMARKS.md's "Soak: retention".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandbox::process::tool_for_test;
use sandbox::world::{random_id, with_path};
use sandbox::Servers;

#[test]
fn a_short_soak_keeps_the_outbox_bounded_and_every_event_in_the_store() {
    let id = format!("pt_{}", random_id(12));
    let portal = sandbox::process::portal_bin_or_build().expect("portal");
    let mut soak = tool_for_test(portal.to_str().unwrap()).expect("portal bench");
    let output = soak
        .args([
            "bench",
            "soak",
            "--minutes",
            "0.75",
            "--rate",
            "100",
            "--users",
            "500",
            "--keep-published-secs",
            "5",
            "--report-every",
            "15",
            "--id",
            &id,
        ])
        .output()
        .expect("run portal bench soak");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    assert!(
        output.status.success(),
        "the soak failed ({:?})\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("result=PASS"), "{stdout}");
    // A row every 15 s of the load, and the one after it.
    let rows = stdout
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .count();
    assert!(rows >= 3, "{stdout}");
    // The bound of 100/s × (5 s + the cleanup's 10 s) × 2 + 1000 = 4000 rows: far under the
    // 4,500 events written, so a cleanup that did nothing would fail the run.
    assert!(stdout.contains("outbox bound 4000 rows"), "{stdout}");
    let summary = stdout
        .lines()
        .find(|l| l.contains("event store +"))
        .expect("the summary line");
    let grew: u64 = summary
        .split("event store +")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the event store's growth");
    assert!(grew >= 4000, "the load wrote too little: {summary}");

    // Nothing left behind.
    let servers = Servers::from_test_env();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (databases, vhost) = runtime.block_on(async {
        let pool = sqlx::PgPool::connect(&with_path(&servers.postgres, "postgres").unwrap())
            .await
            .unwrap();
        let databases: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
                .bind(format!("{id}\\_%"))
                .fetch_one(&pool)
                .await
                .unwrap();
        let vhost = servers
            .management()
            .unwrap()
            .vhost_exists(&id.replace('_', "-"))
            .await
            .unwrap();
        (databases, vhost)
    });
    assert_eq!(databases, 0, "soak databases left behind");
    assert!(!vhost, "soak vhost left behind");
}
