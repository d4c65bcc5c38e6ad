//! What a backfill reports: counts per outcome and refusal code (the summary on standard output)
//! and, when asked, one JSON line per user: `{"id","email","outcome","code","accountNumber"}`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

use crate::domain::Refusal;
use crate::linking::Answer;

/// The outcome of one user of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A decision of the linking service (`Linked`, `Created`, `AlreadyLinked`, `WouldLink`,
    /// `WouldCreate`).
    Decided(crate::linking::Outcome),
    /// Refused with a code.
    Refused,
    /// Not decided: the user has no `id`.
    Skipped,
}

impl Outcome {
    /// The name in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Decided(outcome) => outcome.as_str(),
            Outcome::Refused => "Refused",
            Outcome::Skipped => "Skipped",
        }
    }
}

/// One line of the report file.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    id: Option<&'a str>,
    email: Option<&'a str>,
    outcome: &'static str,
    code: Option<&'static str>,
    account_number: Option<&'a str>,
}

/// The counts of a run and its report file.
#[derive(Debug)]
pub struct Report {
    dry_run: bool,
    outcomes: BTreeMap<&'static str, u64>,
    codes: BTreeMap<&'static str, u64>,
    users: u64,
    file: Option<BufWriter<File>>,
}

impl Report {
    /// Counts from zero; creates (or empties) the report file when there is one.
    pub fn create(path: Option<&Path>, dry_run: bool) -> anyhow::Result<Report> {
        let file = match path {
            Some(path) => Some(BufWriter::with_capacity(
                1 << 16,
                File::create(path).map_err(|e| {
                    anyhow::anyhow!("cannot write the report {}: {e}", path.display())
                })?,
            )),
            None => None,
        };
        let mut outcomes = BTreeMap::new();
        let names: &[&'static str] = if dry_run {
            &["WouldLink", "WouldCreate", "AlreadyLinked", "Refused"]
        } else {
            &["Linked", "Created", "AlreadyLinked", "Refused"]
        };
        for name in names {
            outcomes.insert(*name, 0);
        }
        Ok(Report {
            dry_run,
            outcomes,
            codes: BTreeMap::new(),
            users: 0,
            file,
        })
    }

    /// Users reported so far.
    pub fn users(&self) -> u64 {
        self.users
    }

    /// How many users had this outcome (`Linked`, `Refused`, `Skipped`, ...).
    pub fn count(&self, outcome: &str) -> u64 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }

    /// How many users were refused with this code (skipped users are not).
    pub fn refused(&self, code: &str) -> u64 {
        self.codes.get(code).copied().unwrap_or(0)
    }

    /// A user without `id`: reported, not decided.
    pub fn skipped(&mut self, email: Option<&str>) -> anyhow::Result<()> {
        let code = Refusal::ObjectIdMissing.code();
        self.add(Outcome::Skipped, None);
        self.line(&Line {
            id: None,
            email,
            outcome: Outcome::Skipped.as_str(),
            code: Some(code),
            account_number: None,
        })
    }

    /// A user the linking service decided.
    pub fn decided(
        &mut self,
        id: &str,
        email: Option<&str>,
        answer: &Answer,
    ) -> anyhow::Result<()> {
        let (outcome, code, account_number) = match answer {
            Ok(resolution) => (
                Outcome::Decided(resolution.outcome),
                None,
                resolution.account_number.as_deref(),
            ),
            Err(refusal) => (Outcome::Refused, Some(refusal.code()), None),
        };
        self.add(outcome, code);
        self.line(&Line {
            id: Some(id),
            email,
            outcome: outcome.as_str(),
            code,
            account_number,
        })
    }

    fn add(&mut self, outcome: Outcome, code: Option<&'static str>) {
        self.users += 1;
        *self.outcomes.entry(outcome.as_str()).or_insert(0) += 1;
        if let Some(code) = code {
            *self.codes.entry(code).or_insert(0) += 1;
        }
    }

    fn line(&mut self, line: &Line<'_>) -> anyhow::Result<()> {
        if let Some(file) = &mut self.file {
            serde_json::to_writer(&mut *file, line)?;
            file.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Flushes the report file.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(file) = &mut self.file {
            file.flush()?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    /// The summary: one `outcome: count` line per outcome, the refusal codes indented under
    /// `Refused`, skipped users last.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order: &[&str] = if self.dry_run {
            &["WouldLink", "WouldCreate", "AlreadyLinked", "Refused"]
        } else {
            &["Linked", "Created", "AlreadyLinked", "Refused"]
        };
        for name in order {
            writeln!(f, "{name}: {}", self.count(name))?;
            if *name == "Refused" {
                for (code, count) in &self.codes {
                    writeln!(f, "  {code}: {count}")?;
                }
            }
        }
        writeln!(f, "Skipped (no id): {}", self.count("Skipped"))
    }
}
