//! `portal verify` for a consumer whose database the operator does not read: judged by its
//! receipts. A consumer outside the repository (another team's service, in another language)
//! keeps its copy in a database of its own that the operator's identity cannot reach and should
//! not: its schema is that team's, and reading it would hand the operator that team's data. What
//! the portal does hold is what the consumer confirmed: after each committed batch it publishes
//! a receipt (`portal.receipt`, on its own broker user), and the auth-service keeps, per
//! consumer and user, the highest version it confirmed (`auth_db.consumer_versions`).
//!
//! [`compare`] streams `auth_db`'s users in id order with that consumer's confirmed version
//! beside each (one query, memory flat): a user whose current `user_version` the consumer never
//! confirmed is `unconfirmed`, one it confirmed an older version of is `behind`, and one it
//! confirmed a version of that `auth_db` never wrote (restored from an older backup) is `ahead`.
//! What it cannot see is a copy altered behind the consumer's back after it confirmed: only the
//! consumer itself can compare its rows.

use crate::verify::VerifyError;
use futures::StreamExt;
use sqlx::PgPool;
use std::fmt;
use uuid::Uuid;

/// How a consumer's receipts differ from `auth_db` for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// It never confirmed any version of the user.
    Unconfirmed { auth_version: i64 },
    /// It confirmed an older version than the current one.
    Behind { auth_version: i64, confirmed: i64 },
    /// It confirmed a version greater than `auth_db`'s.
    Ahead { auth_version: i64, confirmed: i64 },
}

/// What the receipts of `confirmed` say about a user at `auth_version`, if anything is wrong.
pub fn judge(auth_version: i64, confirmed: Option<i64>) -> Option<Kind> {
    match confirmed {
        None => Some(Kind::Unconfirmed { auth_version }),
        Some(confirmed) if confirmed < auth_version => Some(Kind::Behind {
            auth_version,
            confirmed,
        }),
        Some(confirmed) if confirmed > auth_version => Some(Kind::Ahead {
            auth_version,
            confirmed,
        }),
        Some(_) => None,
    }
}

/// One user a consumer's receipts do not confirm as `auth_db` holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub id: Uuid,
    /// The user's email in `auth_db`.
    pub label: String,
    /// The consumer, e.g. `pharmacy`.
    pub consumer: String,
    pub kind: Kind,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Difference {
            id,
            label,
            consumer,
            kind,
        } = self;
        match kind {
            Kind::Unconfirmed { auth_version } => write!(
                f,
                "unconfirmed {id} {label}: {consumer} confirmed no version, auth_db has {auth_version}"
            ),
            Kind::Behind {
                auth_version,
                confirmed,
            } => write!(
                f,
                "behind   {id} {label}: {consumer} confirmed version {confirmed}, auth_db has {auth_version}"
            ),
            Kind::Ahead {
                auth_version,
                confirmed,
            } => write!(
                f,
                "ahead    {id} {label}: {consumer} confirmed version {confirmed}, auth_db only {auth_version}"
            ),
        }
    }
}

/// What the receipts of one consumer show.
#[derive(Debug, Default)]
pub struct Report {
    /// Users in `auth_db`.
    pub checked: u64,
    pub unconfirmed: u64,
    pub behind: u64,
    pub ahead: u64,
    /// The first differences, in id order (at most the requested number).
    pub listed: Vec<Difference>,
}

impl Report {
    pub fn total_differences(&self) -> usize {
        (self.unconfirmed + self.behind + self.ahead) as usize
    }

    pub fn is_in_sync(&self) -> bool {
        self.total_differences() == 0
    }

    pub fn summary(&self) -> String {
        format!(
            "out of sync: {} differences among {} users (unconfirmed {}, behind {}, ahead {})",
            self.total_differences(),
            self.checked,
            self.unconfirmed,
            self.behind,
            self.ahead
        )
    }

    fn record(&mut self, d: Difference, max_listed: usize) {
        match d.kind {
            Kind::Unconfirmed { .. } => self.unconfirmed += 1,
            Kind::Behind { .. } => self.behind += 1,
            Kind::Ahead { .. } => self.ahead += 1,
        }
        if self.listed.len() < max_listed {
            self.listed.push(d);
        }
    }
}

/// Compares every user of `auth_db` (`auth`, as the operator reads it) with the version
/// `consumer` last confirmed of it; lists the first `max_listed` differences and counts all.
pub async fn compare(
    auth: &PgPool,
    consumer: &str,
    max_listed: usize,
) -> Result<Report, VerifyError> {
    let failed = |source: sqlx::Error| {
        if platform::db::is_unavailable(&source) {
            VerifyError::Unreachable {
                database: "auth_db",
                source,
            }
        } else {
            VerifyError::Query {
                database: "auth_db",
                source,
            }
        }
    };
    sqlx::query("SELECT 1")
        .execute(auth)
        .await
        .map_err(failed)?;
    let mut rows = sqlx::query_as::<_, (Uuid, String, i64, Option<i64>)>(
        "SELECT u.id, u.email, u.user_version, v.user_version \
         FROM users u LEFT JOIN consumer_versions v ON v.consumer = $1 AND v.user_id = u.id \
         ORDER BY u.id",
    )
    .bind(consumer)
    .fetch(auth);
    let mut report = Report::default();
    while let Some(row) = rows.next().await {
        let (id, email, auth_version, confirmed) = row.map_err(failed)?;
        report.checked += 1;
        if let Some(kind) = judge(auth_version, confirmed) {
            let difference = Difference {
                id,
                label: email,
                consumer: consumer.to_owned(),
                kind,
            };
            report.record(difference, max_listed);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_in_sync_only_at_the_version_auth_db_holds() {
        assert_eq!(judge(3, Some(3)), None);
        assert_eq!(judge(3, None), Some(Kind::Unconfirmed { auth_version: 3 }));
        assert_eq!(
            judge(3, Some(2)),
            Some(Kind::Behind {
                auth_version: 3,
                confirmed: 2
            })
        );
        assert_eq!(
            judge(3, Some(5)),
            Some(Kind::Ahead {
                auth_version: 3,
                confirmed: 5
            })
        );
    }

    #[test]
    fn differences_are_counted_listed_and_told_in_words() {
        let mut report = Report {
            checked: 3,
            ..Report::default()
        };
        let d = |kind| Difference {
            id: Uuid::nil(),
            label: "a@b.co".into(),
            consumer: "pharmacy".into(),
            kind,
        };
        report.record(d(Kind::Unconfirmed { auth_version: 1 }), 1);
        report.record(
            d(Kind::Behind {
                auth_version: 4,
                confirmed: 2,
            }),
            1,
        );
        assert_eq!(report.listed.len(), 1);
        assert!(!report.is_in_sync());
        assert_eq!(
            report.summary(),
            "out of sync: 2 differences among 3 users (unconfirmed 1, behind 1, ahead 0)"
        );
        assert_eq!(
            report.listed[0].to_string(),
            "unconfirmed 00000000-0000-0000-0000-000000000000 a@b.co: pharmacy confirmed no \
             version, auth_db has 1"
        );
        assert!(d(Kind::Behind {
            auth_version: 4,
            confirmed: 2
        })
        .to_string()
        .ends_with("a@b.co: pharmacy confirmed version 2, auth_db has 4"));
    }
}
