//! `portal erasure verify|purge`: the printing around [`ops::erasure`], which searches every
//! database and queue for an erased person's data without keeping or showing it, and removes
//! their messages from the retry and dead-letter queues. `portal users erase` runs the purge
//! through [`purge_queues`] too.

use super::{check_links, Failure};
use crate::cli::{ErasureCommand, ErasurePurgeArgs, ErasureVerifyArgs};
use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};
use ops::erasure::{self, Database, ErasureError, Hit, Place, Progress, Purged, Report};
use ops::settings::OperatorArgs;
use platform::settings::NetworkArgs;
use serde_json::{json, Value};
use std::io::IsTerminal;
use uuid::Uuid;

pub async fn run(command: ErasureCommand) -> Result<(), Failure> {
    match command {
        ErasureCommand::Verify(args) => verify(args).await,
        ErasureCommand::Purge(args) => purge(args).await,
    }
}

/// The exit code an erasure tool's error deserves: 64 for an id that is not erased (asking
/// about the wrong person is a mistake trying again cannot mend), 2 out of reach, else 1.
fn failure(e: ErasureError) -> Failure {
    match e {
        ErasureError::NotErased(_) => Failure::usage(e),
        ErasureError::Unreachable(_) => Failure::unreachable(e),
        ErasureError::Failed(e) => Failure::from(e),
    }
}

/// The databases `verify` searches: auth_db, user_db and appointment_db as the operator
/// reaches them (or every database of auth_db's server), then each `--database`, each once.
async fn databases(
    args: &ErasureVerifyArgs,
    auth: &sqlx::PgPool,
) -> Result<Vec<Database>, Failure> {
    let op = &args.operator;
    let mut databases = if args.all_databases {
        erasure::databases_on_server(auth, &op.operator_auth_database_url)
            .await
            .map_err(failure)?
    } else {
        [
            &op.operator_auth_database_url,
            &op.operator_user_database_url,
            &op.operator_appointment_database_url,
        ]
        .into_iter()
        .map(|url| Database::from_url(url))
        .collect::<anyhow::Result<Vec<_>>>()
        .map_err(Failure::usage)?
    };
    for url in &args.databases {
        databases.push(
            Database::from_url(url).map_err(|e| Failure::usage(anyhow!("--database: {e:#}")))?,
        );
    }
    Ok(erasure::distinct(databases))
}

/// A bar on a terminal, nothing otherwise (a script's output stays the report).
fn bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

async fn verify(args: ErasureVerifyArgs) -> Result<(), Failure> {
    let op = &args.operator;
    check_links(&args.network, &[op.broker_link()])?;
    let auth = platform::db::lazy_pool(&op.operator_auth_database_url, 1)?;
    let databases = databases(&args, &auth).await?;
    let mut current: Option<ProgressBar> = None;
    let report = erasure::verify(
        &auth,
        args.user_id,
        &databases,
        &op.operator_amqp_url,
        &mut |p| match p {
            Progress::Database {
                name,
                estimated_rows,
                ..
            } => {
                if let Some(done) = current.take() {
                    done.finish_and_clear();
                }
                let next = bar(
                    estimated_rows,
                    "{spinner} {msg} [{bar:40}] {pos}/~{len} rows",
                );
                next.set_message(name.to_owned());
                current = Some(next);
            }
            Progress::Queues { messages, .. } => {
                if let Some(done) = current.take() {
                    done.finish_and_clear();
                }
                current = Some(bar(
                    messages,
                    "{spinner} queues [{bar:40}] {pos}/{len} messages",
                ));
            }
            Progress::Rows(n) | Progress::Messages(n) => {
                if let Some(bar) = &current {
                    // The statistics' estimate may be short of the truth.
                    if n > bar.length().unwrap_or(0) {
                        bar.set_length(n);
                    }
                    bar.set_position(n);
                }
            }
        },
    )
    .await;
    if let Some(done) = current.take() {
        done.finish_and_clear();
    }
    auth.close().await;
    let report = report.map_err(failure)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report_json(&report)).unwrap_or_default()
        );
    } else {
        for line in report_lines(&report) {
            println!("{line}");
        }
    }
    outcome(&report)
}

