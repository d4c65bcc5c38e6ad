//! Storage: one diesel code path over SQLite (the embedded default) and PostgreSQL.
//!
//! [`Db`] owns the r2d2 pool; query functions in the submodules take a `&mut DbConn` and never
//! reach for the pool themselves. Backend-specific SQL is confined to `match` arms on [`DbConn`].

pub mod audit;
pub mod credentials;
pub mod customers;
pub mod links;
mod pool;
pub mod postgres;
pub mod prospects;
pub mod schema;
pub mod sqlite;
pub mod webhooks;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diesel::connection::{SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

/// Runs a diesel expression on the concrete connection inside a [`DbConn`]. Queries executed
/// through the `MultiConnection` wrapper are prepared anew on every call; on the concrete
/// connection diesel keeps them in its prepared-statement cache. Use it on hot paths (and for
/// multi-row inserts, which the wrapper does not support).
#[macro_export]
macro_rules! on_backend {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::storage::DbConn::Sqlite($c) => $body,
            $crate::storage::DbConn::Postgres($c) => $body,
        }
    };
}

pub use pool::{redact_url, Backend, Manager, PoolOptions};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// A connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConn {
    /// PostgreSQL, for production.
    Postgres(PgConnection),
    /// SQLite, the embedded default.
    Sqlite(SqliteConnection),
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database URL is not one this service understands.
    #[error("unsupported database url {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// No connection could be had in time (database down, pool exhausted).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] DieselError),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The SQLite bulk writer of the import ([`sqlite::bulk`]) failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

impl StorageError {
    /// Whether the error is a unique-constraint violation (a lost race, or a duplicate).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StorageError::Query(e) => is_unique_violation(e),
            StorageError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            }
            _ => false,
        }
    }
}

