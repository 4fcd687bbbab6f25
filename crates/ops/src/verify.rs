//! The comparison behind `portal verify`: streams `auth_db`'s users and one consumer's copy of
//! them (a [`CopySpec`] named by its consumer: [`USER_SERVICE`], the `users` of `user_db`;
//! [`APPOINTMENT_SERVICE`], the `clinicians` of `appointment_db`) in id order and merges them,
//! so memory stays flat however many users there are. Every copy holds a row for every user,
//! kept by the same version rule; only the fields the copy holds are compared.
//!
//! One entry point, [`compare`]; its [`Options`] limit it to given users (how `reconcile`
//! confirms its repairs), report its progress, and hand every difference to a callback.

use directory::record::{UserRecord, RECORD_COLUMNS};
use futures::stream::{BoxStream, StreamExt};
use sqlx::PgPool;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// A field of a user a copy may hold, as the event contract names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    UserVersion,
    Email,
    FirstName,
    LastName,
    Role,
    PhoneNumber,
    IsActive,
    MustChangePassword,
    CreatedAt,
    /// Whether the person was erased (compared by presence: the copy keeps the event's time).
    ErasedAt,
}

impl Field {
    /// Every field, in the order a mismatch is looked for.
    pub const ALL: [Field; 10] = [
        Field::UserVersion,
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::Role,
        Field::PhoneNumber,
        Field::IsActive,
        Field::MustChangePassword,
        Field::CreatedAt,
        Field::ErasedAt,
    ];

    /// The name the differences show (the contract's).
    pub fn name(self) -> &'static str {
        match self {
            Field::UserVersion => "userVersion",
            Field::Email => "email",
            Field::FirstName => "firstName",
            Field::LastName => "lastName",
            Field::Role => "role",
            Field::PhoneNumber => "phoneNumber",
            Field::IsActive => "isActive",
            Field::MustChangePassword => "mustChangePassword",
            Field::CreatedAt => "createdAt",
            Field::ErasedAt => "erasedAt",
        }
    }

    /// The column of [`UserRecord`] (and of every copy's table) holding it.
    fn column(self) -> &'static str {
        match self {
            Field::UserVersion => "user_version",
            Field::Email => "email",
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::Role => "role",
            Field::PhoneNumber => "phone_number",
            Field::IsActive => "is_active",
            Field::MustChangePassword => "must_change_password",
            Field::CreatedAt => "created_at",
            Field::ErasedAt => "erased_at",
        }
    }

    /// What a copy without the column reads in its place, so that every row decodes as a
    /// [`UserRecord`]; never compared.
    fn placeholder(self) -> &'static str {
        match self {
            Field::UserVersion => "NULL::int8",
            Field::Email | Field::FirstName | Field::LastName | Field::Role => "''::text",
            Field::PhoneNumber => "NULL::text",
            Field::IsActive | Field::MustChangePassword => "false",
            Field::CreatedAt => "'epoch'::timestamptz",
            Field::ErasedAt => "NULL::timestamptz",
        }
    }

    /// This field of `a` and of `b` as the differences show them, when they differ.
    fn differs(self, a: &UserRecord, b: &UserRecord) -> Option<(String, String)> {
        fn pair<T: PartialEq + fmt::Debug>(a: &T, b: &T) -> Option<(String, String)> {
            (a != b).then(|| (format!("{a:?}"), format!("{b:?}")))
        }
        match self {
            Field::UserVersion => pair(&a.user_version, &b.user_version),
            Field::Email => pair(&a.email, &b.email),
            Field::FirstName => pair(&a.first_name, &b.first_name),
            Field::LastName => pair(&a.last_name, &b.last_name),
            Field::Role => pair(&a.role, &b.role),
            Field::PhoneNumber => pair(&a.phone_number, &b.phone_number),
            Field::IsActive => pair(&a.is_active, &b.is_active),
            Field::MustChangePassword => pair(&a.must_change_password, &b.must_change_password),
            Field::CreatedAt => pair(&a.created_at, &b.created_at),
            Field::ErasedAt => pair(&a.erased_at.is_some(), &b.erased_at.is_some()),
        }
    }
}

/// How a user found only in a copy (so with no email from `auth_db`) is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// The copy's `email`.
    Email,
    /// The copy's `first_name last_name` (a copy without email addresses).
    Name,
}

