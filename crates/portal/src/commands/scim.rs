//! `portal scim token create|list|revoke`: the bearer tokens SCIM clients (Microsoft Entra ID,
//! Okta) present at the gateway's `/scim/v2`, through the auth-service's admin API
//! (`/api/v1/auth/admin/scim-tokens`), as `portal users` does: PORTAL_URL with PORTAL_TOKEN or
//! PORTAL_EMAIL / PORTAL_PASSWORD of an admin. Exit codes: 0 done, 1 the API refused (its
//! message is printed) or no such token, 2 the API could not be reached.
//!
//! `create` prints the secret alone on stdout and everything meant for a person on stderr, so
//! `TOKEN=$(portal scim token create NAME)` captures the secret and nothing else, with or
//! without `--quiet` (which only silences stderr).

use super::api::{api_failure, connect};
use super::Failure;
use crate::cli::{ScimCommand, ScimTokenCommand};
use anyhow::anyhow;
use contract::api::ScimToken;
use contract::Timestamp;
use uuid::Uuid;

pub async fn run(command: ScimCommand) -> Result<(), Failure> {
    match command {
        ScimCommand::Token(ScimTokenCommand::Create { api, name, quiet }) => {
            let client = connect(&api).await?;
            let created = client.create_scim_token(&name).await.map_err(api_failure)?;
            if api.json {
                print_json(&created);
                return Ok(());
            }
            let token = &created.token;
            if !quiet {
                eprintln!(
                    "Created SCIM token {:?} (id {}). Its secret, shown only this once:",
                    token.name, token.id
                );
            }
            println!("{}", created.secret);
            if !quiet {
                eprintln!("{}", paste_instructions(&api.url, &token.name));
            }
        }
        ScimCommand::Token(ScimTokenCommand::List { api }) => {
            let client = connect(&api).await?;
            let tokens = client.scim_tokens().await.map_err(api_failure)?;
            if api.json {
                print_json(&tokens);
            } else {
                print!("{}", table(&tokens));
            }
        }
        ScimCommand::Token(ScimTokenCommand::Revoke { api, name_or_id }) => {
            let client = connect(&api).await?;
            // Looked up in the list first: by id, else the live token of that name (a name may
            // have been used again after a revocation; only the live one is meant).
            let tokens = client.scim_tokens().await.map_err(api_failure)?;
            let target = find(&tokens, &name_or_id)?;
            if let Some(at) = target.revoked_at {
                // Already what was asked for: a script revoking twice is not an error.
                if api.json {
                    print_json(target);
                } else {
                    println!(
                        "SCIM token {:?} ({}) was already revoked at {}",
                        target.name,
                        target.id,
                        when(at)
                    );
                }
                return Ok(());
            }
            let revoked = client
                .revoke_scim_token(target.id)
                .await
                .map_err(api_failure)?;
            if api.json {
                print_json(&revoked);
            } else {
                println!(
                    "revoked SCIM token {:?} ({}) at {}: the directory holding it is refused from \
                     now on",
                    revoked.name,
                    revoked.id,
                    revoked.revoked_at.map_or("now".to_owned(), when)
                );
            }
        }
    }
    Ok(())
}

/// What a person does with a new secret: where the directory wants it, and that it is gone once
/// this is closed.
fn paste_instructions(portal_url: &str, name: &str) -> String {
    let tenant = format!("{}/scim/v2", portal_url.trim_end_matches('/'));
    format!(
        "\nPaste it into the directory's SCIM provisioning settings:\n\
         \x20 Tenant URL (SCIM base URL):  {tenant}\n\
         \x20 Secret Token (Entra ID) / API token (Okta):  the line above\n\
         (If the directory reaches the gateway at another address, use that address with \
         /scim/v2.)\n\
         It cannot be shown again: the portal keeps only a hash of it. If it is lost, revoke it \
         (portal scim token revoke {name}) and create another."
    )
}