/// Whether a diesel error is a unique-constraint violation.
pub fn is_unique_violation(error: &DieselError) -> bool {
    matches!(
        error,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Which database a [`Db`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// SQLite, the embedded default.
    Sqlite,
    /// PostgreSQL, for production.
    Postgres,
}

/// A rusqlite connection of a thread's own to an existing SQLite file, for the writers that bind
/// values in place (the import, the audit writer and the lookup merge). NO_MUTEX: the connection
/// never leaves its thread, so SQLite's per-call locking is pure cost. It waits up to 5 s for
/// another writer, like the pool's connections.
pub(crate) fn own_sqlite_connection(path: &str) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(sqlite::write_lock::WAIT)?;
    Ok(conn)
}

/// The file of the audit log's lookups beside a SQLite database file.
pub fn audit_lookup_path(database: &str) -> String {
    format!("{database}.audit-lookup")
}

/// Attaches the audit log's lookup database (`audit_keys`, see `src/storage/sqlite/audit_lookup.rs`) as
/// `lookup`. It is a file of its own so that filling it never holds the main database's write
/// lock; it holds only data derived from `audit_events`, and a deleted file is rebuilt from the
/// start of the log. Only the merge thread's connection keeps it attached: `BEGIN IMMEDIATE` on
/// a connection takes the write lock of every attached database, so the pool's connections
/// attach it just for an audit query ([`detach_audit_lookup`] after).
pub(crate) fn attach_audit_lookup(conn: &mut SqliteConnection, database: &str) -> QueryResult<()> {
    let file = audit_lookup_path(database).replace('\'', "''");
    conn.batch_execute(&format!("ATTACH DATABASE '{file}' AS lookup"))?;
    conn.batch_execute("PRAGMA lookup.synchronous = NORMAL")
}

pub(crate) fn detach_audit_lookup(conn: &mut SqliteConnection) -> QueryResult<()> {
    conn.batch_execute("DETACH DATABASE lookup")
}

/// The file of the main database of a SQLite connection.
pub(crate) fn main_file(conn: &mut SqliteConnection) -> QueryResult<String> {
    #[derive(diesel::QueryableByName)]
    struct File {
        #[diesel(sql_type = diesel::sql_types::Text)]
        file: String,
    }
    let main: File = diesel::sql_query("SELECT file FROM pragma_database_list WHERE name = 'main'")
        .get_result(conn)?;
    Ok(main.file)
}

/// Makes sure the audit lookup file beside the SQLite database `path` is usable: created when
/// missing; when it cannot be read, or holds tables of another layout (an earlier version's, or
/// anything else), it is deleted and rebuilt, with a warning naming it. It holds only data
/// derived from `audit_events`: the merge indexes the log again from its start.
pub(crate) fn ensure_audit_lookup(conn: &mut SqliteConnection, path: &str) -> QueryResult<()> {
    let checked = attach_audit_lookup(conn, path).and_then(|()| {
        let created = create_audit_lookup(conn);
        let detached = detach_audit_lookup(conn);
        created.and(detached)
    });
    let Err(error) = checked else {
        return Ok(());
    };
    let _ = detach_audit_lookup(conn);
    let file = audit_lookup_path(path);
    log::warn!(
        "the audit lookup file {file} is unusable ({error}): it is deleted and rebuilt from the \
         audit log (audit searches by email or identity scan the log until it has caught up)"
    );
    for suffix in ["", "-wal", "-shm"] {
        let name = format!("{file}{suffix}");
        if let Err(error) = std::fs::remove_file(&name) {
            if error.kind() != std::io::ErrorKind::NotFound {
                log::error!("cannot delete {name}: {error}");
            }
        }
    }
    attach_audit_lookup(conn, path)?;
    let created = create_audit_lookup(conn);
    detach_audit_lookup(conn)?;
    created
}

/// Creates the lookup database's tables when the file is new. Reads first: a write would wait
/// for a running merge, and another process (an admin command) may open the database meanwhile.
/// A file with any other table, or without its state row, is an error ([`ensure_audit_lookup`]
/// rebuilds it).
fn create_audit_lookup(conn: &mut SqliteConnection) -> QueryResult<()> {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count = |conn: &mut SqliteConnection, sql: &str| -> QueryResult<i64> {
        let found: Count = diesel::sql_query(sql).get_result(conn)?;
        Ok(found.n)
    };
    let ours = count(
        conn,
        "SELECT count(*) AS n FROM lookup.sqlite_master WHERE type = 'table' \
         AND name IN ('audit_keys', 'audit_lookup_state')",
    )?;
    let all = count(
        conn,
        "SELECT count(*) AS n FROM lookup.sqlite_master WHERE type = 'table'",
    )?;
    if ours == 2 && all == 2 {
        let rows = count(conn, "SELECT count(*) AS n FROM lookup.audit_lookup_state")?;
        if rows == 1 {
            return Ok(());
        }
    }
    if all != 0 {
        return Err(diesel::result::Error::QueryBuilderError(
            "it holds tables of another layout".into(),
        ));
    }
    for statement in [
        "PRAGMA lookup.journal_mode = WAL",
        "CREATE TABLE lookup.audit_keys (\
             lookup_key INTEGER NOT NULL, event_id INTEGER NOT NULL, \
             PRIMARY KEY (lookup_key, event_id)) WITHOUT ROWID",
        "CREATE TABLE lookup.audit_lookup_state (\
             singleton INTEGER PRIMARY KEY CHECK (singleton = 1), \
             indexed_through INTEGER NOT NULL)",
        "INSERT INTO lookup.audit_lookup_state (singleton, indexed_through) VALUES (1, 0)",
    ] {
        conn.batch_execute(statement)?;
    }
    Ok(())
}

/// The connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// Opens connections outside the pool ([`Db::connect_unpooled`]).
    manager: Manager,
    backend: BackendKind,
    /// The SQLite file, for the import's bulk writer.
    sqlite_path: Option<String>,
    /// Set once the schema is migrated: no connection is lent before (see [`Db::open_serving`]).
    migrated: Arc<AtomicBool>,
}

/// A pooled connection.
pub type PooledConn = r2d2::PooledConnection<Manager>;

/// The pool of each backend.
#[derive(Clone)]
enum Pool {
    Sqlite(r2d2::Pool<Manager>),
    /// Replaced when a connection stops answering (see [`postgres`]).
    Postgres(Arc<postgres::Pools>),
}

