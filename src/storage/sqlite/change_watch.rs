//! SQLite: the link generation (migration 000006) told without a read transaction on the caller's
//! connection, when no transaction has committed since it was last read: the sign-in cache's
//! [`LinkChanges`] on SQLite.
//!
//! Every read of a SQLite database in WAL mode is a read transaction: a lock on a read mark in
//! the `-shm` file (an `fcntl` call when no other connection of the process holds it) under a
//! mutex that the process's connections share. On the sign-in path that read, of one row, cost
//! more than the rest of the request together (BENCHMARKS.md).
//!
//! The `-shm` file begins with the WAL index header, whose layout is part of SQLite's documented
//! file format (<https://www.sqlite.org/walformat.html>, "The WAL-Index Header") for its unix and
//! windows VFS: two copies of a 48-byte header that every commit rewrites (second copy first),
//! with a change counter (`iChange`), the last valid frame and the WAL salts. SQLite's own
//! readers compare it to decide whether their cached pages are still valid. [`ChangeWatch`] does
//! the same: it keeps the header it read just *before* its last read of the generation, and while
//! both copies of the header are byte for byte that one, no transaction has committed in any
//! process since, so the generation is the one it read. It never answers from a header it cannot
//! compare.
//!
//! The header is read as SQLite's readers read it (`walIndexTryHdr` in `wal.c`): from a shared,
//! read-only memory mapping of the `-shm` file, the first copy, a memory barrier, then the second
//! (writers write the second first). A `pread` of the file per sign-in cost about 5 % of the
//! request threads' CPU (BENCHMARKS.md); a mapping costs no system call. The mapping is the one
//! `unsafe` part of the crate: it is sound for as long as the file is not truncated, and SQLite
//! truncates a `-shm` file only when it opens it as the database's sole connection (it then holds
//! the exclusive "DMS" lock), which it cannot be while the watch's own connection is open. The
//! process's SQLite connections map the same file themselves.
//!
//! Where that header cannot be read (the database is not in WAL mode, the `-shm` file cannot be
//! opened, a torn or unwritten header, a platform other than unix), the watch asks its own
//! connection `PRAGMA data_version`, which changes when another connection has committed: a read
//! transaction, but no page of the database is read, and the generation is read again only when
//! it changed.
//!
//! Why the `-shm` file it holds mapped stays the database's: SQLite deletes the WAL and `-shm`
//! files only when a closing connection can take an EXCLUSIVE lock on the database file, and a
//! connection in WAL mode holds a SHARED lock on it from its first read until it closes. The
//! watch keeps a connection of its own open, and opens the `-shm` file only after that
//! connection has read. For the same reason no process can take the database out of WAL mode
//! while the watch lives; the watch reads the header only if the database is in WAL mode when it
//! opens.

use std::fs::File;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use parking_lot::RwLock;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use crate::storage::links::{self, LinkChanges};
use crate::storage::{DbConn, StorageError};

/// The two copies of the WAL index header.
const HEADER: usize = 96;
/// One copy.
const COPY: usize = HEADER / 2;
/// Offset of `isInit` in a copy (non-zero once the header is written).
const IS_INIT: usize = 12;

/// Watches one SQLite database file; see the module documentation.
pub struct ChangeWatch {
    path: String,
    /// The watch's own connection, once opened, and what `PRAGMA data_version` said before its
    /// last read of the generation, with that generation.
    conn: Mutex<Option<Watcher>>,
    /// The start of the `-shm` file, mapped after the connection's first read; `None` when its
    /// header cannot be read here.
    shm: OnceLock<Option<HeaderMap>>,
    /// The header read before the last read of the generation, and that generation. Read by
    /// every sign-in, written only after a commit: readers do not wait for each other.
    last: RwLock<Option<([u8; COPY], i64)>>,
    #[cfg(test)]
    counts: test_counts::Counts,
}

struct Watcher {
    conn: DbConn,
    version: Option<(i64, i64)>,
}

