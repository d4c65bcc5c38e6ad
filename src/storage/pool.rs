//! How connections are opened and pooled: which backend a URL names, the r2d2 manager of both
//! backends (with each connection's settings), and the pool settings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection};
use diesel::sqlite::SqliteConnection;

use super::{postgres, DbConn, StorageError};

/// Which backend a URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://PATH` (also `sqlite:PATH`); the path is a file.
    Sqlite(String),
    /// `postgres://` or `postgresql://`.
    Postgres(String),
}

impl Backend {
    /// Chooses the backend from the URL scheme.
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() || path == ":memory:" {
                // Every pooled connection would get its own empty in-memory database.
                return Err(StorageError::UnsupportedUrl(url.to_string()));
            }
            Ok(Backend::Sqlite(path.to_string()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres(url.to_string()))
        } else {
            Err(StorageError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// The database as it may be shown: the SQLite path, or the URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Backend::Sqlite(path) => path.clone(),
            Backend::Postgres(url) => redact_url(url),
        }
    }
}

/// Removes a password from a database URL before it is shown anywhere: the one of the user
/// information, and a `password` parameter (libpq takes both).
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut shown = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rsplit_once('@') {
                Some((userinfo, _)) => match userinfo.split_once(':') {
                    Some((user, _)) => {
                        let after = &rest[userinfo.len()..];
                        format!("{scheme}://{user}:***{after}")
                    }
                    None => base.to_string(),
                },
                None => base.to_string(),
            }
        }
        None => base.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<&str> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***",
                _ => pair,
            })
            .collect();
        shown = format!("{shown}?{}", pairs.join("&"));
    }
    shown
}

/// Opens connections of the configured backend for r2d2.
#[derive(Debug, Clone)]
pub struct Manager {
    pub(super) backend: Backend,
    pub(super) connect_timeout: Duration,
    /// SQLite's `synchronous` setting of every connection (`FULL` or `NORMAL`).
    pub(super) sqlite_synchronous: &'static str,
    /// PostgreSQL: the time limits set on every new connection ([`postgres::session_limits_sql`]);
    /// `None`: the server's defaults (the commands: migrations and imports may take long).
    pub(super) statement_timeout: Option<Duration>,
    /// PostgreSQL: the generation of the pool this manager opens connections for, and the first
    /// generation still in use ([`postgres::Pools::retire`]).
    pub(super) generation: u64,
    pub(super) retired_below: Arc<AtomicU64>,
    /// PostgreSQL: how many broken connections came back to the pool; a connection lent before
    /// the last of them is tested before it is lent again ([`postgres::Pools::get`]).
    pub(super) broken_seen: Arc<AtomicU64>,
}

impl Manager {
    pub(super) fn connect(&self) -> ConnectionResult<DbConn> {
        match &self.backend {
            Backend::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(path)?;
                // One statement each: the SQLite driver runs only the first of a batch in some
                // versions, and a silently skipped PRAGMA is a silent data-safety change.
                let synchronous = format!("PRAGMA synchronous = {}", self.sqlite_synchronous);
                let busy_timeout = format!(
                    "PRAGMA busy_timeout = {}",
                    super::sqlite::write_lock::WAIT.as_millis()
                );
                for pragma in [
                    &busy_timeout,
                    "PRAGMA journal_mode = WAL",
                    &synchronous,
                    "PRAGMA foreign_keys = ON",
                    // 128 KiB of page cache per connection (SQLite's default is 2 MiB). The
                    // pool's connections fill their caches over time, and the OS caches the file
                    // anyway: measured, smaller caches were both leaner and faster
                    // (BENCHMARKS.md, 2026-11-30).
                    "PRAGMA cache_size = -128",
                    // Temporary tables and statement journals in memory (they hold at most one
                    // group of rows): with SQLite's default, the link writer created, synced the
                    // directory of and deleted a file in /var/tmp for every group it wrote.
                    "PRAGMA temp_store = MEMORY",
                ] {
                    conn.batch_execute(pragma)
                        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
                }
                Ok(DbConn::Sqlite(conn))
            }
            Backend::Postgres(url) => {
                let url = postgres::with_connection_params(url, self.connect_timeout);
                let mut conn = PgConnection::establish(&url)?;
                if let Some(limit) = self.statement_timeout {
                    conn.batch_execute(&postgres::session_limits_sql(limit))
                        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
                }
                Ok(DbConn::Postgres(conn))
            }
        }
    }
}

