//! The comparison behind `portal verify`: streams `auth_db` and `user_db` in id order and merges
//! them, so memory stays flat however many users there are.

use futures::stream::{BoxStream, StreamExt};
use platform::users::{UserRecord, RECORD_COLUMNS};
use sqlx::PgPool;
use std::collections::HashSet;
use std::fmt;
use uuid::Uuid;

/// Both sides are read in id order (whole, or only the given ids): only the current row of each
/// is held.
fn query(only_some: bool) -> String {
    let filter = if only_some { "WHERE id = ANY($1)" } else { "" };
    format!("SELECT {RECORD_COLUMNS} FROM users {filter} ORDER BY id")
}

#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    /// In `auth_db`, not in `user_db`.
    Missing { id: Uuid, email: String },
    /// In `user_db` only.
    Extra { id: Uuid, email: String },
    /// `user_db` holds an older version.
    Stale {
        id: Uuid,
        email: String,
        auth_version: Option<i64>,
        user_version: Option<i64>,
    },
    /// `user_db` holds a version `auth_db` never wrote (forged or corrupt): greater than the
    /// authority's. Counted with the mismatches; the ordinary rule would keep it forever, so its
    /// repair moves `auth_db`'s version past it first.
    Ahead {
        id: Uuid,
        email: String,
        auth_version: Option<i64>,
        user_version: Option<i64>,
    },
    /// Same version, different value (changed behind the system's back).
    Mismatch {
        id: Uuid,
        email: String,
        field: &'static str,
        auth: String,
        user: String,
    },
}

impl Difference {
    pub fn id(&self) -> Uuid {
        match self {
            Difference::Missing { id, .. }
            | Difference::Extra { id, .. }
            | Difference::Stale { id, .. }
            | Difference::Ahead { id, .. }
            | Difference::Mismatch { id, .. } => *id,
        }
    }

