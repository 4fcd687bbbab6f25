//! `portal consumer add|list|remove`: a further consumer of the user events — its own broker
//! user with only its rights and its settings shown once (`ops::consumer`), its queues and its
//! backfill (`ops::replay`), its registration (`auth_db.consumers`, whose broker user is the one
//! its receipts are believed from).

use super::replay::{backfill, describe};
use super::{check_links, failure, Failure};
use crate::cli::{BrokerUserPrefixArgs, ConsumerCommand};
use anyhow::anyhow;
use consumer::settings::TrustArgs;
use contract::topology::{APPOINTMENT_SERVICE, USER_SERVICE};
use ops::consumer::{managed_user, BrokerAdmin, ConsumerSettings, Identity};
use ops::replay::{create_consumer_queues, valid_consumer_name};
use ops::settings::OperatorArgs;
use platform::settings::{NetworkArgs, SetupStateArgs};
use std::path::Path;

pub async fn run(command: ConsumerCommand) -> Result<(), Failure> {
    match command {
        ConsumerCommand::Add {
            name,
            optional,
            broker_user,
            new_password,
            credentials_file,
            prefix,
            trust,
            admin,
            operator,
            setup,
            network,
        } => {
            if !valid_consumer_name(&name) {
                return Err(anyhow!(
                    "{name:?}: consumer names are lower-case letters, digits and dashes"
                )
                .into());
            }
            if !setup.managed_by_setup && (new_password || credentials_file.is_some()) {
                return Err(Failure::usage(anyhow!(
                    "--new-password and --credentials-file are for the broker user `portal \
                     consumer add` makes, which it does under the least-privilege setup only \
                     (MANAGED_BY_SETUP, as `portal setup` and `portal up` leave it)"
                )));
            }
            // Under the least-privilege setup, declaring queues and making broker users are the
            // administrator's.
            let mut links = vec![operator.broker_link()];
            if setup.managed_by_setup {
                links.extend(admin.links());
            }
            check_links(&network, &links)?;
            let declare_as = match setup.managed_by_setup {
                true => admin.admin_amqp_url.as_str(),
                false => operator.operator_amqp_url.as_str(),
            };
            let queues = create_consumer_queues(declare_as, &name)
                .await
                .map_err(failure)?;
            println!(
                "created {} (bound to user.# on user.events), {} and {} retry queues",
                queues.main,
                queues.dead_letter,
                queues.retries.len()
            );
            let broker_user = match broker_user {
                // Without the setup every part shares one broker user: there are no identities
                // to make (tests, a bare development run). The name is registered as before.
                None if !setup.managed_by_setup => {
                    let user = managed_user(&prefix.broker_user_prefix, &name);
                    println!(
                        "broker user {user}: registered, not made (no least-privilege setup: \
                         MANAGED_BY_SETUP is not set)"
                    );
                    user
                }
                Some(user) => {
                    println!(
                        "broker user {user}: registered as it is (not made or changed here); it \
                         needs {}",
                        ops::consumer::describe_rights(&name)
                    );
                    user
                }
                None => {
                    let wanted = managed_user(&prefix.broker_user_prefix, &name);
                    let broker = BrokerAdmin::new(&admin.admin_amqp_url, &admin.management_url)
                        .map_err(Failure::usage)?;
                    let identity = broker
                        .ensure_consumer_user(&name, &wanted, new_password)
                        .await?;
                    hand_over(
                        &broker,
                        &name,
                        &identity,
                        &operator,
                        &trust,
                        credentials_file.as_deref(),
                    )?;
                    identity.user
                }
            };
            let pool = platform::db::lazy_pool(&operator.operator_auth_database_url, 1)?;
            auth_service::consumers::register(&pool, &name, !optional, &broker_user)
                .await
                .map_err(|e| Failure::unreachable(anyhow!("registering {name} in auth_db: {e}")))?;
            println!(
                "registered {name} ({}; its receipts believed from broker user {broker_user})",
                if optional { "optional" } else { "required" }
            );
            let sent = backfill(&operator, &queues.main).await?;
            println!(
                "backfilled: {}, then the end-of-history mark",
                describe(&sent, &queues.main)
            );
            Ok(())
        }
        ConsumerCommand::List { operator } => list(&operator).await,
        ConsumerCommand::Remove {
            name,
            prefix,
            admin,
            operator,
            setup,
            network,
        } => remove(&name, &prefix, &admin, &operator, &setup, &network).await,
    }
}

