//! The system, whole or in part, in the test process on one [`Sandbox`]: one builder every test
//! starts it with, so that each part is configured, ordered and waited for the same way
//! everywhere. The auth-service (with its relay) always runs; the user-service, the
//! appointment-service, the sync admin API, the gateway in front of them and the web portal in
//! front of the gateway run when asked for. Optionally the builder seeds `auth_db`, writes
//! accounts, and gives the appointment-service the whole user history as `portal up` does, and
//! returns only once what it started is ready to be used.
//!
//! ```no_run
//! # async fn example(sb: &sandbox::Sandbox) {
//! let sys = sandbox::System::builder(sb).users().gateway().start().await;
//! let token = sys.admin_token().await;
//! sys.eventually_in_sync().await;
//! # }
//! ```

use crate::{appointments, auth, poll_until, users, Running, Sandbox, SETTLE};
use auth_service::seed::SeedOptions;
use contract::Role;
use sqlx::PgPool;
use uuid::Uuid;

/// Where the gateway sends the directory's routes when no user-service runs: a port nothing
/// listens on, so they answer as an upstream that is down does.
pub const NO_UPSTREAM: &str = "http://127.0.0.1:1";

/// A change a test makes to a part's configuration before the part is built.
type Tune<'a, C> = Box<dyn FnOnce(&mut C) + Send + 'a>;

/// `first` (if any), then `next`.
fn then<'a, C: 'a>(
    first: Option<Tune<'a, C>>,
    next: impl FnOnce(&mut C) + Send + 'a,
) -> Option<Tune<'a, C>> {
    Some(match first {
        Some(first) => Box::new(move |config: &mut C| {
            first(config);
            next(config);
        }),
        None => Box::new(next),
    })
}

/// What [`System::builder`] will start; nothing runs until [`SystemBuilder::start`].
#[must_use = "nothing starts until `start`"]
pub struct SystemBuilder<'a> {
    sb: &'a Sandbox,
    auth: Option<Tune<'a, auth_service::Config>>,
    users: Option<Tune<'a, user_service::Config>>,
    appointments: Option<Tune<'a, appointment_service::Config>>,
    sync_admin: bool,
    gateway: Option<Tune<'a, gateway::Config>>,
    web: bool,
    seed: Option<SeedOptions>,
    accounts: Vec<(String, Role)>,
    backfilled: bool,
}

impl<'a> SystemBuilder<'a> {
    /// Adjusts the auth-service's configuration (e.g. no relay, a proxied database or broker).
    pub fn auth_with(mut self, tune: impl FnOnce(&mut auth_service::Config) + Send + 'a) -> Self {
        self.auth = then(self.auth.take(), tune);
        self
    }

    /// Runs the user-service (with its consumer) on the sandbox's `user` database.
    pub fn users(self) -> Self {
        self.users_with(|_| {})
    }

    /// [`SystemBuilder::users`] with its configuration adjusted by `tune`.
    pub fn users_with(mut self, tune: impl FnOnce(&mut user_service::Config) + Send + 'a) -> Self {
        self.users = then(self.users.take(), tune);
        self
    }

    /// Runs the appointment-service on the sandbox's `appointment` database; [`start`] returns
    /// once its consumer holds its broker connection (its queue declared and bound, so every
    /// event written from then on reaches it). It reports ready only once it has the whole
    /// history: see [`SystemBuilder::backfilled`].
    ///
    /// [`start`]: SystemBuilder::start
    pub fn appointments(self) -> Self {
        self.appointments_with(|_| {})
    }

    /// [`SystemBuilder::appointments`] with its configuration adjusted by `tune`.
    pub fn appointments_with(
        mut self,
        tune: impl FnOnce(&mut appointment_service::Config) + Send + 'a,
    ) -> Self {
        self.appointments = then(self.appointments.take(), tune);
        self
    }

    /// Runs the sync admin API on the sandbox's three databases.
    pub fn sync_admin(mut self) -> Self {
        self.sync_admin = true;
        self
    }

    /// Runs the gateway in front of the auth-service and, among the others, those that run (the
    /// directory's routes go to [`NO_UPSTREAM`] without a user-service).
    pub fn gateway(self) -> Self {
        self.gateway_with(|_| {})
    }

    /// [`SystemBuilder::gateway`] with its configuration adjusted by `tune` after the upstreams
    /// are set (rate limits, trusted proxies, health interval).
    pub fn gateway_with(mut self, tune: impl FnOnce(&mut gateway::Config) + Send + 'a) -> Self {
        self.gateway = then(self.gateway.take(), tune);
        self
    }

