//! Safe concurrent starts: every part started at the same moment on an empty server (no
//! databases, no queues) comes up — a database, a migration or a queue another process created
//! a moment earlier is a success, not an error — and two seeds at once create the 10 users once.

use crate::cli::portal;
use sandbox::{auth, poll_until, users, Sandbox, SETTLE};
use std::process::Stdio;

#[tokio::test]
async fn every_part_started_at_once_on_an_empty_server_comes_up() {
    let sb = Sandbox::for_test().await;
    // (command, the variable that sets where it listens)
    let parts = [
        ("auth-service", "AUTH_ADDR"),
        ("auth-service", "AUTH_ADDR"),
        ("user-service", "USER_ADDR"),
        ("user-service", "USER_ADDR"),
        ("appointment-service", "APPOINTMENT_ADDR"),
        ("appointment-service", "APPOINTMENT_ADDR"),
        ("relay", "RELAY_HTTP_PORT"),
        ("relay", "RELAY_HTTP_PORT"),
    ];
    let mut children = Vec::new();
    for (command, var) in parts {
        let port = sandbox::process::free_port().unwrap();
        let value = match var {
            "RELAY_HTTP_PORT" => port.to_string(),
            _ => format!("127.0.0.1:{port}"),
        };
        let child = portal(&sb)
            .arg(command)
            .env(var, value)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push((command, port, child));
    }
    let seeds: Vec<_> = (0..2)
        .map(|_| {
            portal(&sb)
                .arg("seed")
                .env("SEED_ADMIN_PASSWORD", "evening handover at the desk")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();

    for (command, port, child) in &mut children {
        let url = format!("http://127.0.0.1:{port}/health/live");
        let deadline = std::time::Instant::now() + SETTLE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut log = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    stderr.read_to_string(&mut log).await.ok();
                }
                panic!("`portal {command}` exited at start ({status}):\n{log}");
            }
            // Not listening yet is not an answer: asked again until the deadline.
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "`portal {command}` not live within {SETTLE:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    for seed in seeds {
        let out = seed.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "a seed started beside the others failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (auth_db, user_db) = (auth::pool(&sb).await, users::pool(&sb).await);
    assert_eq!(
        sandbox::db::count(&auth_db, "SELECT count(*) FROM users").await,
        10
    );
    poll_until(SETTLE, "the seed in user_db", || async {
        (sandbox::db::count(&user_db, "SELECT count(*) FROM users").await == 10).then_some(())
    })
    .await;
    for (_, _, mut child) in children {
        child.start_kill().ok();
        child.wait().await.ok();
    }
}
