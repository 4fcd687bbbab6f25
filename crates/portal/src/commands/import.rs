//! `portal users import FILE.csv`: creates many accounts through the admin API's bulk endpoint
//! (`POST /api/v1/auth/admin/users/bulk`), up to 1,000 per request.
//!
//! The file has a header row naming the columns `email`, `firstName`, `lastName`, `role` and
//! optionally `phoneNumber` (in any order, case-insensitive). Every row is answered: invalid ones
//! are listed with their line number and reason, the valid ones created, and a row whose email
//! exists already is left alone, so importing the same file again creates nothing. The
//! temporary passwords of the accounts created go to a new owner-only CSV file, never to the
//! screen. Exit codes: 0 every row created or already there, 1 some rows invalid (the others
//! imported) or the API refused, 2 the API could not be reached.

use super::api::{api_failure, connect};
use super::Failure;
use crate::cli::ApiClientArgs;
use anyhow::{anyhow, Context};
use contract::api::{BulkCreateRequest, BulkStatus, NewProfile, BULK_MAX_USERS};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The columns of the file, as the API names the fields.
const COLUMNS: [&str; 5] = ["email", "firstName", "lastName", "role", "phoneNumber"];
const REQUIRED: usize = 4;

/// One row of the file, with the line it was read from.
struct Row {
    line: u64,
    profile: NewProfile,
}

/// A row that was not imported, and why.
#[derive(serde::Serialize)]
struct Rejected {
    line: u64,
    field: Option<String>,
    reason: String,
}

#[derive(Default, serde::Serialize)]
struct Summary {
    rows: usize,
    created: usize,
    existing: usize,
    invalid: Vec<Rejected>,
    #[serde(skip_serializing_if = "Option::is_none")]
    passwords_file: Option<PathBuf>,
}

pub struct ImportArgs {
    pub api: ApiClientArgs,
    pub file: PathBuf,
    pub passwords_out: Option<PathBuf>,
    pub batch_size: usize,
    pub concurrency: usize,
}

pub async fn run(args: ImportArgs) -> Result<(), Failure> {
    let (rows, mut invalid) = read_rows(&args.file)?;
    let out_path = args
        .passwords_out
        .clone()
        .unwrap_or_else(|| default_passwords_path(&args.file));
    let client = connect(&args.api).await?;
    let mut passwords = PasswordsFile::create(out_path)?;
    let bar = progress_bar((rows.len() + invalid.len()) as u64);
    bar.inc(invalid.len() as u64);
    let mut summary = Summary {
        rows: rows.len() + invalid.len(),
        ..Summary::default()
    };
    let batch_size = args.batch_size.clamp(1, BULK_MAX_USERS);
    // Batches are sent a few at a time and answered in file order. After a failure no further
    // batch is sent, but those already sent are still read to the end: the server may have
    // created their accounts, and their passwords must reach the file.
    let failed = AtomicBool::new(false);
    let mut answers = futures::stream::iter(rows.chunks(batch_size).map(|batch| {
        let (client, failed) = (&client, &failed);
        async move {
            if failed.load(Ordering::SeqCst) {
                return (batch, None);
            }
            let request = BulkCreateRequest {
                users: batch.iter().map(|r| r.profile.clone()).collect(),
            };
            let answer = client.bulk_create_users(&request).await;
            if answer.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            (batch, Some(answer))
        }
    }))
    .buffered(args.concurrency.max(1));
    let mut stopped = None;
    while let Some((batch, answer)) = answers.next().await {
        let answer = match answer {
            Some(Ok(answer)) => answer,
            // Importing the file again finishes the rest without creating anything twice.
            Some(Err(e)) => {
                stopped.get_or_insert((batch.first().map_or(0, |r| r.line), e));
                continue;
            }
            None => continue, // not sent: an earlier batch failed
        };
        for item in answer.items {
            let Some(row) = batch.get(item.index) else {
                continue;
            };
            match item.status {
                BulkStatus::Created => {
                    summary.created += 1;
                    if let Some(password) = &item.temporary_password {
                        passwords
                            .write(row, item.user_id.map(|u| u.0), password)
                            .map_err(Failure::from)?;
                    }
                }
                BulkStatus::Exists => summary.existing += 1,
                BulkStatus::Invalid => invalid.push(Rejected {
                    line: row.line,
                    field: item.error.as_ref().and_then(|e| e.field.clone()),
                    reason: item
                        .error
                        .map_or_else(|| "refused".to_owned(), |e| e.message),
                }),
            }
        }
        bar.inc(batch.len() as u64);
    }
    drop(answers);
    bar.finish_and_clear();
    passwords.finish().map_err(Failure::from)?;
    invalid.sort_by_key(|r| r.line);
    summary.passwords_file = passwords.written.then_some(passwords.path.clone());
    summary.invalid = invalid;
    report(&summary, args.api.json);
    if let Some((line, e)) = stopped {
        let done = summary.created + summary.existing;
        let failure = api_failure(e);
        return Err(Failure {
            code: failure.code,
            error: failure.error.context(format!(
                "the batch starting on line {line} failed and no later batch was sent ({done} \
                 rows imported or already there); importing the file again finishes the rest"
            )),
        });
    }
    if !summary.invalid.is_empty() {
        return Err(anyhow!(
            "{} of {} rows were not imported (listed above)",
            summary.invalid.len(),
            summary.rows
        )
        .into());
    }
    Ok(())
}