impl LinkChanges for ChangeWatch {
    fn stamp(&self) -> Option<u64> {
        // The generation only moves forward; as a stamp only its equality matters.
        self.link_generation().map(|generation| generation as u64)
    }
}

impl ChangeWatch {
    /// A watch of the SQLite database file at `path`. Opens nothing until first used.
    pub fn new(path: &str) -> Self {
        ChangeWatch {
            path: path.to_string(),
            conn: Mutex::new(None),
            shm: OnceLock::new(),
            last: RwLock::new(None),
            #[cfg(test)]
            counts: Default::default(),
        }
    }

    /// The link generation as a read of the database would give it now, or `None` when the
    /// watch cannot tell (its connection failed, or the database is locked by a writer outside
    /// WAL mode).
    pub fn link_generation(&self) -> Option<i64> {
        let result = match self.header() {
            Some(header) => self.through_header(header),
            None => self.through_data_version(),
        };
        match result {
            Ok(generation) => Some(generation),
            Err(error) => {
                // The connection stays open even so: it is what keeps the `-shm` file the
                // database's (module documentation). Nothing is answered from what it knew.
                if is_locked(&error) {
                    log::debug!("link generation watch: {error}");
                } else {
                    log::warn!("link generation watch: {error}");
                }
                *self.last.write() = None;
                if let Some(watcher) = self.lock_conn().as_mut() {
                    watcher.version = None;
                }
                None
            }
        }
    }

    /// The header is readable: the generation read after this header, when it was.
    fn through_header(&self, header: [u8; COPY]) -> Result<i64, StorageError> {
        if let Some((seen, generation)) = *self.last.read() {
            if header == seen {
                return Ok(generation);
            }
        }
        let mut conn = self.lock_conn();
        let generation = self.read(&mut conn)?;
        // Read before the generation: if the header is still this one later, nothing has
        // committed since, and the generation read then is current.
        *self.last.write() = Some((header, generation));
        Ok(generation)
    }

    /// Without the header: the generation read after the connection's data version, when the
    /// version has not changed since.
    fn through_data_version(&self) -> Result<i64, StorageError> {
        let mut conn = self.lock_conn();
        let watcher = self.open(&mut conn)?;
        let version = data_version(&mut watcher.conn)?;
        #[cfg(test)]
        self.counts.version();
        if let Some((seen, generation)) = watcher.version {
            if seen == version {
                return Ok(generation);
            }
        }
        let generation = self.read(&mut conn)?;
        if let Some(watcher) = conn.as_mut() {
            watcher.version = Some((version, generation));
        }
        Ok(generation)
    }

    fn lock_conn(&self) -> MutexGuard<'_, Option<Watcher>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The watch's connection, opened when needed. It never waits for a lock: outside WAL mode
    /// a writer's lock answers "busy" at once, and the watch answers `None`.
    fn open<'a>(&self, conn: &'a mut Option<Watcher>) -> Result<&'a mut Watcher, StorageError> {
        if let Some(watcher) = conn {
            return Ok(watcher);
        }
        if !std::path::Path::new(&self.path).exists() {
            return Err(StorageError::Unavailable(format!(
                "the database file {} is missing",
                self.path
            )));
        }
        let mut c = SqliteConnection::establish(&self.path)
            .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        c.batch_execute("PRAGMA busy_timeout = 0")?;
        Ok(conn.insert(Watcher {
            conn: DbConn::Sqlite(c),
            version: None,
        }))
    }

    /// Reads the generation on the watch's connection, opening it (and then the `-shm` file)
    /// when needed.
    fn read(&self, conn: &mut Option<Watcher>) -> Result<i64, StorageError> {
        let watcher = self.open(conn)?;
        let generation = links::generation(&mut watcher.conn)?;
        #[cfg(test)]
        self.counts.read();
        // After the connection's first read, which took its SHARED lock on the database file.
        if let DbConn::Sqlite(c) = &mut watcher.conn {
            self.shm.get_or_init(|| open_shm(c));
        }
        Ok(generation)
    }

    /// Both copies of the WAL index header, when they can be read, are equal and are written;
    /// else `None`.
    fn header(&self) -> Option<[u8; COPY]> {
        let both = self.shm.get()?.as_ref()?.read();
        let (first, second) = both.split_at(COPY);
        let first: [u8; COPY] = first.try_into().ok()?;
        (first == second && first[IS_INIT] != 0).then_some(first)
    }
}