impl Db {
    /// Applies the migrations on one direct connection, then builds the pool (the commands, and
    /// SQLite always). For SQLite the file is created when missing (the embedded default); its
    /// folder must exist. A database that does not answer is an error.
    pub fn open(url: &str, options: &PoolOptions) -> Result<Self, StorageError> {
        let backend = Backend::from_url(url)?;
        if let Backend::Sqlite(path) = &backend {
            if let Some(parent) = Path::new(path).parent() {
                if !parent.as_os_str().is_empty() && !parent.exists() {
                    return Err(StorageError::Unavailable(format!(
                        "the folder of the SQLite database {path:?} does not exist"
                    )));
                }
            }
        }
        let manager = Manager::new(backend, options);
        manager.migrate()?;
        // SQLite, when serving: keep the pool full. Requests answered on the async worker
        // threads take only an idle connection (`try_get`) and never open one, and the link
        // writer has a connection of its own, so nothing else would open them. r2d2 opens them
        // in the background. (A SQLite file is not a server that can be away.)
        let min_idle = match manager.backend {
            Backend::Sqlite(_) if options.open_at_start => options.max_size,
            _ => 0,
        };
        Self::pool(manager, options, min_idle, true)
    }

    /// [`Db::open`] for the server: a PostgreSQL server that does not answer is not an error.
    /// The pool is then built closed (it lends no connection, [`Db::is_migrated`] is false) and
    /// a thread applies the migrations once the database answers ([`postgres::start`]).
    pub fn open_serving(url: &str, options: &PoolOptions) -> Result<Self, StorageError> {
        match Backend::from_url(url)? {
            backend @ Backend::Postgres(_) => {
                postgres::start::open(Manager::new(backend, options), options)
            }
            Backend::Sqlite(_) => Self::open(url, options),
        }
    }

    /// Another pool on the same database with other settings, whose connections open as they
    /// are needed; it lends none before this one's schema is migrated (the audit writer's).
    pub fn other_pool(&self, options: &PoolOptions) -> Result<Self, StorageError> {
        let manager = Manager::new(self.manager.backend.clone(), options);
        let mut db = Self::pool(manager, options, 0, false)?;
        db.migrated = self.migrated.clone();
        Ok(db)
    }

    /// Whether the schema is migrated. False only while the server waits for a PostgreSQL server
    /// that did not answer at start; meanwhile no connection is lent.
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    fn pool(
        manager: Manager,
        options: &PoolOptions,
        min_idle: u32,
        migrated: bool,
    ) -> Result<Self, StorageError> {
        let (backend, sqlite_path) = match &manager.backend {
            Backend::Sqlite(path) => (BackendKind::Sqlite, Some(path.clone())),
            Backend::Postgres(_) => (BackendKind::Postgres, None),
        };
        // build_unchecked: start without waiting for every connection. An open SQLite file
        // cannot die while idle, so connections are not tested when taken from the pool (the
        // test would cost a query on every request). PostgreSQL: see `postgres::Pools`.
        let pool = match &manager.backend {
            Backend::Sqlite(_) => Pool::Sqlite(
                r2d2::Pool::builder()
                    .max_size(options.max_size)
                    .test_on_check_out(false)
                    .min_idle(Some(min_idle))
                    .connection_timeout(options.checkout_timeout)
                    .build_unchecked(manager.clone()),
            ),
            Backend::Postgres(_) => Pool::Postgres(postgres::Pools::new(manager.clone(), options)),
        };
        Ok(Self {
            pool,
            manager,
            backend,
            sqlite_path,
            migrated: Arc::new(AtomicBool::new(migrated)),
        })
    }

    /// A connection, or [`StorageError::Unavailable`] after the checkout timeout (at once while
    /// the schema is not migrated).
    pub fn get(&self) -> Result<PooledConn, StorageError> {
        self.check_migrated()?;
        match &self.pool {
            Pool::Sqlite(pool) => pool
                .get()
                .map_err(|e| StorageError::Unavailable(e.to_string())),
            Pool::Postgres(pools) => pools.get(),
        }
    }

