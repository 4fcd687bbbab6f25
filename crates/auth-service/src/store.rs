//! The auth-service's data access. Every function that writes a user takes the open transaction
//! (`&mut Transaction`, never a bare connection) and writes the user's event to the outbox (for
//! the relay) and the event store (the history) in it, in the same statement, so a change and
//! its event commit together or not at all: there is no way to write one without the other.
//! What changed decides the event's type ([`UserChange::event_type`]).

use contract::{
    Email, Envelope, EventType, PersonName, PhoneNumber, Role, Timestamp, UserId, UserSnapshot,
};
use directory::record::{UserRecord, RECORD_COLUMNS};
use sqlx::{PgExecutor, Postgres, Transaction};
use uuid::Uuid;

/// A user as stored in `auth_db`: the record every copy holds, plus the password hash. Reads
/// of the record's fields go through to it (`row.email`).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    #[sqlx(flatten)]
    pub user: UserRecord,
    pub password_hash: String,
}

impl std::ops::Deref for UserRow {
    type Target = UserRecord;

    fn deref(&self) -> &UserRecord {
        &self.user
    }
}

pub(crate) const USER_COLUMNS: &str =
    "id, email, password_hash, first_name, last_name, role, phone_number, \
     is_active, must_change_password, user_version, created_at, updated_at, erased_at";

impl UserRow {
    pub fn role(&self) -> Result<Role, StoreError> {
        self.user.role.parse().map_err(|_| {
            StoreError::Corrupt(format!(
                "user {} has unknown role {:?}",
                self.id, self.user.role
            ))
        })
    }

    /// The version of this row; every `auth_db` row has one (the column is `NOT NULL`).
    pub fn version(&self) -> i64 {
        self.user.user_version.unwrap_or_default()
    }