/// The WAL index header's two copies, mapped read-only from the start of the `-shm` file
/// (module documentation).
struct HeaderMap(memmap2::Mmap);

impl HeaderMap {
    /// Maps the start of an open `-shm` file, if it is long enough to hold the header.
    #[allow(unsafe_code)]
    fn new(file: &File) -> std::io::Result<HeaderMap> {
        if file.metadata()?.len() < HEADER as u64 {
            return Err(std::io::Error::other("shorter than the WAL index header"));
        }
        // SAFETY: a shared read-only mapping; the file is not truncated while the watch's
        // connection is open (module documentation), and it is only ever read through `read`.
        let map = unsafe { memmap2::MmapOptions::new().len(HEADER).map(file)? };
        Ok(HeaderMap(map))
    }

    /// Both copies as they are now, in SQLite's order: the first copy, a barrier, the second.
    /// Another process writes them at any time: a torn copy shows as two copies that differ.
    #[allow(unsafe_code)]
    fn read(&self) -> [u8; HEADER] {
        const WORD: usize = std::mem::size_of::<u32>();
        let words = self.0.as_ptr().cast::<u32>();
        let mut both = [0u8; HEADER];
        for (i, bytes) in both.chunks_exact_mut(WORD).enumerate() {
            if i == COPY / WORD {
                fence(Ordering::SeqCst);
            }
            // SAFETY: `i < HEADER / WORD` and the mapping is `HEADER` bytes long and starts on a
            // page boundary (aligned for `u32`); volatile, because another process writes it.
            let word = unsafe { words.add(i).read_volatile() };
            bytes.copy_from_slice(&word.to_ne_bytes());
        }
        both
    }
}

/// `PRAGMA data_version` of a connection.
fn data_version(conn: &mut DbConn) -> Result<i64, StorageError> {
    #[derive(diesel::QueryableByName)]
    struct Version {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        data_version: i64,
    }
    let DbConn::Sqlite(c) = conn else {
        return Err(StorageError::Unavailable("not a SQLite connection".into()));
    };
    let version: Version = diesel::sql_query("PRAGMA data_version").get_result(c)?;
    Ok(version.data_version)
}

/// Whether an error is SQLite's "database is locked" (a writer outside WAL mode).
fn is_locked(error: &StorageError) -> bool {
    matches!(error, StorageError::Query(diesel::result::Error::DatabaseError(_, info))
        if info.message().contains("locked"))
}

/// The header of the `-shm` file of the connection's main database, mapped, if the database is in
/// WAL mode and the platform is one whose WAL index SQLite documents (unix here). The name is
/// SQLite's (symbolic links resolved), not the configured one.
fn open_shm(conn: &mut SqliteConnection) -> Option<HeaderMap> {
    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    if !cfg!(unix) {
        log::info!(
            "the WAL index is read on unix only: the sign-in cache asks PRAGMA data_version"
        );
        return None;
    }
    let mode: Mode = diesel::sql_query("PRAGMA journal_mode")
        .get_result(conn)
        .ok()?;
    if !mode.journal_mode.eq_ignore_ascii_case("wal") {
        log::info!("the database is not in WAL mode: the sign-in cache asks PRAGMA data_version");
        return None;
    }
    let database = crate::storage::main_file(conn)
        .ok()
        .filter(|p| !p.is_empty())?;
    match File::open(format!("{database}-shm")).and_then(|file| HeaderMap::new(&file)) {
        Ok(map) => Some(map),
        Err(error) => {
            log::warn!(
                "the database's -shm file cannot be read ({error}): the sign-in cache asks \
                 PRAGMA data_version"
            );
            None
        }
    }
}

