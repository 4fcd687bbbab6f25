//! `portal users …`: a thin client of the admin API. It logs in with PORTAL_EMAIL /
//! PORTAL_PASSWORD (or uses PORTAL_TOKEN), sends one request, and prints the answer. Exit codes:
//! 0 done, 1 the API refused (its JSON message is printed), 2 the API could not be reached.
//! `erase` also purges the queues as the operator afterwards (`portal erasure purge`).

use super::api::{api_failure, connect};
use super::Failure;
use crate::cli::{ApiClientArgs, UsersCommand};
use anyhow::anyhow;
use api_client::ListFilter;
use contract::api::{CreateUserRequest, Erasure, ErasureRequest, UpdateUserRequest};
use serde_json::Value;
use std::io::{BufRead, IsTerminal, Write};

/// The answer as JSON, for `--json` and the printers.
fn json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn print_user(u: &Value) {
    let s = |k: &str| match &u[k] {
        Value::String(v) => v.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    for (label, key) in [
        ("id", "userId"),
        ("email", "email"),
        ("name", ""),
        ("role", "role"),
        ("phone", "phoneNumber"),
        ("active", "isActive"),
        ("must change password", "mustChangePassword"),
        ("version", "userVersion"),
        ("created", "createdAt"),
        ("updated", "updatedAt"),
    ] {
        let value = if key.is_empty() {
            format!("{} {}", s("firstName"), s("lastName"))
        } else {
            s(key)
        };
        println!("{label:<21} {value}");
    }
}

fn print_table(page: &Value) {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<36}  {:<34} {:<24} {:<11} {:<6} {:>3}",
        "ID", "EMAIL", "NAME", "ROLE", "ACTIVE", "VER"
    );
    for u in &items {
        let name = format!(
            "{} {}",
            u["firstName"].as_str().unwrap_or(""),
            u["lastName"].as_str().unwrap_or("")
        );
        println!(
            "{:<36}  {:<34} {:<24} {:<11} {:<6} {:>3}",
            u["userId"].as_str().unwrap_or(""),
            u["email"].as_str().unwrap_or(""),
            name,
            u["role"].as_str().unwrap_or(""),
            u["isActive"]
                .as_bool()
                .map_or("-", |a| if a { "yes" } else { "no" }),
            u["userVersion"]
                .as_i64()
                .map_or("-".to_owned(), |v| v.to_string()),
        );
    }
    println!("{} of {} users", items.len(), page["total"]);
}

fn output(json: bool, value: &Value, render: fn(&Value)) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        render(value);
    }
}

pub async fn run(command: UsersCommand) -> Result<(), Failure> {
    match command {
        UsersCommand::List {
            api,
            role,
            active,
            q,
            limit,
            offset,
        } => {
            let client = connect(&api).await?;
            let filter = ListFilter {
                role,
                is_active: active,
                q,
                limit: Some(limit),
                offset: Some(offset),
            };
            let page = client.list_users(&filter).await.map_err(api_failure)?;
            output(api.json, &json(&page), print_table);
        }
        UsersCommand::Show { api, user } => {
            let client = connect(&api).await?;
            let id = client.resolve(&user).await.map_err(api_failure)?;
            let u = client.user(id).await.map_err(api_failure)?;
            output(api.json, &json(&u), print_user);
        }
        UsersCommand::Create {
            api,
            email,
            first_name,
            last_name,
            role,
            phone,
        } => {
            let client = connect(&api).await?;
            let request = CreateUserRequest {
                email,
                first_name,
                last_name,
                role,
                phone_number: phone,
            };
            let created = client.create_user(&request).await.map_err(api_failure)?;
            if api.json {
                output(true, &json(&created), print_user);
            } else {
                print_user(&json(&created.user));
                println!(
                    "temporary password    {} (shown only now)",
                    created.temporary_password
                );
            }
        }
        UsersCommand::Update {
            api,
            user,
            email,
            first_name,
            last_name,
            phone,
            clear_phone,
        } => {
            let client = connect(&api).await?;
            let id = client.resolve(&user).await.map_err(api_failure)?;
            let request = UpdateUserRequest {
                email,
                first_name,
                last_name,
                phone_number: if clear_phone {
                    Some(None)
                } else {
                    phone.map(Some)
                },
            };
            let u = client
                .update_user(id, &request)
                .await
                .map_err(api_failure)?;
            output(api.json, &json(&u), print_user);
        }
        UsersCommand::Activate { api, user } => {
            let client = connect(&api).await?;
            let id = client.resolve(&user).await.map_err(api_failure)?;
            let u = client.activate(id).await.map_err(api_failure)?;
            output(api.json, &json(&u), print_user);
        }
        UsersCommand::Deactivate { api, user } => {
            let client = connect(&api).await?;
            let id = client.resolve(&user).await.map_err(api_failure)?;
            let u = client.deactivate(id).await.map_err(api_failure)?;
            output(api.json, &json(&u), print_user);
        }
        UsersCommand::SetRole { api, user, role } => {
            let client = connect(&api).await?;
            let id = client.resolve(&user).await.map_err(api_failure)?;
            let u = client.set_role(id, &role).await.map_err(api_failure)?;
            output(api.json, &json(&u), print_user);
        }
        UsersCommand::Erase {
            api,
            user,
            reason,
            yes,
            operator,
        } => erase(api, &user, reason, yes, &operator).await?,
        UsersCommand::Import {
            api,
            file,
            passwords_out,
            batch_size,
            concurrency,
        } => {
            super::import::run(super::import::ImportArgs {
                api,
                file,
                passwords_out,
                batch_size: usize::from(batch_size),
                concurrency: usize::from(concurrency),
            })
            .await?;
        }
        UsersCommand::ResetPassword { api, user } => {
            let client = connect(&api).await?;
            let id = client.resolve(&user).await.map_err(api_failure)?;
            let reset = client.reset_password(id).await.map_err(api_failure)?;
            if api.json {
                output(true, &json(&reset), print_user);
            } else {
                print_user(&json(&reset.user));
                println!(
                    "temporary password    {} (shown only now; to be changed at the next login)",
                    reset.temporary_password
                );
            }
        }
    }
    Ok(())
}