    /// A connection of its own, outside the pool, with the pool's settings: for a thread that
    /// keeps one (the group-commit thread of the linking service).
    pub fn connect_unpooled(&self) -> Result<DbConn, StorageError> {
        self.check_migrated()?;
        self.manager
            .connect()
            .map_err(|e| StorageError::Unavailable(e.to_string()))
    }

    /// A connection of its own for the set-based reads that decide many requests at once (the
    /// executor's threads, the backfill). On PostgreSQL its prepared statements keep one generic
    /// plan ([`postgres::GENERIC_PLANS`]).
    pub fn connect_for_groups(&self) -> Result<DbConn, StorageError> {
        let mut conn = self.connect_unpooled()?;
        if let DbConn::Postgres(c) = &mut conn {
            c.batch_execute(postgres::GENERIC_PLANS)?;
        }
        Ok(conn)
    }

    /// An idle connection if there is one right now; never waits.
    pub fn try_get(&self) -> Option<PooledConn> {
        self.check_migrated().ok()?;
        match &self.pool {
            Pool::Sqlite(pool) => pool.try_get(),
            Pool::Postgres(pools) => pools.pool().try_get(),
        }
    }

    fn check_migrated(&self) -> Result<(), StorageError> {
        if self.is_migrated() {
            return Ok(());
        }
        Err(StorageError::Unavailable(
            "the database has not answered since the start (its migrations are pending)".into(),
        ))
    }

    /// SQLite: whether commits are on disk before they return (`synchronous = FULL`).
    pub fn sqlite_durable_commits(&self) -> bool {
        self.manager.sqlite_synchronous == "FULL"
    }

    /// The SQLite file, when the database is SQLite.
    pub fn sqlite_path(&self) -> Option<&str> {
        self.sqlite_path.as_deref()
    }

    /// Which database this is.
    pub fn backend(&self) -> BackendKind {
        self.backend
    }

    /// Pool use: (connections open, connections idle, maximum).
    pub fn pool_state(&self) -> (u32, u32, u32) {
        let pool = match &self.pool {
            Pool::Sqlite(pool) => pool.clone(),
            Pool::Postgres(pools) => pools.pool(),
        };
        let state = pool.state();
        (state.connections, state.idle_connections, pool.max_size())
    }

    /// Checks that the database answers.
    pub fn ping(&self) -> Result<(), StorageError> {
        let mut conn = self.get()?;
        conn.batch_execute("SELECT 1")?;
        Ok(())
    }
}

/// Applies pending migrations of the connection's backend.
/// On PostgreSQL, instances that start together (or that all waited for the database) apply
/// them one at a time, under a session advisory lock.
pub fn run_migrations(conn: &mut DbConn) -> Result<(), StorageError> {
    let result = match conn {
        DbConn::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|_| ()),
        DbConn::Postgres(c) => {
            c.batch_execute(postgres::start::LOCK_MIGRATIONS)?;
            let result = c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|_| ());
            // Closing the connection releases the lock too.
            let _ = c.batch_execute(postgres::start::UNLOCK_MIGRATIONS);
            result
        }
    };
    result.map_err(|e| StorageError::Migration(e.to_string()))
}

/// Writers of this process to SQLite take turns here before `BEGIN IMMEDIATE`.
///
/// SQLite has one writer at a time, and a connection that finds the write lock taken sleeps in
/// its busy handler (1, 2, 5, 10 ms ...) before it tries again, so under load writers slept while
/// the lock was free. Waiting on this mutex instead wakes the next writer as soon as the previous
/// one commits. It orders this process's writers only: correctness still comes from SQLite's
/// lock, constraints and transactions (other processes on the same file use busy_timeout), and
/// PostgreSQL does not use it. One mutex for every SQLite file of the process: a process serves
/// one database (tests open several, with short writes).
///
/// `parking_lot`'s mutex, not the standard one: it is eventually fair (a waiter gets the lock
/// within about half a millisecond of waiting), whereas the standard mutex lets the link writer,
/// which takes its next turn right after its commit, keep the lock from the audit writer for as
/// long as sign-ups keep coming; the read-only events it holds would then wait beyond the
/// 100 ms that a crash may lose (README, "Operations").
static SQLITE_WRITER: parking_lot::Mutex<()> = parking_lot::const_mutex(());