    /// The user's current state as the contract's snapshot, which is also the API's user JSON.
    pub fn snapshot(&self) -> Result<UserSnapshot, StoreError> {
        self.user
            .snapshot()
            .map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// A user to create; built only from validated parts.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub password_hash: String,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub role: Role,
    pub phone_number: Option<PhoneNumber>,
    pub is_active: bool,
    pub must_change_password: bool,
}

impl NewUser {
    /// An active member of staff with a password they chose (nothing to change at first login)
    /// and no phone number: the account tests, the benchmark and the chaos run create for
    /// themselves.
    pub fn staff(
        email: &str,
        first_name: &str,
        last_name: &str,
        role: Role,
        password_hash: String,
    ) -> Result<Self, contract::ValidationError> {
        Ok(Self {
            email: Email::parse(email)?,
            password_hash,
            first_name: PersonName::parse("firstName", first_name)?,
            last_name: PersonName::parse("lastName", last_name)?,
            role,
            phone_number: None,
            is_active: true,
            must_change_password: false,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a user with this email already exists")]
    DuplicateEmail,
    #[error("no such user")]
    NotFound,
    #[error("this is the last active admin: activate or appoint another admin first")]
    LastActiveAdmin,
    #[error("this account is no longer an active admin")]
    NotAdmin,
    #[error("this person was erased: their record can no longer change")]
    Erased,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

pub(crate) fn map_unique(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("users_email_unique") => {
            StoreError::DuplicateEmail
        }
        _ => StoreError::Db(e),
    }
}

/// Inserts `new` as version 1 and its `user.created` event, in the caller's transaction, with
/// one statement.
pub async fn create_user(
    tx: &mut Transaction<'_, Postgres>,
    new: NewUser,
) -> Result<UserRow, StoreError> {
    let now = Timestamp::now().as_datetime();
    let row = UserRow {
        user: UserRecord {
            id: UserId::new().0,
            email: new.email.as_str().to_owned(),
            first_name: new.first_name.as_str().to_owned(),
            last_name: new.last_name.as_str().to_owned(),
            role: new.role.as_str().to_owned(),
            phone_number: new.phone_number.as_ref().map(|p| p.as_str().to_owned()),
            is_active: new.is_active,
            must_change_password: new.must_change_password,
            created_at: now,
            updated_at: Some(now),
            user_version: Some(1),
            erased_at: None,
        },
        password_hash: new.password_hash,
    };
    let event = Envelope::new(EventType::Created, row.snapshot()?);
    let sql = with_event(
        &format!(
            "INSERT INTO users ({USER_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, NULL)"
        ),
        12,
    );
    let query = sqlx::query(&sql)
        .bind(row.id)
        .bind(&row.email)
        .bind(&row.password_hash)
        .bind(&row.first_name)
        .bind(&row.last_name)
        .bind(&row.role)
        .bind(&row.phone_number)
        .bind(row.is_active)
        .bind(row.must_change_password)
        .bind(row.version())
        .bind(now);
    let done = bind_event(query, &event)?
        .execute(&mut **tx)
        .await
        .map_err(map_unique)?;
    expect_one(done.rows_affected(), &row, "was created")?;
    Ok(row)
}

/// Writes `after` (the next version of the user, erased: `contract::erasure`'s placeholders,
/// `erased_at` set) over the stored row with its `user.erased` event, in the caller's
/// transaction, which holds the row's lock.
pub(crate) async fn write_erased(
    tx: &mut Transaction<'_, Postgres>,
    after: &UserRow,
    event: &Envelope,
) -> Result<(), StoreError> {
    let sql = with_event(
        "UPDATE users SET email = $2, first_name = $3, last_name = $4, phone_number = NULL, \
             password_hash = $5, must_change_password = false, is_active = false, \
             user_version = $6, updated_at = $7, erased_at = $7 \
         WHERE id = $1 AND erased_at IS NULL",
        8,
    );
    let query = sqlx::query(&sql)
        .bind(after.id)
        .bind(&after.email)
        .bind(&after.first_name)
        .bind(&after.last_name)
        .bind(&after.password_hash)
        .bind(after.version())
        .bind(after.erased_at);
    let done = bind_event(query, event)?.execute(&mut **tx).await?;
    expect_one(done.rows_affected(), after, "was erased")
}

/// One statement that runs `write` (an INSERT or UPDATE of one `users` row, with parameters
/// `$1`…`$(first - 1)`) and adds that write's event to the outbox and the event store, bound
/// from `$first` on by [`bind_event`]: the change and its event are written together or not at
/// all, in one round trip. The event rows are written only if `write` wrote the user.
fn with_event(write: &str, first: usize) -> String {
    let [id, kind, version, body, trace] = std::array::from_fn(|i| first + i);
    format!(
        "WITH written AS ({write} RETURNING id), \
         queued AS (INSERT INTO outbox (event_id, event_type, user_id, user_version, body, trace_id) \
                    SELECT ${id}, ${kind}, id, ${version}, ${body}::json, ${trace} FROM written \
                    RETURNING {STORED}) \
         {INTO_STORE} SELECT {STORED} FROM queued"
    )
}

/// The columns an event has in both the outbox and the event store.
const STORED: &str =
    "seq, event_id, event_type, user_id, user_version, body, created_at, trace_id, tx_id";
/// Every user event goes to the event store as the outbox row it was written as (returned by
/// the outbox's INSERT in the same statement): the same `seq` (the outbox's bigserial), bytes,
/// `created_at` and `tx_id`, so the store's (tx_id, seq) horizon is the outbox's.
const INTO_STORE: &str = "INSERT INTO event_store (seq, event_id, event_type, user_id, \
     user_version, body, created_at, trace_id, tx_id)";

type Query<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds the parameters [`with_event`] adds after the write's.
fn bind_event<'q>(query: Query<'q>, event: &'q Envelope) -> Result<Query<'q>, StoreError> {
    let body = serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(query
        .bind(event.event_id)
        .bind(event.event_type.as_str())
        .bind(event.payload.user_version)
        .bind(body)
        // The trace of the request being served, if this runs inside one.
        .bind(platform::trace::current()))
}

/// A statement of [`with_event`] must have written exactly one event row.
fn expect_one(rows: u64, row: &UserRow, what: &str) -> Result<(), StoreError> {
    if rows == 1 {
        return Ok(());
    }
    // Impossible while the caller holds the row's lock; refuse rather than leave a gap.
    Err(StoreError::Corrupt(format!(
        "user {} {what} at version {}: {rows} rows written",
        row.id,
        row.version()
    )))
}

/// [`create_user`] in a transaction of its own.
pub async fn insert_user(pool: &sqlx::PgPool, new: NewUser) -> Result<UserRow, StoreError> {
    let mut tx = pool.begin().await?;
    let row = create_user(&mut tx, new).await?;
    tx.commit().await?;
    Ok(row)
}

/// New values for profile fields; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileChange {
    pub email: Option<Email>,
    pub first_name: Option<PersonName>,
    pub last_name: Option<PersonName>,
    /// `Some(None)` clears the phone number.
    pub phone_number: Option<Option<PhoneNumber>>,
}

/// A change to one user. Each kind has exactly one event type ([`UserChange::event_type`]), so
/// a change and the event that announces it cannot disagree.
#[derive(Debug, Clone)]
pub enum UserChange {
    /// Profile fields: `user.updated`, with `changedFields`.
    Profile(ProfileChange),
    /// `user.activated`.
    Activate,
    /// `user.deactivated`.
    Deactivate,
    /// `user.role.changed`, with `previousRole`.
    SetRole(Role),
    /// A new password hash, and whether it must be changed at the next login: `user.updated`
    /// (the hash is not in the snapshot; `changedFields` lists `mustChangePassword` when that
    /// flips).
    Password {
        hash: String,
        must_change_password: bool,
    },
}

impl UserChange {
    /// The event this change is announced with.
    pub fn event_type(&self) -> EventType {
        match self {
            UserChange::Profile(_) | UserChange::Password { .. } => EventType::Updated,
            UserChange::Activate => EventType::Activated,
            UserChange::Deactivate => EventType::Deactivated,
            UserChange::SetRole(_) => EventType::RoleChanged,
        }
    }

    /// True when the user's sessions must end with this change: what a token or a session was
    /// granted on (active, this role, this password) no longer holds.
    fn ends_sessions(&self) -> bool {
        matches!(
            self,
            UserChange::Deactivate | UserChange::SetRole(_) | UserChange::Password { .. }
        )
    }

    /// True when the change could leave the portal without an active admin.
    fn may_remove_an_admin(&self) -> bool {
        match self {
            UserChange::SetRole(role) => *role != Role::Admin,
            UserChange::Deactivate => true,
            _ => false,
        }
    }

    /// `before` with this change applied, and the wire names of the snapshot fields it altered.
    fn apply_to(&self, before: &UserRow) -> (UserRow, Vec<&'static str>) {
        let mut after = before.clone();
        let mut changed: Vec<&'static str> = Vec::new();
        let mut set = |field: &'static str, slot: &mut String, value: Option<&str>| {
            if let Some(v) = value.filter(|v| *v != slot.as_str()) {
                *slot = v.to_owned();
                changed.push(field);
            }
        };
        match self {
            UserChange::Profile(p) => {
                set(
                    "email",
                    &mut after.user.email,
                    p.email.as_ref().map(Email::as_str),
                );
                set(
                    "firstName",
                    &mut after.user.first_name,
                    p.first_name.as_ref().map(PersonName::as_str),
                );
                set(
                    "lastName",
                    &mut after.user.last_name,
                    p.last_name.as_ref().map(PersonName::as_str),
                );
                if let Some(phone) = &p.phone_number {
                    let phone = phone.as_ref().map(|p| p.as_str().to_owned());
                    if phone != after.user.phone_number {
                        after.user.phone_number = phone;
                        changed.push("phoneNumber");
                    }
                }
            }
            UserChange::SetRole(role) => set("role", &mut after.user.role, Some(role.as_str())),
            UserChange::Activate | UserChange::Deactivate => {
                let active = matches!(self, UserChange::Activate);
                if active != after.user.is_active {
                    after.user.is_active = active;
                    changed.push("isActive");
                }
            }
            UserChange::Password {
                hash,
                must_change_password,
            } => {
                if *must_change_password != after.user.must_change_password {
                    after.user.must_change_password = *must_change_password;
                    changed.push("mustChangePassword");
                }
                after.password_hash = hash.clone();
            }
        }
        (after, changed)
    }
}

/// What [`change_user`] did.
#[derive(Debug)]
pub enum Outcome {
    /// Written as the next version, with its event.
    Changed(UserRow),
    /// Nothing differed: no write, no event.
    Unchanged(UserRow),
}

impl Outcome {
    pub fn user(&self) -> &UserRow {
        match self {
            Outcome::Changed(u) | Outcome::Unchanged(u) => u,
        }
    }
}

/// Key of the advisory lock that serialises changes which could remove an active admin, so two
/// admins demoting each other at once cannot both succeed.
pub(crate) const ADMIN_GUARD_LOCK: i64 = 0x706f_7274_616c_0001;

/// Marks the temporary password `stored` of user `id` used ([`password::temporary::spent`]);
/// false when the user's hash is no longer `stored` (another login used it first, or it was
/// changed).
pub async fn spend_temporary_password(
    db: impl PgExecutor<'_>,
    id: Uuid,
    stored: &str,
) -> Result<bool, StoreError> {
    match crate::password::temporary::spent(stored) {
        Some(spent) => replace_password_hash(db, id, stored, &spent).await,
        None => Ok(true),
    }
}

/// Replaces user `id`'s password hash `stored` by `new`, the same password in another form (a
/// temporary one marked spent, or re-hashed with today's parameters); false when the hash is no
/// longer `stored`. Not a change of the user — no version, no event: the hash is in no copy and
/// no event, and the login that does it is in the security log.
pub async fn replace_password_hash(
    db: impl PgExecutor<'_>,
    id: Uuid,
    stored: &str,
    new: &str,
) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2")
            .bind(id)
            .bind(stored)
            .bind(new)
            .execute(db)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Applies `change` to user `id` in the caller's transaction. The user row is locked first, so
/// concurrent changes to one user queue up: each sees the previous one's result, versions go up by
/// exactly one, and every committed change has exactly one event (of `change.event_type()`;
/// `user.updated` lists `changedFields`, `user.role.changed` adds `previousRole`). A change that
/// alters nothing writes nothing.
pub async fn change_user(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    change: UserChange,
) -> Result<Outcome, StoreError> {
    change_user_as(tx, None, id, change).await
}

/// [`change_user`] asked for by `admin`, who must still be an active admin
/// ([`StoreError::NotAdmin`] otherwise): a token outlives a deactivation or demotion by up to its
/// lifetime, and admin powers should not. The check is read in the statement that locks the
/// user, so it costs no round trip of its own.
pub async fn change_user_by_admin(
    tx: &mut Transaction<'_, Postgres>,
    admin: Uuid,
    id: Uuid,
    change: UserChange,
) -> Result<Outcome, StoreError> {
    change_user_as(tx, Some(admin), id, change).await
}

/// A locked user and, when a caller was named, whether that caller is an active admin now.
#[derive(sqlx::FromRow)]
struct Locked {
    #[sqlx(flatten)]
    row: UserRow,
    by_active_admin: Option<bool>,
}

/// True when `id` is an active admin now.
pub async fn is_active_admin(db: impl PgExecutor<'_>, id: Uuid) -> Result<bool, StoreError> {
    let standing: Option<bool> =
        sqlx::query_scalar("SELECT is_active AND role = 'admin' FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(standing == Some(true))
}

/// Four round trips per change (begin, lock and check, write, commit): the change's row and its
/// event are one statement, and the caller's standing is read with the lock.
async fn change_user_as(
    tx: &mut Transaction<'_, Postgres>,
    admin: Option<Uuid>,
    id: Uuid,
    change: UserChange,
) -> Result<Outcome, StoreError> {
    if change.may_remove_an_admin() {
        // Taken before the row lock, always in this order, so it cannot deadlock.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(ADMIN_GUARD_LOCK)
            .execute(&mut **tx)
            .await?;
    }
    let locked: Option<Locked> = sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS}, \
                (SELECT a.is_active AND a.role = 'admin' FROM users a WHERE a.id = $2) \
                  AS by_active_admin \
         FROM users WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .bind(admin)
    .fetch_optional(&mut **tx)
    .await?;
    let before = match (locked, admin) {
        (Some(l), Some(_)) if l.by_active_admin != Some(true) => return Err(StoreError::NotAdmin),
        // Erasure is final: no change (and so no event) ever follows the tombstone.
        (Some(l), _) if l.row.erased_at.is_some() => return Err(StoreError::Erased),
        (Some(l), _) => l.row,
        // No such user; a caller who is no longer an admin is told that first, as for any id.
        (None, Some(admin)) if !is_active_admin(&mut **tx, admin).await? => {
            return Err(StoreError::NotAdmin)
        }
        (None, _) => return Err(StoreError::NotFound),
    };

    // A new password is a write even though no synced field changes: it still gets its version
    // and event, so the event store stays a complete history of the row.
    let (mut after, changed) = change.apply_to(&before);
    if changed.is_empty() && !matches!(change, UserChange::Password { .. }) {
        return Ok(Outcome::Unchanged(before));
    }

    let was_active_admin = before.is_active && before.user.role == Role::Admin.as_str();
    let is_active_admin = after.is_active && after.user.role == Role::Admin.as_str();
    if was_active_admin && !is_active_admin {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM users WHERE role = 'admin' AND is_active AND id <> $1",
        )
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
        if others == 0 {
            return Err(StoreError::LastActiveAdmin);
        }
    }

