//! SQLite only: the thread that merges the audit writer's lookup pairs into the lookup file
//! (`<database>.audit-lookup`, see `storage/sqlite/audit_lookup.rs`), at idle priority.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use super::audit_lookup::{LookupFeed, SqliteAuditKeys};
use crate::storage::StorageError;

/// How often new events are merged into `audit_keys` (SQLite). Seldom on purpose: a merge
/// writes about one page per distinct email or identity, whatever the number of events, so the
/// more events a merge takes, the less each costs. Newer events are found by a scan.
const MERGE_INTERVAL: Duration = Duration::from_secs(5);

/// The merge thread: at start, then every [`MERGE_INTERVAL`] or when the writer wakes it, and
/// once more when every sender of `wake` is dropped, writes what the writer fed it into the
/// lookup file, through a connection of its own to that file alone.
pub(crate) fn run_merger(
    database: String,
    feed: Arc<LookupFeed>,
    mut keys: Option<SqliteAuditKeys>,
    wake: Receiver<()>,
) {
    // The lookup merge is maintenance whose delay costs only the speed of administrators'
    // lookups (newer events are scanned), while its bursts (a merge of 200,000 events takes a
    // core for a good part of a second) used to delay the requests the service answers
    // meanwhile (BENCHMARKS.md): it runs only on CPU time no other thread wants, and catches up
    // when the load falls.
    if !crate::background::lower_priority(crate::background::Priority::Idle) {
        log::info!("the audit lookup merge runs at normal priority (idle priority refused)");
    }
    let mut pairs = Vec::new();
    loop {
        if let Err(error) = merge_fed(&database, &feed, &mut keys, &mut pairs) {
            log::warn!("audit lookup merge failed: {error}");
            keys = None;
        }
        if let Err(RecvTimeoutError::Disconnected) = wake.recv_timeout(MERGE_INTERVAL) {
            if let Err(error) = merge_fed(&database, &feed, &mut keys, &mut pairs) {
                log::warn!("audit lookup merge failed: {error}");
            }
            return;
        }
    }
}

/// Opens the lookup file for the merge and tells the feed where its watermark is.
pub(crate) fn open_lookup(
    database: &str,
    feed: &LookupFeed,
) -> Result<SqliteAuditKeys, StorageError> {
    let keys = SqliteAuditKeys::open(database)?;
    feed.start(keys.indexed_through()?);
    Ok(keys)
}

/// One merge: opens the lookup file when needed (and then tells the feed where its watermark
/// is), and writes the pairs fed since the last merge. Returns the pairs written.
fn merge_fed(
    database: &str,
    feed: &LookupFeed,
    keys: &mut Option<SqliteAuditKeys>,
    pairs: &mut Vec<(i64, i64)>,
) -> Result<usize, StorageError> {
    let keys = match keys {
        Some(keys) => keys,
        None => keys.insert(open_lookup(database, feed)?),
    };
    match feed.take(pairs) {
        Some(through) => keys.write(pairs, through),
        None => Ok(0),
    }
}