impl Manager {
    /// Applies the pending migrations on a connection of its own (and on SQLite creates the audit
    /// lookup file's tables). Migrations may take longer than a request: the connection has no
    /// time limits. [`StorageError::Unavailable`]: the database could not be reached.
    pub(super) fn migrate(&self) -> Result<(), StorageError> {
        let mut conn = Manager {
            statement_timeout: None,
            ..self.clone()
        }
        .connect()
        .map_err(|e| {
            // libpq's messages span lines.
            let reason = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            StorageError::Unavailable(format!(
                "cannot connect to {}: {reason}",
                self.backend.shown()
            ))
        })?;
        super::run_migrations(&mut conn)?;
        if let (DbConn::Sqlite(c), Backend::Sqlite(path)) = (&mut conn, &self.backend) {
            super::ensure_audit_lookup(c, path)?;
        }
        Ok(())
    }

    pub(super) fn new(backend: Backend, options: &PoolOptions) -> Manager {
        Manager {
            backend,
            connect_timeout: options.checkout_timeout,
            sqlite_synchronous: if options.durable_commits {
                "FULL"
            } else {
                "NORMAL"
            },
            statement_timeout: options.statement_timeout,
            generation: 0,
            retired_below: Arc::new(AtomicU64::new(0)),
            broken_seen: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl ManageConnection for Manager {
    type Connection = DbConn;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConn, r2d2::Error> {
        Manager::connect(self).map_err(r2d2::Error::ConnectionError)
    }

    fn is_valid(&self, conn: &mut DbConn) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        match conn {
            DbConn::Sqlite(_) => false,
            // A broken connection: its transaction could not be closed, or a call failed at the
            // connection level (libpq's transaction status is then unknown, which diesel counts
            // as broken). Or a connection of a retired pool.
            DbConn::Postgres(c) => {
                use diesel::r2d2::R2D2Connection;
                if c.is_broken() {
                    self.broken_seen.fetch_add(1, Ordering::SeqCst);
                    return true;
                }
                self.generation < self.retired_below.load(Ordering::SeqCst)
            }
        }
    }
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_size: u32,
    /// How long a request waits for a connection before the database counts as unavailable.
    pub checkout_timeout: Duration,
    /// SQLite: open every connection at start, in the background (the server: its fast paths
    /// only take idle connections). Commands leave it off: the import switches the journal mode
    /// for a bulk load, which SQLite allows only while no other connection is open.
    pub open_at_start: bool,
    /// SQLite: a commit is on disk before it returns (`synchronous = FULL`); else `NORMAL`.
    pub durable_commits: bool,
    /// PostgreSQL: `statement_timeout` and `lock_timeout` of every connection, and the limit of
    /// work that runs without a [`postgres::Deadline`] of its own (the server's request time
    /// limit); `None` keeps the server's defaults (the commands).
    pub statement_timeout: Option<Duration>,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 8,
            checkout_timeout: Duration::from_millis(1000),
            open_at_start: false,
            durable_commits: true,
            statement_timeout: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_the_backend_from_the_scheme() {
        assert_eq!(
            Backend::from_url("sqlite://a.db").unwrap(),
            Backend::Sqlite("a.db".into())
        );
        assert_eq!(
            Backend::from_url("sqlite:///tmp/a.db").unwrap(),
            Backend::Sqlite("/tmp/a.db".into())
        );
        assert!(matches!(
            Backend::from_url("postgres://u@h/db").unwrap(),
            Backend::Postgres(_)
        ));
        assert!(Backend::from_url("sqlite://:memory:").is_err());
        assert!(Backend::from_url("mysql://x").is_err());
        assert!(Backend::from_url("autolink.db").is_err());
    }

    #[test]
    fn redacts_passwords_from_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u:p@ss@h:5432/db?sslmode=require&password=secret"),
            "postgres://u:***@h:5432/db?sslmode=require&password=***"
        );
        assert_eq!(
            redact_url("postgresql://h/db?password=a@b&user=u"),
            "postgresql://h/db?password=***&user=u"
        );
        assert_eq!(redact_url("autolink.db"), "autolink.db");
    }
}
