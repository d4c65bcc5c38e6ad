//! SQLite only: how the audit writer appends its batches, and how it feeds the lookup merge
//! (the lookup file itself: `audit_lookup.rs`; the merge thread: `audit_merge.rs`).
//! Backend-specific by design, like the import's [`crate::storage::sqlite::bulk`]; everything else,
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
//!
//! The lookup merge never reads the main database. The writer hands it the lookup pairs of each
//! batch it appended, computed from the events it still holds ([`LookupFeed`]), and reads back
//! only the events it did not write itself (those of link transactions, administrators and other
//! processes), a few at a time, at its own priority. A read of the main database keeps a snapshot
//! while it runs, and no checkpoint can restart the WAL past a snapshot: when the merge, which
//! runs at idle priority and may wait long between two steps, read the events itself, the WAL grew
//! to tens of megabytes under load and the checkpoints that followed stalled the writer
//! (BENCHMARKS.md).

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDateTime, Timelike};
use rusqlite::{Connection, Statement};

use super::audit_lookup::{event_pairs, read_pairs};
pub(crate) use super::audit_lookup::{LookupFeed, FEED_CAPACITY, READ_DOSE};
use crate::storage::audit::AuditEvent;
use crate::storage::StorageError;

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
    /// Whether events may exist that the lookup feed has not had (see [`Self::feed`]).
    behind: bool,
    /// The pairs being handed to the feed, reused.
    pairs: Vec<(i64, i64)>,
}

