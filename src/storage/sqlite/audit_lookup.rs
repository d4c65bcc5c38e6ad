//! SQLite only: the audit lookup file (`<database>.audit-lookup`): the pairs (64-bit key of an
//! email or identity, event id) on their way from the audit writer to the merge ([`LookupFeed`]),
//! and the merge's writes into `audit_keys` ([`SqliteAuditKeys`]). The merge thread itself is in
//! `audit_merge.rs`; the writer's appender, which feeds it, in `audit.rs`.

use std::sync::{Mutex, TryLockError};

use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::storage::StorageError;

/// Most lookup pairs the feed holds (16 bytes each: 2 MiB). When the merge falls behind (it runs
/// at idle priority, so it waits while the cores are busy), the writer stops handing pairs over
/// and reads the events back later, rather than holding more memory.
pub(crate) const FEED_CAPACITY: usize = 128 * 1024;

/// Most events the writer reads back from the database per flush for the feed: about a
/// millisecond of its CPU every [`crate::storage::audit`] flush interval while it catches up (after a
/// start, or after the feed was full), nothing otherwise.
pub(crate) const READ_DOSE: i64 = 1_000;

/// The lookup pairs on their way from the audit writer to the merge. The writer never waits for
/// it (the merge runs at idle priority and might hold the lock while it waits for a core): it
/// uses `try_lock` and, when the lock is taken, hands its pairs over later.
#[derive(Default)]
pub struct LookupFeed {
    state: Mutex<FeedState>,
}

#[derive(Default)]
pub(crate) struct FeedState {
    /// Every event with an id up to this one is in the lookup database or has its pairs in
    /// `pairs`; `None` until the merge has read its watermark.
    through: Option<i64>,
    pairs: Vec<(i64, i64)>,
}

impl LookupFeed {
    pub(crate) fn state(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_state(&self) -> Option<std::sync::MutexGuard<'_, FeedState>> {
        match self.state.try_lock() {
            Ok(state) => Some(state),
            Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// The merge: every event up to `indexed_through` is in the lookup database, and the pairs
    /// held so far are dropped (a merge that failed lost them; the writer reads them again).
    pub fn start(&self, indexed_through: i64) {
        let mut state = self.state();
        state.through = Some(indexed_through);
        state.pairs.clear();
    }

    /// The merge: takes the pairs held, leaving `spare` (emptied) in their place, and returns the
    /// id they cover through (`None` before [`Self::start`]).
    pub fn take(&self, spare: &mut Vec<(i64, i64)>) -> Option<i64> {
        spare.clear();
        let mut state = self.state();
        std::mem::swap(spare, &mut state.pairs);
        state.through
    }

    /// The writer: the id the feed covers through and the room left, unless the lock is taken or
    /// the feed has not started.
    pub(crate) fn position(&self) -> Option<(i64, usize)> {
        let state = self.try_state()?;
        let through = state.through?;
        Some((through, FEED_CAPACITY.saturating_sub(state.pairs.len())))
    }

    /// The writer: adds the pairs of the events after `from` up to `through`, if the feed still
    /// covers through `from` and has room; returns the pairs then held.
    pub(crate) fn offer(&self, from: i64, through: i64, pairs: &[(i64, i64)]) -> Option<usize> {
        let mut state = self.try_state()?;
        if state.through != Some(from) || state.pairs.len() + pairs.len() > FEED_CAPACITY {
            return None;
        }
        state.pairs.extend_from_slice(pairs);
        state.through = Some(through);
        Some(state.pairs.len())
    }
}

/// The lookup pairs of one event: its email key's and its identity's (see
/// [`crate::storage::audit::email_lookup_key`]).
pub(crate) fn event_pairs(
    id: i64,
    email_key: Option<&[u8]>,
    issuer: Option<&[u8]>,
    subject: Option<&[u8]>,
    pairs: &mut Vec<(i64, i64)>,
) {
    if let Some(email_key) = email_key {
        pairs.push((crate::storage::audit::email_lookup_key(email_key), id));
    }
    if let (Some(issuer), Some(subject)) = (issuer, subject) {
        pairs.push((
            crate::storage::audit::identity_lookup_key(issuer, subject),
            id,
        ));
    }
}

fn text(value: ValueRef<'_>) -> Option<&[u8]> {
    match value {
        ValueRef::Text(text) => Some(text),
        _ => None,
    }
}

/// The lookup pairs of the events with ids in `(from, to]`, read in one read transaction.
pub(crate) fn read_pairs(
    conn: &Connection,
    from: i64,
    to: i64,
    pairs: &mut Vec<(i64, i64)>,
) -> Result<(), StorageError> {
    let mut select = conn.prepare_cached(
        "SELECT id, email_key, issuer, subject FROM audit_events WHERE id > ?1 AND id <= ?2",
    )?;
    let mut rows = select.query([from, to])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let email_key = text(row.get_ref(1)?);
        let (issuer, subject) = (text(row.get_ref(2)?), text(row.get_ref(3)?));
        event_pairs(id, email_key, issuer, subject, pairs);
    }
    Ok(())
}

/// Pairs per multi-row INSERT of a merge.
const PAIRS_PER_INSERT: usize = 128;

/// The merge's own connection, to the lookup database file alone: it cannot read the main
/// database, so it never holds a snapshot of it.
pub struct SqliteAuditKeys {
    pub(crate) conn: Connection,
}

impl SqliteAuditKeys {
    /// Opens the lookup file of the database file `path` (see [`crate::storage::audit_lookup_path`]),
    /// which the service creates when it opens the database.
    pub fn open(path: &str) -> Result<SqliteAuditKeys, StorageError> {
        let conn = crate::storage::own_sqlite_connection(&crate::storage::audit_lookup_path(path))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(SqliteAuditKeys { conn })
    }

