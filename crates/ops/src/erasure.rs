//! After an erasure: proving that the person's data is gone ([`verify`], `portal erasure
//! verify`), and taking their messages out of the queues where nothing else would
//! ([`purge`], `portal erasure purge`, the sync admin API's purge after the web portal's erase
//! button).
//!
//! The erasure's record (`auth_db.erasures`) keeps keyed fingerprints of the erased email,
//! names and phone ([`platform::erasure::Fingerprints`]), never the values: the search hashes
//! what it reads and compares, so the verifier itself brings back no personal data. The erased
//! person's own rows hold `contract::erasure`'s placeholders, which never match.
//!
//! [`verify`] reads, as the operator's identities:
//! - every row of every table of every database it is given (by default `auth_db`, `user_db`
//!   and `appointment_db`; `--all-databases`: every database on `auth_db`'s server the role may
//!   connect to), all schemas but `pg_catalog` and `information_schema`, each row as one text
//!   (`SELECT t::text`: json, jsonb and arrays included), streamed (a table is never held in
//!   memory). A partitioned table is read through its parent only (a hit names its partition),
//!   a table with inheritance children `ONLY` (each child is read as itself). A table the role
//!   may read only some columns of is read through those (`ROW(a, b)::text`, no `ctid` then:
//!   the hit names the row's place in the scan); one it may read none of, and what row-level
//!   security hides, are listed as not searched.
//! - every queue of every registered consumer (main, retry queues, dead-letter queue) and the
//!   unrouted queue, each message's body and headers, as `ops::dlq` reads: `basic.get` without
//!   ack, then the channel closes and every message returns, in its order. A queue with a live
//!   consumer attached has messages in flight (delivered, not yet acked): those are invisible
//!   to any reader but that consumer, and are not searched; what the verifier holds meanwhile
//!   reaches that consumer a moment later (and redelivered).
//!
//! What no query can see: backups and dumps, the servers' logs, PostgreSQL's WAL and dead
//! tuples not yet vacuumed, RabbitMQ's message store files, `bytea` columns (hex) and anything
//! encoded or encrypted. docs/operations.md ("Erasure") lists them for the runbook.
//!
//! [`purge`] removes every message about the person (by the body's `payload.userId`) from each
//! registered consumer's dead-letter and retry queues and from the unrouted queue, keeping every
//! other message in its order (as `ops::dlq::discard`). A main queue is not purged: its consumer
//! applies what waits there by the version rule, which ignores anything older than the erasure.
//! A body that cannot be decoded is kept (whose it is cannot be told; the verifier reports it if
//! it holds the data), and so is a tombstone (a snapshot carrying `erasedAt`) that holds none of
//! the data: it is what makes a copy forget.

use crate::status::registered;
use crate::OpsError;
use anyhow::anyhow;
use chrono::{DateTime, Utc};
use contract::topology;
use futures::TryStreamExt;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::{Channel, Connection};
use platform::amqp;
use platform::erasure::{Fingerprints, Found, Matcher};
use platform::secret::redact_url;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::fmt;
use uuid::Uuid;

/// How many hits a report lists (all are counted): a table full of the person's data must not
/// fill the operator's memory or screen.
pub const MAX_LISTED: usize = 1000;

/// Why an erasure tool could not do its work, told apart as scripts need it.
#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    /// `auth_db` holds no erasure of this user (the CLI's exit 64: asking about the wrong id).
    #[error("{0} is not erased: auth_db holds no erasure record of this user")]
    NotErased(Uuid),
    /// A database or the broker could not be reached (exit 2).
    #[error("cannot reach {0}")]
    Unreachable(String),
    /// It ran and failed (exit 1).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<OpsError> for ErasureError {
    fn from(e: OpsError) -> Self {
        match e {
            OpsError::Unreachable(what) => Self::Unreachable(what),
            OpsError::Failed(e) => Self::Failed(e),
        }
    }
}

/// `auth_db`'s error as an [`ErasureError`]: an outage, or a failed query.
fn auth_error(e: sqlx::Error, doing: &str) -> ErasureError {
    if platform::db::is_unavailable(&e) {
        ErasureError::Unreachable(format!("auth_db: {e}"))
    } else {
        ErasureError::Failed(anyhow!("cannot {doing}: {e}"))
    }
}