#[cfg(test)]
mod test_counts {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// What the watch did, for the tests.
    #[derive(Default)]
    pub(super) struct Counts {
        reads: AtomicUsize,
        versions: AtomicUsize,
    }

    impl Counts {
        pub(super) fn read(&self) {
            self.reads.fetch_add(1, Ordering::SeqCst);
        }
        pub(super) fn version(&self) {
            self.versions.fetch_add(1, Ordering::SeqCst);
        }
        pub(super) fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
        pub(super) fn versions(&self) -> usize {
            self.versions.load(Ordering::SeqCst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::temp_sqlite;

    fn sql(conn: &mut DbConn, statements: &str) {
        conn.batch_execute(statements).unwrap();
    }

    /// A test database and a watch that has read twice: the first call reads through the data
    /// version and opens the -shm file after its read, the second reads and keeps the header.
    /// Returns the generation read.
    fn primed() -> (tempfile::TempDir, crate::storage::Db, ChangeWatch, i64) {
        let (dir, db) = temp_sqlite();
        let watch = ChangeWatch::new(db.sqlite_path().unwrap());
        let first = watch.link_generation().unwrap();
        assert_eq!(watch.link_generation(), Some(first));
        assert_eq!(watch.counts.reads(), 2);
        assert_eq!(
            watch.counts.versions(),
            1,
            "the header is read from the second call"
        );
        (dir, db, watch, first)
    }

    #[test]
    fn the_generation_is_read_again_only_after_a_commit() {
        let (_dir, db, watch, first) = primed();
        for _ in 0..100 {
            assert_eq!(watch.link_generation(), Some(first));
        }
        assert_eq!(watch.counts.reads(), 2, "nothing committed: no read");
        assert_eq!(watch.counts.versions(), 1, "nor a data version");

        // Commits on another connection that do not move the generation: one read, same answer.
        let mut conn = db.get().unwrap();
        sql(
            &mut conn,
            "CREATE TABLE scratch (x); INSERT INTO scratch VALUES (1);",
        );
        assert_eq!(watch.link_generation(), Some(first));
        assert_eq!(watch.counts.reads(), 3);
        assert_eq!(watch.link_generation(), Some(first));
        assert_eq!(watch.counts.reads(), 3);

        // A commit that moves it: seen at the next call, and the stamp moves with it.
        let stamp = watch.stamp();
        sql(&mut conn, "UPDATE link_generation SET n = n + 1;");
        assert_eq!(watch.link_generation(), Some(first + 1));
        assert_eq!(watch.counts.reads(), 4);
        assert_eq!(watch.link_generation(), Some(first + 1));
        assert_eq!(watch.counts.reads(), 4);
        assert_ne!(watch.stamp(), stamp);
        assert_eq!(watch.counts.versions(), 1, "the header answered every time");
    }

    /// The first `HEADER` bytes of the file, by a system call.
    fn pread_header(path: &str) -> [u8; HEADER] {
        use std::io::Read;
        let mut both = [0u8; HEADER];
        File::open(format!("{path}-shm"))
            .unwrap()
            .read_exact(&mut both)
            .unwrap();
        both
    }

    #[test]
    fn the_mapped_header_is_the_files_before_and_after_a_commit() {
        let (_dir, db, watch, _) = primed();
        let path = db.sqlite_path().unwrap().to_string();
        let map = watch
            .shm
            .get()
            .unwrap()
            .as_ref()
            .expect("mapped in WAL mode");
        let before = map.read();
        assert_eq!(before, pread_header(&path));
        assert_ne!(before[IS_INIT], 0);

        let mut conn = db.get().unwrap();
        sql(&mut conn, "UPDATE link_generation SET n = n + 1;");
        let after = map.read();
        assert_eq!(after, pread_header(&path), "the mapping follows the file");
        assert_ne!(after, before, "a commit rewrites the header");
        assert_eq!(after[..COPY], after[COPY..], "both copies written");
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
            assert_eq!(watch.stamp(), None);
        }
        assert!(watch.last.read().is_none(), "the old header is forgotten");
        sql(
            &mut conn,
            "ALTER TABLE moved_away RENAME TO link_generation;",
        );
        assert_eq!(watch.link_generation(), Some(first));
    }

    /// A database file in rollback-journal mode, with the generation at 7 and a stale `-shm`
    /// file beside it.
    fn rollback_database(dir: &tempfile::TempDir) -> (String, DbConn) {
        let path = dir.path().join("rollback.db");
        let path = path.to_str().unwrap().to_string();
        let mut conn = DbConn::Sqlite(SqliteConnection::establish(&path).unwrap());
        sql(
            &mut conn,
            "PRAGMA journal_mode = DELETE; \
             CREATE TABLE link_generation (singleton INTEGER PRIMARY KEY, n INTEGER NOT NULL); \
             INSERT INTO link_generation VALUES (1, 7);",
        );
        // A -shm file left from an earlier life in WAL mode must not be trusted.
        std::fs::write(format!("{path}-shm"), [1u8; 136]).unwrap();
        (path, conn)
    }

    #[test]
    fn without_wal_the_data_version_tells_whether_to_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut conn) = rollback_database(&dir);
        let watch = ChangeWatch::new(&path);
        for _ in 0..5 {
            assert_eq!(watch.link_generation(), Some(7));
        }
        assert!(watch.shm.get().unwrap().is_none(), "no header to read");
        assert_eq!(watch.counts.versions(), 5, "asked every time");
        assert_eq!(
            watch.counts.reads(),
            1,
            "read once: nothing committed since"
        );

