//! Customer import from CSV (with a header) or JSON lines, streamed.
//!
//! Columns / keys: `account_number, legal_entity, party_type, is_b2b, primary_email, first_name,
//! last_name`. Records are upserted by account number, so importing the same file twice changes
//! nothing. By default a file with any bad row is rejected whole (one transaction, rolled back)
//! and every bad row is reported with its line number; with [`OnError::SkipInvalid`] the good rows
//! are imported and the bad ones reported as skipped.
//!
//! Streamed: a reader thread parses and checks rows and hands batches to the writer (the calling
//! thread) over a channel of a few batches, so memory does not grow with the file. The writer is
//! [`crate::storage::sqlite::bulk`] on SQLite and diesel on PostgreSQL.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc;

use serde::Deserialize;

use crate::domain::customer::parse_name;
use crate::domain::{AccountNumber, EmailAddress, LegalEntity, PartyType};
use crate::storage::customers::{self, NewCustomer, UpsertCounts};
use crate::storage::sqlite::bulk::SqliteBulk;
use crate::storage::{self, Db, StorageError};

/// Rows written per statement batch.
const BATCH: usize = 2000;
/// Bad rows kept in the report (all are counted).
const MAX_REPORTED_ERRORS: usize = 1000;

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// Guesses the format from the file name: `.jsonl`/`.ndjson`/`.json` are JSON lines.
    pub fn from_path(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("jsonl" | "ndjson" | "json") => Format::Jsonl,
            _ => Format::Csv,
        }
    }
}

/// What to do with bad rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Reject the whole file; nothing is imported.
    RejectFile,
    /// Import the good rows; report the bad ones as skipped.
    SkipInvalid,
}

/// A bad row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1 of a CSV file).
    pub line: u64,
    /// Why the row was refused.
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Data rows read.
    pub rows: u64,
    /// Records written or left alone.
    pub counts: UpsertCounts,
    /// Bad rows (at most [`MAX_REPORTED_ERRORS`] kept).
    pub errors: Vec<RowError>,
    /// Number of bad rows.
    pub error_count: u64,
    /// Whether anything was written.
    pub committed: bool,
}

/// Errors that stop an import.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read, or its header is wrong.
    #[error("{0}")]
    File(String),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The file had bad rows and was rejected whole.
    #[error("the file has {} bad row(s); nothing was imported", .0.error_count)]
    Rejected(ImportReport),
}

impl From<diesel::result::Error> for ImportError {
    fn from(e: diesel::result::Error) -> Self {
        ImportError::Storage(StorageError::Query(e))
    }
}

/// One row as read, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    account_number: Option<String>,
    legal_entity: Option<String>,
    party_type: Option<String>,
    is_b2b: Option<BoolField>,
    primary_email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

impl RawRow {
    fn fields(&self) -> Fields<'_> {
        Fields {
            account_number: self.account_number.as_deref(),
            legal_entity: self.legal_entity.as_deref(),
            party_type: self.party_type.as_deref(),
            is_b2b: self.is_b2b.as_ref().map(|b| match b {
                BoolField::Bool(b) => BoolRef::Bool(*b),
                BoolField::Text(t) => BoolRef::Text(t),
            }),
            primary_email: self.primary_email.as_deref(),
            first_name: self.first_name.as_deref(),
            last_name: self.last_name.as_deref(),
        }
    }
}

/// One row's fields, borrowed from the reader's buffer, in [`COLUMNS`] order.
#[derive(Debug, Clone, Copy)]
struct Fields<'a> {
    account_number: Option<&'a str>,
    legal_entity: Option<&'a str>,
    party_type: Option<&'a str>,
    is_b2b: Option<BoolRef<'a>>,
    primary_email: Option<&'a str>,
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
}

/// `is_b2b` as read.
#[derive(Debug, Clone, Copy)]
enum BoolRef<'a> {
    Bool(bool),
    Text(&'a str),
}

