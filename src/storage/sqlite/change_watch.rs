//! SQLite: the link generation (migration 000006) without a read transaction, when no
//! transaction has committed since it was last read.
//!
//! Every read of a SQLite database in WAL mode is a read transaction: a lock on a read mark in
//! the `-shm` file (an `fcntl` call when no other connection of the process holds it) under a
//! mutex that the process's connections share. On the sign-in path that read, of one row, cost
//! more than the rest of the request together (BENCHMARKS.md).
//!
//! The `-shm` file begins with the WAL index header, whose layout is part of SQLite's documented
//! file format (<https://www.sqlite.org/walformat.html>, "The WAL-Index Header"): two copies of a
//! 48-byte header that every commit rewrites (second copy first), with a change counter
//! (`iChange`), the last valid frame and the WAL salts. SQLite's own readers compare it to decide
//! whether their cached pages are still valid. [`ChangeWatch`] does the same: it keeps the header
//! it read just *before* its last read of the generation, and while both copies of the header
//! are byte for byte that one, no transaction has committed in any process since, so the
//! generation is the one it read. Any difference, a torn read, a missing file or an error means a
//! real read (or, when the watch's connection is busy, "do not know", and the caller reads
//! through the pool). It never answers from a header it cannot compare.
//!
//! Why the `-shm` file it holds open stays the database's: SQLite deletes the WAL and `-shm`
//! files only when a closing connection can take an EXCLUSIVE lock on the database file, and a
//! connection in WAL mode holds a SHARED lock on it from its first read until it closes. The
//! watch keeps a connection of its own open, and opens the `-shm` file only after that
//! connection has read. For the same reason no process can take the database out of WAL mode
//! while the watch lives; the watch is used only if the database is in WAL mode when it opens.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, OnceLock};

use crate::storage::StorageError;

/// The two copies of the WAL index header.
const HEADER: usize = 96;
/// One copy.
const COPY: usize = HEADER / 2;
/// Offset of `isInit` in a copy (non-zero once the header is written).
const IS_INIT: usize = 12;

/// Watches one SQLite database file; see the module documentation.
pub struct ChangeWatch {
    path: String,
    /// The watch's own connection, once opened. Taken without waiting.
    conn: Mutex<Option<rusqlite::Connection>>,
    /// The `-shm` file, opened after the connection's first read; never when the database is
    /// not in WAL mode.
    shm: OnceLock<Option<File>>,
    /// The header read before the last read of the generation, and that generation.
    last: Mutex<Option<([u8; COPY], i64)>>,
    #[cfg(test)]
    reads: std::sync::atomic::AtomicUsize,
}

impl ChangeWatch {
    /// A watch of the SQLite database file at `path`. Opens nothing until first used.
    pub fn new(path: &str) -> Self {
        ChangeWatch {
            path: path.to_string(),
            conn: Mutex::new(None),
            shm: OnceLock::new(),
            last: Mutex::new(None),
            #[cfg(test)]
            reads: Default::default(),
        }
    }

    /// The link generation as a read of the database would give it now, or `None` when the
    /// watch cannot tell without waiting (its connection is busy, or failed): the caller then
    /// reads it on its own connection.
    pub fn link_generation(&self) -> Option<i64> {
        let header = self.header();
        if let (Some(header), Some((seen, generation))) = (header, *self.lock_last()) {
            if header == seen {
                return Some(generation);
            }
        }
        // Changed, or not known: read it, on the watch's connection if it is free.
        let mut conn = self.conn.try_lock().ok()?;
        let generation = match self.read(&mut conn) {
            Ok(generation) => generation,
            Err(error) => {
                // The connection stays open even so: it is what keeps the `-shm` file the
                // database's (module documentation). Nothing is answered from the old header.
                log::warn!("link generation watch: {error}");
                *self.lock_last() = None;
                return None;
            }
        };
        drop(conn);
        if let Some(header) = header {
            // Read before the generation: if the header is still this one later, nothing has
            // committed since, and the generation read then is current.
            *self.lock_last() = Some((header, generation));
        }
        Some(generation)
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, Option<([u8; COPY], i64)>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the generation on the watch's connection, opening it (and then the `-shm` file)
    /// when needed.
    fn read(&self, conn: &mut Option<rusqlite::Connection>) -> Result<i64, StorageError> {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(crate::storage::own_sqlite_connection(&self.path)?),
        };
        let generation: i64 = c
            .prepare_cached("SELECT n FROM link_generation")?
            .query_row([], |row| row.get(0))?;
        #[cfg(test)]
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // After the connection's first read, which took its SHARED lock on the database file.
        self.shm.get_or_init(|| open_shm(c));
        Ok(generation)
    }