        // A commit elsewhere that does not move the generation: read again, same answer.
        sql(&mut conn, "CREATE TABLE scratch (x);");
        assert_eq!(watch.link_generation(), Some(7));
        assert_eq!(watch.counts.reads(), 2);
        let stamp = watch.stamp();
        assert_eq!(watch.counts.reads(), 2);

        sql(&mut conn, "UPDATE link_generation SET n = 8");
        assert_eq!(watch.link_generation(), Some(8));
        assert_ne!(watch.stamp(), stamp);
        assert_eq!(watch.counts.reads(), 3);
    }

    #[test]
    fn without_wal_a_writers_lock_answers_nothing_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut conn) = rollback_database(&dir);
        let watch = ChangeWatch::new(&path);
        assert_eq!(watch.link_generation(), Some(7));
        // A writer outside WAL mode locks readers out until it commits.
        sql(
            &mut conn,
            "BEGIN EXCLUSIVE; UPDATE link_generation SET n = 9;",
        );
        let started = std::time::Instant::now();
        assert_eq!(watch.stamp(), None);
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
        sql(&mut conn, "COMMIT;");
        assert_eq!(watch.link_generation(), Some(9));
    }

    #[test]
    fn in_wal_mode_an_unreadable_header_falls_back_to_the_data_version() {
        let (_dir, db, watch, first) = primed();
        // As where the header cannot be read (another platform, an unreadable -shm file).
        let watch = ChangeWatch {
            shm: OnceLock::from(None),
            ..watch
        };
        let versions = watch.counts.versions();
        let reads = watch.counts.reads();
        for _ in 0..10 {
            assert_eq!(watch.link_generation(), Some(first));
        }
        assert_eq!(watch.counts.versions(), versions + 10);
        assert_eq!(
            watch.counts.reads(),
            reads,
            "the version is the one read with the generation when primed"
        );

        let mut conn = db.get().unwrap();
        let stamp = watch.stamp();
        sql(&mut conn, "UPDATE link_generation SET n = n + 1;");
        assert_eq!(watch.link_generation(), Some(first + 1));
        assert_ne!(watch.stamp(), stamp);
        assert_eq!(watch.counts.reads(), reads + 1);
    }
}