/// Tells what became of the consumer's broker user; a new password goes out once, in its
/// settings: to `file` (owner-only) or to stdout, never to a log.
fn hand_over(
    broker: &BrokerAdmin,
    name: &str,
    identity: &Identity,
    operator: &OperatorArgs,
    trust: &TrustArgs,
    file: Option<&Path>,
) -> Result<(), Failure> {
    let user = &identity.user;
    let Some(password) = &identity.password else {
        println!(
            "broker user {user}: kept with its password (not shown again: --new-password makes \
             a new one); its rights set again"
        );
        match file {
            Some(file) if file.exists() => println!("{} left as it is", file.display()),
            Some(file) => println!(
                "{} not written: the password is not known here (--new-password makes a new one)",
                file.display()
            ),
            None => {}
        }
        return Ok(());
    };
    let operator_user = super::require_broker_user(&operator.operator_amqp_url)?;
    let settings = ConsumerSettings {
        name: name.to_owned(),
        amqp_url: broker.url_for(user, password)?,
        trusted_publishers: ops::consumer::trusted_publishers(
            &operator_user,
            &trust.trusted_publishers,
        ),
    };
    let made = match identity.created {
        true => "made, with only its rights",
        false => "given a new password; its rights set again",
    };
    match file {
        Some(file) => {
            settings.write(file)?;
            println!(
                "broker user {user}: {made}; the consumer's settings, with its password, written \
                 to {} (owner-only)",
                file.display()
            );
        }
        None => {
            println!(
                "broker user {user}: {made}; the consumer's settings follow, shown this once (the \
                 password is kept nowhere else):"
            );
            print!("{}", settings.lines());
        }
    }
    Ok(())
}

/// `portal consumer list`: the registry.
async fn list(operator: &OperatorArgs) -> Result<(), Failure> {
    let pool = platform::db::lazy_pool(&operator.operator_auth_database_url, 1)?;
    let registered = auth_service::consumers::registered(&pool)
        .await
        .map_err(|e| Failure::unreachable(anyhow!("auth_db: {e}")))?;
    println!(
        "{:<28} {:<9} {:<32} REGISTERED",
        "NAME", "REQUIRED", "BROKER USER"
    );
    for c in &registered {
        println!(
            "{:<28} {:<9} {:<32} {}",
            c.name,
            if c.required { "yes" } else { "no" },
            c.broker_user,
            contract::Timestamp::from(c.registered_at)
        );
    }
    println!("{} consumers", registered.len());
    Ok(())
}

/// `portal consumer remove`: the broker user `consumer add` made (under the setup) is deleted
/// first (so a failure leaves the registration, and running it again finishes the job), then the
/// registration and its receipts. The setup's own consumers keep theirs: those identities are
/// the setup's.
async fn remove(
    name: &str,
    prefix: &BrokerUserPrefixArgs,
    admin: &crate::cli::AdminArgs,
    operator: &OperatorArgs,
    setup: &SetupStateArgs,
    network: &NetworkArgs,
) -> Result<(), Failure> {
    let pool = platform::db::lazy_pool(&operator.operator_auth_database_url, 1)?;
    let registered = auth_service::consumers::registered(&pool)
        .await
        .map_err(|e| Failure::unreachable(anyhow!("auth_db: {e}")))?;
    let Some(consumer) = registered.into_iter().find(|c| c.name == name) else {
        return Err(anyhow!("{name} is not a registered consumer").into());
    };
    let made_here = setup.managed_by_setup
        && consumer.broker_user == managed_user(&prefix.broker_user_prefix, name)
        && ![USER_SERVICE, APPOINTMENT_SERVICE].contains(&name);
    if made_here {
        check_links(network, &admin.links())?;
        let broker = BrokerAdmin::new(&admin.admin_amqp_url, &admin.management_url)
            .map_err(Failure::usage)?;
        match broker.delete_user(&consumer.broker_user).await? {
            true => println!("broker user {}: deleted", consumer.broker_user),
            false => println!("broker user {}: already gone", consumer.broker_user),
        }
    } else {
        let why = match setup.managed_by_setup {
            true => "not made by `portal consumer add`",
            false => "no least-privilege setup: `portal consumer add` made none",
        };
        println!(
            "broker user {}: left as it is ({why})",
            consumer.broker_user
        );
    }
    auth_service::consumers::unregister(&pool, name)
        .await
        .map_err(|e| Failure::unreachable(anyhow!("auth_db: {e}")))?;
    println!("{name}: unregistered (its queues stay on the broker)");
    Ok(())
}