    /// Every event with an id up to this one is in `audit_keys`.
    pub fn indexed_through(&self) -> Result<i64, StorageError> {
        Ok(self
            .conn
            .query_row("SELECT indexed_through FROM audit_lookup_state", [], |r| {
                r.get(0)
            })?)
    }

    /// Writes the pairs in one transaction, sorted (the pairs of one key land on the same few
    /// pages of the index), and moves the watermark to `through`. Another process's merge may
    /// have moved it further meanwhile: the pairs are the same whoever writes them (`INSERT OR
    /// IGNORE`), and the watermark only moves forward. Returns the number of pairs written.
    pub fn write(&mut self, pairs: &mut [(i64, i64)], through: i64) -> Result<usize, StorageError> {
        pairs.sort_unstable();
        let mut written = 0;
        let tx = self.conn.transaction()?;
        {
            let mut many = tx.prepare_cached(&pairs_insert(PAIRS_PER_INSERT))?;
            let mut one = tx.prepare_cached(&pairs_insert(1))?;
            let mut chunks = pairs.chunks_exact(PAIRS_PER_INSERT);
            for chunk in chunks.by_ref() {
                for (i, (key, id)) in chunk.iter().enumerate() {
                    many.raw_bind_parameter(2 * i + 1, key)?;
                    many.raw_bind_parameter(2 * i + 2, id)?;
                }
                written += many.raw_execute()?;
            }
            for (key, id) in chunks.remainder() {
                written += one.execute([key, id])?;
            }
        }
        tx.execute(
            "UPDATE audit_lookup_state SET indexed_through = max(indexed_through, ?1)",
            [through],
        )?;
        tx.commit()?;
        Ok(written)
    }
}

/// Indexes every event after the watermark at once, reading them from the database (the
/// service's merge takes them from the writer instead: [`LookupFeed`]). Returns the number of
/// events read.
#[cfg(test)]
pub(crate) fn merge_from_database(path: &str) -> Result<usize, StorageError> {
    let mut keys = SqliteAuditKeys::open(path)?;
    let after = keys.indexed_through()?;
    let events = crate::storage::own_sqlite_connection(path)?;
    let newest: Option<i64> =
        events.query_row("SELECT max(id) FROM audit_events", [], |r| r.get(0))?;
    let through = newest.unwrap_or(0).max(after);
    let mut pairs = Vec::new();
    read_pairs(&events, after, through, &mut pairs)?;
    keys.write(&mut pairs, through)?;
    Ok(usize::try_from(through - after).unwrap_or(0))
}

/// `INSERT OR IGNORE` (a pair may repeat only if two keys of one event collide) of `rows` pairs.
fn pairs_insert(rows: usize) -> String {
    let values = vec!["(?, ?)"; rows].join(", ");
    format!("INSERT OR IGNORE INTO audit_keys (lookup_key, event_id) VALUES {values}")
}
