//! `portal-bench` in miniature, as CI runs it: every row at tiny sizes, in its own databases and
//! vhost (named with a random suffix, so it runs beside other tests), ending in sync, writing its
//! JSON and leaving nothing behind. It checks that the benchmark works, not how fast anything is.
//! The services it starts run from the `portal` binary beside it; when only this crate was
//! built, the test builds `portal` first (`sandbox::process::tool_for_test`).
//!
//! It runs as a person would next to an install: `portal bench` in a directory holding an
//! install's credentials file whose broker identities name another vhost, with the same values
//! in the environment too (as `portal` put them there before it stopped doing so). The
//! benchmark must leave that vhost's queues untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contract::topology::{self, ConsumerQueues};
use sandbox::process::tool_for_test;
use sandbox::world::{random_id, with_path};
use sandbox::Servers;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

/// The install's queue that takes every event and that nothing consumes.
const LEAK_PROBE: &str = "bench-leak-probe";

#[test]
fn a_quick_bench_runs_every_row_ends_in_sync_and_cleans_up() {
    let suffix = random_id(12);
    let id = format!("pt_{suffix}");
    let out = std::env::temp_dir().join(format!("bench-smoke-{suffix}.json"));
    let servers = Servers::from_test_env();
    let admin_db = with_path(&servers.postgres, "postgres").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // An install beside the benchmark: its own vhost with both consumers' queues, and its
    // credentials file in the working directory.
    // Named as every test's vhost (`pt-<hex>`), so scripts/test removes it after a killed run.
    let install_vhost = format!("pt-{}", random_id(12));
    let install_amqp = with_path(&servers.amqp, &install_vhost).unwrap();
    let install_queues = [
        ConsumerQueues::for_consumer(topology::USER_SERVICE),
        ConsumerQueues::for_consumer(topology::APPOINTMENT_SERVICE),
    ];
    runtime.block_on(async {
        servers
            .management()
            .unwrap()
            .create_vhost(&install_vhost)
            .await
            .unwrap();
        platform::amqp::ensure_topology(&install_amqp, &install_queues)
            .await
            .unwrap();
        // A queue nobody consumes, bound to every event: a consumer of the benchmark that went
        // to the install's vhost could drain the install's own queues, not this one.
        let conn = platform::amqp::connect(&install_amqp, "leak probe")
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            LEAK_PROBE,
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            LEAK_PROBE,
            topology::EXCHANGE,
            "#",
            lapin::options::QueueBindOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
        conn.close(200, "done").await.ok();
    });
    let install_dir = std::env::temp_dir().join(format!("bench-install-{suffix}"));
    let credentials = install_dir.join(".portal/credentials.env");
    std::fs::create_dir_all(credentials.parent().unwrap()).unwrap();
    std::fs::set_permissions(
        credentials.parent().unwrap(),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let install_vars = [
        "RELAY_AMQP_URL",
        "USER_SERVICE_AMQP_URL",
        "APPOINTMENT_SERVICE_AMQP_URL",
        "OPERATOR_AMQP_URL",
    ];
    std::fs::write(
        &credentials,
        install_vars
            .iter()
            .map(|var| format!("{var}={install_amqp}\n"))
            .collect::<String>(),
    )
    .unwrap();
    std::fs::set_permissions(&credentials, std::fs::Permissions::from_mode(0o600)).unwrap();

    let portal = sandbox::process::portal_bin_or_build().expect("portal");
    let mut bench = tool_for_test(portal.to_str().unwrap()).expect("portal bench");
    bench.current_dir(&install_dir).arg("bench");
    for var in install_vars {
        bench.env(var, &install_amqp);
    }
    let started = Instant::now();
    let output = bench
        .args(["--quick", "--id", &id, "--latency-rates", "200,500"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run portal-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "portal-bench failed ({:?})\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("every step ended with portal verify: in sync"),
        "{stdout}"
    );
    for row in [
        "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "7 ", "8 ", "9 ", "10 ", "11 ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(row)),
            "row {row}missing from the table:\n{stdout}"
        );
    }

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("results file"))
            .expect("results are JSON");
    let _ = std::fs::remove_file(&out);
    assert_eq!(json["error"], serde_json::Value::Null);
    assert_eq!(json["sync"]["throughput"]["events"], 5000);
    assert!(json["broker"]["events_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        json["naive"]["throughput"]["events_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(json["latency"].as_array().unwrap().len(), 2);
    assert_eq!(json["verify"]["in_sync"], true);
    assert_eq!(json["verify"]["users"], 5000);
    assert!(json["sync"]["relay_peak_rss_mib"].as_f64().unwrap() > 0.0);
    assert!(json["http"]["requests"].as_u64().unwrap() > 0);
    assert_eq!(json["import"]["users"], 1000);
    assert!(json["import"]["applied_seconds"].as_f64().unwrap() > 0.0);
    // Rows 10 and 11: every offboarding got both receipts, the leaving doctor's appointments
    // were reassigned where a doctor was free and cancelled where none was, and both copies
    // verified in sync afterwards (the line checked above).
    let offboarding = &json["offboarding"];
    assert_eq!(offboarding["offboardings"], 50);
    assert!(offboarding["receipts_ms"]["p50"].as_f64().unwrap() > 0.0);
    assert!(
        offboarding["receipts_ms"]["p95"].as_f64().unwrap()
            >= offboarding["consumers_applied_ms"]["p50"].as_f64().unwrap()
    );
    let doctor = &json["leaving_doctor"];
    assert_eq!(doctor["appointments"], 10);
    assert_eq!(
        (&doctor["reassigned"], &doctor["cancelled"]),
        (&8.into(), &2.into())
    );
    assert_eq!(doctor["state"], "needs_attention");
    assert!(doctor["seconds"].as_f64().unwrap() > 0.0);

    // The install's queues saw nothing of the benchmark's 100,000s of events.
    let install_depths = runtime.block_on(async {
        let mut depths = Vec::new();
        for queues in &install_queues {
            for queue in [&queues.main, &queues.dead_letter] {
                let ready = platform::amqp::ready_messages(&install_amqp, queue)
                    .await
                    .unwrap();
                depths.push((queue.clone(), ready));
            }
        }
        for queue in [LEAK_PROBE, topology::UNROUTED_QUEUE] {
            let ready = platform::amqp::ready_messages(&install_amqp, queue)
                .await
                .unwrap();
            depths.push((queue.to_owned(), ready));
        }
        let management = servers.management().unwrap();
        management.delete_vhost(&install_vhost).await.unwrap();
        depths
    });
    std::fs::remove_dir_all(&install_dir).ok();
    assert!(
        install_depths.iter().all(|(_, ready)| *ready == 0),
        "the benchmark published into the install's vhost: {install_depths:?}"
    );

    // Nothing left behind: the databases and the vhost are gone.
    let leftovers = runtime.block_on(async {
        let pool = sqlx::PgPool::connect(&admin_db).await.unwrap();
        let dbs: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
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
        (dbs, vhost)
    });
    assert_eq!(leftovers.0, 0, "bench databases left behind");
    assert!(!leftovers.1, "bench vhost left behind");
    println!("quick bench took {:.1} s", started.elapsed().as_secs_f64());
}