/// Reads the file: the rows to send, and those refused before sending (a malformed line).
fn read_rows(path: &Path) -> Result<(Vec<Row>, Vec<Rejected>), Failure> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let headers = reader
        .headers()
        .with_context(|| format!("{}: cannot read the header row", path.display()))?
        .clone();
    let mut index = [None; COLUMNS.len()];
    for (i, name) in headers.iter().enumerate() {
        let name = name.trim_start_matches('\u{feff}');
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) {
            Some(c) if index[c].is_none() => index[c] = Some(i),
            Some(_) => {
                return Err(anyhow!("{}: column {name:?} appears twice", path.display()).into())
            }
            None => {
                return Err(anyhow!(
                    "{}: unknown column {name:?} in the header row (expected {})",
                    path.display(),
                    COLUMNS.join(", ")
                )
                .into())
            }
        }
    }
    let missing: Vec<&str> = COLUMNS[..REQUIRED]
        .iter()
        .zip(&index)
        .filter(|(_, i)| i.is_none())
        .map(|(c, _)| *c)
        .collect();
    if !missing.is_empty() {
        return Err(anyhow!(
            "{}: the header row lacks {} (it needs email, firstName, lastName, role and may have \
             phoneNumber)",
            path.display(),
            missing.join(", ")
        )
        .into());
    }
    let (mut rows, mut rejected) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                rejected.push(Rejected {
                    line,
                    field: None,
                    reason: format!("unreadable line: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        if record.len() != headers.len() {
            rejected.push(Rejected {
                line,
                field: None,
                reason: format!(
                    "has {} fields where the header has {}",
                    record.len(),
                    headers.len()
                ),
            });
            continue;
        }
        let get = |c: usize| {
            index[c]
                .and_then(|i| record.get(i))
                .unwrap_or("")
                .to_owned()
        };
        let phone = get(4);
        rows.push(Row {
            line,
            profile: NewProfile {
                email: get(0),
                first_name: get(1),
                last_name: get(2),
                role: get(3),
                phone_number: (!phone.is_empty()).then_some(phone),
            },
        });
    }
    Ok((rows, rejected))
}

/// `staff.csv` → `staff.passwords-20261204T153000Z.csv`, beside it: a name no earlier run used.
fn default_passwords_path(input: &Path) -> PathBuf {
    let stem = input
        .file_stem()
        .map_or_else(|| "import".into(), |s| s.to_string_lossy().into_owned());
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    input.with_file_name(format!("{stem}.passwords-{stamp}.csv"))
}

/// The temporary passwords of the accounts created: owner-only, created before anything is
/// sent (a password that cannot be written down would be lost), never over an existing file,
/// removed again when no account was created.
struct PasswordsFile {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    written: bool,
}

impl PasswordsFile {
    fn create(path: PathBuf) -> anyhow::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| {
                if path.exists() {
                    format!(
                        "{} already exists (an earlier run's passwords?); name another with \
                         --passwords-out",
                        path.display()
                    )
                } else {
                    format!(
                        "cannot create {} for the temporary passwords",
                        path.display()
                    )
                }
            })?;
        let mut file = std::io::BufWriter::new(file);
        writeln!(file, "line,email,userId,temporaryPassword")?;
        Ok(Self {
            path,
            file,
            written: false,
        })
    }

    fn write(&mut self, row: &Row, id: Option<uuid::Uuid>, password: &str) -> anyhow::Result<()> {
        let id = id.map(|i| i.to_string()).unwrap_or_default();
        // Emails cannot hold commas or quotes once validated; passwords are alphanumeric.
        writeln!(
            self.file,
            "{},{},{id},{password}",
            row.line,
            row.profile.email.trim().to_lowercase()
        )
        .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.written = true;
        Ok(())
    }

    /// Flushes the file, or removes it when it holds no password.
    fn finish(&mut self) -> anyhow::Result<()> {
        self.file
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        if !self.written {
            std::fs::remove_file(&self.path)
                .with_context(|| format!("cannot remove the empty {}", self.path.display()))?;
        }
        Ok(())
    }
}

fn progress_bar(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} import [{bar:40}] {pos}/{len} rows ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

fn report(summary: &Summary, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(summary).unwrap_or_default()
        );
        return;
    }
    for r in &summary.invalid {
        // The API's reason names the field already ("email: must be …").
        eprintln!("line {}: {}", r.line, r.reason);
    }
    println!(
        "{} rows: {} created, {} already there, {} invalid",
        summary.rows,
        summary.created,
        summary.existing,
        summary.invalid.len()
    );
    if let Some(path) = &summary.passwords_file {
        println!(
            "temporary passwords: {} (owner-only; hand them over and delete the file; they \
             expire and must be changed at first login)",
            path.display()
        );
    }
}
