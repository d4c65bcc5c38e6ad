//! SQLite only: how the audit writer appends its batches, and how the lookup thread indexes
//! them. Backend-specific by design, like the import's [`super::sqlite_bulk`]; everything else,
//! and PostgreSQL, goes through diesel.
//!
//! Every decision writes an audit event, so on the sign-in path the writer appends as many rows
//! per second as the service answers requests. Through diesel a batch was one multi-row INSERT
//! built and prepared anew each time (its length varies), with diesel's bookkeeping for each of
//! the 13 values of every row and a `chrono` format per timestamp: a profile of the sign-in run
//! put the writer at a sixth of the server's CPU (BENCHMARKS.md). Here the connection is the
//! writer's own (rusqlite, over the same bundled SQLite), the statements are prepared once, and
//! values are bound in place. Timestamps are written as the text diesel writes for a SQLite
//! `TIMESTAMP`, so diesel reads them back unchanged.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDateTime, Timelike};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Statement, TransactionBehavior};

use super::audit::AuditEvent;
use super::StorageError;

/// Rows per multi-row INSERT (13 parameters each).
const CHUNK: usize = 64;

const COLUMNS: &str = "INSERT INTO audit_events (at, request_id, actor, source, step, channel, \
     outcome, code, email_key, issuer, subject, account_number, detail) VALUES ";
const ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The audit writer's own connection to a SQLite database file.
pub struct SqliteAuditAppender {
    conn: Connection,
    /// The last whole second formatted (`YYYY-MM-DD HH:MM:SS`), and its text.
    second: Option<(i64, String)>,
    /// A timestamp's text, reused for every event.
    stamp: String,
}