/// This process's turn to write to SQLite (see [`SQLITE_WRITER`]), for writers that do not go
/// through [`write_transaction`].
pub(crate) fn sqlite_writer_turn() -> parking_lot::MutexGuard<'static, ()> {
    SQLITE_WRITER.lock()
}

/// Runs `f` in a write transaction. On SQLite the transaction starts `IMMEDIATE`, taking the write
/// lock up front: a deferred transaction that reads and then writes can fail at once with
/// `SQLITE_BUSY` when another writer committed in between, which busy_timeout does not cover.
/// A lock held by another process is waited for by [`sqlite::write_lock`].
pub fn write_transaction<T, E, F>(conn: &mut DbConn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut DbConn) -> Result<T, E>,
    E: From<DieselError>,
{
    type Tm = <DbConn as Connection>::TransactionManager;
    let _turn = match conn {
        DbConn::Sqlite(c) => {
            let turn = sqlite_writer_turn();
            sqlite::write_lock::begin_immediate(c)?;
            Some(turn)
        }
        DbConn::Postgres(_) => {
            Tm::begin_transaction(conn)?;
            None
        }
    };
    match f(conn) {
        Ok(value) if matches!(conn, DbConn::Postgres(_)) => {
            // PostgreSQL: nothing commits after the deadline of the work (its request was, or
            // is being, answered as failed).
            if !postgres::begin_commit() {
                log::warn!("the time limit passed before COMMIT: the transaction is rolled back");
                let _ = Tm::rollback_transaction(conn);
                return Err(DieselError::RollbackTransaction.into());
            }
            let committed = Tm::commit_transaction(conn);
            postgres::end_commit(committed.is_ok());
            committed?;
            Ok(value)
        }
        Ok(value) => {
            Tm::commit_transaction(conn)?;
            Ok(value)
        }
        Err(error) => {
            // The original error matters more than a failed rollback; a broken connection is
            // dropped by the pool's validity check.
            let _ = Tm::rollback_transaction(conn);
            Err(error)
        }
    }
}

/// The current time, as stored.
pub fn now() -> chrono::NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// A migrated SQLite database in a fresh temporary folder, with a lazy pool (unit tests).
#[cfg(test)]
pub(crate) fn temp_sqlite() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let db = Db::open(&url, &PoolOptions::default()).unwrap();
    (dir, db)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn synchronous(conn: &mut DbConn) -> i32 {
        #[derive(diesel::QueryableByName)]
        struct Setting {
            #[diesel(sql_type = diesel::sql_types::Integer)]
            synchronous: i32,
        }
        let setting: Setting = diesel::sql_query("PRAGMA synchronous")
            .get_result(conn)
            .unwrap();
        setting.synchronous
    }

    #[test]
    fn sqlite_commits_are_durable_by_default_and_normal_when_configured() {
        let (dir, db) = temp_sqlite();
        assert!(db.sqlite_durable_commits());
        // 2 = FULL: the WAL is synced at every commit.
        assert_eq!(synchronous(&mut db.get().unwrap()), 2);
        assert_eq!(synchronous(&mut db.connect_unpooled().unwrap()), 2);
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let options = PoolOptions {
            durable_commits: false,
            ..PoolOptions::default()
        };
        let db = Db::open(&url, &options).unwrap();
        assert!(!db.sqlite_durable_commits());
        assert_eq!(synchronous(&mut db.get().unwrap()), 1);
    }

    #[test]
    fn a_serving_sqlite_pool_opens_its_connections_without_being_asked() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let lazy = Db::open(&url, &PoolOptions::default()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            lazy.pool_state().0,
            0,
            "commands open connections as they need them"
        );
        drop(lazy);
        let db = Db::open(
            &url,
            &PoolOptions {
                open_at_start: true,
                ..PoolOptions::default()
            },
        )
        .unwrap();
        // The requests' fast paths only take idle connections (try_get); nobody calls get().
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db.pool_state().1 < 8 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(db.pool_state(), (8, 8, 8));
        assert!(db.try_get().is_some());
    }
}
