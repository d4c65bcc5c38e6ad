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
//! The header is read where SQLite's own readers read it (`walIndexTryHdr` in `wal.c`): in
//! SQLite's shared mapping of the wal-index, the one its VFS gives the watch's own connection
//! (`SQLITE_FCNTL_FILE_POINTER`, then the file's documented `xShmMap` method, asked for the
//! region already mapped); the first copy, a memory barrier, then the second (writers write the
//! second first). It costs no system call. The watch never opens the `-shm` file itself: the
//! locks SQLite holds on it are POSIX locks, which belong to the process, and closing any
//! descriptor of the file would release them all (<https://www.sqlite.org/howtocorrupt.html>,
//! section 2.2). Without its "DMS" lock, another process opening the database takes the file for
//! unused, truncates it and rebuilds it (a mapping read meanwhile faults), and the checkpoints
//! of other processes no longer see this process's readers. A test checks the lock is kept.
//!
//! SQLite unmaps the region only when the connection closes its WAL (`sqlite3WalClose`: the
//! connection closes, or leaves WAL mode). The watch's connection stays open for the watch's
//! life and never changes the journal mode, so the region stays mapped while the watch can read
//! it. That pointer is the one `unsafe` part of the crate.
//!
//! Where that header cannot be read (the database is not in WAL mode, a platform other than
//! unix, a VFS without shared memory, a torn or unwritten header), the watch asks its own
//! connection `PRAGMA data_version`, which changes when another connection has committed: a read
//! transaction, but no page of the database is read, and the generation is read again only when
//! it changed.

