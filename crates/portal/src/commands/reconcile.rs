//! `portal reconcile`: reports the drift of every consumer's copy (`user_db`, `appointment_db`)
//! one line per service, asks (or takes `--yes`), repairs, and waits until `verify` no longer
//! reports what it repaired in any copy.

use super::verify::{and_list, copies};
use super::{check_links, Failure};
use crate::cli::{ReconcileArgs, ReconcileCommand};
use anyhow::anyhow;
use contract::topology::{self, ConsumerQueues};
use indicatif::{ProgressBar, ProgressStyle};
use ops::reconcile::{self, CopyPool, Options, ReconcileError, Summary};
use ops::verify::VerifyError;
use sqlx::PgPool;
use std::io::{BufRead, IsTerminal, Write};

fn failure(e: ReconcileError) -> Failure {
    match e {
        ReconcileError::Compare(VerifyError::Unreachable { .. }) => Failure::unreachable(e),
        other => Failure::from(anyhow::Error::from(other)),
    }
}

pub async fn run(c: &ReconcileCommand) -> Result<(), Failure> {
    let args = &c.args;
    // The broker is reached only to declare the topology before repairing (the repairs
    // themselves go through the outbox).
    let declares = args.yes && !args.dry_run && !c.setup.managed_by_setup;
    if declares {
        let broker = platform::settings::Link::amqp("AMQP_URL", c.broker.amqp_url.as_str());
        check_links(&c.network, &[broker])?;
    }
    let auth = platform::db::lazy_pool(&c.operator.operator_auth_database_url, 2)?;
    let mut pools = Vec::new();
    for (copy, url) in copies(&c.operator) {
        pools.push((copy, platform::db::lazy_pool(url, 2)?));
    }
    let copies: Vec<CopyPool<'_>> = pools.iter().map(|(copy, pool)| (*copy, pool)).collect();
    // Under the least-privilege setup the topology is the setup's (the operator may not declare).
    if declares {
        // Repairs travel through the exchange: make sure every consumer's queue exists (it may
        // be the very thing that was deleted) so they are not parked in user.events.unrouted.
        let queues = [topology::USER_SERVICE, topology::APPOINTMENT_SERVICE]
            .map(ConsumerQueues::for_consumer);
        if let Err(e) = platform::amqp::ensure_topology(&c.broker.amqp_url, &queues).await {
            tracing::warn!("cannot declare the topology ({e}); repairs wait in the outbox until RabbitMQ is back");
        }
    }
    let options = |dry_run| Options {
        dry_run,
        delete_extra: args.delete_extra,
    };
    // Without --yes a person is asked, after seeing what would change; a script must say --yes.
    let first = reconcile::reconcile(&auth, &copies, options(args.dry_run || !args.yes))
        .await
        .map_err(failure)?;
    if args.dry_run {
        println!("{first}");
        return Ok(());
    }
    if args.yes {
        return confirmed(&auth, &copies, first, args).await;
    }
    println!("{first}");
    let to_fix = first.users_to_repair + if args.delete_extra { first.extra() } else { 0 };
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
    let done = reconcile::reconcile(&auth, &copies, options(false))
        .await
        .map_err(failure)?;
    confirmed(&auth, &copies, done, args).await
}

/// Waits for the written repairs to apply in every copy, prints the summary, and fails (exit 1)
/// when some are still pending after `--wait`: "repaired N" only counts what `verify` no longer
/// reports, and the message names the consumers that have not applied theirs.
async fn confirmed(
    auth: &PgPool,
    copies: &[CopyPool<'_>],
    mut summary: Summary,
    args: &ReconcileArgs,
) -> Result<(), Failure> {
    let awaiting = summary.awaiting();
    if awaiting > 0 {
        // Counted per copy: a user repaired in two copies is two applications.
        let bar = ProgressBar::new(awaiting);
        bar.set_style(
            ProgressStyle::with_template("{spinner} applied [{bar:40}] {pos}/{len} repairs")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        reconcile::confirm(auth, copies, &mut summary, args.wait, |done, _| {
            bar.set_position(done)
        })
        .await
        .map_err(|e| failure(e.into()))?;
        bar.finish_and_clear();
    }
    println!("{summary}");
    if summary.unconfirmed() > 0 {
        let behind: Vec<&str> = summary.behind().map(|c| c.service).collect();
        let consumers = and_list(&behind);
        return Err(anyhow!(
            "{} repairs written to the outbox were not applied within {:?} by {consumers}: is the \
             relay publishing and {consumers} consuming (GET /health/ready)? They apply when it \
             is; `portal verify` tells when",
            summary.not_applied_users(),
            args.wait
        )
        .into());
    }
    Ok(())
}
