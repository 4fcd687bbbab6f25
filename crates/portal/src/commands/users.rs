//! `portal users …`: a thin client of the admin API. It logs in with PORTAL_EMAIL /
//! PORTAL_PASSWORD (or uses PORTAL_TOKEN), sends one request, and prints the answer. Exit codes:
//! 0 done, 1 the API refused (its JSON message is printed), 2 the API could not be reached.

use super::Failure;
use crate::cli::{ApiClientArgs, UsersCommand};
use anyhow::anyhow;
use reqwest::Method;
use serde_json::{json, Value};

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

fn unreachable(base: &str, e: reqwest::Error) -> Failure {
    Failure::unreachable(anyhow!("cannot reach the API at {base}: {e}"))
}

/// Turns a non-2xx answer into a failure carrying the API's own message.
async fn answer(resp: reqwest::Response) -> Result<Value, Failure> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let message = body["message"].as_str().unwrap_or("no details");
    Err(anyhow!("{message} (HTTP {})", status.as_u16()).into())
}

impl Client {
    async fn connect(args: &ApiClientArgs) -> Result<Self, Failure> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Failure::from(anyhow!(e)))?;
        let base = args.url.trim_end_matches('/').to_owned();
        let token = match (&args.token, &args.login_email, &args.login_password) {
            (Some(token), _, _) => token.clone(),
            (None, Some(email), Some(password)) => {
                let resp = http
                    .post(format!("{base}/api/v1/auth/login"))
                    .json(&json!({ "email": email, "password": password }))
                    .send()
                    .await
                    .map_err(|e| unreachable(&base, e))?;
                let body = answer(resp).await?;
                body["accessToken"]
                    .as_str()
                    .ok_or_else(|| Failure::from(anyhow!("login answer has no accessToken")))?
                    .to_owned()
            }
            _ => {
                return Err(anyhow!(
                    "set PORTAL_TOKEN, or PORTAL_EMAIL and PORTAL_PASSWORD of an admin"
                )
                .into())
            }
        };
        Ok(Self { http, base, token })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| unreachable(&self.base, e))?;
        answer(resp).await
    }

    /// The id of a user named by id or by email.
    async fn resolve(&self, user: &str) -> Result<String, Failure> {
        if uuid::Uuid::parse_str(user).is_ok() {
            return Ok(user.to_owned());
        }
        let wanted = user.trim().to_lowercase();
        let page = self
            .call(
                Method::GET,
                &format!(
                    "/api/v1/auth/admin/users?q={}&limit=500",
                    urlencode(&wanted)
                ),
                None,
            )
            .await?;
        page["items"]
            .as_array()
            .and_then(|items| items.iter().find(|u| u["email"] == wanted.as_str()))
            .and_then(|u| u["userId"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no user with id or email {user:?}").into())
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
            let client = Client::connect(&api).await?;
            let mut query = format!("limit={limit}&offset={offset}");
            if let Some(role) = role {
                query += &format!("&role={}", urlencode(&role));
            }
            if let Some(active) = active {
                query += &format!("&isActive={active}");
            }
            if let Some(q) = q {
                query += &format!("&q={}", urlencode(&q));
            }
            let page = client
                .call(
                    Method::GET,
                    &format!("/api/v1/auth/admin/users?{query}"),
                    None,
                )
                .await?;
            output(api.json, &page, print_table);
        }
        UsersCommand::Show { api, user } => {
            let client = Client::connect(&api).await?;
            let id = client.resolve(&user).await?;
            let u = client
                .call(Method::GET, &format!("/api/v1/auth/admin/users/{id}"), None)
                .await?;
            output(api.json, &u, print_user);
        }
        UsersCommand::Create {
            api,
            email,
            first_name,
            last_name,
            role,
            phone,
        } => {
            let client = Client::connect(&api).await?;
            let body = json!({ "email": email, "firstName": first_name, "lastName": last_name,
                               "role": role, "phoneNumber": phone });
            let created = client
                .call(Method::POST, "/api/v1/auth/admin/users", Some(body))
                .await?;
            if api.json {
                output(true, &created, print_user);
            } else {
                print_user(&created["user"]);
                println!(
                    "temporary password    {} (shown only now)",
                    created["temporaryPassword"].as_str().unwrap_or("")
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
            let client = Client::connect(&api).await?;
            let id = client.resolve(&user).await?;
            let mut body = json!({});
            if let Some(v) = email {
                body["email"] = json!(v);
            }
            if let Some(v) = first_name {
                body["firstName"] = json!(v);
            }
            if let Some(v) = last_name {
                body["lastName"] = json!(v);
            }
            if let Some(v) = phone {
                body["phoneNumber"] = json!(v);
            }
            if clear_phone {
                body["phoneNumber"] = Value::Null;
            }
            let u = client
                .call(
                    Method::PATCH,
                    &format!("/api/v1/auth/admin/users/{id}"),
                    Some(body),
                )
                .await?;
            output(api.json, &u, print_user);
        }
        UsersCommand::Activate { api, user } => status_change(&api, &user, "activate").await?,
        UsersCommand::Deactivate { api, user } => status_change(&api, &user, "deactivate").await?,
        UsersCommand::SetRole { api, user, role } => {
            let client = Client::connect(&api).await?;
            let id = client.resolve(&user).await?;
            let u = client
                .call(
                    Method::PUT,
                    &format!("/api/v1/auth/admin/users/{id}/role"),
                    Some(json!({ "role": role })),
                )
                .await?;
            output(api.json, &u, print_user);
        }
    }
    Ok(())
}

async fn status_change(api: &ApiClientArgs, user: &str, action: &str) -> Result<(), Failure> {
    let client = Client::connect(api).await?;
    let id = client.resolve(user).await?;
    let u = client
        .call(
            Method::POST,
            &format!("/api/v1/auth/admin/users/{id}/{action}"),
            None,
        )
        .await?;
    output(api.json, &u, print_user);
    Ok(())
}

/// `portal events --user <id|email> [--since] [--type]`: the user's audit trail.
pub async fn events(args: crate::cli::EventsArgs) -> Result<(), Failure> {
    let client = Client::connect(&args.api).await?;
    let id = client.resolve(&args.user).await?;
    let mut query = Vec::new();
    if let Some(since) = &args.since {
        query.push(format!("since={}", urlencode(since)));
    }
    if let Some(t) = &args.event_type {
        query.push(format!("type={}", urlencode(t)));
    }
    let path = format!("/api/v1/auth/admin/users/{id}/events?{}", query.join("&"));
    let trail = client.call(Method::GET, &path, None).await?;
    if args.api.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&trail).unwrap_or_default()
        );
        return Ok(());
    }
    let items = trail["items"].as_array().cloned().unwrap_or_default();
    println!(
        "{:>8}  {:<24} {:<18} {:>3}  {:<9} CHANGE",
        "SEQ", "STORED", "TYPE", "VER", "PUBLISHED"
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
            "{:>8}  {:<24} {:<18} {:>3}  {:<9} {change}",
            e["seq"],
            e["createdAt"].as_str().unwrap_or(""),
            e["eventType"].as_str().unwrap_or(""),
            e["userVersion"],
            if e["publishedAt"].is_null() {
                "no"
            } else {
                "yes"
            },
        );
    }
    println!("{} events", items.len());
    Ok(())
}