    // The row is locked, so its next state is known before it is written: the event is built
    // from exactly what the UPDATE stores.
    after.user.user_version = Some(before.version() + 1);
    after.user.updated_at = Some(Timestamp::now().as_datetime());
    let event_type = change.event_type();
    let mut snapshot = after.snapshot()?;
    match event_type {
        EventType::Updated => {
            snapshot.changed_fields = Some(changed.iter().map(|f| f.to_string()).collect())
        }
        EventType::RoleChanged => snapshot.previous_role = Some(before.role()?),
        _ => {}
    }
    write_change(tx, &after, &Envelope::new(event_type, snapshot)).await?;
    if change.ends_sessions() {
        crate::sessions::revoke_user(tx, id).await?;
    }
    Ok(Outcome::Changed(after))
}

/// Writes `after` over the locked row it was computed from (one version further) and its event
/// to the outbox and the event store, in one statement.
async fn write_change(
    tx: &mut Transaction<'_, Postgres>,
    after: &UserRow,
    event: &Envelope,
) -> Result<(), StoreError> {
    let sql = with_event(
        "UPDATE users SET email = $2, first_name = $3, last_name = $4, role = $5, \
                phone_number = $6, is_active = $7, must_change_password = $8, \
                password_hash = $9, user_version = $10, updated_at = $11 \
         WHERE id = $1 AND user_version = $10 - 1",
        12,
    );
    let query = sqlx::query(&sql)
        .bind(after.id)
        .bind(&after.email)
        .bind(&after.first_name)
        .bind(&after.last_name)
        .bind(&after.role)
        .bind(&after.phone_number)
        .bind(after.is_active)
        .bind(after.must_change_password)
        .bind(&after.password_hash)
        .bind(after.version())
        .bind(after.updated_at);
    let done = bind_event(query, event)?
        .execute(&mut **tx)
        .await
        .map_err(map_unique)?;
    expect_one(done.rows_affected(), after, "was not one version behind")
}

/// Writes a `user.snapshot` repair event of each user's current state, in the caller's
/// transaction (`portal reconcile`); returns how many. A user given with a version (a copy that
/// holds a version `auth_db` does not: forged, or `auth_db` restored from an older backup) first
/// has its `userVersion` moved past that one — the version fence — so the ordinary rule applies
/// the repair in every copy and every later change follows it.
pub async fn write_repairs(
    tx: &mut Transaction<'_, Postgres>,
    users: &[(Uuid, Option<i64>)],
) -> Result<usize, StoreError> {
    let (fenced, versions): (Vec<Uuid>, Vec<i64>) = users
        .iter()
        .filter_map(|(id, v)| v.map(|v| (*id, v)))
        .unzip();
    if !fenced.is_empty() {
        sqlx::query(
            "UPDATE users AS u SET user_version = f.version + 1 \
             FROM UNNEST($1::uuid[], $2::int8[]) AS f(id, version) \
             WHERE u.id = f.id AND f.version >= u.user_version",
        )
        .bind(&fenced)
        .bind(&versions)
        .execute(&mut **tx)
        .await?;
    }
    let ids: Vec<Uuid> = users.iter().map(|(id, _)| *id).collect();
    // Read under the rows' share lock: an erasure (which takes the row `FOR UPDATE`) either
    // committed before, and the repair is its tombstone, or waits and then redacts this repair
    // with the rest of the history. Never a repair with the data written after the redaction.
    sqlx::query("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR SHARE")
        .bind(&ids)
        .execute(&mut **tx)
        .await?;
    let records = find_records_by_ids(&mut **tx, &ids).await?;
    let events = records
        .iter()
        .map(|record| {
            let snapshot = record
                .snapshot()
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(Envelope::new(EventType::Snapshot, snapshot))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    append_events(tx, &events).await?;
    Ok(events.len())
}

/// Appends events to the outbox and the event store in one statement (the caller's
/// transaction decides when they become visible to the relay and to readers of history).
pub async fn append_events(
    tx: &mut Transaction<'_, Postgres>,
    events: &[Envelope],
) -> Result<(), StoreError> {
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut users = Vec::with_capacity(events.len());
    let mut versions = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    for e in events {
        ids.push(e.event_id);
        types.push(e.event_type.as_str());
        users.push(e.payload.user_id.0);
        versions.push(e.payload.user_version);
        bodies.push(serde_json::to_string(e).map_err(|err| StoreError::Corrupt(err.to_string()))?);
    }
    sqlx::query(&format!(
        "WITH queued AS ( \
             INSERT INTO outbox (event_id, event_type, user_id, user_version, body, trace_id) \
             SELECT e.*, $6 FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::int8[], \
                                        $5::text[]::json[]) AS e \
             RETURNING {STORED}) \
         {INTO_STORE} SELECT {STORED} FROM queued"
    ))
    .bind(&ids)
    .bind(&types)
    .bind(&users)
    .bind(&versions)
    .bind(&bodies)
    // The trace of the request being served, if this runs inside one.
    .bind(platform::trace::current())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn find_by_email(
    db: impl PgExecutor<'_>,
    email: &Email,
) -> Result<Option<UserRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE lower(email) = $1"
    ))
    .bind(email.as_str())
    .fetch_optional(db)
    .await?)
}

pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<UserRow>, StoreError> {
    Ok(
        sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(db)
            .await?,
    )
}

/// The records of the users `ids` (what a snapshot holds), without their password hashes: the
/// operator's identity, which writes the repairs, may not read those (`grants`).
pub async fn find_records_by_ids(
    db: impl PgExecutor<'_>,
    ids: &[Uuid],
) -> Result<Vec<UserRecord>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT {RECORD_COLUMNS} FROM users WHERE id = ANY($1) ORDER BY id"
    ))
    .bind(ids)
    .fetch_all(db)
    .await?)
}

pub async fn count_users(db: impl PgExecutor<'_>) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(db)
        .await?)
}