    /// Runs the web portal in front of the gateway (and so the gateway too).
    pub fn web(mut self) -> Self {
        self.web = true;
        if self.gateway.is_none() {
            self = self.gateway();
        }
        self
    }

    /// Seeds `auth_db` with `options` (`portal seed`: an admin and 9 staff, 6 of them doctors)
    /// once every part runs; with a user-service, [`SystemBuilder::start`] returns once its
    /// copy holds every user.
    pub fn seeded(mut self, options: SeedOptions) -> Self {
        self.seed = Some(options);
        self
    }

    /// Writes an active user with [`crate::TEST_PASSWORD`] through the store, after the seed
    /// and before the backfill; the ids are in [`System::accounts`], in the order asked.
    pub fn account(mut self, email: &str, role: Role) -> Self {
        self.accounts.push((email.to_owned(), role));
        self
    }

    /// Runs the appointment-service and gives it the whole user history as `portal up` does
    /// (`ops::replay::backfill` and the end-of-history mark); [`SystemBuilder::start`] returns
    /// once it reports ready.
    pub fn backfilled(mut self) -> Self {
        self.backfilled = true;
        if self.appointments.is_none() {
            self = self.appointments();
        }
        self
    }

    /// Starts what was asked for, in order (auth-service, user-service, appointment-service,
    /// sync admin API, gateway, web portal), opens the pools, declares the consumers' queues
    /// before any history is written, seeds, writes the accounts, backfills, and waits until
    /// the system is ready.
    pub async fn start(self) -> System {
        let sb = self.sb;
        let mut config = auth::config(sb);
        if let Some(tune) = self.auth {
            tune(&mut config);
        }
        let auth = auth::start(config).await;
        // Each running consumer's broker user: whose receipts are believed.
        let mut consumers = Vec::new();
        let users = match self.users {
            Some(tune) => {
                let mut config = users::config(sb);
                tune(&mut config);
                consumers.push((
                    contract::topology::USER_SERVICE,
                    platform::amqp::broker_user(&config.amqp_url),
                ));
                Some(users::start(config).await)
            }
            None => None,
        };
        let appointments = match self.appointments {
            Some(tune) => {
                let mut config = appointments::config(sb);
                tune(&mut config);
                consumers.push((
                    contract::topology::APPOINTMENT_SERVICE,
                    platform::amqp::broker_user(&config.amqp_url),
                ));
                Some(appointments::start_connected(config).await)
            }
            None => None,
        };
        let sync_admin = if self.sync_admin {
            Some(
                Running::launch(sync_admin::Application::build(sync_admin::Config::local(
                    &sb.database_url("auth"),
                    &sb.database_url("user"),
                    &sb.database_url("appointment"),
                    &sb.amqp_url,
                    &sb.key_dir,
                )))
                .await,
            )
        } else {
            None
        };
        let gateway = match self.gateway {
            Some(tune) => {
                let users_url = users
                    .as_ref()
                    .map_or_else(|| NO_UPSTREAM.into(), Running::url);
                let mut config = gateway::Config::local(&auth.url(), &users_url);
                config.appointments_url = appointments.as_ref().map(Running::url);
                config.sync_admin_url = sync_admin.as_ref().map(Running::url);
                tune(&mut config);
                Some(Running::launch(gateway::Application::build(config)).await)
            }
            None => None,
        };
        let web = match (&gateway, self.web) {
            (Some(gateway), true) => Some(
                Running::launch(web::Application::build(web::Config::local(&gateway.url()))).await,
            ),
            _ => None,
        };
        let auth_db = auth::pool(sb).await;
        let user_db = if users.is_some() {
            Some(users::pool(sb).await)
        } else {
            None
        };
        let appointment_db = if appointments.is_some() {
            Some(appointments::pool(sb).await)
        } else {
            None
        };

        // The consumers that run are registered, as the setup registers them on an install.
        for (name, broker_user) in &consumers {
            auth_service::consumers::register(&auth_db, name, true, broker_user)
                .await
                .expect("register the consumer");
        }
        if self.seed.is_some() || !self.accounts.is_empty() || self.backfilled {
            // Every consumer's queue exists before the history is written or replayed, so no
            // event of it goes unrouted.
            let mut queues = Vec::new();
            if users.is_some() {
                queues.push(users::queues());
            }
            if appointments.is_some() {
                queues.push(appointments::queues());
            }
            platform::amqp::ensure_topology(&sb.amqp_url, &queues)
                .await
                .expect("declare the consumers' queues");
        }
        if let Some(options) = &self.seed {
            auth_service::seed::seed(&auth_db, options)
                .await
                .expect("seed auth_db");
        }
        let mut accounts = Vec::new();
        for (email, role) in &self.accounts {
            accounts.push(auth::create_user(&auth_db, email, *role).await);
        }
        if let (Some(service), true) = (&appointments, self.backfilled) {
            ops::replay::backfill(&auth_db, &sb.amqp_url, &appointments::queues().main, |_| {})
                .await
                .expect("backfill the appointment-service");
            appointments::wait_ready(service).await;
        }
        if let (Some(user_db), true) = (&user_db, self.seed.is_some()) {
            let seeded = crate::db::count(&auth_db, "SELECT count(*) FROM users").await;
            poll_until(SETTLE, "the seed in user_db", || async {
                (crate::db::count(user_db, "SELECT count(*) FROM users").await == seeded)
                    .then_some(())
            })
            .await;
        }
        System {
            auth,
            users,
            appointments,
            sync_admin,
            gateway,
            web,
            auth_db,
            user_db,
            appointment_db,
            accounts,
        }
    }
}