/// Where each of [`COLUMNS`] is in the file (the header was checked: all are present).
fn column_indices(headers: &csv::StringRecord) -> [usize; 7] {
    COLUMNS.map(|name| headers.iter().position(|h| h == name).unwrap_or(usize::MAX))
}

/// `is_b2b` as JSON true/false or text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BoolField {
    Bool(bool),
    Text(String),
}

/// A validated row.
#[derive(Debug, Clone)]
struct Row {
    account_number: String,
    legal_entity: String,
    party_type: &'static str,
    is_b2b: bool,
    primary_email: Option<EmailAddress>,
    first_name: Option<String>,
    last_name: Option<String>,
}

/// The columns a CSV header must have.
pub const COLUMNS: [&str; 7] = [
    "account_number",
    "legal_entity",
    "party_type",
    "is_b2b",
    "primary_email",
    "first_name",
    "last_name",
];

/// Imports a file.
pub fn import_file(
    db: &Db,
    path: &Path,
    format: Format,
    on_error: OnError,
) -> Result<ImportReport, ImportError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ImportError::File(format!("{}: {e}", path.display())))?;
    import_reader(
        db,
        BufReader::with_capacity(1 << 16, file),
        format,
        on_error,
    )
}

/// Imports from a reader, in one transaction. One thread reads and checks the rows while the
/// calling thread writes them, a few batches apart (so memory stays bounded).
pub fn import_reader<R: Read + Send>(
    db: &Db,
    reader: R,
    format: Format,
    on_error: OnError,
) -> Result<ImportReport, ImportError> {
    let (sender, batches) = mpsc::sync_channel::<Vec<Row>>(QUEUED_BATCHES);
    std::thread::scope(|scope| {
        let parser = scope.spawn(move || parse(reader, format, sender));
        // Called by the writer once every batch is written, before it commits: the bad rows
        // decide whether it may.
        let finish = move || -> Result<ImportReport, ImportError> {
            parser
                .join()
                .map_err(|_| ImportError::File("the file reader failed".into()))?
        };
        match db.sqlite_path() {
            Some(path) => write_sqlite(
                path,
                db.sqlite_durable_commits(),
                &batches,
                finish,
                on_error,
            ),
            None => write_diesel(db, &batches, finish, on_error),
        }
    })
}

/// Batches waiting between the reader and the writer.
const QUEUED_BATCHES: usize = 4;

/// SQLite: the bulk writer ([`storage::sqlite::bulk`]).
fn write_sqlite(
    path: &str,
    durable: bool,
    batches: &mpsc::Receiver<Vec<Row>>,
    finish: impl FnOnce() -> Result<ImportReport, ImportError>,
    on_error: OnError,
) -> Result<ImportReport, ImportError> {
    let mut bulk = SqliteBulk::begin(path, durable)?;
    let mut counts = UpsertCounts::default();
    for batch in batches {
        let now = storage::now();
        let rows: Vec<NewCustomer<'_>> = batch.iter().map(|r| r.as_new(now)).collect();
        add(&mut counts, bulk.upsert(&rows)?);
    }
    let mut report = finish()?;
    if report.error_count > 0 && on_error == OnError::RejectFile {
        bulk.rollback()?;
        return Err(ImportError::Rejected(report));
    }
    bulk.commit()?;
    report.counts = counts;
    report.committed = true;
    Ok(report)
}