impl SqliteAuditAppender {
    /// Opens the database file (which must exist and be migrated) with the settings of the
    /// service's connections.
    pub fn open(path: &str) -> Result<SqliteAuditAppender, StorageError> {
        let conn = super::own_sqlite_connection(path)?;
        // The settings of the pool's connections, but a larger page cache: a batch of 50 ms of
        // sign-ins dirties a few hundred pages, and with the pool's 128 KiB SQLite spilled them
        // to the WAL in the middle of the transaction and read them back (a profile of the
        // writer showed it). There is one such connection.
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -2048)?;
        Ok(SqliteAuditAppender {
            conn,
            second: None,
            stamp: String::with_capacity(32),
        })
    }

    /// Appends the events in one write transaction, taking the process's writer turn first (see
    /// [`super::write_transaction`]).
    pub fn append(&mut self, events: &[AuditEvent]) -> Result<(), StorageError> {
        let _turn = super::sqlite_writer_turn();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut chunk_insert = tx.prepare_cached(&statement(CHUNK))?;
            let mut row_insert = tx.prepare_cached(&statement(1))?;
            let mut chunks = events.chunks_exact(CHUNK);
            for chunk in chunks.by_ref() {
                bind_rows(&mut chunk_insert, chunk, &mut self.second, &mut self.stamp)?;
                chunk_insert.raw_execute()?;
            }
            for event in chunks.remainder() {
                bind_rows(
                    &mut row_insert,
                    std::slice::from_ref(event),
                    &mut self.second,
                    &mut self.stamp,
                )?;
                row_insert.raw_execute()?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Most events one merge transaction takes; a merge takes several in a row when more are waiting.
/// Each event adds up to two 16-byte pairs to the merge's memory (6.4 MB at most). Large on
/// purpose: a merge writes about one page per distinct key, so at 35,000 sign-ins per second
/// (20,000 distinct keys every 5 s) chunks of 50,000 events wrote 3.5 times the pages.
pub const MERGE_CHUNK: i64 = 200_000;

/// Most events a merge reads in one read transaction of the main database: about a millisecond
/// of CPU. The merge runs at idle priority and may wait long in the middle of a read; while it
/// does, its snapshot keeps checkpoints from restarting the WAL (chunks of 5,000 let the WAL grow
/// to 167 MB in a benchmark run, chunks of 1,000 to 53 MB).
pub(crate) const READ_CHUNK: i64 = 1_000;

/// Pairs per multi-row INSERT of a merge.
const PAIRS_PER_INSERT: usize = 128;

/// The lookup thread's own connection, with the lookup database attached as `lookup`.
pub struct SqliteAuditKeys {
    conn: Connection,
}

impl SqliteAuditKeys {
    /// Opens the database file and attaches its lookup file (see [`super::audit_lookup_path`]).
    pub fn open(path: &str) -> Result<SqliteAuditKeys, StorageError> {
        let conn = super::own_sqlite_connection(path)?;
        conn.execute(
            "ATTACH DATABASE ?1 AS lookup",
            [super::audit_lookup_path(path)],
        )?;
        conn.execute_batch("PRAGMA lookup.synchronous = NORMAL")?;
        Ok(SqliteAuditKeys { conn })
    }

    /// Indexes the events after the watermark, at most [`MERGE_CHUNK`], and moves the watermark.
    /// The events are read in read transactions of at most [`READ_CHUNK`] events each, so that a
    /// merge that runs slowly (it runs at idle priority) never keeps an old snapshot of the main
    /// database, which would stop checkpoints from restarting its WAL. The pairs are then written
    /// in one transaction of the lookup database only: the main database's writers never wait
    /// for a merge. Every id up to the largest one visible is committed (SQLite has one writer at
    /// a time). Returns the number of events indexed.
    pub fn merge(&mut self) -> Result<usize, StorageError> {
        let after = self.indexed_through()?;
        let newest: Option<i64> =
            self.conn
                .query_row("SELECT max(id) FROM main.audit_events", [], |r| r.get(0))?;
        let Some(through) = newest
            .map(|n| n.min(after.saturating_add(MERGE_CHUNK)))
            .filter(|t| *t > after)
        else {
            return Ok(0);
        };
        let events = usize::try_from(through - after).unwrap_or(0);
        let mut pairs: Vec<(i64, i64)> = Vec::with_capacity(events * 2);
        let mut from = after;
        while from < through {
            let to = through.min(from.saturating_add(READ_CHUNK));
            self.read_pairs(from, to, &mut pairs)?;
            from = to;
        }
        // Sorted, the pairs of one key land on the same few pages of the index.
        pairs.sort_unstable();
        pairs.dedup();
        let tx = self.conn.transaction()?;
        {
            let sql = pairs_insert(PAIRS_PER_INSERT);
            let mut many = tx.prepare_cached(&sql)?;
            let mut one = tx.prepare_cached(&pairs_insert(1))?;
            let mut chunks = pairs.chunks_exact(PAIRS_PER_INSERT);
            for chunk in chunks.by_ref() {
                for (i, (key, id)) in chunk.iter().enumerate() {
                    many.raw_bind_parameter(2 * i + 1, key)?;
                    many.raw_bind_parameter(2 * i + 2, id)?;
                }
                many.raw_execute()?;
            }
            for (key, id) in chunks.remainder() {
                one.execute([key, id])?;
            }
        }
        // Another process's merge may have moved the watermark meanwhile: the pairs are the
        // same whoever writes them (INSERT OR IGNORE), and the watermark only moves forward.
        tx.execute(
            "UPDATE lookup.audit_lookup_state SET indexed_through = max(indexed_through, ?1)",
            [through],
        )?;
        tx.commit()?;
        Ok(events)
    }

    fn indexed_through(&self) -> Result<i64, StorageError> {
        Ok(self.conn.query_row(
            "SELECT indexed_through FROM lookup.audit_lookup_state",
            [],
            |r| r.get(0),
        )?)
    }

    /// The lookup pairs of the events with ids in `(from, to]`, read in one read transaction.
    fn read_pairs(
        &self,
        from: i64,
        to: i64,
        pairs: &mut Vec<(i64, i64)>,
    ) -> Result<(), StorageError> {
        let mut select = self.conn.prepare_cached(
            "SELECT id, email_key, issuer, subject FROM main.audit_events \
             WHERE id > ?1 AND id <= ?2",
        )?;
        let mut rows = select.query([from, to])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            if let ValueRef::Text(email_key) = row.get_ref(1)? {
                pairs.push((super::audit::email_lookup_key(email_key), id));
            }
            if let (ValueRef::Text(issuer), ValueRef::Text(subject)) =
                (row.get_ref(2)?, row.get_ref(3)?)
            {
                pairs.push((super::audit::identity_lookup_key(issuer, subject), id));
            }
        }
        Ok(())
    }
}

/// `INSERT OR IGNORE` (a pair may repeat only if two keys of one event collide) of `rows` pairs.
fn pairs_insert(rows: usize) -> String {
    let values = vec!["(?, ?)"; rows].join(", ");
    format!("INSERT OR IGNORE INTO lookup.audit_keys (lookup_key, event_id) VALUES {values}")
}

fn statement(rows: usize) -> String {
    let mut sql = String::with_capacity(COLUMNS.len() + rows * (ROW.len() + 2));
    sql.push_str(COLUMNS);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(ROW);
    }
    sql
}

