//! SQLite: the checkpoints of a bulk writer's WAL on a thread of their own.
//!
//! In WAL mode every commit appends the pages it changed to the WAL, and by default the
//! committing connection then copies them into the database file (the automatic checkpoint). A
//! bulk writer that commits batch after batch on one thread spends part of its time on those
//! copies while the machine's other core is idle. With [`Checkpoints`], the writer's connection
//! has `wal_autocheckpoint = 0`, and a thread with its own connection runs a passive checkpoint
//! after each commit. A passive checkpoint copies the frames no checkpoint has copied yet and
//! never waits for the writer. The WAL starts over from its beginning only when a transaction
//! begins after a checkpoint that copied every frame; so that it does not grow without bound,
//! the writer waits for the checkpoints to catch up ([`Checkpoints::settle`]) every
//! [`SETTLE_EVERY`] commits, and at the end.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::storage::StorageError;

/// Commits between two waits for the checkpoints to catch up.
pub const SETTLE_EVERY: u64 = 4;

#[derive(Default)]
struct State {
    /// Commits announced.
    committed: u64,
    /// Commits whose frames a finished checkpoint had in the WAL when it began.
    copied: u64,
    stop: bool,
}

/// The checkpoint thread of one bulk writer; see the module documentation.
pub struct Checkpoints {
    shared: Arc<(Mutex<State>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpoints {
    /// Starts the thread, with a connection of its own to the database file at `path`.
    pub fn start(path: &str) -> Result<Checkpoints, StorageError> {
        let conn = crate::storage::own_sqlite_connection(path)?;
        let shared: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("autolink-checkpoint".into())
            .spawn(move || run(&conn, &theirs))
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        Ok(Checkpoints {
            shared,
            thread: Some(thread),
        })
    }

    /// After a commit: the thread copies its pages into the database file. Every
    /// [`SETTLE_EVERY`] commits, waits for that first ([`Checkpoints::settle`]).
    pub fn committed(&self) {
        let (lock, wake) = &*self.shared;
        let committed = {
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            state.committed += 1;
            state.committed
        };
        wake.notify_all();
        if committed % SETTLE_EVERY == 0 {
            self.settle();
        }
    }

    /// Waits until a checkpoint that began after the last commit has finished.
    pub fn settle(&self) {
        let (lock, wake) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        let target = state.committed;
        while state.copied < target && !state.stop {
            state = wake.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.settle();
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: a passive checkpoint whenever commits were announced since the last one.
fn run(conn: &rusqlite::Connection, shared: &(Mutex<State>, Condvar)) {
    let (lock, wake) = shared;
    loop {
        let target = {
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            while state.copied >= state.committed && !state.stop {
                state = wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.stop {
                return;
            }
            state.committed
        };
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            log::warn!("checkpoint of the bulk writer's WAL: {error}");
        }
        lock.lock().unwrap_or_else(|e| e.into_inner()).copied = target;
        wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits 40 transactions of about 400 KB each on a connection without automatic
    /// checkpoints; returns the largest size the WAL file had.
    fn largest_wal(checkpoints: Option<&Checkpoints>, path: &str) -> u64 {
        let writer = crate::storage::own_sqlite_connection(path).unwrap();
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE IF NOT EXISTS t (x BLOB);")
            .unwrap();
        let mut largest = 0;
        for _ in 0..40 {
            writer
                .execute_batch(
                    "BEGIN IMMEDIATE; \
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) \
                     INSERT INTO t SELECT randomblob(4000) FROM n; COMMIT;",
                )
                .unwrap();
            if let Some(checkpoints) = checkpoints {
                checkpoints.committed();
            }
            let wal = std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
            largest = largest.max(wal);
        }
        largest
    }

    fn database(dir: &tempfile::TempDir, name: &str) -> String {
        let path = dir.path().join(name).to_str().unwrap().to_string();
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL;")
            .unwrap();
        path
    }

    #[test]
    fn the_wal_starts_over_instead_of_growing_with_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let without = database(&dir, "without.db");
        let grown = largest_wal(None, &without);
        let with = database(&dir, "with.db");
        let checkpoints = Checkpoints::start(&with).unwrap();
        let kept = largest_wal(Some(&checkpoints), &with);
        drop(checkpoints);
        // 40 commits of 400 KB: about 16 MB without checkpoints; with them the WAL starts over
        // after every SETTLE_EVERY commits (a few MB at most).
        assert!(grown > 12_000_000, "{grown}");
        assert!(kept < grown / 4, "{kept} of {grown}");
        // Everything written is in the database.
        let conn = rusqlite::Connection::open(&with).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 4000);
    }
}
