//! Customer import from CSV (with a header) or JSON lines, streamed.
//!
//! Columns / keys: `account_number, legal_entity, party_type, is_b2b, primary_email, first_name,
//! last_name`. Records are upserted by account number, so importing the same file twice changes
//! nothing. By default a file with any bad row is rejected whole (one transaction, rolled back)
//! and every bad row is reported with its line number; with [`OnError::SkipInvalid`] the good rows
//! are imported and the bad ones reported as skipped.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Deserialize;

use crate::domain::EmailAddress;
use crate::storage::customers::{self, NewCustomer, UpsertCounts};
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

/// Imports from a reader, in one transaction.
pub fn import_reader<R: Read>(
    db: &Db,
    reader: R,
    format: Format,
    on_error: OnError,
) -> Result<ImportReport, ImportError> {
    let mut conn = db.get()?;
    let mut report = ImportReport::default();
    let result = storage::write_transaction(&mut conn, |conn| {
        let mut batch: Vec<Row> = Vec::with_capacity(BATCH);
        let mut seen: HashSet<u64> = HashSet::new();
        let mut flush =
            |batch: &mut Vec<Row>, report: &mut ImportReport| -> Result<(), ImportError> {
                if batch.is_empty() {
                    return Ok(());
                }
                let now = storage::now();
                let rows: Vec<NewCustomer<'_>> = batch.iter().map(|r| r.as_new(now)).collect();
                let counts = customers::upsert_batch(conn, &rows)?;
                report.counts.inserted += counts.inserted;
                report.counts.updated += counts.updated;
                report.counts.unchanged += counts.unchanged;
                batch.clear();
                Ok(())
            };
        let mut on_row = |line: u64,
                          raw: Result<RawRow, String>,
                          report: &mut ImportReport,
                          batch: &mut Vec<Row>| {
            report.rows += 1;
            match raw.and_then(Row::validate).and_then(|row| {
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
                    .trim(csv::Trim::All)
                    .flexible(false)
                    .from_reader(reader);
                let headers = csv
                    .headers()
                    .map_err(|e| ImportError::File(format!("cannot read the CSV header: {e}")))?
                    .clone();
                check_header(&headers)?;
                let mut record = csv::StringRecord::new();
                loop {
                    let line = csv.position().line();
                    match csv.read_record(&mut record) {
                        Ok(false) => break,
                        Ok(true) => {
                            let raw = record
                                .deserialize::<RawRow>(Some(&headers))
                                .map_err(|e| csv_reason(&e));
                            on_row(line, raw, &mut report, &mut batch);
                        }
                        Err(e) => {
                            if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                                return Err(ImportError::File(e.to_string()));
                            }
                            on_row(line, Err(csv_reason(&e)), &mut report, &mut batch);
                        }
                    }
                    if batch.len() >= BATCH {
                        flush(&mut batch, &mut report)?;
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
                    on_row(index as u64 + 1, raw, &mut report, &mut batch);
                    if batch.len() >= BATCH {
                        flush(&mut batch, &mut report)?;
                    }
                }
            }
        }
        flush(&mut batch, &mut report)?;
        if report.error_count > 0 && on_error == OnError::RejectFile {
            return Err(ImportError::Rejected(report.clone()));
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            report.committed = true;
            Ok(report)
        }
        Err(ImportError::Rejected(mut rejected)) => {
            rejected.counts = UpsertCounts::default();
            rejected.committed = false;
            Err(ImportError::Rejected(rejected))
        }
        Err(e) => Err(e),
    }
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

fn non_empty(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Row {
    fn validate(raw: RawRow) -> Result<Row, String> {
        let account_number = non_empty(raw.account_number).ok_or("account_number is empty")?;
        if account_number.len() > 64
            || account_number
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("account_number must be at most 64 characters without spaces".into());
        }
        let legal_entity = non_empty(raw.legal_entity).ok_or("legal_entity is empty")?;
        if legal_entity.len() > 64
            || legal_entity
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("legal_entity must be at most 64 characters without spaces".into());
        }
        let party_type = match non_empty(raw.party_type)
            .map(|p| p.to_ascii_lowercase())
            .as_deref()
        {
            Some("person") => "person",
            Some("organization" | "organisation") => "organization",
            _ => return Err("party_type must be person or organization".into()),
        };
        let is_b2b = match raw.is_b2b {
            Some(BoolField::Bool(b)) => b,
            Some(BoolField::Text(t)) => match t.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                _ => return Err("is_b2b must be true or false".into()),
            },
            None => false,
        };
        let primary_email = match non_empty(raw.primary_email) {
            Some(email) => {
                Some(EmailAddress::parse(&email).map_err(|e| format!("primary_email: {e}"))?)
            }
            None => None,
        };
        Ok(Row {
            account_number,
            legal_entity: legal_entity.to_ascii_uppercase(),
            party_type,
            is_b2b,
            primary_email,
            first_name: non_empty(raw.first_name),
            last_name: non_empty(raw.last_name),
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