/// One consumer's copy of the users: where it is and what of a user it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySpec {
    /// The consumer keeping it, e.g. "user-service".
    pub service: &'static str,
    /// Its database as messages name it, e.g. "user_db".
    pub database: &'static str,
    /// Its table: one row per user, keyed by the user's id, with a nullable `user_version`.
    pub table: &'static str,
    /// The fields compared with `auth_db` (columns of the same name in `table`), in the order
    /// a mismatch is looked for. The version rule always compares `user_version`.
    pub fields: &'static [Field],
    /// How a row found only in this copy is named.
    pub label: Label,
    /// What else follows when rows found only in this copy are deleted (`reconcile
    /// --delete-extra`), in the same transaction.
    pub on_removed: Option<OnRemoved>,
}

/// A statement run after the deletion of users found only in a copy, in its transaction, with
/// their ids as `$1`: what else of the copy's database depended on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnRemoved {
    pub sql: &'static str,
    /// What its changed rows are, as the summary counts them (e.g. "appointments to reassign").
    pub counted_as: &'static str,
}

/// The user-service's copy: `users` in `user_db`, every synced field.
pub const USER_SERVICE: CopySpec = CopySpec {
    service: "user-service",
    database: "user_db",
    table: "users",
    fields: &Field::ALL,
    label: Label::Email,
    on_removed: None,
};

/// The appointment-service's copy: `clinicians` in `appointment_db`, only what booking needs
/// (no email, no phone).
pub const APPOINTMENT_SERVICE: CopySpec = CopySpec {
    service: "appointment-service",
    database: "appointment_db",
    table: "clinicians",
    fields: &[
        Field::UserVersion,
        Field::FirstName,
        Field::LastName,
        Field::Role,
        Field::IsActive,
        Field::ErasedAt,
    ],
    label: Label::Name,
    // A doctor no longer known is one who left: their future appointments need another doctor
    // (booked, they would wait for someone who cannot sign in and whom no list shows).
    on_removed: Some(OnRemoved {
        sql: appointment_service::copy::FLAG_APPOINTMENTS_OF,
        counted_as: "appointments to reassign",
    }),
};

impl CopySpec {
    /// The `SELECT` list reading a row of the copy as a [`UserRecord`]: its own columns, and a
    /// placeholder for each field it does not hold.
    fn select_list(&self) -> String {
        let mut columns = vec!["id".to_owned()];
        for field in Field::ALL {
            // The version rule needs the version whatever the copy compares.
            if field == Field::UserVersion || self.fields.contains(&field) {
                columns.push(field.column().to_owned());
            } else {
                columns.push(format!("{} AS {}", field.placeholder(), field.column()));
            }
        }
        // Never compared: a copy's own timestamp is when it applied the change.
        columns.push("NULL::timestamptz AS updated_at".to_owned());
        columns.join(", ")
    }

    /// How the difference names a row found only in this copy.
    fn label(&self, row: &UserRecord) -> String {
        match self.label {
            Label::Email => row.email.clone(),
            Label::Name => format!("{} {}", row.first_name, row.last_name),
        }
    }
}

/// Reads `columns` of `table` in id order (whole, or only the given ids): only the current row
/// of each side is held.
fn query(columns: &str, table: &str, only_some: bool) -> String {
    let filter = if only_some { "WHERE id = ANY($1)" } else { "" };
    format!("SELECT {columns} FROM {table} {filter} ORDER BY id")
}

/// A difference between `auth_db` and one copy, about one user.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub id: Uuid,
    /// The user's email in `auth_db`; for a user found only in the copy, the copy's label (its
    /// email, or the clinician's name).
    pub label: String,
    /// The copy's database, which the text names.
    pub database: &'static str,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// In `auth_db`, not in the copy.
    Missing,
    /// In the copy only.
    Extra,
    /// The copy holds an older version.
    Stale {
        auth_version: Option<i64>,
        copy_version: Option<i64>,
    },
    /// The copy holds a version greater than the authority's: forged or corrupt, or `auth_db`
    /// was restored from a backup older than the copy. Counted with the mismatches; the ordinary rule would keep it forever, so its
    /// repair moves `auth_db`'s version past it first.
    Ahead {
        auth_version: Option<i64>,
        copy_version: Option<i64>,
    },
    /// Same version, different value (changed behind the system's back).
    Mismatch {
        field: &'static str,
        /// `auth_db`'s value, as Rust shows it (strings quoted).
        auth: String,
        /// The copy's value, shown the same way.
        copy: String,
    },
}