fn bind_rows(
    statement: &mut Statement<'_>,
    events: &[AuditEvent],
    second: &mut Option<(i64, String)>,
    stamp: &mut String,
) -> rusqlite::Result<()> {
    for (row, event) in events.iter().enumerate() {
        let first = row * 13 + 1;
        timestamp_text(event.at, second, stamp);
        statement.raw_bind_parameter(first, stamp.as_str())?;
        statement.raw_bind_parameter(first + 1, event.request_id.as_str())?;
        statement.raw_bind_parameter(first + 2, event.actor.as_str())?;
        statement.raw_bind_parameter(first + 3, event.source.as_str())?;
        statement.raw_bind_parameter(first + 4, event.step.as_deref())?;
        statement.raw_bind_parameter(first + 5, event.channel.as_deref())?;
        statement.raw_bind_parameter(first + 6, event.outcome.as_str())?;
        statement.raw_bind_parameter(first + 7, event.code.as_deref())?;
        statement.raw_bind_parameter(first + 8, event.email_key.as_deref())?;
        statement.raw_bind_parameter(first + 9, event.issuer.as_deref())?;
        statement.raw_bind_parameter(first + 10, event.subject.as_deref())?;
        statement.raw_bind_parameter(first + 11, event.account_number.as_deref())?;
        statement.raw_bind_parameter(first + 12, event.detail.as_deref())?;
    }
    Ok(())
}

/// Writes `at` into `out` as chrono's `%F %T%.f` would (the format diesel uses for SQLite): the
/// fraction has 3, 6 or 9 digits, the fewest that hold it, and is left out when zero. The text of
/// the whole second is kept, because a batch's events share a few seconds.
fn timestamp_text(at: NaiveDateTime, second: &mut Option<(i64, String)>, out: &mut String) {
    let whole = at.and_utc().timestamp();
    if second.as_ref().map(|(s, _)| *s) != Some(whole) {
        let mut text = String::with_capacity(19);
        let _ = write!(
            text,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            at.year(),
            at.month(),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        );
        *second = Some((whole, text));
    }
    out.clear();
    if let Some((_, text)) = second {
        out.push_str(text);
    }
    // A leap second's nanoseconds exceed 999,999,999; chrono prints them the same way.
    let nanos = at.nanosecond();
    let _ = if nanos == 0 {
        Ok(())
    } else if nanos % 1_000_000 == 0 {
        write!(out, ".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        write!(out, ".{:06}", nanos / 1_000)
    } else {
        write!(out, ".{nanos:09}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_written_as_chrono_writes_them() {
        let mut second = None;
        let mut out = String::new();
        let base = chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
            .unwrap()
            .and_hms_opt(0, 5, 9)
            .unwrap();
        for nanos in [
            0,
            1,
            120_000_000,
            123_000,
            123_456_000,
            999_999_999,
            5_000_000,
        ] {
            let at = base + chrono::Duration::nanoseconds(nanos);
            timestamp_text(at, &mut second, &mut out);
            assert_eq!(out, at.format("%F %T%.f").to_string(), "{nanos} ns");
        }
        let later = base + chrono::Duration::seconds(61) + chrono::Duration::microseconds(7);
        timestamp_text(later, &mut second, &mut out);
        assert_eq!(out, "2026-12-01 00:06:10.000007");
    }

    #[test]
    fn appended_events_read_back_unchanged_through_diesel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db").display().to_string();
        let db = crate::storage::Db::open(
            &format!("sqlite://{path}"),
            &crate::storage::PoolOptions::default(),
        )
        .unwrap();
        let base = crate::storage::now();
        // More than a chunk, so both statements are used; every optional field both ways.
        let events: Vec<AuditEvent> = (0..CHUNK * 2 + 7)
            .map(|n| AuditEvent {
                at: base + chrono::Duration::nanoseconds(n as i64 * 333_333_337),
                request_id: format!("r{n}"),
                actor: if n % 3 == 0 { "admin" } else { "b2c" }.into(),
                source: "api-connector".into(),
                step: (n % 2 == 0).then(|| "PreTokenIssuance".into()),
                channel: (n % 5 != 0).then(|| "web".into()),
                outcome: "AlreadyLinked".into(),
                code: (n % 7 == 0).then(|| "EmailNotVerified".into()),
                email_key: Some(format!("user{n}@example.com")),
                issuer: (n % 4 != 0).then(|| "https://issuer/v2.0/".into()),
                subject: Some(format!("subject-{n}")),
                account_number: (n % 2 == 1).then(|| format!("C{n:07}")),
                detail: (n % 11 == 0).then(|| "note, with 'quotes'".into()),
            })
            .collect();
        let mut appender = SqliteAuditAppender::open(&path).unwrap();
        appender.append(&events[..CHUNK + 3]).unwrap();
        appender.append(&events[CHUNK + 3..]).unwrap();
        let mut conn = db.get().unwrap();
        let mut stored = crate::storage::audit::recent(&mut conn, 1000).unwrap();
        stored.reverse();
        assert_eq!(stored, events);
    }

    #[test]
    fn statements_have_thirteen_parameters_per_row() {
        assert_eq!(statement(1).matches('?').count(), 13);
        assert_eq!(statement(CHUNK).matches('?').count(), 13 * CHUNK);
    }
}
