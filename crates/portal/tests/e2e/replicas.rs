//! Several replicas behind the gateway: two auth-services (each with its relay) as processes,
//! one killed with SIGKILL in the middle of a load of creates. No create that was answered 2xx
//! is lost (each is in `auth_db` and reaches `user_db`), only requests in flight at the kill
//! may fail, and everything after it succeeds on the other replica.

use sandbox::process::{Process, Spec};
use sandbox::{auth, users};
use sandbox::{poll_until, Running, Sandbox, SETTLE};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Outcome {
    /// (when it was sent, the created user's id)
    created: Vec<(Instant, uuid::Uuid)>,
    /// (when it was sent, what went wrong)
    failed: Vec<(Instant, String)>,
}

async fn create_until(
    gw: String,
    token: String,
    n: usize,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Outcome>>,
) {
    let http = reqwest::Client::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let sent = Instant::now();
        let answer = http
            .post(format!("{gw}/api/v1/auth/admin/users"))
            .bearer_auth(&token)
            .json(
                &json!({"email": format!("r{n}-{i}@replicas.test"), "firstName": "Rep",
                          "lastName": "Lica", "role": "doctor"}),
            )
            .send()
            .await;
        let result = match answer {
            Ok(r) if r.status().as_u16() == 201 => {
                let body: Value = r.json().await.unwrap_or_default();
                body["user"]["userId"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or(format!("201 without a user id: {body}"))
            }
            Ok(r) => Err(format!(
                "{} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => Err(e.to_string()),
        };
        let mut out = out.lock().unwrap();
        match result {
            Ok(id) => out.created.push((sent, id)),
            Err(why) => out.failed.push((sent, why)),
        }
    }
}

#[tokio::test]
async fn an_auth_service_killed_under_load_loses_no_acknowledged_create() {
    let sb = Sandbox::for_test().await;
    let (auth_db, user_db) = (auth::pool(&sb).await, users::pool(&sb).await);
    let users = users::start(users::config(&sb)).await;
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_portal"));
    let spec = |name: &str| {
        Spec::on(&sb, name, &["auth-service"])
            .env("RELAY_HTTP_PORT", "0")
            .env("RUST_LOG", "warn")
            .http("AUTH_ADDR")
    };
    let mut first = Process::start(exe, &spec("auth-1"), &sb.dir).await.unwrap();
    let second = Process::start(exe, &spec("auth-2"), &sb.dir).await.unwrap();
    let mut config = gateway::Config::local(
        &format!("{},{}", first.url().unwrap(), second.url().unwrap()),
        &users.url(),
    );
    config.health_interval = Duration::from_millis(200);
    let gateway = Running::launch(gateway::Application::build(config)).await;
    let token = auth::admin_token(&auth_db, &gateway.url()).await;

    let stop = Arc::new(AtomicBool::new(false));
    let out = Arc::new(Mutex::new(Outcome::default()));
    let workers: Vec<_> = (0..3)
        .map(|n| {
            tokio::spawn(create_until(
                gateway.url(),
                token.clone(),
                n,
                stop.clone(),
                out.clone(),
            ))
        })
        .collect();
    poll_until(SETTLE, "some creates before the kill", || async {
        (out.lock().unwrap().created.len() >= 20).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    first.kill().await.unwrap();
    let before_kill = out.lock().unwrap().created.len();
    poll_until(SETTLE, "creates after the kill", || async {
        (out.lock().unwrap().created.len() >= before_kill + 40).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let out = std::mem::take(&mut *out.lock().unwrap());

    // Only a request sent when the replica died may fail: one in flight per worker, and one
    // per worker that was about to reuse a kept-alive connection to it. Half a second later the
    // gateway has left it out (a refused connection or a failed check), and nothing fails.
    let settled = killed_at + Duration::from_millis(500);
    let late: Vec<&String> = out
        .failed
        .iter()
        .filter(|(sent, _)| *sent >= settled)
        .map(|(_, why)| why)
        .collect();
    println!(
        "replicas: {} creates answered 201 ({} sent after the kill), {} failed (all sent within 0.5 s of the kill: {})",
        out.created.len(),
        out.created.iter().filter(|(sent, _)| *sent >= killed_at).count(),
        out.failed.len(),
        late.is_empty()
    );
    assert!(
        late.is_empty(),
        "sent after the replica was left out, yet failed: {late:?}"
    );
    assert!(out.failed.len() <= 6, "{:?}", out.failed);
    for (_, why) in &out.failed {
        assert!(
            why.starts_with("502"),
            "a failure at the kill is the gateway's 502: {why}"
        );
    }

    let ids: Vec<uuid::Uuid> = out.created.iter().map(|(_, id)| *id).collect();
    let in_auth: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&auth_db)
        .await
        .unwrap();
    assert_eq!(
        in_auth,
        i64::try_from(ids.len()).unwrap(),
        "every 201 is in auth_db"
    );
    poll_until(SETTLE, "every created user in user_db", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_one(&user_db)
            .await
            .ok()?;
        (n == i64::try_from(ids.len()).ok()?).then_some(())
    })
    .await;
    second.stop().await.unwrap();
}
