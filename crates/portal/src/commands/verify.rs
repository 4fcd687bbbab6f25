//! `portal verify`: compares `auth_db` with every registered consumer and prints one section per
//! consumer: `<service> (<database>): in sync: N users`, or the summary of its differences
//! followed by the first of them. The copies the operator reads (`user_db`, `appointment_db`)
//! are compared row by row; every other registered consumer, whose database belongs to its own
//! team, by the versions its receipts confirmed (`ops::receipts`: `<name> (receipts)`). Exits 0
//! when every consumer is in sync, 1 on differences in any, 2 when a database cannot be reached
//! (the consumers it could reach are still reported).

use super::Failure;
use anyhow::anyhow;
use ops::receipts;
use ops::settings::OperatorArgs;
use ops::verify::{self, CopySpec, Report, VerifyError};

/// The copies `verify` and `reconcile` cover, each with the operator's URL of its database.
pub fn copies(operator: &OperatorArgs) -> [(&'static CopySpec, &str); 2] {
    [
        (&verify::USER_SERVICE, &operator.operator_user_database_url),
        (
            &verify::APPOINTMENT_SERVICE,
            &operator.operator_appointment_database_url,
        ),
    ]
}

/// The lines `verify` prints for one copy.
pub fn report_lines(copy: &CopySpec, report: &Report) -> Vec<String> {
    let heading = format!("{} ({})", copy.service, copy.database);
    match report.is_in_sync() {
        true => vec![format!("{heading}: in sync: {} users", report.checked)],
        false => differences(
            &heading,
            &report.summary(),
            &report.listed,
            report.total_differences(),
        ),
    }
}

/// A heading with the summary, each listed difference, and how many more there are.
fn differences<D: std::fmt::Display>(
    heading: &str,
    summary: &str,
    listed: &[D],
    total: usize,
) -> Vec<String> {
    let mut lines = vec![format!("{heading}: {summary}")];
    lines.extend(listed.iter().map(|d| format!("  {d}")));
    let unlisted = total - listed.len();
    if unlisted > 0 {
        lines.push(format!("  ... and {unlisted} more"));
    }
    lines
}

/// "a", "a and b", "a, b and c".
pub fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The lines `verify` prints for a consumer judged by its receipts.
pub fn receipt_lines(consumer: &str, report: &receipts::Report) -> Vec<String> {
    let heading = format!("{consumer} (receipts)");
    match report.is_in_sync() {
        true => vec![format!(
            "{heading}: in sync: {} users confirmed",
            report.checked
        )],
        false => differences(
            &heading,
            &report.summary(),
            &report.listed,
            report.total_differences(),
        ),
    }
}

/// Exit 2 for `auth_db` out of reach, else 1.
fn authority_failure(e: VerifyError) -> Failure {
    match e {
        VerifyError::Unreachable { .. } => Failure::unreachable(e),
        other => Failure::from(anyhow::Error::from(other)),
    }
}

pub async fn run(operator: &OperatorArgs, max_listed: usize) -> Result<(), Failure> {
    let auth = platform::db::lazy_pool(&operator.operator_auth_database_url, 1)?;
    let mut differ: Vec<String> = Vec::new();
    let mut unreachable = Vec::new();
    let mut failed = Vec::new();
    for (copy, url) in copies(operator) {
        let pool = platform::db::lazy_pool(url, 1)?;
        match verify::compare(&auth, copy, &pool, verify::Options::listing(max_listed)).await {
            Ok(report) => {
                for line in report_lines(copy, &report) {
                    println!("{line}");
                }
                if !report.is_in_sync() {
                    differ.push(copy.database.to_owned());
                }
            }
            // Without the authority no copy can be compared: stop at once.
            Err(e) if e.database() == "auth_db" => return Err(authority_failure(e)),
            // The other copies are still worth comparing.
            Err(e) => {
                println!("{} ({}): not compared: {e}", copy.service, copy.database);
                match e {
                    VerifyError::Unreachable { database, .. } => unreachable.push(database),
                    VerifyError::Query { database, .. } => failed.push(database),
                }
            }
        }
    }
    // Every other registered consumer: its database is its own team's, so by its receipts.
    let registered = auth_service::consumers::registered(&auth)
        .await
        .map_err(|source| {
            authority_failure(match platform::db::is_unavailable(&source) {
                true => VerifyError::Unreachable {
                    database: "auth_db",
                    source,
                },
                false => VerifyError::Query {
                    database: "auth_db",
                    source,
                },
            })
        })?;
    let by_copy: Vec<&str> = copies(operator).iter().map(|(c, _)| c.service).collect();
    for consumer in registered
        .iter()
        .filter(|c| !by_copy.contains(&c.name.as_str()))
    {
        let report = receipts::compare(&auth, &consumer.name, max_listed)
            .await
            .map_err(authority_failure)?;
        for line in receipt_lines(&consumer.name, &report) {
            println!("{line}");
        }
        if !report.is_in_sync() {
            differ.push(format!("{}'s receipts", consumer.name));
        }
    }
    if !unreachable.is_empty() {
        return Err(Failure::unreachable(anyhow!(
            "cannot reach {}",
            and_list(&unreachable)
        )));
    }
    if !failed.is_empty() {
        return Err(anyhow!("cannot read {}", and_list(&failed)).into());
    }
    if differ.is_empty() {
        return Ok(());
    }
    let differ: Vec<&str> = differ.iter().map(String::as_str).collect();
    Err(anyhow!(
        "out of sync: {} {} from auth_db",
        and_list(&differ),
        if differ.len() == 1 {
            "differs"
        } else {
            "differ"
        }
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ops::verify::{Difference, Kind};

    #[test]
    fn each_copy_is_reported_under_its_service() {
        let in_sync = Report {
            checked: 10,
            ..Report::default()
        };
        assert_eq!(
            report_lines(&verify::APPOINTMENT_SERVICE, &in_sync),
            ["appointment-service (appointment_db): in sync: 10 users"]
        );
        let mut drift = Report {
            checked: 10,
            ..Report::default()
        };
        for _ in 0..2 {
            drift.record(
                Difference {
                    id: uuid::Uuid::nil(),
                    label: "a@b.co".into(),
                    database: "user_db",
                    kind: Kind::Missing,
                },
                1,
            );
        }
        assert_eq!(
            report_lines(&verify::USER_SERVICE, &drift),
            [
                "user-service (user_db): out of sync: 2 differences among 10 users (missing 2, \
                 stale 0, mismatched 0, extra 0)",
                "  missing  00000000-0000-0000-0000-000000000000 a@b.co: in auth_db, not in user_db",
                "  ... and 1 more"
            ]
        );
    }

    #[test]
    fn a_consumer_judged_by_its_receipts_is_reported_under_its_name() {
        let in_sync = receipts::Report {
            checked: 4,
            ..receipts::Report::default()
        };
        assert_eq!(
            receipt_lines("pharmacy", &in_sync),
            ["pharmacy (receipts): in sync: 4 users confirmed"]
        );
        let behind = receipts::Report {
            checked: 4,
            behind: 1,
            listed: vec![receipts::Difference {
                id: uuid::Uuid::nil(),
                label: "a@b.co".into(),
                consumer: "pharmacy".into(),
                kind: receipts::Kind::Behind {
                    auth_version: 3,
                    confirmed: 2,
                },
            }],
            ..receipts::Report::default()
        };
        assert_eq!(
            receipt_lines("pharmacy", &behind),
            [
                "pharmacy (receipts): out of sync: 1 differences among 4 users (unconfirmed 0, \
                 behind 1, ahead 0)",
                "  behind   00000000-0000-0000-0000-000000000000 a@b.co: pharmacy confirmed \
                 version 2, auth_db has 3"
            ]
        );
    }

    #[test]
    fn lists_read_as_text() {
        assert_eq!(and_list(&["user_db"]), "user_db");
        assert_eq!(
            and_list(&["user_db", "appointment_db"]),
            "user_db and appointment_db"
        );
        assert_eq!(and_list(&["a", "b", "c"]), "a, b and c");
    }
}