/// The erasure of one user as `auth_db` records it.
#[derive(Debug, Clone)]
pub struct Record {
    pub user: Uuid,
    pub fingerprints: Fingerprints,
    /// When [`purge`] last emptied every queue of the person's messages.
    pub queues_purged_at: Option<DateTime<Utc>>,
}

/// The erasure record of `user` ([`ErasureError::NotErased`] when there is none).
pub async fn record(auth: &PgPool, user: Uuid) -> Result<Record, ErasureError> {
    // As text: the fingerprints are platform's JSON, decoded by its own type.
    let row: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT fingerprints::text, queues_purged_at FROM erasures WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(auth)
    .await
    .map_err(|e| auth_error(e, "read the erasure record"))?;
    let (prints, queues_purged_at) = row.ok_or(ErasureError::NotErased(user))?;
    let fingerprints = serde_json::from_str(&prints)
        .map_err(|e| anyhow!("the erasure record of {user} holds unreadable fingerprints: {e}"))?;
    Ok(Record {
        user,
        fingerprints,
        queues_purged_at,
    })
}

/// A database to search: its name, as reports show it, and how to reach it.
#[derive(Clone)]
pub struct Database {
    pub name: String,
    options: PgConnectOptions,
}

impl fmt::Debug for Database {
    // The connect options hold the password: only the name is shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .finish()
    }
}

impl Database {
    /// The database of `url` (the URL is read as every pool of the system reads one: TLS
    /// rules included).
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let options = platform::db::connect_options(url)?;
        let name = options
            .get_database()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("database URL {} names no database", redact_url(url)))?;
        Ok(Self { name, options })
    }

    /// The same server, host and port, for telling two URLs of one database apart from two
    /// databases.
    fn key(&self) -> String {
        format!(
            "{}:{}/{}",
            self.options.get_host(),
            self.options.get_port(),
            self.name
        )
    }

    fn pool(&self) -> PgPool {
        // One connection: the search is one streaming query at a time.
        PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(platform::db::ACQUIRE_TIMEOUT)
            .connect_lazy_with(self.options.clone())
    }
}

/// `databases` without repeats (the same database named by two URLs is searched once), in
/// their order.
pub fn distinct(databases: Vec<Database>) -> Vec<Database> {
    let mut seen = std::collections::HashSet::new();
    databases
        .into_iter()
        .filter(|d| seen.insert(d.key()))
        .collect()
}

/// Every database of `auth`'s server that its role may connect to (`--all-databases`), reached
/// as `auth_url`'s role.
pub async fn databases_on_server(
    auth: &PgPool,
    auth_url: &str,
) -> Result<Vec<Database>, ErasureError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate \
           AND has_database_privilege(datname, 'CONNECT') ORDER BY datname",
    )
    .fetch_all(auth)
    .await
    .map_err(|e| auth_error(e, "list the databases"))?;
    let base = Database::from_url(auth_url)?;
    Ok(names
        .into_iter()
        .map(|name| Database {
            options: base.options.clone().database(&name),
            name,
        })
        .collect())
}

/// Where a hit is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A row of a table.
    Row {
        database: String,
        schema: String,
        table: String,
        /// The partition holding the row, for a partitioned table.
        partition: Option<String>,
        /// The row's `ctid`, when the role may read the whole table.
        ctid: Option<String>,
        /// Its place in the scan (1 = first read), always.
        row: u64,
    },
    /// A message waiting in a queue.
    Message {
        queue: String,
        /// Its place in the queue (1 = oldest).
        position: u64,
        message_id: Option<String>,
    },
}

/// One row or message holding some of the erased data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub place: Place,
    pub found: Found,
}

impl fmt::Display for Hit {
    /// `auth_db.public.notes (ctid (0,3)): email, name`, `queue q message 2 (message-id m):
    /// phone`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let found = self.found.describe();
        match &self.place {
            Place::Row {
                database,
                schema,
                table,
                partition,
                ctid,
                row,
            } => {
                write!(f, "{database}.{schema}.{table} (")?;
                if let Some(partition) = partition {
                    write!(f, "partition {partition}, ")?;
                }
                match ctid {
                    Some(ctid) => write!(f, "ctid {ctid}")?,
                    None => write!(f, "row {row}")?,
                }
                write!(f, "): {found}")
            }
            Place::Message {
                queue,
                position,
                message_id,
            } => write!(
                f,
                "queue {queue} message {position} (message-id {}): {found}",
                message_id.as_deref().unwrap_or("-")
            ),
        }
    }
}