/// What `verify` prints: each hit, how many more were not listed, what could not be searched,
/// what could not be reached, and the final line.
pub fn report_lines(report: &Report) -> Vec<String> {
    let mut lines: Vec<String> = report.hits.iter().map(ToString::to_string).collect();
    let unlisted = report.hits_total - report.hits.len() as u64;
    if unlisted > 0 {
        lines.push(format!("... and {unlisted} more hits"));
    }
    lines.extend(
        report
            .not_searched
            .iter()
            .map(|n| format!("not searched: {n}")),
    );
    lines.extend(
        report
            .unreachable
            .iter()
            .map(|u| format!("not reached: {u}")),
    );
    lines.push(report.summary());
    if report.is_clean() && !report.not_searched.is_empty() {
        lines.push(format!(
            "({} places the operator's role cannot read were not searched: listed above; search \
             them as a role that can with --database)",
            report.not_searched.len()
        ));
    }
    lines
}

/// Exit 1 on any hit, else 2 when a database or the broker was out of reach, else 0.
fn outcome(report: &Report) -> Result<(), Failure> {
    if !report.is_clean() {
        return Err(anyhow!(
            "the erased data of {} is still there: {} hits",
            report.user,
            report.hits_total
        )
        .into());
    }
    if !report.unreachable.is_empty() {
        return Err(Failure::unreachable(anyhow!(
            "not everything was searched: cannot reach {}",
            report.unreachable.join("; ")
        )));
    }
    Ok(())
}

/// A hit as JSON: where (as its line says it and field by field) and what.
fn hit_json(hit: &Hit) -> Value {
    let found: Vec<&str> = [
        (hit.found.email, "email"),
        (hit.found.name, "name"),
        (hit.found.phone, "phone"),
    ]
    .into_iter()
    .filter_map(|(yes, what)| yes.then_some(what))
    .collect();
    let mut out = match &hit.place {
        Place::Row {
            database,
            schema,
            table,
            partition,
            ctid,
            row,
        } => json!({
            "kind": "row", "database": database, "schema": schema, "table": table,
            "partition": partition, "ctid": ctid, "row": row,
        }),
        Place::Message {
            queue,
            position,
            message_id,
        } => json!({
            "kind": "message", "queue": queue, "position": position, "messageId": message_id,
        }),
    };
    out["found"] = json!(found);
    out["at"] = json!(hit.to_string());
    out
}

/// `verify --json`.
fn report_json(report: &Report) -> Value {
    json!({
        "userId": report.user,
        "clean": report.is_clean(),
        "databases": report.databases,
        "tables": report.tables,
        "rows": report.rows,
        "queues": report.queues,
        "messages": report.messages,
        "hitsTotal": report.hits_total,
        "hits": report.hits.iter().map(hit_json).collect::<Vec<_>>(),
        "notSearched": report.not_searched,
        "unreachable": report.unreachable,
        "summary": report.summary(),
    })
}

/// Purges `user`'s messages from the queues as the operator, checking the broker's link first.
pub async fn purge_queues(
    operator: &OperatorArgs,
    network: &NetworkArgs,
    user: Uuid,
    tool: &str,
) -> Result<Purged, Failure> {
    check_links(network, &[operator.broker_link()])?;
    let amqp_url = &operator.operator_amqp_url;
    let by = super::who(tool, &platform::amqp::broker_user(amqp_url));
    let auth = platform::db::lazy_pool(&operator.operator_auth_database_url, 1)?;
    let done = erasure::purge(&auth, amqp_url, user, &by).await;
    auth.close().await;
    done.map_err(failure)
}

