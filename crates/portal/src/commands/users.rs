//! `portal users …`: a thin client of the admin API. It logs in with PORTAL_EMAIL /
//! PORTAL_PASSWORD (or uses PORTAL_TOKEN), sends one request, and prints the answer. Exit codes:
//! 0 done, 1 the API refused (its JSON message is printed), 2 the API could not be reached.

use super::api::{api_failure, connect};
use super::Failure;
use crate::cli::UsersCommand;
use api_client::ListFilter;
use contract::api::{CreateUserRequest, UpdateUserRequest};
use serde_json::Value;

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
            if e["publishedAt"].is_null() {
                "no"
            } else {
                "yes"
            },
            e["traceId"].as_str().unwrap_or("-"),
        );
    }
    println!("{} events", items.len());
    Ok(())
}