/// What [`verify`] searched and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub user: Uuid,
    /// The databases searched (reached), by name.
    pub databases: Vec<String>,
    pub tables: u64,
    pub rows: u64,
    /// The queues searched (those that exist).
    pub queues: Vec<String>,
    pub messages: u64,
    /// The first [`MAX_LISTED`] hits, in the order found.
    pub hits: Vec<Hit>,
    /// Every hit.
    pub hits_total: u64,
    /// What the operator's identities could not read, and why: not searched, so not proven
    /// clean (a table without rights, a column, rows hidden by row-level security, a query
    /// that failed).
    pub not_searched: Vec<String>,
    /// Databases (or the broker) that could not be reached.
    pub unreachable: Vec<String>,
}

impl Report {
    /// No hit anywhere it looked.
    pub fn is_clean(&self) -> bool {
        self.hits_total == 0
    }

    fn hit(&mut self, place: Place, found: Found) {
        self.hits_total += 1;
        if self.hits.len() < MAX_LISTED {
            self.hits.push(Hit { place, found });
        }
    }

    /// The final line: `erasure verify: no trace of <id> in 3 databases (N rows) and 7 queues
    /// (M messages)`, or `erasure verify: K hits`.
    pub fn summary(&self) -> String {
        if self.is_clean() {
            format!(
                "erasure verify: no trace of {} in {} databases ({} rows) and {} queues ({} \
                 messages)",
                self.user,
                self.databases.len(),
                self.rows,
                self.queues.len(),
                self.messages
            )
        } else {
            format!("erasure verify: {} hits", self.hits_total)
        }
    }
}

/// How far [`verify`] is, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    /// A database's search begins: its tables and about how many rows they hold (the planner's
    /// statistics; 0 when never analysed).
    Database {
        name: &'a str,
        tables: usize,
        estimated_rows: u64,
    },
    /// Rows read so far in the current database.
    Rows(u64),
    /// The queues' search begins: how many queues, and the messages they hold.
    Queues { queues: usize, messages: u64 },
    /// Messages read so far.
    Messages(u64),
}

