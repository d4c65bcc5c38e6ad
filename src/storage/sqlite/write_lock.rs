//! SQLite's write lock when another process holds it.
//!
//! A connection that finds the write lock taken waits in SQLite's busy handler, which sleeps 1, 2,
//! 5, 10 ... and then 100 ms between its tries. A process that writes one transaction after
//! another (the backfill) leaves the lock free only for a moment between two of them, which such
//! sleeps nearly always miss: the server's sign-ups then waited for the whole backfill, far beyond
//! their time limit. The writers here take the lock with the busy handler off, trying again every
//! [`TRY_EVERY`], for up to [`WAIT`] (the busy timeout the connections have for everything else).
//! Within this process, writers already take turns on a mutex ([`crate::storage::sqlite_writer_turn`]).

use std::time::{Duration, Instant};

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::sqlite::SqliteConnection;
use diesel::QueryResult;

/// The longest wait for the write lock: the connections' `busy_timeout`.
pub(crate) const WAIT: Duration = Duration::from_secs(5);
/// The pause between two tries.
const TRY_EVERY: Duration = Duration::from_micros(500);

/// Runs `begin` again while it fails with an error `is_busy` accepts, for at most [`WAIT`].
fn when_free<E>(
    mut begin: impl FnMut() -> Result<(), E>,
    is_busy: impl Fn(&E) -> bool,
) -> Result<(), E> {
    let started = Instant::now();
    loop {
        match begin() {
            Err(error) if is_busy(&error) && started.elapsed() < WAIT => {
                std::thread::sleep(TRY_EVERY)
            }
            done => return done,
        }
    }
}

/// `BEGIN IMMEDIATE` on a pooled diesel connection (whose busy timeout is [`WAIT`] before and
/// after), through diesel's transaction manager.
pub(crate) fn begin_immediate(c: &mut SqliteConnection) -> QueryResult<()> {
    c.batch_execute("PRAGMA busy_timeout = 0")?;
    let begun = when_free(
        || AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE"),
        |error| {
            matches!(error, diesel::result::Error::DatabaseError(_, info)
                if info.message().contains("database is locked"))
        },
    );
    let restored = c.batch_execute(&format!("PRAGMA busy_timeout = {}", WAIT.as_millis()));
    match (begun, restored) {
        (Ok(()), Err(error)) => {
            let _ = AnsiTransactionManager::rollback_transaction(c);
            Err(error)
        }
        (begun, restored) => begun.and(restored),
    }
}

/// `BEGIN IMMEDIATE` on a rusqlite connection of a writer's own (whose busy timeout is [`WAIT`]
/// before and after). The caller ends the transaction.
pub(crate) fn begin_immediate_own(c: &rusqlite::Connection) -> rusqlite::Result<()> {
    c.busy_timeout(Duration::ZERO)?;
    let begun = when_free(
        || c.execute_batch("BEGIN IMMEDIATE"),
        |error| error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy),
    );
    let restored = c.busy_timeout(WAIT);
    match (begun, restored) {
        (Ok(()), Err(error)) => {
            let _ = c.execute_batch("ROLLBACK");
            Err(error)
        }
        (begun, restored) => begun.and(restored),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another process's transactions of 20 ms, one after another with a pause of 1 ms between
    /// them: a writer here gets the lock in one of the first pauses after it starts waiting.
    #[test]
    fn a_writer_gets_the_lock_between_another_writers_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock.db");
        let path = path.to_str().unwrap().to_string();
        let setup = rusqlite::Connection::open(&path).unwrap();
        setup
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (who TEXT);")
            .unwrap();
        // The other writer: its own connection, as another process would have.
        let other = {
            let path = path.clone();
            std::thread::spawn(move || {
                let c = crate::storage::own_sqlite_connection(&path).unwrap();
                for _ in 0..50 {
                    c.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES ('other');")
                        .unwrap();
                    std::thread::sleep(Duration::from_millis(20));
                    c.execute_batch("COMMIT").unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let mine = crate::storage::own_sqlite_connection(&path).unwrap();
        begin_immediate_own(&mine).unwrap();
        mine.execute_batch("INSERT INTO t VALUES ('mine'); COMMIT;")
            .unwrap();
        other.join().unwrap();
        let before: i64 = setup
            .query_row(
                "SELECT count(*) FROM t WHERE rowid < (SELECT rowid FROM t WHERE who = 'mine')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        // About 3 here; SQLite's busy handler waited for about 22 (and often for all 50).
        assert!(
            before < 12,
            "{before} of the other's 50 transactions came first"
        );
    }
}