impl Difference {
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// The version the copy holds when it is ahead of `auth_db`: what a repair must pass.
    pub fn version_to_pass(&self) -> Option<i64> {
        match self.kind {
            Kind::Ahead { copy_version, .. } => copy_version,
            _ => None,
        }
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |v: &Option<i64>| v.map_or("none".to_owned(), |v| v.to_string());
        let Difference {
            id,
            label,
            database,
            kind,
        } = self;
        match kind {
            Kind::Missing => write!(f, "missing  {id} {label}: in auth_db, not in {database}"),
            Kind::Extra => write!(f, "extra    {id} {label}: in {database}, not in auth_db"),
            Kind::Stale {
                auth_version,
                copy_version,
            } => write!(
                f,
                "stale    {id} {label}: {database} has version {}, auth_db has {}",
                v(copy_version),
                v(auth_version)
            ),
            Kind::Ahead {
                auth_version,
                copy_version,
            } => write!(
                f,
                "ahead    {id} {label}: {database} has version {}, auth_db only {}",
                v(copy_version),
                v(auth_version)
            ),
            Kind::Mismatch { field, auth, copy } => write!(
                f,
                "mismatch {id} {label}: {field} is {copy} in {database}, {auth} in auth_db"
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
        match d.kind {
            Kind::Missing => self.missing += 1,
            Kind::Extra => self.extra += 1,
            Kind::Stale { .. } => self.stale += 1,
            Kind::Ahead { .. } | Kind::Mismatch { .. } => self.mismatched += 1,
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

impl VerifyError {
    /// The database that failed.
    pub fn database(&self) -> &'static str {
        match self {
            VerifyError::Unreachable { database, .. } | VerifyError::Query { database, .. } => {
                database
            }
        }
    }
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

/// How `copy`'s row `c` of a user differs from `auth_db`'s row `a`, if it does.
fn compare_pair(spec: &CopySpec, a: &UserRecord, c: &UserRecord) -> Option<Difference> {
    let difference = |kind| Difference {
        id: a.id,
        label: a.email.clone(),
        database: spec.database,
        kind,
    };
    if let (Some(av), Some(cv)) = (a.user_version, c.user_version) {
        if cv > av {
            return Some(difference(Kind::Ahead {
                auth_version: a.user_version,
                copy_version: c.user_version,
            }));
        }
    }
    let older = match (a.user_version, c.user_version) {
        (Some(av), Some(cv)) => cv < av,
        (Some(_), None) => true,
        _ => false,
    };
    if older {
        return Some(difference(Kind::Stale {
            auth_version: a.user_version,
            copy_version: c.user_version,
        }));
    }
    spec.fields.iter().find_map(|field| {
        field.differs(a, c).map(|(auth, copy)| {
            difference(Kind::Mismatch {
                field: field.name(),
                auth,
                copy,
            })
        })
    })
}

/// What a [`compare`] covers, and what it tells besides its [`Report`]. `Options::default()`
/// compares every user and lists no difference (they are counted all the same).
#[derive(Default)]
pub struct Options<'a> {
    /// Differences listed in the report, the first in id order; the rest are only counted.
    pub max_listed: usize,
    /// Only these users (by id), e.g. the ones a repair was written for; every user when
    /// `None`.
    pub only: Option<&'a [Uuid]>,
    /// Kept at the number of `auth_db` users compared so far, for a progress display while the
    /// comparison runs (the sync admin API's background verify).
    pub progress: Option<&'a AtomicU64>,
    /// Hears every difference as it is found, listed or not (what `reconcile` repairs): memory
    /// stays flat however many differences there are.
    pub on_difference: Option<&'a mut (dyn FnMut(&Difference) + Send)>,
}

impl<'a> Options<'a> {
    /// Every user, listing at most `max_listed` differences.
    pub fn listing(max_listed: usize) -> Self {
        Self {
            max_listed,
            ..Self::default()
        }
    }

    /// Only the users `ids`.
    pub fn only(self, ids: &'a [Uuid]) -> Self {
        Self {
            only: Some(ids),
            ..self
        }
    }

    /// With `checked` kept at the number of users compared so far.
    pub fn progress(self, checked: &'a AtomicU64) -> Self {
        Self {
            progress: Some(checked),
            ..self
        }
    }

    /// With `on_difference` told of every difference.
    pub fn each(self, on_difference: &'a mut (dyn FnMut(&Difference) + Send)) -> Self {
        Self {
            on_difference: Some(on_difference),
            ..self
        }
    }
}

/// Compares `auth_db` (`auth`) with one consumer's copy (`copy`, whose database `pool` is):
/// every user or only `options.only`, in id order, holding only the current row of each side.
/// The report counts every difference and lists the first `options.max_listed`.
pub async fn compare(
    auth: &PgPool,
    copy: &CopySpec,
    pool: &PgPool,
    options: Options<'_>,
) -> Result<Report, VerifyError> {
    let Options {
        max_listed,
        only,
        progress,
        mut on_difference,
    } = options;
    let mut report = Report::default();
    report.checked = compare_streams(auth, pool, copy, only, progress, |d| {
        if let Some(on_difference) = on_difference.as_mut() {
            on_difference(&d);
        }
        report.record(d, max_listed)
    })
    .await?;
    Ok(report)
}

async fn compare_streams(
    auth: &PgPool,
    pool: &PgPool,
    copy: &CopySpec,
    only: Option<&[Uuid]>,
    progress: Option<&AtomicU64>,
    mut on_difference: impl FnMut(Difference),
) -> Result<u64, VerifyError> {
    let (auth_err, copy_err) = (classify("auth_db"), classify(copy.database));
    // Reach both first, so "cannot connect" is told apart from a failure mid-stream.
    sqlx::query("SELECT 1")
        .execute(auth)
        .await
        .map_err(&auth_err)?;
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map_err(&copy_err)?;
    let auth_sql = query(RECORD_COLUMNS, "users", only.is_some());
    let copy_sql = query(&copy.select_list(), copy.table, only.is_some());
    let read = |pool, sql| -> BoxStream<'_, Result<UserRecord, sqlx::Error>> {
        match only {
            Some(ids) => sqlx::query_as(sql).bind(ids).fetch(pool),
            None => sqlx::query_as(sql).fetch(pool),
        }
    };
    let mut a = read(auth, &auth_sql);
    let mut c = read(pool, &copy_sql);
    let mut checked = 0;
    let mut next_a = a.next().await.transpose().map_err(&auth_err)?;
    let mut next_c = c.next().await.transpose().map_err(&copy_err)?;
    loop {
        match (&next_a, &next_c) {
            (None, None) => break,
            (Some(x), Some(y)) if x.id == y.id => {
                checked += 1;
                if let Some(progress) = progress {
                    progress.store(checked, Ordering::Relaxed);
                }
                if let Some(d) = compare_pair(copy, x, y) {
                    on_difference(d);
                }
                next_a = a.next().await.transpose().map_err(&auth_err)?;
                next_c = c.next().await.transpose().map_err(&copy_err)?;
            }
            (Some(x), y) if y.as_ref().is_none_or(|y| x.id < y.id) => {
                checked += 1;
                if let Some(progress) = progress {
                    progress.store(checked, Ordering::Relaxed);
                }
                on_difference(Difference {
                    id: x.id,
                    label: x.email.clone(),
                    database: copy.database,
                    kind: Kind::Missing,
                });
                next_a = a.next().await.transpose().map_err(&auth_err)?;
            }
            (_, Some(y)) => {
                on_difference(Difference {
                    id: y.id,
                    label: copy.label(y),
                    database: copy.database,
                    kind: Kind::Extra,
                });
                next_c = c.next().await.transpose().map_err(&copy_err)?;
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
            erased_at: None,
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

    /// A row of `clinicians` as its `SELECT` reads it: placeholders where it holds nothing.
    fn clinician(version: i64) -> UserRecord {
        UserRecord {
            email: String::new(),
            phone_number: None,
            must_change_password: false,
            ..user(version)
        }
    }

    #[test]
    fn equal_rows_have_no_difference() {
        assert_eq!(compare_pair(&USER_SERVICE, &user(3), &user(3)), None);
    }

    #[test]
    fn an_older_copy_is_stale_and_a_changed_field_a_mismatch() {
        assert!(matches!(
            compare_pair(&USER_SERVICE, &user(3), &user(2)).map(|d| d.kind),
            Some(Kind::Stale { .. })
        ));
        assert!(matches!(
            compare_pair(&USER_SERVICE, &user(3), &user(9_000_000_000)).map(|d| d.kind),
            Some(Kind::Ahead { .. })
        ));
        let mut changed = user(3);
        changed.role = "nurse".into();
        assert!(matches!(
            compare_pair(&USER_SERVICE, &user(3), &changed).map(|d| d.kind),
            Some(Kind::Mismatch { field: "role", .. })
        ));
    }

    #[test]
    fn a_copy_is_compared_only_on_the_fields_it_holds() {
        let mut auth = user(3);
        auth.phone_number = Some("+263 77 000 0000".into());
        auth.must_change_password = true;
        assert_eq!(
            compare_pair(&APPOINTMENT_SERVICE, &auth, &clinician(3)),
            None
        );
        let mut renamed = clinician(3);
        renamed.last_name = "Changed".into();
        let d = compare_pair(&APPOINTMENT_SERVICE, &auth, &renamed).unwrap();
        assert_eq!(d.label, "a@b.co", "named by auth_db's email");
        assert_eq!(
            d.to_string(),
            "mismatch 00000000-0000-0000-0000-000000000000 a@b.co: lastName is \"Changed\" in \
             appointment_db, \"B\" in auth_db"
        );
        let ahead = compare_pair(&APPOINTMENT_SERVICE, &auth, &clinician(7)).unwrap();
        assert_eq!(ahead.version_to_pass(), Some(7));
        assert!(ahead
            .to_string()
            .ends_with("appointment_db has version 7, auth_db only 3"));
    }

    #[test]
    fn differences_name_the_copys_database() {
        let missing = |copy: &CopySpec| Difference {
            id: Uuid::nil(),
            label: "a@b.co".into(),
            database: copy.database,
            kind: Kind::Missing,
        };
        assert!(missing(&USER_SERVICE)
            .to_string()
            .ends_with("a@b.co: in auth_db, not in user_db"));
        assert!(missing(&APPOINTMENT_SERVICE)
            .to_string()
            .ends_with("a@b.co: in auth_db, not in appointment_db"));
        let stale = Difference {
            kind: Kind::Stale {
                auth_version: Some(4),
                copy_version: None,
            },
            ..missing(&USER_SERVICE)
        };
        assert!(stale
            .to_string()
            .ends_with("user_db has version none, auth_db has 4"));
        // A clinician only in the copy has no email: it is named.
        assert_eq!(APPOINTMENT_SERVICE.label(&clinician(1)), "A B");
        assert_eq!(USER_SERVICE.label(&user(1)), "a@b.co");
    }

    #[test]
    fn a_copy_reads_its_own_columns_and_placeholders_for_the_rest() {
        assert_eq!(
            query(
                &APPOINTMENT_SERVICE.select_list(),
                APPOINTMENT_SERVICE.table,
                true
            ),
            "SELECT id, user_version, ''::text AS email, first_name, last_name, role, \
             NULL::text AS phone_number, is_active, false AS must_change_password, \
             'epoch'::timestamptz AS created_at, erased_at, NULL::timestamptz AS updated_at \
             FROM clinicians WHERE id = ANY($1) ORDER BY id"
        );
        let users = USER_SERVICE.select_list();
        for field in Field::ALL {
            assert!(
                users.contains(&format!(" {},", field.column())),
                "{field:?} in {users}"
            );
        }
        assert!(!users.contains("''"), "{users}");
    }

    #[test]
    fn counts_follow_the_kind() {
        let mut report = Report::default();
        for kind in [
            Kind::Missing,
            Kind::Extra,
            Kind::Stale {
                auth_version: Some(2),
                copy_version: Some(1),
            },
            Kind::Ahead {
                auth_version: Some(2),
                copy_version: Some(3),
            },
        ] {
            let d = Difference {
                id: Uuid::nil(),
                label: String::new(),
                database: "user_db",
                kind,
            };
            report.record(d, 1);
        }
        assert_eq!(
            (
                report.missing,
                report.extra,
                report.stale,
                report.mismatched
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(report.listed.len(), 1);
        assert!(!report.is_in_sync());
    }
}