/// PostgreSQL: diesel, multi-row inserts in the import's transaction.
fn write_diesel(
    db: &Db,
    batches: &mpsc::Receiver<Vec<Row>>,
    finish: impl FnOnce() -> Result<ImportReport, ImportError>,
    on_error: OnError,
) -> Result<ImportReport, ImportError> {
    let mut conn = db.get()?;
    storage::write_transaction(&mut conn, |conn| {
        // Into an empty table (as the transaction sees it), every row is new: the account
        // numbers of a file are distinct (a repeated one is a bad row), so no upsert is needed.
        let empty = customers::is_empty(conn)?;
        let mut counts = UpsertCounts::default();
        for batch in batches {
            let now = storage::now();
            let rows: Vec<NewCustomer<'_>> = batch.iter().map(|r| r.as_new(now)).collect();
            if empty {
                counts.inserted += customers::insert_batch(conn, &rows)?;
            } else {
                add(&mut counts, customers::upsert_batch(conn, &rows)?);
            }
        }
        let mut report = finish()?;
        if report.error_count > 0 && on_error == OnError::RejectFile {
            return Err(ImportError::Rejected(report));
        }
        report.counts = counts;
        report.committed = true;
        Ok(report)
    })
}

fn add(total: &mut UpsertCounts, batch: UpsertCounts) {
    total.inserted += batch.inserted;
    total.updated += batch.updated;
    total.unchanged += batch.unchanged;
}

/// Reads and checks every row, sending the good ones in batches; returns the report of rows and
/// bad rows (the writer fills in the counts). Stops early when the writer has stopped.
fn parse<R: Read>(
    reader: R,
    format: Format,
    batches: mpsc::SyncSender<Vec<Row>>,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut batch: Vec<Row> = Vec::with_capacity(BATCH);
    let mut seen: HashSet<u64> = HashSet::new();
    // False once the writer is gone (it failed); the caller then reports its error.
    let flush = |batch: &mut Vec<Row>| -> bool {
        if batch.is_empty() {
            return true;
        }
        let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
        batches.send(full).is_ok()
    };
    let mut on_row = |line: u64,
                      fields: Result<Fields<'_>, String>,
                      report: &mut ImportReport,
                      batch: &mut Vec<Row>| {
        report.rows += 1;
        match fields.and_then(Row::validate).and_then(|row| {
            if seen.insert(hash_of(&row.account_number)) {
                Ok(row)
            } else {
                Err(format!(
                    "account number {:?} appears more than once in the file",
                    row.account_number
                ))
            }
        }) {
            Ok(row) => batch.push(row),
            Err(reason) => {
                report.error_count += 1;
                if report.errors.len() < MAX_REPORTED_ERRORS {
                    report.errors.push(RowError { line, reason });
                }
            }
        }
    };
    match format {
        Format::Csv => {
            let mut csv = csv::ReaderBuilder::new()
                // Fields are trimmed below, all but the email, which the email rule checks
                // for invisible and control characters before it trims.
                .trim(csv::Trim::Headers)
                .flexible(false)
                .from_reader(reader);
            let headers = csv
                .headers()
                .map_err(|e| ImportError::File(format!("cannot read the CSV header: {e}")))?
                .clone();
            check_header(&headers)?;
            let columns = column_indices(&headers);
            let mut record = csv::StringRecord::new();
            loop {
                let line = csv.position().line();
                match csv.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        // Fields are read in place by column; no serde, no copy per field.
                        let raw = |column: usize| record.get(columns[column]);
                        let field = |column: usize| raw(column).map(str::trim);
                        let fields = Fields {
                            account_number: field(0),
                            legal_entity: field(1),
                            party_type: field(2),
                            is_b2b: field(3).map(BoolRef::Text),
                            primary_email: raw(4),
                            first_name: field(5),
                            last_name: field(6),
                        };
                        on_row(line, Ok(fields), &mut report, &mut batch);
                    }
                    Err(e) => {
                        if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                            return Err(ImportError::File(e.to_string()));
                        }
                        on_row(line, Err(csv_reason(&e)), &mut report, &mut batch);
                    }
                }
                if batch.len() >= BATCH && !flush(&mut batch) {
                    return Ok(report);
                }
            }
        }
        Format::Jsonl => {
            let reader = BufReader::new(reader);
            for (index, text) in reader.lines().enumerate() {
                let text = text.map_err(|e| ImportError::File(e.to_string()))?;
                if text.trim().is_empty() {
                    continue;
                }
                let raw = serde_json::from_str::<RawRow>(&text).map_err(|e| {
                    format!(
                        "not a customer object: {:?} error at column {}",
                        e.classify(),
                        e.column()
                    )
                });
                let fields = raw.as_ref().map(RawRow::fields).map_err(Clone::clone);
                on_row(index as u64 + 1, fields, &mut report, &mut batch);
                if batch.len() >= BATCH && !flush(&mut batch) {
                    return Ok(report);
                }
            }
        }
    }
    flush(&mut batch);
    Ok(report)
}