/// The lines a purge prints: one per queue that held something, and the total.
pub fn purge_lines(done: &Purged) -> Vec<String> {
    let mut lines: Vec<String> = done
        .queues
        .iter()
        .filter(|q| q.of > 0)
        .map(|q| format!("{:<48} removed {} of {}", q.queue, q.removed, q.of))
        .collect();
    lines.extend(done.failed.iter().map(|f| format!("not purged: {f}")));
    lines.push(format!(
        "purged {} messages of {} from {} queues{}",
        done.removed(),
        done.user,
        done.queues.len(),
        done.queues_purged_at
            .filter(|_| done.failed.is_empty())
            .map(|at| format!(" (recorded at {})", contract::Timestamp::from(at)))
            .unwrap_or_default()
    ));
    lines
}

/// Exit 1 when a queue could not be purged (what was removed stays removed; running it again
/// does the rest).
pub fn purge_outcome(done: &Purged) -> Result<(), Failure> {
    if done.failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(
            "{} queues could not be purged; run `portal erasure purge {}` again",
            done.failed.len(),
            done.user
        )
        .into())
    }
}

async fn purge(args: ErasurePurgeArgs) -> Result<(), Failure> {
    let done = purge_queues(
        &args.operator,
        &args.network,
        args.user_id,
        "portal erasure purge",
    )
    .await?;
    for line in purge_lines(&done) {
        println!("{line}");
    }
    purge_outcome(&done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ops::erasure::PurgedQueue;
    use platform::erasure::Found;

    #[test]
    fn verify_prints_each_hit_what_it_could_not_search_and_the_final_line() {
        let mut report = Report {
            user: Uuid::nil(),
            databases: vec!["auth_db".into()],
            rows: 10,
            queues: vec!["q".into()],
            messages: 1,
            not_searched: vec!["auth_db.public.users: columns password_hash not readable".into()],
            ..Report::default()
        };
        let lines = report_lines(&report);
        assert_eq!(
            lines,
            [
                "not searched: auth_db.public.users: columns password_hash not readable",
                "erasure verify: no trace of 00000000-0000-0000-0000-000000000000 in 1 \
                 databases (10 rows) and 1 queues (1 messages)",
                "(1 places the operator's role cannot read were not searched: listed above; \
                 search them as a role that can with --database)",
            ]
        );
        assert!(outcome(&report).is_ok(), "no hit, everything reached: 0");
        report.unreachable.push("RabbitMQ at amqp://…".into());
        assert_eq!(outcome(&report).err().map(|f| f.code), Some(2));
        report.hits.push(Hit {
            place: Place::Message {
                queue: "q".into(),
                position: 1,
                message_id: Some("m".into()),
            },
            found: Found {
                name: true,
                ..Found::default()
            },
        });
        report.hits_total = 3;
        let lines = report_lines(&report);
        assert_eq!(lines[0], "queue q message 1 (message-id m): name");
        assert_eq!(lines[1], "... and 2 more hits");
        assert_eq!(
            lines.last().map(String::as_str),
            Some("erasure verify: 3 hits")
        );
        assert_eq!(
            outcome(&report).err().map(|f| f.code),
            Some(1),
            "a hit wins over an outage"
        );
        let json = report_json(&report);
        assert_eq!(json["hits"][0]["found"], json!(["name"]));
        assert_eq!(json["hits"][0]["queue"], "q");
        assert_eq!(json["clean"], false);
    }

    #[test]
    fn a_purge_lists_the_queues_that_held_something_and_fails_when_one_was_not_purged() {
        let mut done = Purged {
            user: Uuid::nil(),
            queues: vec![
                PurgedQueue {
                    queue: "user-service.user-events.dlq".into(),
                    removed: 2,
                    of: 5,
                },
                PurgedQueue {
                    queue: "user.events.unrouted".into(),
                    removed: 0,
                    of: 0,
                },
            ],
            failed: vec![],
            queues_purged_at: None,
        };
        let lines = purge_lines(&done);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with("removed 2 of 5"), "{lines:?}");
        assert_eq!(
            lines[1],
            "purged 2 messages of 00000000-0000-0000-0000-000000000000 from 2 queues"
        );
        assert!(purge_outcome(&done).is_ok());
        done.failed.push("x.dlq: refused".into());
        assert_eq!(purge_outcome(&done).err().map(|f| f.code), Some(1));
    }
}