    /// The version `user_db` holds when it is ahead of `auth_db`: what a repair must pass.
    pub fn version_to_pass(&self) -> Option<i64> {
        match self {
            Difference::Ahead { user_version, .. } => *user_version,
            _ => None,
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |v: &Option<i64>| v.map_or("none".to_owned(), |v| v.to_string());
        match self {
            Difference::Missing { id, email } => {
                write!(f, "missing  {id} {email}: in auth_db, not in user_db")
            }
            Difference::Extra { id, email } => {
                write!(f, "extra    {id} {email}: in user_db, not in auth_db")
            }
            Difference::Stale {
                id,
                email,
                auth_version,
                user_version,
            } => write!(
                f,
                "stale    {id} {email}: user_db has version {}, auth_db has {}",
                v(user_version),
                v(auth_version)
            ),
            Difference::Ahead {
                id,
                email,
                auth_version,
                user_version,
            } => write!(
                f,
                "ahead    {id} {email}: user_db has version {}, auth_db only {}",
                v(user_version),
                v(auth_version)
            ),
            Difference::Mismatch {
                id,
                email,
                field,
                auth,
                user,
            } => write!(
                f,
                "mismatch {id} {email}: {field} is {user:?} in user_db, {auth:?} in auth_db"
            ),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    /// Users in `auth_db`.
    pub checked: u64,
    pub missing: u64,
    pub extra: u64,
    pub stale: u64,
    pub mismatched: u64,
    /// The first differences, in id order (at most the requested number).
    pub listed: Vec<Difference>,
}

impl Report {
    pub fn total_differences(&self) -> usize {
        (self.missing + self.extra + self.stale + self.mismatched) as usize
    }

    pub fn is_in_sync(&self) -> bool {
        self.total_differences() == 0
    }

    pub fn summary(&self) -> String {
        format!(
            "out of sync: {} differences among {} users (missing {}, stale {}, mismatched {}, extra {})",
            self.total_differences(),
            self.checked,
            self.missing,
            self.stale,
            self.mismatched,
            self.extra
        )
    }

    pub fn record(&mut self, d: Difference, max_listed: usize) {
        match d {
            Difference::Missing { .. } => self.missing += 1,
            Difference::Extra { .. } => self.extra += 1,
            Difference::Stale { .. } => self.stale += 1,
            Difference::Ahead { .. } | Difference::Mismatch { .. } => self.mismatched += 1,
        }
        if self.listed.len() < max_listed {
            self.listed.push(d);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot reach {database}: {source}")]
    Unreachable {
        database: &'static str,
        source: sqlx::Error,
    },
    #[error("reading {database}: {source}")]
    Query {
        database: &'static str,
        source: sqlx::Error,
    },
}

fn classify(database: &'static str) -> impl Fn(sqlx::Error) -> VerifyError {
    move |source| {
        if platform::db::is_unavailable(&source) {
            VerifyError::Unreachable { database, source }
        } else {
            VerifyError::Query { database, source }
        }
    }
}

/// The first field that differs between two rows of the same user, if any.
fn first_mismatch(a: &UserRecord, u: &UserRecord) -> Option<(&'static str, String, String)> {
    macro_rules! check {
        ($($field:ident => $name:literal),*) => {$(
            if a.$field != u.$field {
                return Some(($name, format!("{:?}", a.$field), format!("{:?}", u.$field)));
            }
        )*};
    }
    check!(
        user_version => "userVersion",
        email => "email",
        first_name => "firstName",
        last_name => "lastName",
        role => "role",
        phone_number => "phoneNumber",
        is_active => "isActive",
        must_change_password => "mustChangePassword",
        created_at => "createdAt"
    );
    None
}

fn compare_pair(a: &UserRecord, u: &UserRecord) -> Option<Difference> {
    if let (Some(av), Some(uv)) = (a.user_version, u.user_version) {
        if uv > av {
            return Some(Difference::Ahead {
                id: a.id,
                email: a.email.clone(),
                auth_version: a.user_version,
                user_version: u.user_version,
            });
        }
    }
    let older = match (a.user_version, u.user_version) {
        (Some(av), Some(uv)) => uv < av,
        (Some(_), None) => true,
        _ => false,
    };
    if older {
        return Some(Difference::Stale {
            id: a.id,
            email: a.email.clone(),
            auth_version: a.user_version,
            user_version: u.user_version,
        });
    }
    first_mismatch(a, u).map(|(field, auth, user)| Difference::Mismatch {
        id: a.id,
        email: a.email.clone(),
        field,
        auth,
        user,
    })
}

/// Compares every user of both databases; lists at most `max_listed` differences.
pub async fn compare(
    auth: &PgPool,
    users: &PgPool,
    max_listed: usize,
) -> Result<Report, VerifyError> {
    let mut report = Report::default();
    let checked = compare_each(auth, users, |d| report.record(d, max_listed)).await?;
    report.checked = checked;
    Ok(report)
}

/// Streams both databases in id order and calls `on_difference` for each difference; returns
/// how many users `auth_db` holds. Memory stays flat: only the current row of each side is held.
pub async fn compare_each(
    auth: &PgPool,
    users: &PgPool,
    on_difference: impl FnMut(Difference),
) -> Result<u64, VerifyError> {
    compare_streams(auth, users, None, on_difference).await
}

/// The ids among `ids` that `verify` would still report (how `reconcile` confirms a repair).
pub async fn still_different(
    auth: &PgPool,
    users: &PgPool,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, VerifyError> {
    let mut different = HashSet::new();
    compare_streams(auth, users, Some(ids), |d| {
        different.insert(d.id());
    })
    .await?;
    Ok(different)
}

async fn compare_streams(
    auth: &PgPool,
    users: &PgPool,
    only: Option<&[Uuid]>,
    mut on_difference: impl FnMut(Difference),
) -> Result<u64, VerifyError> {
    // Reach both first, so "cannot connect" is told apart from a failure mid-stream.
    sqlx::query("SELECT 1")
        .execute(auth)
        .await
        .map_err(classify("auth_db"))?;
    sqlx::query("SELECT 1")
        .execute(users)
        .await
        .map_err(classify("user_db"))?;
    let sql = query(only.is_some());
    let read = |pool| -> BoxStream<'_, Result<UserRecord, sqlx::Error>> {
        match only {
            Some(ids) => sqlx::query_as(&sql).bind(ids).fetch(pool),
            None => sqlx::query_as(&sql).fetch(pool),
        }
    };
    let mut a = read(auth);
    let mut u = read(users);
    let mut checked = 0;
    let mut next_a = a.next().await.transpose().map_err(classify("auth_db"))?;
    let mut next_u = u.next().await.transpose().map_err(classify("user_db"))?;
    loop {
        match (&next_a, &next_u) {
            (None, None) => break,
            (Some(x), Some(y)) if x.id == y.id => {
                checked += 1;
                if let Some(d) = compare_pair(x, y) {
                    on_difference(d);
                }
                next_a = a.next().await.transpose().map_err(classify("auth_db"))?;
                next_u = u.next().await.transpose().map_err(classify("user_db"))?;
            }
            (Some(x), y) if y.as_ref().is_none_or(|y| x.id < y.id) => {
                checked += 1;
                on_difference(Difference::Missing {
                    id: x.id,
                    email: x.email.clone(),
                });
                next_a = a.next().await.transpose().map_err(classify("auth_db"))?;
            }
            (_, Some(y)) => {
                on_difference(Difference::Extra {
                    id: y.id,
                    email: y.email.clone(),
                });
                next_u = u.next().await.transpose().map_err(classify("user_db"))?;
            }
            (Some(_), None) => unreachable!("covered by the arm above"),
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(version: i64) -> UserRecord {
        UserRecord {
            id: Uuid::nil(),
            user_version: Some(version),
            email: "a@b.co".into(),
            first_name: "A".into(),
            last_name: "B".into(),
            role: "doctor".into(),
            phone_number: None,
            is_active: true,
            must_change_password: false,
            created_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            updated_at: None,
        }
    }

    #[test]
    fn equal_rows_have_no_difference() {
        assert_eq!(compare_pair(&user(3), &user(3)), None);
    }

    #[test]
    fn an_older_copy_is_stale_and_a_changed_field_a_mismatch() {
        assert!(matches!(
            compare_pair(&user(3), &user(2)),
            Some(Difference::Stale { .. })
        ));
        assert!(matches!(
            compare_pair(&user(3), &user(9_000_000_000)),
            Some(Difference::Ahead { .. })
        ));
        let mut changed = user(3);
        changed.role = "nurse".into();
        assert!(matches!(
            compare_pair(&user(3), &changed),
            Some(Difference::Mismatch { field: "role", .. })
        ));
    }
}
