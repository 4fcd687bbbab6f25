//! `portal reconcile`: reports drift, asks (or takes `--yes`), repairs, and waits until `verify`
//! no longer reports what it repaired.

use super::Failure;
use crate::cli::{ReconcileArgs, Settings};
use anyhow::anyhow;
use contract::topology::{self, ConsumerQueues};
use indicatif::{ProgressBar, ProgressStyle};
use ops::reconcile::{self, Options, ReconcileError, Summary};
use ops::verify::VerifyError;
use sqlx::PgPool;
use std::io::{BufRead, IsTerminal, Write};

fn failure(e: ReconcileError) -> Failure {
    match e {
        ReconcileError::Compare(VerifyError::Unreachable { .. }) => Failure::unreachable(e),
        other => Failure::from(anyhow::Error::from(other)),
    }
}

pub async fn run(s: &Settings, args: &ReconcileArgs) -> Result<(), Failure> {
    let auth = platform::db::lazy_pool(s.operator_auth_db(), 2)?;
    let users = platform::db::lazy_pool(s.operator_user_db(), 2)?;
    // Under the least-privilege setup the topology is the setup's (the operator may not declare).
    if args.yes && !args.dry_run && !s.managed_by_setup {
        // Repairs travel through the exchange: make sure the user-service's queue exists (it may
        // be the very thing that was deleted) so they are not parked in user.events.unrouted.
        let queues = ConsumerQueues::for_consumer(topology::USER_SERVICE);
        if let Err(e) = platform::amqp::ensure_topology(&s.amqp_url, &[queues]).await {
            tracing::warn!("cannot declare the topology ({e}); repairs wait in the outbox until RabbitMQ is back");
        }
    }
    let options = |dry_run| Options {
        dry_run,
        delete_extra: args.delete_extra,
    };
    // Without --yes a person is asked, after seeing what would change; a script must say --yes.
    let first = reconcile::reconcile(&auth, &users, options(args.dry_run || !args.yes))
        .await
        .map_err(failure)?;
    if args.dry_run {
        println!("{first}");
        return Ok(());
    }
    if args.yes {
        return confirmed(&auth, &users, first, args).await;
    }
    println!("{first}");
    let to_fix = first.missing
        + first.stale
        + first.mismatched
        + if args.delete_extra { first.extra } else { 0 };
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
    let done = reconcile::reconcile(&auth, &users, options(false))
        .await
        .map_err(failure)?;
    confirmed(&auth, &users, done, args).await
}

/// Waits for the written repairs to apply, prints the summary, and fails (exit 1) when some are
/// still pending after `--wait`: "repaired N" only counts what `verify` no longer reports.
async fn confirmed(
    auth: &PgPool,
    users: &PgPool,
    mut summary: Summary,
    args: &ReconcileArgs,
) -> Result<(), Failure> {
    if summary.written > 0 {
        let bar = ProgressBar::new(summary.written);
        bar.set_style(
            ProgressStyle::with_template("{spinner} applied [{bar:40}] {pos}/{len} repairs")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        reconcile::confirm(auth, users, &mut summary, args.wait, |done, _| {
            bar.set_position(done)
        })
        .await
        .map_err(|e| failure(e.into()))?;
        bar.finish_and_clear();
    }
    println!("{summary}");
    if summary.unconfirmed > 0 {
        return Err(anyhow!(
            "{} repairs written to the outbox were not applied within {:?}: is the relay publishing \
             and the user-service consuming (GET :3002/health/ready)? They apply when it is; \
             `portal verify` tells when",
            summary.unconfirmed,
            args.wait
        )
        .into());
    }
    Ok(())
}