impl SqliteAuditAppender {
    /// Opens the database file (which must exist and be migrated) with the settings of the
    /// service's connections.
    pub fn open(path: &str) -> Result<SqliteAuditAppender, StorageError> {
        let conn = crate::storage::own_sqlite_connection(path)?;
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
            behind: true,
            pairs: Vec::new(),
        })
    }

    /// Appends the events in one write transaction, taking the process's writer turn first (see
    /// [`crate::storage::write_transaction`]). Returns the id of the last event: the events have the ids
    /// up to it, in order (one writer at a time, and `AUTOINCREMENT` numbers the rows of a
    /// transaction one after another).
    pub fn append(&mut self, events: &[AuditEvent]) -> Result<i64, StorageError> {
        let _turn = crate::storage::sqlite_writer_turn();
        super::write_lock::begin_immediate_own(&self.conn)?;
        let written = self
            .insert(events)
            .and_then(|last| self.conn.execute_batch("COMMIT").map(|()| last));
        if written.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        Ok(written?)
    }

    /// Inserts the events in the open transaction; returns the id of the last.
    fn insert(&mut self, events: &[AuditEvent]) -> rusqlite::Result<i64> {
        let mut chunk_insert = self.conn.prepare_cached(&statement(CHUNK))?;
        let mut row_insert = self.conn.prepare_cached(&statement(1))?;
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
        Ok(self.conn.last_insert_rowid())
    }

    /// Whether events may exist that the lookup feed has not had.
    pub fn is_behind(&self) -> bool {
        self.behind
    }

    /// Hands the merge the lookup pairs of events the feed has not had yet, without ever waiting
    /// for the merge: after [`Self::append`] (`appended`: the batch and its last id), the batch's
    /// own pairs, computed from the events in memory; before them, read from the database, at most
    /// [`READ_DOSE`] events that the feed is missing (written by other connections or processes,
    /// or skipped while the feed was full or busy). With nothing appended, only that read, and
    /// only while the feed is known to be behind. When the feed is full, busy, or not started,
    /// nothing is handed over and nothing is lost: the events are in the database, and a later
    /// call reads them. Returns whether the feed is over half full (time to wake the merge).
    pub fn feed(
        &mut self,
        feed: &LookupFeed,
        appended: Option<(&[AuditEvent], i64)>,
    ) -> Result<bool, StorageError> {
        let Some((through, room)) = feed.position() else {
            self.behind = true;
            return Ok(false);
        };
        let batch_len = appended.map_or(0, |(batch, _)| batch.len());
        if room < 2 * (READ_DOSE as usize + batch_len) {
            self.behind = true;
            return Ok(false);
        }
        // The newest id this call knows of, and the first id of the batch.
        let (newest, first) = match appended {
            Some((batch, last)) => (last, last - batch.len() as i64 + 1),
            None if self.behind => {
                let newest: Option<i64> =
                    self.conn
                        .query_row("SELECT max(id) FROM audit_events", [], |r| r.get(0))?;
                let newest = newest.unwrap_or(0);
                (newest, newest.saturating_add(1))
            }
            None => return Ok(false),
        };
        self.pairs.clear();
        let mut cursor = through;
        if cursor < first - 1 {
            let to = (first - 1).min(cursor.saturating_add(READ_DOSE));
            read_pairs(&self.conn, cursor, to, &mut self.pairs)?;
            cursor = to;
        }
        if let Some((batch, last)) = appended {
            if cursor >= first - 1 && cursor < last {
                for (id, event) in (first..).zip(batch) {
                    if id > cursor {
                        event_pairs(
                            id,
                            event.email_key.as_deref().map(str::as_bytes),
                            event.issuer.as_deref().map(str::as_bytes),
                            event.subject.as_deref().map(str::as_bytes),
                            &mut self.pairs,
                        );
                    }
                }
                cursor = last;
            }
        }
        if cursor <= through {
            self.behind = through < newest;
            return Ok(false);
        }
        match feed.offer(through, cursor, &self.pairs) {
            Some(held) => {
                self.behind = cursor < newest;
                Ok(held > FEED_CAPACITY / 2)
            }
            None => {
                self.behind = true;
                Ok(false)
            }
        }
    }
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
        statement.raw_bind_parameter(first + 2, event.actor.as_ref())?;
        statement.raw_bind_parameter(first + 3, event.source.as_ref())?;
        statement.raw_bind_parameter(first + 4, event.step.as_deref())?;
        statement.raw_bind_parameter(first + 5, event.channel.as_deref())?;
        statement.raw_bind_parameter(first + 6, event.outcome.as_ref())?;
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
    use super::super::audit_lookup::*;
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

    fn plain(n: usize) -> AuditEvent {
        crate::storage::audit::tests::event(n, &format!("u{n}@x.com"), &format!("s{n}"))
    }

    /// A database, its file's path, a feed started at the beginning of the log, and a writer.
    fn started() -> (
        tempfile::TempDir,
        crate::storage::Db,
        String,
        LookupFeed,
        SqliteAuditAppender,
    ) {
        let (dir, db) = crate::storage::temp_sqlite();
        let path = db.sqlite_path().unwrap().to_string();
        let feed = LookupFeed::default();
        feed.start(0);
        let appender = SqliteAuditAppender::open(&path).unwrap();
        (dir, db, path, feed, appender)
    }

    /// The pairs the feed holds, sorted, and the id it covers through.
    fn taken(feed: &LookupFeed) -> (Vec<(i64, i64)>, Option<i64>) {
        let mut pairs = Vec::new();
        let through = feed.take(&mut pairs);
        pairs.sort_unstable();
        (pairs, through)
    }

    /// The pairs of the stored events with ids in `ids`, from their stored columns.
    fn stored_pairs(path: &str, ids: std::ops::RangeInclusive<i64>) -> Vec<(i64, i64)> {
        let conn = Connection::open(path).unwrap();
        let mut select = conn
            .prepare("SELECT id, email_key, issuer, subject FROM audit_events ORDER BY id")
            .unwrap();
        let rows = select
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .unwrap();
        let mut pairs = Vec::new();
        for row in rows {
            let (id, email, issuer, subject) = row.unwrap();
            if ids.contains(&id) {
                pairs.push((
                    crate::storage::audit::email_lookup_key(email.as_bytes()),
                    id,
                ));
                pairs.push((
                    crate::storage::audit::identity_lookup_key(
                        issuer.as_bytes(),
                        subject.as_bytes(),
                    ),
                    id,
                ));
            }
        }
        pairs.sort_unstable();
        pairs
    }

    fn insert_elsewhere(db: &crate::storage::Db, events: &[AuditEvent]) {
        let mut conn = db.get().unwrap();
        for chunk in events.chunks(400) {
            crate::storage::audit::insert(&mut conn, chunk).unwrap();
        }
    }

    #[test]
    fn the_feed_takes_a_batch_from_memory_and_what_others_wrote_from_the_database() {
        let (_dir, db, path, feed, mut appender) = started();
        // Written by another connection (a link's transaction): ids 1 and 2.
        insert_elsewhere(&db, &[plain(1), plain(2)]);
        let batch: Vec<AuditEvent> = (3..=7).map(plain).collect();
        assert_eq!(appender.append(&batch).unwrap(), 7, "the last id");
        assert!(!appender.feed(&feed, Some((&batch, 7))).unwrap());
        assert!(!appender.is_behind());
        let (pairs, through) = taken(&feed);
        assert_eq!(through, Some(7));
        assert_eq!(pairs, stored_pairs(&path, 1..=7));
        // The batch's pairs come from the events handed over, not from a read: events that
        // differ from the stored ones give their own pairs.
        let batch: Vec<AuditEvent> = (8..=9).map(plain).collect();
        assert_eq!(appender.append(&batch).unwrap(), 9);
        let handed: Vec<AuditEvent> = (108..=109).map(plain).collect();
        appender.feed(&feed, Some((&handed, 9))).unwrap();
        let (pairs, through) = taken(&feed);
        assert_eq!(through, Some(9));
        assert!(pairs.contains(&(crate::storage::audit::email_lookup_key(b"u108@x.com"), 8)));
        assert!(!pairs.contains(&(crate::storage::audit::email_lookup_key(b"u8@x.com"), 8)));
    }

    #[test]
    fn a_gap_wider_than_a_dose_is_read_over_several_calls() {
        let (_dir, db, path, feed, mut appender) = started();
        let total = 2 * READ_DOSE + 5;
        let events: Vec<AuditEvent> = (1..=total as usize).map(plain).collect();
        insert_elsewhere(&db, &events);
        let mut covered = Vec::new();
        for _ in 0..4 {
            appender.feed(&feed, None).unwrap();
            covered.push((feed.position().unwrap().0, appender.is_behind()));
        }
        assert_eq!(
            covered,
            [
                (READ_DOSE, true),
                (2 * READ_DOSE, true),
                (total, false),
                (total, false)
            ]
        );
        assert_eq!(taken(&feed), (stored_pairs(&path, 1..=total), Some(total)));
    }

    #[test]
    fn a_busy_or_full_feed_takes_nothing_and_the_events_are_read_later() {
        let (_dir, db) = crate::storage::temp_sqlite();
        let path = db.sqlite_path().unwrap().to_string();
        let feed = LookupFeed::default();
        let mut appender = SqliteAuditAppender::open(&path).unwrap();
        let batch: Vec<AuditEvent> = (1..=3).map(plain).collect();
        appender.append(&batch).unwrap();
        // Not started (the merge has not read its watermark yet).
        assert!(!appender.feed(&feed, Some((&batch, 3))).unwrap());
        assert!(appender.is_behind());
        feed.start(0);
        // Busy: the merge holds the lock. The writer does not wait.
        {
            let _merge = feed.state();
            assert!(!appender.feed(&feed, Some((&batch, 3))).unwrap());
        }
        assert!(appender.is_behind());
        assert_eq!(taken(&feed), (vec![], Some(0)));
        // Full.
        let filler = vec![(0, 0); FEED_CAPACITY - 10];
        assert_eq!(feed.offer(0, 0, &filler), Some(FEED_CAPACITY - 10));
        let batch: Vec<AuditEvent> = (4..=6).map(plain).collect();
        assert_eq!(appender.append(&batch).unwrap(), 6);
        assert!(!appender.feed(&feed, Some((&batch, 6))).unwrap());
        assert!(appender.is_behind());
        let (pairs, through) = taken(&feed);
        assert_eq!((pairs.len(), through), (FEED_CAPACITY - 10, Some(0)));
        // Room again: the next call reads back all six.
        appender.feed(&feed, None).unwrap();
        assert!(!appender.is_behind());
        assert_eq!(taken(&feed), (stored_pairs(&path, 1..=6), Some(6)));
    }

    #[test]
    fn a_feed_over_half_full_asks_for_the_merge() {
        let (_dir, _db, _path, feed, mut appender) = started();
        let filler = vec![(0, 0); FEED_CAPACITY / 2 - 2];
        feed.offer(0, 0, &filler).unwrap();
        let batch = vec![plain(1)];
        appender.append(&batch).unwrap();
        assert!(
            !appender.feed(&feed, Some((&batch, 1))).unwrap(),
            "exactly half"
        );
        let batch = vec![plain(2)];
        appender.append(&batch).unwrap();
        assert!(appender.feed(&feed, Some((&batch, 2))).unwrap());
    }

    #[test]
    fn the_merge_cannot_read_the_main_database_and_its_watermark_only_moves_forward() {
        let (_dir, db) = crate::storage::temp_sqlite();
        let path = db.sqlite_path().unwrap().to_string();
        insert_elsewhere(&db, &[plain(1)]);
        let mut keys = SqliteAuditKeys::open(&path).unwrap();
        let read = keys
            .conn
            .query_row("SELECT count(*) FROM audit_events", [], |r| {
                r.get::<_, i64>(0)
            });
        assert!(
            read.unwrap_err().to_string().contains("no such table"),
            "the merge's connection sees the lookup file only"
        );
        let mut pairs = stored_pairs(&path, 1..=1);
        assert_eq!(keys.write(&mut pairs, 5).unwrap(), 2);
        assert_eq!(keys.write(&mut [], 3).unwrap(), 0);
        assert_eq!(keys.indexed_through().unwrap(), 5);
    }

    #[test]
    fn statements_have_thirteen_parameters_per_row() {
        assert_eq!(statement(1).matches('?').count(), 13);
        assert_eq!(statement(CHUNK).matches('?').count(), 13 * CHUNK);
    }
}
