//! SQLite only: the writer of the customer import. Backend-specific by design, like a `COPY`
//! path would be on PostgreSQL; everything else goes through diesel.
//!
//! It opens a connection of its own to the database file (rusqlite over the same bundled SQLite
//! library diesel links), takes the write lock at once (`BEGIN IMMEDIATE`), and writes every row
//! with statements prepared once and bound in place. Through diesel the same insert costs about
//! 2.7 µs per row in bind bookkeeping alone, more than SQLite's own work, which would cap an
//! import well below 200,000 rows per second (BENCHMARKS.md, "Customer import").
//!
//! The rows and the upsert rule are the same as [`crate::storage::customers::upsert_batch`]: insert a new
//! account number, update a changed record, leave an equal one alone. Timestamps are written as
//! the text diesel writes for a SQLite `TIMESTAMP`, so diesel reads them back unchanged.

use rusqlite::{params, Connection, OptionalExtension};

use crate::storage::customers::{NewCustomer, UpsertCounts};
use crate::storage::StorageError;

/// How diesel writes a `NaiveDateTime` to SQLite.
const SQLITE_TIMESTAMP: &str = "%F %T%.f";
/// Page cache of the import connection, in KiB: enough to keep the hot index pages of a large
/// import in memory, small enough for the import to stay well under 100 MB resident.
const CACHE_KIB: i64 = 16 * 1024;

// `OR FAIL`: a constraint violation stops the statement without undoing its earlier rows, so
// SQLite keeps no statement journal for a multi-row INSERT (with the default `ABORT` it writes
// one page image per page touched, about 2.5 writes per row on a 1,000,000-row import). The
// import's transaction is rolled back on any error anyway.
const INSERT: &str =
    "INSERT OR FAIL INTO customers (account_number, legal_entity, party_type, is_b2b, \
     primary_email, email_key, first_name, last_name, origin, creation_key, created_at, \
     updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
const SELECT: &str = "SELECT id, legal_entity, party_type, is_b2b, primary_email, email_key, \
     first_name, last_name FROM customers WHERE account_number = ?1";
const UPDATE: &str = "UPDATE customers SET legal_entity = ?2, party_type = ?3, is_b2b = ?4, \
     primary_email = ?5, email_key = ?6, first_name = ?7, last_name = ?8, updated_at = ?9 \
     WHERE id = ?1";

/// Rows per multi-row INSERT (12 parameters each; SQLite allows 32766).
const CHUNK: usize = 100;

/// `INSERT ... VALUES (...), (...)` for `rows` rows.
fn multi_row_insert(rows: usize) -> String {
    let head = INSERT.split("VALUES").next().unwrap_or(INSERT);
    let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; rows].join(", ");
    format!("{head}VALUES {values}")
}

/// A timestamp's text: the batch's, or formatted now.
fn stamp_for(stamp: &Option<(chrono::NaiveDateTime, String)>, at: chrono::NaiveDateTime) -> String {
    match stamp {
        Some((known, text)) if *known == at => text.clone(),
        _ => at.format(SQLITE_TIMESTAMP).to_string(),
    }
}

/// An open import transaction.
pub struct SqliteBulk {
    conn: Connection,
    /// The table was empty when the transaction began: every account number of the file (they
    /// are distinct) is new, so no row needs looking up.
    empty: bool,
    /// The last timestamp formatted, and its text.
    stamp: Option<(chrono::NaiveDateTime, String)>,
    /// The load runs with a rollback journal; WAL is restored at the end.
    rollback_journal: bool,
}

