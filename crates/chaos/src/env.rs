//! The run's private world, so it can run beside anything else on the same servers: a
//! [`Sandbox`] named `chaos_<id>` — databases `chaos_<id>_auth` / `chaos_<id>_user` /
//! `chaos_<id>_appointment` on the server of AUTH_DATABASE_URL, a vhost `chaos-<id>` on the
//! broker of AMQP_URL (the topology names are the real ones; the vhost keeps them apart), and a
//! directory with the JWT key pair and the services' logs.

use sandbox::world::random_id;
use sandbox::{Sandbox, ServerArgs};
use std::ops::{Deref, DerefMut};

pub struct ChaosEnv {
    pub sandbox: Sandbox,
    pub auth_db_url: String,
    pub user_db_url: String,
    /// The appointment-service's database (created by the offboarding run, dropped by every
    /// run's cleanup: a run that never made it finds nothing to drop).
    pub appointment_db_url: String,
    /// The name of the run's `user_db`, whose backends the faults terminate.
    pub user_db_name: String,
}

impl ChaosEnv {
    /// Names everything and creates the key pair and the vhost; the databases are created by
    /// the caller (with their migrations). Whatever was created is removed again on drop.
    pub async fn create(servers: &ServerArgs) -> anyhow::Result<Self> {
        let id = random_id(10);
        let sandbox = Sandbox::create(servers.servers(), &format!("chaos_{id}"), &id).await?;
        Ok(Self {
            auth_db_url: sandbox.database_url("auth"),
            user_db_url: sandbox.database_url("user"),
            appointment_db_url: sandbox.database_url("appointment"),
            user_db_name: format!("{}_user", sandbox.base),
            sandbox,
        })
    }

    /// A pool on the `postgres` database of the server, for terminating user_db's backends
    /// without being one of them.
    pub fn user_admin_pool(&self) -> anyhow::Result<sqlx::PgPool> {
        platform::db::lazy_pool(&self.sandbox.admin_database_url(), 1)
    }
}

impl Deref for ChaosEnv {
    type Target = Sandbox;

    fn deref(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl DerefMut for ChaosEnv {
    fn deref_mut(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }
}