/// Searches `databases` and every registered consumer's queues (read as `amqp_url`'s user)
/// for what `user`'s erasure record fingerprints; see the module documentation. A database or
/// the broker out of reach is reported ([`Report::unreachable`]) and the rest searched; only
/// `auth_db` (`auth`) out of reach, or no erasure record, is an error.
pub async fn verify(
    auth: &PgPool,
    user: Uuid,
    databases: &[Database],
    amqp_url: &str,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<Report, ErasureError> {
    let record = record(auth, user).await?;
    let matcher = record.fingerprints.matcher()?;
    let queues = queues_to_search(auth).await?;
    let mut report = Report {
        user,
        ..Report::default()
    };
    for database in databases {
        search_database(database, &matcher, &mut report, progress).await;
    }
    search_queues(amqp_url, &queues, &matcher, &mut report, progress).await;
    Ok(report)
}

/// Every registered consumer's queues (main, retries, dead letters) and the unrouted queue.
async fn queues_to_search(auth: &PgPool) -> Result<Vec<String>, ErasureError> {
    let mut queues = Vec::new();
    for (c, _) in registered(auth).await? {
        queues.push(c.main.clone());
        queues.extend(c.retries.iter().map(|r| r.name.clone()));
        queues.push(c.dead_letter.clone());
    }
    queues.push(topology::UNROUTED_QUEUE.to_owned());
    Ok(queues)
}

/// A table as the search reads it.
#[derive(Debug, sqlx::FromRow)]
struct Table {
    schema: String,
    name: String,
    /// `p`: partitioned (read through the parent), `r` a table, `m` a materialized view.
    kind: String,
    estimated_rows: f64,
    /// The columns this role may read, in order, and those it may not.
    readable: Vec<String>,
    unreadable: Vec<String>,
    /// Row-level security may hide rows from this role.
    row_security: bool,
}

/// Every table holding rows of the database: not the catalogs, not a partition (its parent
/// reads it), not a materialized view never populated (it holds nothing), not another
/// session's temporary table (only that session can read it).
const TABLES: &str = "\
    SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind, \
      (CASE WHEN c.relkind = 'p' THEN \
         (SELECT coalesce(sum(greatest(pc.reltuples, 0)), 0) FROM pg_partition_tree(c.oid) pt \
            JOIN pg_class pc ON pc.oid = pt.relid WHERE pt.isleaf) \
       ELSE greatest(c.reltuples, 0) END)::float8 AS estimated_rows, \
      ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
              AND NOT a.attisdropped AND has_column_privilege(c.oid, a.attnum, 'SELECT') \
            ORDER BY a.attnum) AS readable, \
      ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
              AND NOT a.attisdropped AND NOT has_column_privilege(c.oid, a.attnum, 'SELECT') \
            ORDER BY a.attnum) AS unreadable, \
      (c.relrowsecurity AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles \
                                 WHERE rolname = current_user)) AS row_security \
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition \
      AND (c.relkind <> 'm' OR c.relispopulated) AND c.relpersistence <> 't' \
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
    ORDER BY 1, 2";

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl Table {
    /// The query reading each row as (partition, ctid, text): the whole row when every
    /// column is readable (`t::text`), else the readable columns (`ctid` needs the table's
    /// right, so none then).
    fn query(&self) -> String {
        // A table with inheritance children: ONLY, each child is read as itself. A partitioned
        // table: through the parent (ONLY would read nothing), never each partition again.
        let only = if self.kind == "r" { "ONLY " } else { "" };
        let from = format!("{only}{}.{} t", quote(&self.schema), quote(&self.name));
        if self.unreadable.is_empty() {
            format!("SELECT t.tableoid::regclass::text, t.ctid::text, t::text FROM {from}")
        } else {
            let columns: Vec<String> = self
                .readable
                .iter()
                .map(|c| format!("t.{}", quote(c)))
                .collect();
            format!(
                "SELECT NULL::text, NULL::text, ROW({})::text FROM {from}",
                columns.join(", ")
            )
        }
    }
}

