//! `portal migrate status`: where the schema of each database (auth_db, user_db,
//! appointment_db) stands against the migrations this binary embeds, read as the operator
//! before and after an upgrade: the latest migration applied, the binary's migrations still
//! pending, applied ones the binary does not know (the database is newer: running this binary
//! on it is a downgrade) and migrations whose SQL differs from what ran. It only reads:
//! migrating is the setup's job (`portal setup`, as the migration role that owns the schemas).
//!
//! Exit 0 when every database is exactly at this binary's level, 1 when one is not (or its
//! bookkeeping cannot be read), 2 when one cannot be reached; the others are still reported.
//! `--json` prints the same as one JSON object.

use super::verify::and_list;
use super::Failure;
use crate::cli::MigrateStatusCommand;
use anyhow::anyhow;
use chrono::{DateTime, Utc};
use ops::settings::OperatorArgs;
use platform::migrations::{Applied, Standing};
use serde_json::{json, Value};
use sqlx::migrate::Migrator;

/// One database `migrate status` reads.
#[derive(Debug, Clone, Copy)]
pub struct Database<'a> {
    /// The service whose schema it is.
    pub service: &'static str,
    pub database: &'static str,
    /// The setting of `url`, to name in an error about it.
    pub setting: &'static str,
    /// The service's migrations as this binary embeds them.
    pub migrations: &'static Migrator,
    pub url: &'a str,
}

/// The three databases, each with the operator's URL of it.
pub fn databases(operator: &OperatorArgs) -> [Database<'_>; 3] {
    [
        Database {
            service: "auth-service",
            database: "auth_db",
            setting: "OPERATOR_AUTH_DATABASE_URL",
            migrations: &auth_service::MIGRATIONS,
            url: &operator.operator_auth_database_url,
        },
        Database {
            service: "user-service",
            database: "user_db",
            setting: "OPERATOR_USER_DATABASE_URL",
            migrations: &user_service::MIGRATIONS,
            url: &operator.operator_user_database_url,
        },
        Database {
            service: "appointment-service",
            database: "appointment_db",
            setting: "OPERATOR_APPOINTMENT_DATABASE_URL",
            migrations: &appointment_service::MIGRATIONS,
            url: &operator.operator_appointment_database_url,
        },
    ]
}

/// What reading one database's bookkeeping gave.
#[derive(Debug)]
pub enum Outcome {
    Read(Standing),
    /// No connection: the exit code says 2, and nothing is known of the schema.
    Unreachable(String),
    /// Connected, but `_sqlx_migrations` could not be read (a missing grant, say).
    Unreadable(String),
}

impl Outcome {
    fn is_current(&self) -> bool {
        matches!(self, Outcome::Read(s) if s.is_current())
    }
}

/// The hint printed when migrations are pending: the operator's role may not change a schema.
pub const RUN_SETUP: &str = "run `portal setup` (the migration role applies them)";

/// The problems of a standing, in the words of the text and of the failure message.
fn problems(standing: &Standing) -> Vec<String> {
    let mut problems = Vec::new();
    if !standing.pending.is_empty() {
        problems.push(format!(
            "behind: {} of {} migrations pending",
            standing.pending.len(),
            standing.known
        ));
    }
    if !standing.unknown.is_empty() {
        problems.push(format!(
            "newer than this binary: {} applied {} it does not know (a downgrade)",
            standing.unknown.len(),
            migrations_word(standing.unknown.len())
        ));
    }
    if !standing.mismatched.is_empty() {
        problems.push(format!(
            "checksum mismatch in {} applied {}",
            standing.mismatched.len(),
            migrations_word(standing.mismatched.len())
        ));
    }
    if !standing.failed.is_empty() {
        problems.push(format!(
            "{} {} failed part-way",
            standing.failed.len(),
            migrations_word(standing.failed.len())
        ));
    }
    problems
}

