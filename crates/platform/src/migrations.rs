//! Where a database's schema stands against the migrations a binary embeds, from sqlx's own
//! bookkeeping table `_sqlx_migrations`: which of the binary's migrations are still pending,
//! which applied ones it does not know (a newer build migrated the database: running this one
//! is a downgrade), and which it knows with another checksum (a migration edited after it ran,
//! which sqlx refuses to migrate past). Under the least-privilege setup a service checks this
//! at start instead of migrating ([`crate::db::open_migrated`]); `portal migrate status` shows
//! it to the operator before and after an upgrade.

use chrono::{DateTime, Utc};
use sqlx::migrate::{Migration, Migrator};
use sqlx::PgPool;

/// One row of `_sqlx_migrations`: a migration that ran in this database.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Applied {
    pub version: i64,
    pub description: String,
    pub installed_on: DateTime<Utc>,
    /// False when it failed part-way: sqlx records a migration before running it only when it
    /// runs outside a transaction, so such a row is a schema half changed.
    pub success: bool,
    /// SHA-384 of the migration's SQL as it ran.
    pub checksum: Vec<u8>,
}

/// A migration of the binary, by version and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub version: i64,
    pub description: String,
}

/// How one database's applied migrations compare with the binary's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// How many migrations the binary has.
    pub known: usize,
    /// The applied migration of the highest version, whoever's it is.
    pub latest: Option<Applied>,
    /// The binary's migrations without a successful row, oldest first.
    pub pending: Vec<Known>,
    /// Applied migrations the binary does not have: the database is newer than it.
    pub unknown: Vec<Applied>,
    /// Applied migrations the binary has with other SQL than what ran.
    pub mismatched: Vec<Applied>,
    /// Rows of migrations that failed part-way.
    pub failed: Vec<Applied>,
}

impl Standing {
    /// Compares the rows of `_sqlx_migrations` with the binary's `migrations` (a
    /// [`Migrator`]'s `iter()`; only up migrations count: a down migration has no row).
    pub fn compare<'a>(
        migrations: impl IntoIterator<Item = &'a Migration>,
        applied: Vec<Applied>,
    ) -> Self {
        let ups: Vec<&Migration> = migrations
            .into_iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .collect();
        let mut standing = Standing {
            known: ups.len(),
            latest: applied.iter().max_by_key(|a| a.version).cloned(),
            ..Standing::default()
        };
        for m in &ups {
            if !applied.iter().any(|a| a.version == m.version && a.success) {
                standing.pending.push(Known {
                    version: m.version,
                    description: m.description.to_string(),
                });
            }
        }
        standing.pending.sort_by_key(|k| k.version);
        for a in applied {
            if !a.success {
                standing.failed.push(a.clone());
            }
            match ups.iter().find(|m| m.version == a.version) {
                None => standing.unknown.push(a),
                Some(m) if a.success && *m.checksum != *a.checksum => standing.mismatched.push(a),
                Some(_) => {}
            }
        }
        standing.unknown.sort_by_key(|a| a.version);
        standing
    }

    /// True when the database is exactly at the binary's level: every migration applied as the
    /// binary has it, nothing else, nothing half done.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty()
            && self.unknown.is_empty()
            && self.mismatched.is_empty()
            && self.failed.is_empty()
    }
}

/// The rows of `_sqlx_migrations`, oldest version first; none when the table does not exist
/// (the database was never migrated, so every migration is pending rather than unreadable).
pub async fn applied(pool: &PgPool) -> Result<Vec<Applied>, sqlx::Error> {
    let rows = sqlx::query_as::<_, Applied>(
        "SELECT version, description, installed_on, success, checksum \
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(pool)
    .await;
    match rows {
        // 42P01 undefined_table.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(Vec::new()),
        other => other,
    }
}

/// Where the database of `pool` stands against `migrations`.
pub async fn standing(pool: &PgPool, migrations: &Migrator) -> Result<Standing, sqlx::Error> {
    Ok(Standing::compare(migrations.iter(), applied(pool).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::migrate::MigrationType;
    use std::borrow::Cow;

    /// A binary's migrations, each with SQL of its own (so checksums differ).
    fn binary(versions: &[(i64, &'static str)]) -> Vec<Migration> {
        versions
            .iter()
            .map(|(v, d)| {
                Migration::new(
                    *v,
                    Cow::Borrowed(*d),
                    MigrationType::Simple,
                    Cow::Owned(format!("-- {d}")),
                    false,
                )
            })
            .collect()
    }

    /// The row sqlx writes after running migration `version` successfully.
    fn ran(migrations: &[Migration], version: i64) -> Applied {
        let m = migrations
            .iter()
            .find(|m| m.version == version)
            .expect("a migration of the binary");
        Applied {
            version,
            description: m.description.to_string(),
            installed_on: DateTime::<Utc>::UNIX_EPOCH,
            success: true,
            checksum: m.checksum.to_vec(),
        }
    }

    #[test]
    fn a_database_with_every_migration_as_the_binary_has_it_is_current() {
        let bin = binary(&[(1, "users"), (2, "outbox")]);
        let standing = Standing::compare(&bin, vec![ran(&bin, 1), ran(&bin, 2)]);
        assert!(standing.is_current(), "{standing:?}");
        assert_eq!(standing.known, 2);
        assert_eq!(standing.latest.map(|a| a.version), Some(2));
    }

    #[test]
    fn a_missing_row_is_pending_and_an_empty_database_lacks_everything() {
        let bin = binary(&[(1, "users"), (2, "outbox")]);
        let behind = Standing::compare(&bin, vec![ran(&bin, 1)]);
        assert!(!behind.is_current());
        assert_eq!(
            behind.pending,
            [Known {
                version: 2,
                description: "outbox".into()
            }]
        );
        assert!(behind.unknown.is_empty() && behind.mismatched.is_empty());
        let empty = Standing::compare(&bin, Vec::new());
        assert_eq!(empty.pending.len(), 2);
        assert_eq!(empty.latest, None);
    }

    #[test]
    fn a_migration_the_binary_does_not_know_makes_the_database_newer_than_it() {
        let bin = binary(&[(1, "users")]);
        let from_a_newer_build = Applied {
            version: 2,
            description: "later".into(),
            ..ran(&bin, 1)
        };
        let standing = Standing::compare(&bin, vec![ran(&bin, 1), from_a_newer_build.clone()]);
        assert!(!standing.is_current());
        assert!(standing.pending.is_empty());
        assert_eq!(standing.unknown, [from_a_newer_build]);
        assert_eq!(standing.latest.map(|a| a.version), Some(2));
    }

    #[test]
    fn a_migration_edited_after_it_ran_is_a_checksum_mismatch_not_a_pending_one() {
        let bin = binary(&[(1, "users")]);
        let edited = Applied {
            checksum: vec![0; 48],
            ..ran(&bin, 1)
        };
        let standing = Standing::compare(&bin, vec![edited.clone()]);
        assert!(!standing.is_current());
        assert!(standing.pending.is_empty());
        assert_eq!(standing.mismatched, [edited]);
    }

    #[test]
    fn a_migration_that_failed_part_way_is_both_failed_and_still_pending() {
        let bin = binary(&[(1, "users")]);
        let half = Applied {
            success: false,
            ..ran(&bin, 1)
        };
        let standing = Standing::compare(&bin, vec![half.clone()]);
        assert_eq!(standing.failed, [half]);
        assert_eq!(standing.pending.len(), 1);
        assert!(standing.mismatched.is_empty() && standing.unknown.is_empty());
    }
}