/// The token `wanted` names: the one with that id, else the live one with that name, else a
/// revoked one with that name (revoking it again is a no-op), else exit 1.
fn find<'a>(tokens: &'a [ScimToken], wanted: &str) -> Result<&'a ScimToken, Failure> {
    let wanted = wanted.trim();
    let by_id = Uuid::parse_str(wanted)
        .ok()
        .and_then(|id| tokens.iter().find(|t| t.id == id));
    let by_name = || {
        let named = || tokens.iter().filter(|t| t.name == wanted);
        named()
            .find(|t| t.revoked_at.is_none())
            .or_else(|| named().next())
    };
    by_id.or_else(by_name).ok_or_else(|| {
        anyhow!("no SCIM token has the name or id {wanted:?} (portal scim token list shows them)")
            .into()
    })
}

/// A time as the table shows it: to the second, in UTC.
fn when(t: Timestamp) -> String {
    t.as_datetime().format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The tokens as a table, one per line, the name column as wide as the longest name.
fn table(tokens: &[ScimToken]) -> String {
    let width = tokens
        .iter()
        .map(|t| t.name.chars().count())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    let mut out = format!(
        "{:<width$}  {:<36}  {:<23}  {:<23}  {}\n",
        "NAME", "ID", "CREATED", "LAST USED", "REVOKED"
    );
    for t in tokens {
        out.push_str(&format!(
            "{:<width$}  {:<36}  {:<23}  {:<23}  {}\n",
            t.name,
            t.id,
            when(t.created_at),
            t.last_used_at.map_or("never".to_owned(), when),
            t.revoked_at.map_or("-".to_owned(), when),
        ));
    }
    let live = tokens.iter().filter(|t| t.revoked_at.is_none()).count();
    out.push_str(&format!(
        "{} tokens, {live} live, {} revoked\n",
        tokens.len(),
        tokens.len() - live
    ));
    out
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::UserId;

    fn token(name: &str, revoked: bool) -> ScimToken {
        ScimToken {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            created_at: Timestamp::now(),
            created_by: UserId(Uuid::new_v4()),
            last_used_at: None,
            revoked_at: revoked.then(Timestamp::now),
        }
    }

    /// A name means its live token even when revoked ones had that name before it; an id means
    /// that token whatever its state.
    #[test]
    fn a_name_finds_the_live_token_and_an_id_any() {
        let tokens = [
            token("entra", true),
            token("entra", false),
            token("okta", true),
        ];
        assert_eq!(find(&tokens, "entra").unwrap().id, tokens[1].id);
        assert_eq!(find(&tokens, " entra ").unwrap().id, tokens[1].id);
        assert_eq!(find(&tokens, "okta").unwrap().id, tokens[2].id);
        let id = tokens[0].id.to_string();
        assert_eq!(find(&tokens, &id).unwrap().id, tokens[0].id);
        assert!(find(&tokens, "nobody").is_err());
        assert!(find(&tokens, &Uuid::new_v4().to_string()).is_err());
    }

    #[test]
    fn the_table_has_a_row_per_token_and_counts_them() {
        let tokens = [token("entra-production", false), token("okta", true)];
        let out = table(&tokens);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].starts_with("NAME              ID"), "{out}");
        assert!(lines[1].starts_with("entra-production  "), "{out}");
        assert!(
            lines[1].contains("  never ") && lines[1].ends_with("  -"),
            "{out}"
        );
        assert!(lines[2].ends_with(" UTC"), "{out}");
        assert_eq!(lines[3], "2 tokens, 1 live, 1 revoked");
    }

    #[test]
    fn the_instructions_name_the_tenant_url_and_say_it_is_shown_once() {
        let text = paste_instructions("https://portal.clinic.example/", "entra");
        assert!(
            text.contains("https://portal.clinic.example/scim/v2\n"),
            "{text}"
        );
        assert!(text.contains("Secret Token"), "{text}");
        assert!(text.contains("cannot be shown again"), "{text}");
        assert!(text.contains("portal scim token revoke entra"), "{text}");
    }
}