use std::ffi::c_void;
use std::sync::atomic::{fence, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use parking_lot::RwLock;
use rusqlite::{ffi, Connection};

use crate::storage::links::LinkChanges;

/// The two copies of the WAL index header.
const HEADER: usize = 96;
/// One copy.
const COPY: usize = HEADER / 2;
/// Offset of `isInit` in a copy (non-zero once the header is written).
const IS_INIT: usize = 12;
/// The size of a wal-index region, as SQLite's WAL maps them (`WALINDEX_PGSZ` in `wal.c`).
const REGION: i32 = 32 * 1024;
/// The generation, as [`crate::storage::links::generation`] reads it.
const GENERATION: &str = "SELECT n FROM link_generation";

/// Watches one SQLite database file; see the module documentation.
pub struct ChangeWatch {
    path: String,
    /// The watch's own connection, once opened, and what `PRAGMA data_version` said before its
    /// last read of the generation, with that generation.
    conn: Mutex<Option<Watcher>>,
    /// The header in SQLite's mapping of the wal-index, found after the connection's first
    /// read; `None` when it cannot be read here.
    shm: OnceLock<Option<HeaderMap>>,
    /// The header read before the last read of the generation, and that generation. Read by
    /// every sign-in, written only after a commit: readers do not wait for each other.
    last: RwLock<Option<([u8; COPY], i64)>>,
    #[cfg(test)]
    counts: test_counts::Counts,
}

struct Watcher {
    /// Never closed before the watch is dropped: SQLite's mapping of the wal-index, which
    /// [`HeaderMap`] reads, is this connection's.
    conn: Connection,
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
                // The connection stays open even so: the mapping read is its own (module
                // documentation). Nothing is answered from what it knew.
                if is_busy(&error) {
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
    fn through_header(&self, header: [u8; COPY]) -> rusqlite::Result<i64> {
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
    fn through_data_version(&self) -> rusqlite::Result<i64> {
        let mut conn = self.lock_conn();
        let watcher = self.open(&mut conn)?;
        let version: i64 = watcher
            .conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))?;
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
    fn open<'a>(&self, conn: &'a mut Option<Watcher>) -> rusqlite::Result<&'a mut Watcher> {
        if let Some(watcher) = conn {
            return Ok(watcher);
        }
        // A missing file is an error, not a new empty database.
        let c = crate::storage::own_sqlite_connection(&self.path)?;
        c.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn.insert(Watcher {
            conn: c,
            version: None,
        }))
    }

    /// Reads the generation on the watch's connection, opening it (and then finding its
    /// wal-index) when needed.
    fn read(&self, conn: &mut Option<Watcher>) -> rusqlite::Result<i64> {
        let watcher = self.open(conn)?;
        let generation = watcher
            .conn
            .prepare_cached(GENERATION)?
            .query_row([], |row| row.get(0))?;
        #[cfg(test)]
        self.counts.read();
        // After the connection's first read, which opened its WAL and mapped the wal-index.
        self.shm.get_or_init(|| HeaderMap::of(&watcher.conn));
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

/// The WAL index header's two copies at the start of SQLite's mapping of the wal-index of the
/// watch's connection (module documentation).
struct HeaderMap(*const u32);

// SAFETY: the pointer is only read, with volatile reads (`HeaderMap::read`), and the memory it
// points to is SQLite's shared mapping, which other threads and processes write concurrently by
// design; it stays mapped for as long as the watch (module documentation).
#[allow(unsafe_code)]
unsafe impl Send for HeaderMap {}
#[allow(unsafe_code)]
unsafe impl Sync for HeaderMap {}

impl HeaderMap {
    /// The start of the wal-index of `conn`'s main database, if the database is in WAL mode, the
    /// platform is one whose WAL index SQLite documents (unix here), and `conn` has read (its
    /// WAL is open and the first region mapped).
    #[allow(unsafe_code)]
    fn of(conn: &Connection) -> Option<HeaderMap> {
        if !cfg!(unix) {
            log::info!(
                "the WAL index is read on unix only: the sign-in cache asks PRAGMA data_version"
            );
            return None;
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .ok()?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::info!(
                "the database is not in WAL mode: the sign-in cache asks PRAGMA data_version"
            );
            return None;
        }
        let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
        let mut region: *mut c_void = std::ptr::null_mut();
        // SAFETY: `conn.handle()` is an open connection, used here by this thread only (the
        // caller holds the watch's connection lock). SQLITE_FCNTL_FILE_POINTER writes the main
        // database's `sqlite3_file` into `file`; its methods of version 2 and later have
        // `xShmMap`, which, for a region already mapped and `bExtend` 0, only writes that
        // region's address (SQLite's own mapping; nothing is opened or mapped anew).
        let rc = unsafe {
            let rc = ffi::sqlite3_file_control(
                conn.handle(),
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                (&mut file as *mut *mut ffi::sqlite3_file).cast(),
            );
            if rc != ffi::SQLITE_OK || file.is_null() || (*file).pMethods.is_null() {
                return Self::unreadable("the database file has no methods");
            }
            let methods = &*(*file).pMethods;
            match methods.xShmMap {
                Some(shm_map) if methods.iVersion >= 2 => shm_map(file, 0, REGION, 0, &mut region),
                _ => return Self::unreadable("its VFS has no shared memory"),
            }
        };
        if rc != ffi::SQLITE_OK || region.is_null() {
            return Self::unreadable(&format!("no wal-index is mapped (SQLite code {rc})"));
        }
        Some(HeaderMap(region.cast_const().cast()))
    }

    fn unreadable(why: &str) -> Option<HeaderMap> {
        log::warn!(
            "the WAL index cannot be read ({why}): the sign-in cache asks PRAGMA data_version"
        );
        None
    }

    /// Both copies as they are now, in SQLite's order: the first copy, a barrier, the second.
    /// Another process writes them at any time: a torn copy shows as two copies that differ.
    #[allow(unsafe_code)]
    fn read(&self) -> [u8; HEADER] {
        const WORD: usize = std::mem::size_of::<u32>();
        let mut both = [0u8; HEADER];
        for (i, bytes) in both.chunks_exact_mut(WORD).enumerate() {
            if i == COPY / WORD {
                fence(Ordering::SeqCst);
            }
            // SAFETY: `i < HEADER / WORD`, the region is `REGION` bytes long and page-aligned
            // (aligned for `u32`), and stays mapped while the watch lives; volatile, because
            // other connections and processes write it.
            let word = unsafe { self.0.add(i).read_volatile() };
            bytes.copy_from_slice(&word.to_ne_bytes());
        }
        both
    }
}

/// Whether an error is SQLite's "busy" or "locked" (a writer outside WAL mode).
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
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
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sqlite::SqliteConnection;

    use super::*;
    use crate::storage::{temp_sqlite, DbConn};

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

    /// The first `HEADER` bytes of the file, read by another process: a descriptor of the file
    /// opened and closed by this one would release SQLite's locks on it (module documentation).
    fn header_in_file(path: &str) -> [u8; HEADER] {
        let out = std::process::Command::new("head")
            .args(["-c", &HEADER.to_string(), &format!("{path}-shm")])
            .output()
            .unwrap();
        assert!(out.status.success());
        out.stdout.try_into().unwrap()
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
        assert_eq!(before, header_in_file(&path));
        assert_ne!(before[IS_INIT], 0);

        let mut conn = db.get().unwrap();
        sql(&mut conn, "UPDATE link_generation SET n = n + 1;");
        let after = map.read();
        assert_eq!(after, header_in_file(&path), "the mapping follows the file");
        assert_ne!(after, before, "a commit rewrites the header");
        assert_eq!(after[..COPY], after[COPY..], "both copies written");
    }

    /// The POSIX locks this process holds on a file, as `/proc/locks` lists them: (type, first
    /// byte) of each.
    #[cfg(target_os = "linux")]
    fn own_locks(path: &str) -> Vec<(String, u64)> {
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(path).unwrap().ino().to_string();
        let pid = std::process::id().to_string();
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // "1: POSIX ADVISORY READ 1234 08:01:5678 128 128"
                let (kind, owner, file, start) = (fields[3], fields[4], fields[5], fields[6]);
                (fields[1] == "POSIX" && owner == pid && file.rsplit(':').next() == Some(&inode))
                    .then(|| (kind.to_string(), start.parse().unwrap()))
            })
            .collect()
    }

    /// SQLite's connections hold a shared lock on the -shm file's "DMS" byte (128) while they
    /// have it open: it tells another process opening the database that the file is in use, and
    /// must not be truncated and rebuilt. A POSIX lock is the process's: closing any descriptor
    /// of the file releases it, which the watch must therefore never do.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_watch_leaves_sqlites_locks_on_the_shm_file_in_place() {
        let (_dir, db, watch, first) = primed();
        let shm = format!("{}-shm", db.sqlite_path().unwrap());
        let dms = (String::from("READ"), 128);
        assert!(own_locks(&shm).contains(&dms), "{:?}", own_locks(&shm));
        let mut conn = db.get().unwrap();
        sql(&mut conn, "UPDATE link_generation SET n = n + 1;");
        for _ in 0..3 {
            assert_eq!(watch.link_generation(), Some(first + 1));
        }
        drop(conn);
        assert!(own_locks(&shm).contains(&dms), "{:?}", own_locks(&shm));
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