/// Each kind of problem a standing has: its key in the JSON, and its words in the closing
/// message.
fn kinds(standing: &Standing) -> Vec<(&'static str, &'static str)> {
    [
        (!standing.pending.is_empty(), "behind", "behind"),
        (
            !standing.unknown.is_empty(),
            "newer_than_binary",
            "newer than this binary",
        ),
        (
            !standing.mismatched.is_empty(),
            "checksum_mismatch",
            "mismatched",
        ),
        (!standing.failed.is_empty(), "failed", "half migrated"),
    ]
    .into_iter()
    .filter(|(has, _, _)| *has)
    .map(|(_, key, words)| (key, words))
    .collect()
}

fn migrations_word(n: usize) -> &'static str {
    if n == 1 {
        "migration"
    } else {
        "migrations"
    }
}

fn when(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn applied_line(a: &Applied) -> String {
    format!(
        "{} {} (applied {})",
        a.version,
        a.description,
        when(&a.installed_on)
    )
}

/// The lines `migrate status` prints for one database.
pub fn report_lines(db: &Database<'_>, outcome: &Outcome) -> Vec<String> {
    let heading = format!("{} ({})", db.service, db.database);
    let standing = match outcome {
        Outcome::Unreachable(e) => return vec![format!("{heading}: cannot reach: {e}")],
        Outcome::Unreadable(e) => {
            return vec![format!("{heading}: cannot read _sqlx_migrations: {e}")]
        }
        Outcome::Read(standing) => standing,
    };
    let verdict = if standing.is_current() {
        format!(
            "current ({} of {} migrations applied)",
            standing.known, standing.known
        )
    } else {
        problems(standing).join("; ")
    };
    let mut lines = vec![format!("{heading}: {verdict}")];
    lines.push(match &standing.latest {
        Some(a) => format!("  latest: {}", applied_line(a)),
        None => "  latest: none applied".to_owned(),
    });
    for m in &standing.pending {
        lines.push(format!("  pending: {} {}", m.version, m.description));
    }
    for a in &standing.unknown {
        lines.push(format!("  unknown to this binary: {}", applied_line(a)));
    }
    for a in &standing.mismatched {
        lines.push(format!("  checksum differs: {}", applied_line(a)));
    }
    for a in &standing.failed {
        lines.push(format!("  failed part-way: {}", applied_line(a)));
    }
    // What to do, once per kind of problem. Pending migrations are the one case the setup
    // mends; with the others it would refuse (sqlx checks what ran), so they say so.
    if !standing.pending.is_empty() {
        lines.push(format!("  {RUN_SETUP}"));
    }
    if !standing.unknown.is_empty() {
        lines.push(
            "  a newer build migrated this database: run that build (or a later one), not this one"
                .to_owned(),
        );
    }
    if !standing.mismatched.is_empty() {
        lines.push(
            "  a migration was changed after it ran: `portal setup` refuses to migrate past it"
                .to_owned(),
        );
    }
    lines
}

/// One database in the `--json` object.
pub fn as_json(db: &Database<'_>, outcome: &Outcome) -> Value {
    let applied = |a: &Applied| {
        json!({
            "version": a.version,
            "description": a.description,
            "installed_on": a.installed_on,
        })
    };
    let mut out = json!({ "service": db.service, "database": db.database });
    let fields = match outcome {
        Outcome::Unreachable(e) => json!({ "status": "unreachable", "error": e }),
        Outcome::Unreadable(e) => json!({ "status": "unreadable", "error": e }),
        Outcome::Read(s) => json!({
            "status": if s.is_current() { "current" } else { "not_current" },
            "problems": kinds(s).iter().map(|(key, _)| *key).collect::<Vec<_>>(),
            "known": s.known,
            "latest": s.latest.as_ref().map(applied),
            "pending": s.pending.iter()
                .map(|m| json!({ "version": m.version, "description": m.description }))
                .collect::<Vec<_>>(),
            "unknown": s.unknown.iter().map(applied).collect::<Vec<_>>(),
            "checksum_mismatch": s.mismatched.iter().map(applied).collect::<Vec<_>>(),
            "failed": s.failed.iter().map(applied).collect::<Vec<_>>(),
        }),
    };
    if let (Some(out), Value::Object(fields)) = (out.as_object_mut(), fields) {
        out.extend(fields);
    }
    out
}

/// Reads one database's bookkeeping.
async fn read(db: &Database<'_>, pool: &sqlx::PgPool) -> Outcome {
    let outcome = match platform::migrations::standing(pool, db.migrations).await {
        Ok(standing) => Outcome::Read(standing),
        Err(e) if platform::db::is_unavailable(&e) => Outcome::Unreachable(e.to_string()),
        Err(e) => Outcome::Unreadable(e.to_string()),
    };
    pool.close().await;
    outcome
}

pub async fn run(c: &MigrateStatusCommand) -> Result<(), Failure> {
    let databases = databases(&c.operator);
    // Every URL is checked before any is used: a bad one is a setting to fix (64), not an
    // outage.
    let mut pools = Vec::new();
    for db in &databases {
        pools.push(
            platform::db::lazy_pool(db.url, 1)
                .map_err(|e| Failure::usage(e.context(db.setting)))?,
        );
    }
    // At once: an unreachable database costs its connect timeout, not one per database.
    let outcomes = futures::future::join_all(
        databases
            .iter()
            .zip(&pools)
            .map(|(db, pool)| read(db, pool)),
    )
    .await;

    if c.json {
        let object = json!({
            "binary": platform::build::VERSION,
            "ok": outcomes.iter().all(Outcome::is_current),
            "databases": databases.iter().zip(&outcomes)
                .map(|(db, outcome)| as_json(db, outcome))
                .collect::<Vec<_>>(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&object).unwrap_or_default()
        );
    } else {
        for (db, outcome) in databases.iter().zip(&outcomes) {
            for line in report_lines(db, outcome) {
                println!("{line}");
            }
        }
    }
    verdict(&databases, &outcomes)
}

/// The exit code and closing message: 2 when any database could not be reached, else 1 when
/// any is not exactly at this binary's level.
fn verdict(databases: &[Database<'_>], outcomes: &[Outcome]) -> Result<(), Failure> {
    let named = |keep: fn(&Outcome) -> bool| -> Vec<&str> {
        databases
            .iter()
            .zip(outcomes)
            .filter(|(_, o)| keep(o))
            .map(|(db, _)| db.database)
            .collect()
    };
    let unreachable = named(|o| matches!(o, Outcome::Unreachable(_)));
    let unreadable = named(|o| matches!(o, Outcome::Unreadable(_)));
    let differ: Vec<String> = databases
        .iter()
        .zip(outcomes)
        .filter_map(|(db, o)| match o {
            Outcome::Read(s) if !s.is_current() => {
                let words: Vec<&str> = kinds(s).iter().map(|(_, words)| *words).collect();
                Some(format!("{} is {}", db.database, and_list(&words)))
            }
            _ => None,
        })
        .collect();
    let mut reasons = differ;
    if !unreadable.is_empty() {
        reasons.push(format!("cannot read {}", and_list(&unreadable)));
    }
    let below = (!reasons.is_empty())
        .then(|| format!("not at this binary's schema level: {}", reasons.join(", ")));
    // An outage decides the exit code (2: try again later), but what the reachable databases
    // showed is still said.
    if !unreachable.is_empty() {
        let reach = format!("cannot reach {}", and_list(&unreachable));
        return Err(Failure::unreachable(anyhow!(match below {
            Some(below) => format!("{reach}; {below}"),
            None => reach,
        })));
    }
    match below {
        Some(below) => Err(anyhow!(below).into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::migrations::Known;

    fn db() -> Database<'static> {
        Database {
            service: "user-service",
            database: "user_db",
            setting: "OPERATOR_USER_DATABASE_URL",
            migrations: &user_service::MIGRATIONS,
            url: "postgres://x@127.0.0.1/user_db",
        }
    }

    fn applied(version: i64, description: &str) -> Applied {
        Applied {
            version,
            description: description.into(),
            installed_on: DateTime::<Utc>::UNIX_EPOCH,
            success: true,
            checksum: Vec::new(),
        }
    }

    #[test]
    fn a_current_database_says_so_with_its_latest_migration() {
        let current = Outcome::Read(Standing {
            known: 1,
            latest: Some(applied(1, "users")),
            ..Standing::default()
        });
        assert_eq!(
            report_lines(&db(), &current),
            [
                "user-service (user_db): current (1 of 1 migrations applied)",
                "  latest: 1 users (applied 1970-01-01 00:00:00 UTC)"
            ]
        );
        assert!(verdict(&[db()], &[current]).is_ok());
    }

    #[test]
    fn pending_migrations_are_listed_with_the_way_to_apply_them() {
        let behind = Outcome::Read(Standing {
            known: 2,
            latest: Some(applied(1, "users")),
            pending: vec![Known {
                version: 2,
                description: "phones".into(),
            }],
            ..Standing::default()
        });
        let lines = report_lines(&db(), &behind);
        assert_eq!(
            lines[0],
            "user-service (user_db): behind: 1 of 2 migrations pending"
        );
        assert!(
            lines.contains(&"  pending: 2 phones".to_owned()),
            "{lines:?}"
        );
        assert!(lines.contains(&format!("  {RUN_SETUP}")), "{lines:?}");
        let failure = verdict(&[db()], &[behind]).unwrap_err();
        assert_eq!(failure.code, 1);
        assert_eq!(
            failure.error.to_string(),
            "not at this binary's schema level: user_db is behind"
        );
    }

    #[test]
    fn a_newer_database_is_never_ok_and_an_unreachable_one_wins_the_exit_code() {
        let newer = Outcome::Read(Standing {
            known: 1,
            latest: Some(applied(9, "later")),
            unknown: vec![applied(9, "later")],
            ..Standing::default()
        });
        let lines = report_lines(&db(), &newer);
        assert!(lines[0].contains("newer than this binary"), "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains(RUN_SETUP)), "{lines:?}");
        assert_eq!(verdict(&[db()], &[newer]).unwrap_err().code, 1);
        let both = [
            Outcome::Unreachable("refused".into()),
            Outcome::Read(Standing::default()),
        ];
        let failure = verdict(&[db(), db()], &both).unwrap_err();
        assert_eq!(
            (failure.code, failure.error.to_string()),
            (2, "cannot reach user_db".to_owned())
        );
        let with_newer = [
            Outcome::Unreachable("refused".into()),
            Outcome::Read(Standing {
                unknown: vec![applied(9, "later")],
                ..Standing::default()
            }),
        ];
        assert_eq!(
            verdict(&[db(), db()], &with_newer)
                .unwrap_err()
                .error
                .to_string(),
            "cannot reach user_db; not at this binary's schema level: user_db is newer than this \
             binary"
        );
    }

    #[test]
    fn the_json_of_a_database_names_its_status_and_problems() {
        let behind = Outcome::Read(Standing {
            known: 1,
            pending: vec![Known {
                version: 1,
                description: "users".into(),
            }],
            ..Standing::default()
        });
        let value = as_json(&db(), &behind);
        assert_eq!(value["database"], "user_db");
        assert_eq!(value["status"], "not_current");
        assert_eq!(value["problems"], json!(["behind"]));
        assert_eq!(value["pending"][0]["version"], 1);
        assert_eq!(value["latest"], Value::Null);
        let down = as_json(&db(), &Outcome::Unreachable("refused".into()));
        assert_eq!(
            (down["status"].as_str(), down["error"].as_str()),
            (Some("unreachable"), Some("refused"))
        );
    }
}