    /// Both copies of the WAL index header, when they are equal and written; else `None`.
    fn header(&self) -> Option<[u8; COPY]> {
        let shm = self.shm.get()?.as_ref()?;
        let mut both = [0u8; HEADER];
        shm.read_exact_at(&mut both, 0).ok()?;
        let (first, second) = both.split_at(COPY);
        let first: [u8; COPY] = first.try_into().ok()?;
        (first == second && first[IS_INIT] != 0).then_some(first)
    }

    /// Real reads of the generation so far.
    #[cfg(test)]
    fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The `-shm` file of the connection's main database, if the database is in WAL mode. The name
/// is SQLite's (symbolic links resolved), not the configured one.
fn open_shm(conn: &rusqlite::Connection) -> Option<File> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .ok()?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::info!("the database is not in WAL mode: every sign-in reads the link generation");
        return None;
    }
    let database = conn.path().filter(|p| !p.is_empty())?;
    match File::open(format!("{database}-shm")) {
        Ok(file) => Some(file),
        Err(error) => {
            log::warn!("the database's -shm file cannot be read ({error}): every sign-in reads the link generation");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::storage::{temp_sqlite, DbConn};

    fn sql(conn: &mut DbConn, statements: &str) {
        let DbConn::Sqlite(c) = conn else {
            unreachable!("a SQLite test database")
        };
        c.batch_execute(statements).unwrap();
    }

    /// A test database and a watch that has read twice: the first call opens the -shm file
    /// after its read, the second reads and keeps the header. Returns the generation read.
    fn primed() -> (tempfile::TempDir, crate::storage::Db, ChangeWatch, i64) {
        let (dir, db) = temp_sqlite();
        let watch = ChangeWatch::new(db.sqlite_path().unwrap());
        let first = watch.link_generation().unwrap();
        assert_eq!(watch.link_generation(), Some(first));
        assert_eq!(watch.reads(), 2);
        (dir, db, watch, first)
    }

    #[test]
    fn the_generation_is_read_again_only_after_a_commit() {
        let (_dir, db, watch, first) = primed();
        for _ in 0..100 {
            assert_eq!(watch.link_generation(), Some(first));
        }
        assert_eq!(watch.reads(), 2, "nothing committed: no read");

        // Commits on another connection that do not move the generation: one read, same answer.
        let mut conn = db.get().unwrap();
        sql(
            &mut conn,
            "CREATE TABLE scratch (x); INSERT INTO scratch VALUES (1);",
        );
        assert_eq!(watch.link_generation(), Some(first));
        assert_eq!(watch.reads(), 3);
        assert_eq!(watch.link_generation(), Some(first));
        assert_eq!(watch.reads(), 3);

        // A commit that moves it: seen at the next call.
        sql(&mut conn, "UPDATE link_generation SET n = n + 1;");
        assert_eq!(watch.link_generation(), Some(first + 1));
        assert_eq!(watch.reads(), 4);
        assert_eq!(watch.link_generation(), Some(first + 1));
        assert_eq!(watch.reads(), 4);
    }

    #[test]
    fn a_busy_watch_answers_nothing_rather_than_an_old_generation() {
        let (_dir, db, watch, first) = primed();
        let mut conn = db.get().unwrap();
        sql(&mut conn, "UPDATE link_generation SET n = n + 1;");
        let busy = watch.conn.lock().unwrap();
        assert_eq!(watch.link_generation(), None);
        drop(busy);
        assert_eq!(watch.link_generation(), Some(first + 1));
    }

    #[test]
    fn a_failed_read_answers_nothing_until_a_read_succeeds() {
        let (_dir, db, watch, first) = primed();
        let mut conn = db.get().unwrap();
        sql(
            &mut conn,
            "ALTER TABLE link_generation RENAME TO moved_away;",
        );
        for _ in 0..3 {
            assert_eq!(watch.link_generation(), None);
        }
        assert!(watch.lock_last().is_none(), "the old header is forgotten");
        sql(
            &mut conn,
            "ALTER TABLE moved_away RENAME TO link_generation;",
        );
        assert_eq!(watch.link_generation(), Some(first));
    }

    #[test]
    fn without_wal_every_call_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollback.db");
        let path = path.to_str().unwrap();
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = DELETE; CREATE TABLE link_generation (n INTEGER NOT NULL); \
             INSERT INTO link_generation VALUES (7);",
        )
        .unwrap();
        // A -shm file left from an earlier life in WAL mode must not be trusted.
        std::fs::write(format!("{path}-shm"), [1u8; 136]).unwrap();
        let watch = ChangeWatch::new(path);
        for reads in 1..=5 {
            assert_eq!(watch.link_generation(), Some(7));
            assert_eq!(watch.reads(), reads);
        }
        conn.execute("UPDATE link_generation SET n = 8", [])
            .unwrap();
        assert_eq!(watch.link_generation(), Some(8));
    }
}