/// `portal users erase USER --reason TEXT [--yes]`: asks (on a terminal, unless --yes), erases
/// through the API, prints the erasure, then purges the person's messages from the queues as
/// the operator (`portal erasure purge`) and says how to verify.
async fn erase(
    api: ApiClientArgs,
    user: &str,
    reason: String,
    yes: bool,
    operator: &ops::settings::OperatorArgs,
) -> Result<(), Failure> {
    // A script must say --yes: nothing is erased on a guess (exit 64, before anything runs).
    let ask = !yes;
    if ask && !std::io::stdin().is_terminal() {
        return Err(Failure::usage(anyhow!(
            "not erased: erasure cannot be undone; add --yes to erase without a terminal"
        )));
    }
    let client = connect(&api).await?;
    let id = client.resolve(user).await.map_err(api_failure)?;
    if ask {
        let u = json(&client.user(id).await.map_err(api_failure)?);
        print_user(&u);
        print!(
            "erase the personal data of this person (email, names, phone, and their history's \
             copies of them)? This cannot be undone. [y/N] "
        );
        std::io::stdout().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).ok();
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(anyhow!("not erased").into());
        }
    }
    let erased = client
        .erase(id, &ErasureRequest { reason })
        .await
        .map_err(api_failure)?;
    if !api.json {
        print_erasure(&erased);
    }
    // The erasure is done whatever happens next: a purge that fails says how to finish it.
    let purged =
        super::erasure::purge_queues(operator, &api.network, id, "portal users erase").await;
    if api.json {
        let purge = purged.as_ref().ok().map(|p| {
            serde_json::json!({
                "removed": p.removed(),
                "queues": p.queues.iter().map(|q| serde_json::json!({
                    "queue": q.queue, "removed": q.removed, "of": q.of,
                })).collect::<Vec<_>>(),
                "failed": p.failed,
                "queuesPurgedAt": p.queues_purged_at.map(contract::Timestamp::from),
            })
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "erasure": json(&erased),
                "purge": purge,
            }))
            .unwrap_or_default()
        );
    }
    let purged = purged.map_err(|f| Failure {
        code: f.code,
        error: f.error.context(format!(
            "{id} is erased, but its messages were not purged from the queues: run `portal \
             erasure purge {id}`"
        )),
    })?;
    if !api.json {
        for line in super::erasure::purge_lines(&purged) {
            println!("{line}");
        }
        println!("check that no trace is left: portal erasure verify {id}");
    }
    super::erasure::purge_outcome(&purged)
}

fn print_erasure(e: &Erasure) {
    println!("erased                {}", e.user_id);
    println!("at                    {}", e.erased_at);
    println!("by                    {}", e.requested_by);
    println!("reason                {}", e.reason);
    println!(
        "version               {} (its user.erased event)",
        e.user_version
    );
}

/// `portal events --user <id|email> [--since] [--type]`: the user's audit trail.
pub async fn events(args: crate::cli::EventsArgs) -> Result<(), Failure> {
    let client = connect(&args.api).await?;
    let id = client.resolve(&args.user).await.map_err(api_failure)?;
    let trail = client
        .user_events(id, args.since.as_deref(), args.event_type.as_deref())
        .await
        .map_err(api_failure)?;
    let trail = json(&trail);
    if args.api.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&trail).unwrap_or_default()
        );
        return Ok(());
    }
    let items = trail["items"].as_array().cloned().unwrap_or_default();
    println!(
        "{:>8}  {:<24} {:<18} {:>3}  {:<9} {:<32}  CHANGE",
        "SEQ", "STORED", "TYPE", "VER", "PUBLISHED", "TRACE ID"
    );
    for e in &items {
        let payload = &e["event"]["payload"];
        let change = match e["eventType"].as_str() {
            Some("user.role.changed") => format!(
                "role {} -> {}",
                payload["previousRole"].as_str().unwrap_or("?"),
                payload["role"].as_str().unwrap_or("?")
            ),
            Some("user.updated") => format!("changed {}", payload["changedFields"]),
            Some("user.activated") | Some("user.deactivated") => {
                format!("active = {}", payload["isActive"])
            }
            Some("user.created") => format!(
                "{} as {}",
                payload["email"].as_str().unwrap_or("?"),
                payload["role"].as_str().unwrap_or("?")
            ),
            _ => String::new(),
        };
        println!(
            "{:>8}  {:<24} {:<18} {:>3}  {:<9} {:<32}  {change}",
            e["seq"],
            e["createdAt"].as_str().unwrap_or(""),
            e["eventType"].as_str().unwrap_or(""),
            e["userVersion"],
            if e["published"] == true || !e["publishedAt"].is_null() {
                "yes"
            } else {
                "no"
            },
            e["traceId"].as_str().unwrap_or("-"),
        );
    }
    println!("{} events", items.len());
    Ok(())
}