fn check_header(headers: &csv::StringRecord) -> Result<(), ImportError> {
    let names: Vec<&str> = headers.iter().collect();
    let missing: Vec<&str> = COLUMNS
        .iter()
        .copied()
        .filter(|c| !names.contains(c))
        .collect();
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !COLUMNS.contains(n))
        .collect();
    if missing.is_empty() && unknown.is_empty() {
        return Ok(());
    }
    Err(ImportError::File(format!(
        "line 1: the CSV header must name the columns {}; missing: [{}], unknown: [{}]",
        COLUMNS.join(", "),
        missing.join(", "),
        unknown.join(", ")
    )))
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("expected {expected_len} fields, found {len}")
        }
        csv::ErrorKind::Deserialize { err, .. } => format!("{}", err.kind()),
        csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8".into(),
        _ => "the row cannot be read".into(),
    }
}

fn hash_of(value: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// `true`/`false`, `1`/`0`, `yes`/`no` in any case; empty is false.
fn parse_bool(text: &str) -> Option<bool> {
    const TRUE: [&str; 3] = ["true", "1", "yes"];
    const FALSE: [&str; 4] = ["false", "0", "no", ""];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(text)) {
        Some(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(text)) {
        Some(false)
    } else {
        None
    }
}

impl Row {
    /// Checks a row with the same parsers as every other way in (`crate::domain::customer`).
    fn validate(fields: Fields<'_>) -> Result<Row, String> {
        let account_number = AccountNumber::parse(fields.account_number.unwrap_or_default())?;
        let legal_entity = LegalEntity::parse(fields.legal_entity.unwrap_or_default())?;
        let party_type = PartyType::parse(fields.party_type.unwrap_or_default())?;
        let is_b2b = match fields.is_b2b {
            Some(BoolRef::Bool(b)) => b,
            Some(BoolRef::Text(t)) => parse_bool(t.trim()).ok_or("is_b2b must be true or false")?,
            None => false,
        };
        // The raw field goes to the rule, which refuses invisible characters before trimming.
        let primary_email = match fields.primary_email.filter(|e| !e.trim().is_empty()) {
            Some(email) => {
                Some(EmailAddress::parse(email).map_err(|e| format!("primary_email: {e}"))?)
            }
            None => None,
        };
        Ok(Row {
            account_number: account_number.into_string(),
            legal_entity: legal_entity.as_str().to_string(),
            party_type: party_type.as_str(),
            is_b2b,
            primary_email,
            first_name: parse_name(fields.first_name).map_err(|m| format!("first_name {m}"))?,
            last_name: parse_name(fields.last_name).map_err(|m| format!("last_name {m}"))?,
        })
    }

    fn as_new(&self, now: chrono::NaiveDateTime) -> NewCustomer<'_> {
        NewCustomer {
            account_number: &self.account_number,
            legal_entity: &self.legal_entity,
            party_type: self.party_type,
            is_b2b: self.is_b2b,
            primary_email: self.primary_email.as_ref().map(|e| e.as_str()),
            email_key: self.primary_email.as_ref().map(|e| e.key()),
            first_name: self.first_name.as_deref(),
            last_name: self.last_name.as_deref(),
            origin: "import",
            creation_key: None,
            created_at: now,
            updated_at: now,
        }
    }
}