/// Searches every table of `database`, row by row; what cannot be reached or read goes to the
/// report's lists.
async fn search_database(
    database: &Database,
    matcher: &Matcher<'_>,
    report: &mut Report,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) {
    let pool = database.pool();
    let listed: Result<Vec<Table>, _> = sqlx::query_as(TABLES).fetch_all(&pool).await;
    let tables = match listed {
        Ok(tables) => tables,
        Err(e) => {
            match platform::db::is_unavailable(&e) {
                true => report.unreachable.push(format!("{}: {e}", database.name)),
                false => report
                    .not_searched
                    .push(format!("{}: cannot list its tables: {e}", database.name)),
            }
            pool.close().await;
            return;
        }
    };
    report.databases.push(database.name.clone());
    progress(Progress::Database {
        name: &database.name,
        tables: tables.len(),
        // Whole rows, however the statistics round.
        estimated_rows: tables.iter().map(|t| t.estimated_rows as u64).sum(),
    });
    let mut rows_here: u64 = 0;
    for table in &tables {
        let label = format!("{}.{}.{}", database.name, table.schema, table.name);
        if table.readable.is_empty() {
            report
                .not_searched
                .push(format!("{label}: this role may read none of its columns"));
            continue;
        }
        if !table.unreadable.is_empty() {
            report.not_searched.push(format!(
                "{label}: columns {} not readable by this role (the others were searched)",
                table.unreadable.join(", ")
            ));
        }
        if table.row_security {
            report.not_searched.push(format!(
                "{label}: row-level security may hide rows from this role (those it sees were \
                 searched)"
            ));
        }
        report.tables += 1;
        let sql = table.query();
        let mut rows = sqlx::query_as::<_, (Option<String>, Option<String>, Option<String>)>(&sql)
            .fetch(&pool);
        let mut row = 0;
        let outcome = loop {
            match rows.try_next().await {
                Ok(Some((partition, ctid, text))) => {
                    row += 1;
                    rows_here += 1;
                    report.rows += 1;
                    let found = matcher.scan(text.as_deref());
                    if found.any() {
                        report.hit(
                            Place::Row {
                                database: database.name.clone(),
                                schema: table.schema.clone(),
                                table: table.name.clone(),
                                partition: partition.filter(|_| table.kind == "p"),
                                ctid,
                                row,
                            },
                            found,
                        );
                    }
                    // Often enough for a bar, rarely enough to cost nothing.
                    if rows_here.is_multiple_of(512) {
                        progress(Progress::Rows(rows_here));
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        drop(rows);
        progress(Progress::Rows(rows_here));
        if let Err(e) = outcome {
            if platform::db::is_unavailable(&e) {
                report.unreachable.push(format!(
                    "{} (lost while reading {label}): {e}",
                    database.name
                ));
                break;
            }
            report.not_searched.push(format!("{label}: {e}"));
        }
    }
    pool.close().await;
}

/// What a queue holds now, or `None` when it does not exist (a consumer registered but never
/// started has no queues: nothing waits there). Other refusals are errors.
async fn depth(conn: &Connection, queue: &str) -> Result<Option<u32>, lapin::Error> {
    // A passive declare of a missing queue closes its channel: a channel of its own.
    let ch = conn.create_channel().await?;
    match amqp::queue_depth(&ch, queue).await {
        Ok(n) => {
            ch.close(200, "done").await.ok();
            Ok(Some(n))
        }
        Err(lapin::Error::ProtocolError(e)) if e.get_id() == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// The texts of a message searched together: its body and every header's value (a dead
/// letter's `x-error-detail` may quote the payload).
fn message_texts(m: &BasicGetMessage) -> Vec<String> {
    let mut texts = vec![String::from_utf8_lossy(&m.delivery.data).into_owned()];
    texts.extend(
        amqp::headers_of(&m.delivery.properties)
            .inner()
            .values()
            .map(amqp::show_value),
    );
    texts
}

fn message_id(m: &BasicGetMessage) -> Option<String> {
    m.delivery
        .properties
        .message_id()
        .as_ref()
        .map(ToString::to_string)
}

/// The next message of `queue`, unacked: it returns, in its place, when `ch` closes.
async fn next(ch: &Channel, queue: &str) -> Result<Option<BasicGetMessage>, lapin::Error> {
    ch.basic_get(queue, BasicGetOptions { no_ack: false }).await
}

/// Searches every message of `queues`, leaving each where it was.
async fn search_queues(
    amqp_url: &str,
    queues: &[String],
    matcher: &Matcher<'_>,
    report: &mut Report,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) {
    let conn = match amqp::connect(amqp_url, "portal erasure verify").await {
        Ok(conn) => conn,
        Err(e) => {
            report
                .unreachable
                .push(format!("RabbitMQ at {}: {e}", redact_url(amqp_url)));
            return;
        }
    };
    let mut depths = Vec::new();
    for queue in queues {
        match depth(&conn, queue).await {
            Ok(Some(n)) => depths.push((queue, n)),
            Ok(None) => {}
            Err(e) => report
                .not_searched
                .push(format!("queue {queue}: cannot open it: {e}")),
        }
    }
    progress(Progress::Queues {
        queues: depths.len(),
        messages: depths.iter().map(|(_, n)| u64::from(*n)).sum(),
    });
    for (queue, held) in depths {
        report.queues.push(queue.clone());
        let searched = async {
            let ch = conn.create_channel().await?;
            // Every message it held, so all come back in their order (see ops::dlq).
            let mut position = 0;
            let read = async {
                while position < u64::from(held) {
                    let Some(m) = next(&ch, queue).await? else {
                        break;
                    };
                    position += 1;
                    report.messages += 1;
                    let found = matcher.scan(message_texts(&m).iter().map(String::as_str));
                    if found.any() {
                        report.hit(
                            Place::Message {
                                queue: queue.clone(),
                                position,
                                message_id: message_id(&m),
                            },
                            found,
                        );
                    }
                    if report.messages.is_multiple_of(64) {
                        progress(Progress::Messages(report.messages));
                    }
                }
                Ok::<_, lapin::Error>(())
            }
            .await;
            // Closing returns every message taken, unacked, to the queue.
            ch.close(200, "done").await.ok();
            read
        }
        .await;
        progress(Progress::Messages(report.messages));
        if let Err(e) = searched {
            report
                .not_searched
                .push(format!("queue {queue}: read in part: {e}"));
        }
    }
    conn.close(200, "done").await.ok();
}

/// What [`purge`] did to one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgedQueue {
    pub queue: String,
    /// The person's messages removed.
    pub removed: u32,
    /// How many the queue held when the purge began.
    pub of: u32,
}

/// What [`purge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    pub user: Uuid,
    /// Each queue that exists, in the order purged.
    pub queues: Vec<PurgedQueue>,
    /// Queues that could not be purged, and why (`queues_purged_at` is then left as it was).
    pub failed: Vec<String>,
    /// `erasures.queues_purged_at` now: set when every queue was purged.
    pub queues_purged_at: Option<DateTime<Utc>>,
}

impl Purged {
    pub fn removed(&self) -> u32 {
        self.queues.iter().map(|q| q.removed).sum()
    }
}

/// Whether `m` is a message about `user` that holds (or may hold) their data: its body names
/// them as `payload.userId`, and it is not a tombstone free of the data.
fn about(m: &BasicGetMessage, user: Uuid, matcher: &Matcher<'_>) -> bool {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&m.delivery.data) else {
        return false;
    };
    let named = body
        .pointer("/payload/userId")
        .and_then(serde_json::Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok());
    if named != Some(user) {
        return false;
    }
    // The user.erased event (or any later snapshot of the erased person) is what makes a
    // consumer forget them: removing it from a retry queue would leave that copy holding the
    // person. It is kept unless it carries the data after all.
    let tombstone = body
        .pointer("/payload/erasedAt")
        .is_some_and(|at| !at.is_null());
    !tombstone
        || matcher
            .scan(message_texts(m).iter().map(String::as_str))
            .any()
}

/// Removes `user`'s messages from `queue`, keeping the others in their order; `None` when the
/// queue does not exist.
async fn purge_queue(
    conn: &Connection,
    queue: &str,
    user: Uuid,
    matcher: &Matcher<'_>,
    by: &str,
) -> Result<Option<PurgedQueue>, lapin::Error> {
    let Some(held) = depth(conn, queue).await? else {
        return Ok(None);
    };
    let ch = conn.create_channel().await?;
    let mut removed = 0;
    let purged = async {
        // Every message it held is taken, to keep the order: those not removed come back, in
        // their place, when the channel closes.
        for _ in 0..held {
            let Some(m) = next(&ch, queue).await? else {
                break;
            };
            if about(&m, user, matcher) {
                m.delivery.acker.ack(BasicAckOptions::default()).await?;
                removed += 1;
            }
        }
        Ok::<_, lapin::Error>(())
    }
    .await;
    ch.close(200, "done").await.ok();
    // Logged whatever happened: what was removed is gone even when the rest failed.
    tracing::warn!(
        target: "security",
        event = "erased_person_messages_purged",
        by,
        user_id = %user,
        queue,
        removed,
        of = held,
        complete = purged.is_ok(),
        "an erased person's messages removed from a queue"
    );
    purged?;
    Ok(Some(PurgedQueue {
        queue: queue.to_owned(),
        removed,
        of: held,
    }))
}

/// Removes every message about `user` (erased: [`ErasureError::NotErased`] otherwise) from each
/// registered consumer's retry and dead-letter queues and from the unrouted queue, as
/// `amqp_url`'s user; `by` (who asked) is named in each queue's `target: "security"` line. Sets
/// `erasures.queues_purged_at` when every queue was purged. See the module documentation for
/// what is kept.
pub async fn purge(
    auth: &PgPool,
    amqp_url: &str,
    user: Uuid,
    by: &str,
) -> Result<Purged, ErasureError> {
    let record = record(auth, user).await?;
    let matcher = record.fingerprints.matcher()?;
    let mut queues = Vec::new();
    for (c, _) in registered(auth).await? {
        queues.extend(c.retries.iter().map(|r| r.name.clone()));
        queues.push(c.dead_letter.clone());
    }
    queues.push(topology::UNROUTED_QUEUE.to_owned());
    let conn = amqp::connect(amqp_url, "portal erasure purge")
        .await
        .map_err(|e| {
            ErasureError::Unreachable(format!("RabbitMQ at {}: {e}", redact_url(amqp_url)))
        })?;
    let mut done = Purged {
        user,
        queues: Vec::new(),
        failed: Vec::new(),
        queues_purged_at: record.queues_purged_at,
    };
    for queue in &queues {
        match purge_queue(&conn, queue, user, &matcher, by).await {
            Ok(Some(purged)) => done.queues.push(purged),
            Ok(None) => {}
            Err(e) => done.failed.push(format!("{queue}: {e}")),
        }
    }
    conn.close(200, "done").await.ok();
    if done.failed.is_empty() {
        let at: DateTime<Utc> = sqlx::query_scalar(
            "UPDATE erasures SET queues_purged_at = now() WHERE user_id = $1 \
             RETURNING queues_purged_at",
        )
        .bind(user)
        .fetch_one(auth)
        .await
        .map_err(|e| auth_error(e, "record the purge"))?;
        done.queues_purged_at = Some(at);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_names_its_row_or_message_and_what_it_holds() {
        let both = Found {
            email: true,
            name: true,
            phone: false,
        };
        let row = Hit {
            place: Place::Row {
                database: "elsewhere".into(),
                schema: "public".into(),
                table: "notes".into(),
                partition: None,
                ctid: Some("(0,3)".into()),
                row: 3,
            },
            found: both,
        };
        assert_eq!(
            row.to_string(),
            "elsewhere.public.notes (ctid (0,3)): email, name"
        );
        let partial = Hit {
            place: Place::Row {
                database: "auth_db".into(),
                schema: "public".into(),
                table: "event_store".into(),
                partition: Some("event_store_2026_02".into()),
                ctid: None,
                row: 12,
            },
            found: both,
        };
        assert_eq!(
            partial.to_string(),
            "auth_db.public.event_store (partition event_store_2026_02, row 12): email, name"
        );
        let message = Hit {
            place: Place::Message {
                queue: "user-service.user-events.dlq".into(),
                position: 2,
                message_id: None,
            },
            found: Found {
                phone: true,
                ..Found::default()
            },
        };
        assert_eq!(
            message.to_string(),
            "queue user-service.user-events.dlq message 2 (message-id -): phone"
        );
    }

    #[test]
    fn a_table_is_read_whole_or_through_its_readable_columns() {
        let mut table = Table {
            schema: "public".into(),
            name: "od\"d".into(),
            kind: "r".into(),
            estimated_rows: 0.0,
            readable: vec!["id".into(), "email".into()],
            unreadable: vec![],
            row_security: false,
        };
        assert_eq!(
            table.query(),
            "SELECT t.tableoid::regclass::text, t.ctid::text, t::text FROM ONLY \
             \"public\".\"od\"\"d\" t"
        );
        table.unreadable = vec!["password_hash".into()];
        table.kind = "p".into();
        assert_eq!(
            table.query(),
            "SELECT NULL::text, NULL::text, ROW(t.\"id\", t.\"email\")::text FROM \
             \"public\".\"od\"\"d\" t"
        );
    }

    #[test]
    fn the_summary_counts_what_was_searched_or_the_hits() {
        let mut report = Report {
            user: Uuid::nil(),
            databases: vec!["auth_db".into(), "user_db".into(), "appointment_db".into()],
            rows: 120,
            queues: vec!["q".into(); 7],
            messages: 4,
            ..Report::default()
        };
        assert_eq!(
            report.summary(),
            "erasure verify: no trace of 00000000-0000-0000-0000-000000000000 in 3 databases \
             (120 rows) and 7 queues (4 messages)"
        );
        for _ in 0..2 {
            report.hit(
                Place::Message {
                    queue: "q".into(),
                    position: 1,
                    message_id: None,
                },
                Found {
                    email: true,
                    ..Found::default()
                },
            );
        }
        assert!(!report.is_clean());
        assert_eq!(report.summary(), "erasure verify: 2 hits");
    }
}
