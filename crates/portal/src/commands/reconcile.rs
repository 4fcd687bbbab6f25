//! `portal reconcile`: reports drift, asks (or takes `--yes`), repairs.

use super::Failure;
use crate::cli::Settings;
use anyhow::anyhow;
use contract::topology::{self, ConsumerQueues};
use ops::reconcile::{self, Options, ReconcileError};
use ops::verify::VerifyError;
use std::io::{BufRead, IsTerminal, Write};

fn failure(e: ReconcileError) -> Failure {
    match e {
        ReconcileError::Compare(VerifyError::Unreachable { .. }) => Failure::unreachable(e),
        other => Failure::from(anyhow::Error::from(other)),
    }
}

pub async fn run(
    s: &Settings,
    dry_run: bool,
    yes: bool,
    delete_extra: bool,
) -> Result<(), Failure> {
    let auth = platform::db::lazy_pool(s.operator_auth_db(), 2)?;
    let users = platform::db::lazy_pool(s.operator_user_db(), 2)?;
    // Under the least-privilege setup the topology is the setup's (the operator may not declare).
    if yes && !dry_run && !s.managed_by_setup {
        // Repairs travel through the exchange: make sure the user-service's queue exists (it may
        // be the very thing that was deleted) so they are not parked in user.events.unrouted.
        let queues = ConsumerQueues::for_consumer(topology::USER_SERVICE);
        if let Err(e) = platform::amqp::ensure_topology(&s.amqp_url, &[queues]).await {
            tracing::warn!("cannot declare the topology ({e}); repairs wait in the outbox until RabbitMQ is back");
        }
    }
    // Without --yes a person is asked, after seeing what would change; a script must say --yes.
    let first = reconcile::reconcile(
        &auth,
        &users,
        Options {
            dry_run: dry_run || !yes,
            delete_extra,
        },
    )
    .await
    .map_err(failure)?;
    if dry_run || yes {
        println!("{first}");
        if first.repaired > 0 {
            println!("repair events written to the outbox; the relay publishes them and `portal verify` confirms");
        }
        return Ok(());
    }
    println!("{first}");
    let to_fix =
        first.missing + first.stale + first.mismatched + if delete_extra { first.extra } else { 0 };
    if to_fix == 0 {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(
            anyhow!("not repaired: add --yes to repair, or --dry-run to only report").into(),
        );
    }
    print!("repair {to_fix} users? [y/N] ");
    std::io::stdout().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).ok();
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        return Err(anyhow!("not repaired").into());
    }
    let done = reconcile::reconcile(
        &auth,
        &users,
        Options {
            dry_run: false,
            delete_extra,
        },
    )
    .await
    .map_err(failure)?;
    println!("{done}");
    Ok(())
}