/// A stored record's compared fields.
type Stored = (
    i64,
    String,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

impl SqliteBulk {
    /// Opens the database file (which must exist and be migrated) and begins the transaction.
    /// Waits up to 5 s for another writer, like the service's connections.
    /// `durable`: the commit is on disk before it returns (`synchronous = FULL`, one sync for
    /// the whole import).
    pub fn begin(path: &str, durable: bool) -> Result<SqliteBulk, StorageError> {
        let conn = crate::storage::own_sqlite_connection(path)?;
        let synchronous = if durable { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = {synchronous}; \
             PRAGMA cache_size = -{CACHE_KIB};"
        ))?;
        // In WAL mode a bulk load writes every page twice: into the WAL, then into the database
        // at the checkpoint of the commit. When nothing else has the file open (the usual
        // `autolink customers import` before `serve`), use a rollback journal for the load
        // instead: new pages are written once. SQLite refuses the switch while another
        // connection is open, and the load then simply runs in WAL mode.
        let rollback_journal = conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| {
                r.get::<_, String>(0)
            })
            .is_ok_and(|mode| mode.eq_ignore_ascii_case("delete"));
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let empty: bool =
            conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM customers)", [], |r| {
                r.get(0)
            })?;
        Ok(SqliteBulk {
            conn,
            empty,
            stamp: None,
            rollback_journal,
        })
    }

    /// Inserts or updates records by account number, as [`crate::storage::customers::upsert_batch`].
    pub fn upsert(&mut self, rows: &[NewCustomer<'_>]) -> Result<UpsertCounts, StorageError> {
        let mut counts = UpsertCounts::default();
        let stamp = self.stamp_of(rows.first().map(|r| r.updated_at));
        let mut fresh: Vec<&NewCustomer<'_>> = Vec::with_capacity(rows.len());
        if self.empty {
            fresh.extend(rows);
        } else {
            let mut select = self.conn.prepare_cached(SELECT)?;
            let mut update = self.conn.prepare_cached(UPDATE)?;
            for row in rows {
                let existing: Option<Stored> = select
                    .query_row([row.account_number], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                        ))
                    })
                    .optional()?;
                match existing {
                    None => fresh.push(row),
                    Some((_, legal_entity, party_type, is_b2b, email, key, first, last))
                        if legal_entity == row.legal_entity
                            && party_type == row.party_type
                            && is_b2b == row.is_b2b
                            && email.as_deref() == row.primary_email
                            && key.as_deref() == row.email_key
                            && first.as_deref() == row.first_name
                            && last.as_deref() == row.last_name =>
                    {
                        counts.unchanged += 1;
                    }
                    Some((id, ..)) => {
                        update.execute(params![
                            id,
                            row.legal_entity,
                            row.party_type,
                            row.is_b2b,
                            row.primary_email,
                            row.email_key,
                            row.first_name,
                            row.last_name,
                            stamp_for(&stamp, row.updated_at),
                        ])?;
                        counts.updated += 1;
                    }
                }
            }
        }
        counts.inserted = self.insert(&fresh, &stamp)?;
        Ok(counts)
    }

    /// Inserts new rows: [`CHUNK`] rows per statement (one prepared statement, so SQLite opens
    /// the table and its indexes once per chunk, not once per row), then one by one.
    fn insert(
        &mut self,
        rows: &[&NewCustomer<'_>],
        stamp: &Option<(chrono::NaiveDateTime, String)>,
    ) -> Result<u64, StorageError> {
        let mut chunks = rows.chunks_exact(CHUNK);
        let mut inserted = 0;
        // Rows stamped with the batch's time (all of an import's) bind its text; others get
        // theirs formatted here.
        let batch_stamp = stamp.as_ref().map(|(at, text)| (*at, text.as_str()));
        let mut own: Vec<String> = Vec::new();
        for row in rows {
            for at in [row.created_at, row.updated_at] {
                if batch_stamp.is_none_or(|(known, _)| known != at) {
                    own.push(at.format(SQLITE_TIMESTAMP).to_string());
                }
            }
        }
        let mut own = own.iter();
        let mut text_of = |at: chrono::NaiveDateTime| -> &str {
            match batch_stamp {
                Some((known, text)) if known == at => text,
                _ => own.next().map(String::as_str).unwrap_or_default(),
            }
        };
        let texts: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (text_of(r.created_at), text_of(r.updated_at)))
            .collect();
        if chunks.len() > 0 {
            let mut statement = self.conn.prepare_cached(&multi_row_insert(CHUNK))?;
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(CHUNK * 12);
            for (index, chunk) in (&mut chunks).enumerate() {
                values.clear();
                let chunk_texts = &texts[index * CHUNK..(index + 1) * CHUNK];
                for (row, (created, updated)) in chunk.iter().zip(chunk_texts) {
                    values.extend_from_slice(&[
                        &row.account_number as &dyn rusqlite::ToSql,
                        &row.legal_entity,
                        &row.party_type,
                        &row.is_b2b,
                        &row.primary_email,
                        &row.email_key,
                        &row.first_name,
                        &row.last_name,
                        &row.origin,
                        &row.creation_key,
                        created,
                        updated,
                    ]);
                }
                inserted += statement.execute(values.as_slice())? as u64;
            }
        }
        let mut single = self.conn.prepare_cached(INSERT)?;
        let done = rows.len() - chunks.remainder().len();
        for (row, (created, updated)) in chunks.remainder().iter().zip(&texts[done..]) {
            inserted += single.execute(params![
                row.account_number,
                row.legal_entity,
                row.party_type,
                row.is_b2b,
                row.primary_email,
                row.email_key,
                row.first_name,
                row.last_name,
                row.origin,
                row.creation_key,
                created,
                updated,
            ])? as u64;
        }
        Ok(inserted)
    }

    /// The text of a batch's timestamp, formatted once (every row of a batch shares it).
    fn stamp_of(
        &mut self,
        at: Option<chrono::NaiveDateTime>,
    ) -> Option<(chrono::NaiveDateTime, String)> {
        let at = at?;
        match &self.stamp {
            Some((known, text)) if *known == at => Some((at, text.clone())),
            _ => {
                let text = at.format(SQLITE_TIMESTAMP).to_string();
                self.stamp = Some((at, text.clone()));
                Some((at, text))
            }
        }
    }

    /// Commits.
    pub fn commit(self) -> Result<(), StorageError> {
        self.conn.execute_batch("COMMIT")?;
        self.restore_wal();
        Ok(())
    }

    /// Rolls back (also what dropping it does).
    pub fn rollback(self) -> Result<(), StorageError> {
        self.conn.execute_batch("ROLLBACK")?;
        self.restore_wal();
        Ok(())
    }

    /// Back to WAL, the service's mode. Should another connection have opened the file
    /// meanwhile, the switch waits for it (busy timeout) or fails; the service's connections
    /// set WAL themselves when they open, so the file never stays in the import's mode.
    fn restore_wal(&self) {
        if self.rollback_journal {
            if let Err(e) = self
                .conn
                .query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            {
                log::warn!("the database could not be switched back to WAL after the import: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multi_row_insert_has_twelve_parameters_per_row() {
        let sql = multi_row_insert(3);
        assert!(sql.starts_with("INSERT OR FAIL INTO customers (account_number,"));
        assert_eq!(sql.matches('?').count(), 36);
        assert_eq!(sql.matches("), (").count(), 2);
    }

    #[test]
    fn an_import_after_a_command_opened_the_database_loads_with_a_rollback_journal() {
        use crate::storage::{Db, PoolOptions};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("i.db").display().to_string();
        // As `autolink customers import` opens it: connections only when needed.
        let db = Db::open(&format!("sqlite://{path}"), &PoolOptions::default()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let bulk = SqliteBulk::begin(&path, true).unwrap();
        assert!(bulk.rollback_journal, "no other connection was open");
        bulk.rollback().unwrap();
        // A serving pool holds its connections open: the load stays in WAL mode.
        let serving = Db::open(
            &format!("sqlite://{path}"),
            &PoolOptions {
                open_at_start: true,
                ..PoolOptions::default()
            },
        )
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while serving.pool_state().1 < 8 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let bulk = SqliteBulk::begin(&path, true).unwrap();
        assert!(!bulk.rollback_journal);
        bulk.rollback().unwrap();
        drop(db);
    }
}
