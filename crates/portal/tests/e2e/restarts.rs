//! The relay and the consumer ride out restarts of RabbitMQ and PostgreSQL: a user written while
//! the broker's application is stopped arrives once it is started again, and both services keep
//! working through a PostgreSQL restart. The servers restarted are the test's own (a private
//! PostgreSQL made by `initdb`, a private RabbitMQ node), holding both databases and the broker
//! the services use, so the machine's servers and every test running beside this one are never
//! touched. Needs root (as CI runs): the servers run as the `postgres` and `rabbitmq` users.

use auth_service::store::{insert_user, NewUser};
use contract::Role;
use platform::jwt::KeyDir;
use sandbox::servers::{PrivatePostgres, PrivateRabbit};
use sandbox::users::assert_in_sync;
use sandbox::{auth, users};
use sandbox::{poll_until, wait_for_user_version};
use std::time::Duration;
use tokio::task::block_in_place;

/// Restarted servers take longer to come back than anything else the tests wait for.
const SETTLE: Duration = Duration::from_secs(60);

/// The JWT key pair of the test, removed when dropped.
struct Keys(KeyDir);

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0 .0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_consumer_ride_out_restarts_of_rabbitmq_and_postgresql() {
    sandbox::init_test_logging();
    // Starting and restarting a server blocks for seconds: off the services' worker threads.
    let postgres = block_in_place(PrivatePostgres::start).expect("a private PostgreSQL");
    let rabbit = block_in_place(PrivateRabbit::start).expect("a private RabbitMQ node");
    let keys = Keys(KeyDir(
        std::env::temp_dir().join(format!("portal-restarts-{}", sandbox::world::random_id(10))),
    ));
    let (auth_url, user_url) = (
        format!("{}/auth_db", postgres.url()),
        format!("{}/user_db", postgres.url()),
    );
    let _auth = auth::start(auth_service::Config::local(
        &auth_url,
        &rabbit.url(),
        &keys.0,
    ))
    .await;
    let _users = users::start(user_service::Config::local(
        &user_url,
        &rabbit.url(),
        &keys.0,
    ))
    .await;
    let auth = auth_service::prepare_database(&auth_url, 4).await.unwrap();
    let users = user_service::prepare_database(&user_url, 4).await.unwrap();
    let before = auth::create_user(&auth, "before@clinic.test", Role::Doctor).await;
    wait_for_user_version(&users, before, 1, SETTLE).await;

    // RabbitMQ goes away; a user written meanwhile waits in the outbox and arrives after.
    block_in_place(|| rabbit.stop_app()).unwrap();
    let during = auth::create_user(&auth, "during-broker-restart@clinic.test", Role::Nurse).await;
    block_in_place(|| rabbit.start_app()).unwrap();
    wait_for_user_version(&users, during, 1, SETTLE).await;

    // PostgreSQL restarts under both services (both databases live on it).
    block_in_place(|| postgres.restart()).unwrap();
    let after = poll_until(SETTLE, "auth_db writable again", || async {
        let new = NewUser::staff(
            "after-pg-restart@clinic.test",
            "After",
            "Restart",
            Role::Pharmacist,
            "not-a-real-hash".into(),
        )
        .ok()?;
        Some(insert_user(&auth, new).await.ok()?.id)
    })
    .await;
    wait_for_user_version(&users, after, 1, SETTLE).await;
    assert_in_sync(&auth, &users).await;
}