/// The parts of a sandbox's system running in this process (each stopped when dropped, or by
/// taking it out and calling [`Running::stop`]), and pools on the databases of those that run
/// for the test's own reads and writes.
pub struct System {
    /// The auth-service with its relay: always there.
    pub auth: Running,
    pub users: Option<Running>,
    pub appointments: Option<Running>,
    pub sync_admin: Option<Running>,
    pub gateway: Option<Running>,
    pub web: Option<Running>,
    pub auth_db: PgPool,
    /// With the user-service.
    pub user_db: Option<PgPool>,
    /// With the appointment-service.
    pub appointment_db: Option<PgPool>,
    /// The ids of the users asked for with [`SystemBuilder::account`], in that order.
    pub accounts: Vec<Uuid>,
}

/// The part `part` of `system`, or a panic naming the builder call that was missing.
fn part<'s, T>(part: &'s Option<T>, call: &str) -> &'s T {
    part.as_ref()
        .unwrap_or_else(|| panic!("the system was started without `.{call}()`"))
}

impl System {
    /// Starts describing a system on `sb`: the auth-service, and what the builder's calls add.
    pub fn builder(sb: &Sandbox) -> SystemBuilder<'_> {
        SystemBuilder {
            sb,
            auth: None,
            users: None,
            appointments: None,
            sync_admin: false,
            gateway: None,
            web: false,
            seed: None,
            accounts: Vec::new(),
            backfilled: false,
        }
    }

    /// The user-service (panics if it was not asked for, or was taken).
    pub fn users(&self) -> &Running {
        part(&self.users, "users")
    }

    /// The appointment-service (panics if it was not asked for, or was taken).
    pub fn appointments(&self) -> &Running {
        part(&self.appointments, "appointments")
    }

    /// The sync admin API (panics if it was not asked for, or was taken).
    pub fn sync_admin(&self) -> &Running {
        part(&self.sync_admin, "sync_admin")
    }

    /// The gateway (panics if it was not asked for, or was taken).
    pub fn gateway(&self) -> &Running {
        part(&self.gateway, "gateway")
    }

    /// The web portal (panics if it was not asked for, or was taken).
    pub fn web(&self) -> &Running {
        part(&self.web, "web")
    }

    /// The pool on `user_db` (panics without the user-service).
    pub fn user_db(&self) -> &PgPool {
        part(&self.user_db, "users")
    }

    /// The pool on `appointment_db` (panics without the appointment-service).
    pub fn appointment_db(&self) -> &PgPool {
        part(&self.appointment_db, "appointments")
    }

    /// A new admin's token, logged in through the gateway (the auth-service without one).
    pub async fn admin_token(&self) -> String {
        let url = self.gateway.as_ref().unwrap_or(&self.auth).url();
        auth::admin_token(&self.auth_db, &url).await
    }

    /// Waits until the relay has published every event of `auth_db`'s outbox.
    pub async fn all_published(&self) {
        auth::all_published(&self.auth_db).await;
    }

    /// Waits until `user_db` equals `auth_db` by the comparison `portal verify` uses.
    pub async fn eventually_in_sync(&self) {
        users::eventually_in_sync(&self.auth_db, self.user_db()).await;
    }

    /// Asserts that `portal verify`'s comparison finds `user_db` equal to `auth_db` now.
    pub async fn assert_in_sync(&self) {
        users::assert_in_sync(&self.auth_db, self.user_db()).await;
    }
}
