//! The append-only audit log, and a background writer that batches events.
//!
//! Decisions that change data (a link, a new customer) write their event in the same transaction
//! as the change. Decisions that change nothing (already linked, refusals, checks) go through
//! [`AuditWriter`], which appends them in batches from one thread so the sign-in hot path does not
//! pay for one write transaction per request. The writer flushes on a short interval and when it
//! is dropped.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use diesel::prelude::*;

use super::postgres::audit::PgAuditAppender;
use super::schema::{audit_events, audit_keys, audit_lookup_state};
use super::sqlite::audit::{
    LookupFeed, SqliteAuditAppender, SqliteAuditKeys, FEED_CAPACITY, READ_DOSE,
};
use super::{Db, DbConn, StorageError};

/// One audit event.
#[derive(Debug, Clone, Insertable, Queryable, PartialEq, Eq)]
#[diesel(table_name = audit_events)]
// None binds NULL (the columns' default), so a row count always gives the same SQL, and
// PostgreSQL's `COPY` (diesel's `copy_from`) accepts the struct.
#[diesel(treat_none_as_default_value = false)]
pub struct AuditEvent {
    /// When it happened (UTC).
    pub at: chrono::NaiveDateTime,
    /// The request id, also in the log line and the `x-request-id` header.
    pub request_id: String,
    /// Who acted: `b2c`, or the administrator.
    pub actor: Cow<'static, str>,
    /// The endpoint or command.
    pub source: Cow<'static, str>,
    /// The connector step, when there is one.
    pub step: Option<Cow<'static, str>>,
    /// The channel id, when resolved.
    pub channel: Option<String>,
    /// The outcome (`Linked`, `Created`, `AlreadyLinked`, `WouldLink`, `WouldCreate`, `Refused`).
    pub outcome: Cow<'static, str>,
    /// The refusal code.
    pub code: Option<Cow<'static, str>>,
    /// Normalised email key.
    pub email_key: Option<String>,
    /// Identity issuer.
    pub issuer: Option<String>,
    /// Identity subject.
    pub subject: Option<String>,
    /// Customer account number.
    pub account_number: Option<String>,
    /// Free text for administrators (never a secret).
    pub detail: Option<String>,
}

/// Appends events in the caller's connection (and transaction).
pub fn insert(conn: &mut DbConn, events: &[AuditEvent]) -> Result<(), StorageError> {
    // One event (a link's, in its transaction): a single-row insert, whose prepared statement
    // diesel caches on the concrete connection; a multi-row insert is prepared anew each time.
    if let [event] = events {
        let insert = diesel::insert_into(audit_events::table).values(event);
        crate::on_backend!(conn, c => insert.execute(c))?;
        return Ok(());
    }
    // 13 parameters per row; stay far below SQLite's limit of bound parameters.
    for chunk in events.chunks(500) {
        // Multi-row inserts are backend-specific in diesel's MultiConnection.
        match conn {
            DbConn::Sqlite(c) => diesel::insert_into(audit_events::table)
                .values(chunk)
                .execute(c)?,
            DbConn::Postgres(c) => diesel::insert_into(audit_events::table)
                .values(chunk)
                .execute(c)?,
        };
    }
    Ok(())
}

/// A stored audit event with its id (the pagination cursor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Database id; increases with every event.
    pub id: i64,
    /// The event.
    pub event: AuditEvent,
}

/// What to look for in the audit log; every filter is optional and they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    /// Events at or after this time (UTC).
    pub from: Option<chrono::NaiveDateTime>,
    /// Events before this time (UTC).
    pub to: Option<chrono::NaiveDateTime>,
    /// The channel id.
    pub channel: Option<&'a str>,
    /// The outcome.
    pub outcome: Option<&'a str>,
    /// The normalised email key.
    pub email_key: Option<&'a str>,
    /// The identity issuer.
    pub issuer: Option<&'a str>,
    /// The identity subject.
    pub subject: Option<&'a str>,
    /// Only events with a smaller id (the cursor of the previous page).
    pub before: Option<i64>,
    /// Most events returned.
    pub limit: i64,
}

diesel::define_sql_function! {
    /// PostgreSQL's 64-bit text hash (the audit indexes of migration 000007).
    fn hashtextextended(
        value: diesel::sql_types::Nullable<diesel::sql_types::Text>,
        seed: diesel::sql_types::BigInt,
    ) -> diesel::sql_types::Nullable<diesel::sql_types::BigInt>;
}

/// The `audit_keys` key of an email key (SQLite).
pub(crate) fn email_lookup_key(email_key: &[u8]) -> i64 {
    lookup_key(b'e', &[email_key])
}

/// The `audit_keys` key of an identity (SQLite).
pub(crate) fn identity_lookup_key(issuer: &[u8], subject: &[u8]) -> i64 {
    lookup_key(b'i', &[issuer, subject])
}

/// A 64-bit hash (XXH3, a fixed algorithm, so the file stays valid across builds) of the kind
/// and the length-prefixed parts. Two keys may collide: the queries compare the events' own
/// columns as well, so a collision costs a row read, never a wrong answer.
fn lookup_key(kind: u8, parts: &[&[u8]]) -> i64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&[kind]);
    for part in parts {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    i64::from_ne_bytes(hasher.digest().to_ne_bytes())
}

/// On SQLite, where the events an email or identity filter can match are: those `audit_keys`
/// lists, and every event after its watermark (not yet merged into it).
enum Lookup {
    /// No lookup: PostgreSQL (indexes on audit_events), no email or identity filter, or an
    /// issuer without a subject (few issuers exist, so most events match: a scan of the newest).
    None,
    Exact {
        key: i64,
        after: i64,
    },
}

fn lookup_of(conn: &mut DbConn, filter: &AuditFilter<'_>) -> Result<Lookup, StorageError> {
    let DbConn::Sqlite(c) = conn else {
        return Ok(Lookup::None);
    };
    let key = match (filter.email_key, filter.issuer, filter.subject) {
        (Some(email), _, _) => email_lookup_key(email.as_bytes()),
        (None, Some(issuer), Some(subject)) => {
            identity_lookup_key(issuer.as_bytes(), subject.as_bytes())
        }
        _ => return Ok(Lookup::None),
    };
    let after: i64 = audit_lookup_state::table
        .select(audit_lookup_state::indexed_through)
        .first(c)
        .optional()?
        .unwrap_or(0);
    Ok(Lookup::Exact { key, after })
}

/// Whether a filter uses the lookup database (SQLite: an email, or an issuer with a subject).
fn uses_lookup(filter: &AuditFilter<'_>) -> bool {
    filter.email_key.is_some() || (filter.issuer.is_some() && filter.subject.is_some())
}

/// Events matching the filter, newest first.
pub fn query(
    conn: &mut DbConn,
    filter: &AuditFilter<'_>,
) -> Result<Vec<AuditRecord>, StorageError> {
    let needs_lookup = matches!(conn, DbConn::Sqlite(_)) && uses_lookup(filter);
    if !needs_lookup {
        return query_attached(conn, filter);
    }
    if let DbConn::Sqlite(c) = conn {
        let file = super::main_file(c)?;
        super::attach_audit_lookup(c, &file)?;
    }
    let result = query_attached(conn, filter);
    if let DbConn::Sqlite(c) = conn {
        super::detach_audit_lookup(c)?;
    }
    result
}

/// [`query`], with the lookup database attached when the filter needs it.
fn query_attached(
    conn: &mut DbConn,
    filter: &AuditFilter<'_>,
) -> Result<Vec<AuditRecord>, StorageError> {
    let lookup = lookup_of(conn, filter)?;
    let postgres = matches!(conn, DbConn::Postgres(_));
    let base = || {
        let mut query = audit_events::table
            .order(audit_events::id.desc())
            .limit(filter.limit)
            .select((audit_events::id, EVENT_COLUMNS))
            .into_boxed();
        if let Some(from) = filter.from {
            query = query.filter(audit_events::at.ge(from));
        }
        if let Some(to) = filter.to {
            query = query.filter(audit_events::at.lt(to));
        }
        if let Some(channel) = filter.channel {
            query = query.filter(audit_events::channel.eq(channel));
        }
        if let Some(outcome) = filter.outcome {
            query = query.filter(audit_events::outcome.eq(outcome));
        }
        if let Some(email_key) = filter.email_key {
            query = query.filter(audit_events::email_key.eq(email_key));
        }
        if let Some(issuer) = filter.issuer {
            query = query.filter(audit_events::issuer.eq(issuer));
        }
        if let Some(subject) = filter.subject {
            query = query.filter(audit_events::subject.eq(subject));
        }
        if let Some(before) = filter.before {
            query = query.filter(audit_events::id.lt(before));
        }
        if postgres {
            // The hashed expression indexes of migration 000007; the columns themselves are
            // compared above, so a collision costs a row read, never a wrong answer. The seed is
            // SQL text, not a bound parameter: the index's expression must match the query's.
            let seed = || diesel::dsl::sql::<diesel::sql_types::BigInt>("0");
            if let Some(email_key) = filter.email_key {
                query = query.filter(
                    hashtextextended(audit_events::email_key, seed())
                        .eq(hashtextextended(email_key, seed())),
                );
            } else if let Some(subject) = filter.subject {
                query = query.filter(
                    hashtextextended(audit_events::subject, seed())
                        .eq(hashtextextended(subject, seed())),
                );
            }
        }
        query
    };
    // Two queries, each on the primary key: SQLite plans `id IN (...) OR id > ?` as a full
    // scan. The newest events first (not merged yet), then the listed ones.
    macro_rules! newest_then_listed {
        ($after:expr, $listed:expr) => {{
            let mut rows: Vec<(i64, AuditEvent)> =
                base().filter(audit_events::id.gt($after)).load(conn)?;
            if (rows.len() as i64) < filter.limit {
                let older: Vec<(i64, AuditEvent)> = base()
                    .filter(audit_events::id.le($after))
                    .filter(audit_events::id.eq_any($listed))
                    .load(conn)?;
                rows.extend(older);
                rows.truncate(usize::try_from(filter.limit).unwrap_or(usize::MAX));
            }
            rows
        }};
    }
    let rows: Vec<(i64, AuditEvent)> = match lookup {
        Lookup::None => base().load(conn)?,
        Lookup::Exact { key, after } => newest_then_listed!(
            after,
            audit_keys::table
                .filter(audit_keys::lookup_key.eq(key))
                .select(audit_keys::event_id)
        ),
    };
    Ok(records(rows))
}

fn records(rows: Vec<(i64, AuditEvent)>) -> Vec<AuditRecord> {
    rows.into_iter()
        .map(|(id, event)| AuditRecord { id, event })
        .collect()
}

/// The type of [`EVENT_COLUMNS`].
type EventColumns = (
    audit_events::at,
    audit_events::request_id,
    audit_events::actor,
    audit_events::source,
    audit_events::step,
    audit_events::channel,
    audit_events::outcome,
    audit_events::code,
    audit_events::email_key,
    audit_events::issuer,
    audit_events::subject,
    audit_events::account_number,
    audit_events::detail,
);

/// The columns of [`AuditEvent`], in its field order.
const EVENT_COLUMNS: EventColumns = (
    audit_events::at,
    audit_events::request_id,
    audit_events::actor,
    audit_events::source,
    audit_events::step,
    audit_events::channel,
    audit_events::outcome,
    audit_events::code,
    audit_events::email_key,
    audit_events::issuer,
    audit_events::subject,
    audit_events::account_number,
    audit_events::detail,
);

/// The most recent events, newest first.
pub fn recent(conn: &mut DbConn, limit: i64) -> Result<Vec<AuditEvent>, StorageError> {
    Ok(audit_events::table
        .order(audit_events::id.desc())
        .limit(limit)
        .select((
            audit_events::at,
            audit_events::request_id,
            audit_events::actor,
            audit_events::source,
            audit_events::step,
            audit_events::channel,
            audit_events::outcome,
            audit_events::code,
            audit_events::email_key,
            audit_events::issuer,
            audit_events::subject,
            audit_events::account_number,
            audit_events::detail,
        ))
        .load(conn)?)
}

/// Longest an event waits before its batch is written. Short, so that each batch is a short
/// burst of the writer's CPU (about 500 events at 50,000 sign-ins per second) rather than one
/// that holds a core for several milliseconds while requests wait (BENCHMARKS.md).
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// PostgreSQL: the time limit of one batch's append. The writer waits for it at most twice that
/// (then the connection counts as one that stopped answering, see `storage::postgres`).
pub const APPEND_LIMIT: Duration = Duration::from_secs(5);
/// Events queued before senders wait (back-pressure rather than unbounded memory): 80 ms of
/// sign-ins at 50,000 per second, about 3 MB. 16,384 cost 9 MB more of resident memory and
/// gained nothing measurable.
const QUEUE_CAPACITY: usize = 4 * 1024;

/// The queue between requests and the writer. Requests append under a mutex and wake nobody:
/// the writer takes everything every [`FLUSH_INTERVAL`]. (With a channel, the writer woke for
/// every event, and the context switches were a quarter of the sign-in path's CPU.)
struct Queue {
    events: Mutex<Vec<AuditEvent>>,
    /// Signalled when the writer took the events (room for waiting senders).
    room: Condvar,
    /// Live [`AuditWriter`]s; the writer stops after the last one is dropped.
    senders: AtomicUsize,
}

impl Queue {
    fn events(&self) -> MutexGuard<'_, Vec<AuditEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Sends events to the background writer. Cheap to clone.
pub struct AuditWriter {
    queue: Arc<Queue>,
}

impl Clone for AuditWriter {
    fn clone(&self) -> Self {
        self.queue.senders.fetch_add(1, Ordering::SeqCst);
        AuditWriter {
            queue: self.queue.clone(),
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        self.queue.senders.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Owns the writer thread; dropping it after every [`AuditWriter`] is gone flushes and joins.
pub struct AuditWriterHandle {
    thread: Option<JoinHandle<()>>,
    /// SQLite: the lookup merge thread, and what stops it (dropping the sender).
    merger: Option<(SyncSender<()>, JoinHandle<()>)>,
}

impl AuditWriter {
    /// Starts the writer thread on the pool.
    pub fn start(db: Db) -> (AuditWriter, AuditWriterHandle) {
        let queue = Arc::new(Queue {
            events: Mutex::new(Vec::new()),
            room: Condvar::new(),
            senders: AtomicUsize::new(1),
        });
        // SQLite: the lookup merge, fed by the writer. The channel wakes the merge early (the feed
        // is filling up) and stops it (every sender dropped).
        let lookup = db.sqlite_path().map(|path| {
            let (wake, woken) = mpsc::sync_channel(1);
            (
                path.to_string(),
                Arc::new(LookupFeed::default()),
                wake,
                woken,
            )
        });
        let writer_queue = queue.clone();
        let writer_feed = lookup
            .as_ref()
            .map(|(_, feed, wake, _)| (feed.clone(), wake.clone()));
        let thread = std::thread::Builder::new()
            .name("autolink-audit".into())
            .spawn(move || run_writer(db, writer_queue, writer_feed))
            .ok();
        if thread.is_none() {
            log::error!("could not start the audit writer thread; audit events will be lost");
        }
        let merger = lookup.and_then(|(path, feed, wake, woken)| {
            // Opened here, before the writer's first batch, so the feed takes that batch; if it
            // fails, the merge thread tries again and the writer reads back what it missed.
            let keys = open_lookup(&path, &feed)
                .map_err(|error| log::warn!("audit lookup file: {error}"))
                .ok();
            std::thread::Builder::new()
                .name("autolink-audit-lookup".into())
                .spawn(move || run_merger(path, feed, keys, woken))
                .ok()
                .map(|handle| (wake, handle))
        });
        (AuditWriter { queue }, AuditWriterHandle { thread, merger })
    }

    /// Queues an event without waiting; false when the queue is full (the caller then takes a
    /// path that may wait).
    pub fn try_record(&self, event: AuditEvent) -> bool {
        let mut events = self.queue.events();
        if events.len() >= QUEUE_CAPACITY {
            return false;
        }
        events.push(event);
        true
    }

    /// Queues an event. Blocks while the queue is full; call from blocking code only.
    pub fn record(&self, event: AuditEvent) {
        let mut events = self.queue.events();
        while events.len() >= QUEUE_CAPACITY {
            events = self
                .queue
                .room
                .wait_timeout(events, FLUSH_INTERVAL)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        events.push(event);
    }
}

impl AuditWriterHandle {
    /// Waits for the writer to flush and stop. The writer stops once every [`AuditWriter`] clone
    /// is dropped.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // After the writer: the last merge takes its last events.
        if let Some((stop, merger)) = self.merger.take() {
            drop(stop);
            let _ = merger.join();
        }
    }
}

/// How often new events are merged into `audit_keys` (SQLite). Seldom on purpose: a merge
/// writes about one page per distinct email or identity, whatever the number of events, so the
/// more events a merge takes, the less each costs. Newer events are found by a scan.
const MERGE_INTERVAL: Duration = Duration::from_secs(5);

/// Puts the calling thread in Linux's idle scheduling class (`SCHED_IDLE`): it runs only on
/// CPU time that no other thread wants. The lookup merge is maintenance whose delay costs only
/// the speed of administrators' lookups (newer events are scanned), while its bursts (a merge
/// of 200,000 events takes a core for a good part of a second) used to delay the requests the
/// service answers meanwhile (BENCHMARKS.md). Under a load that keeps every core busy it waits;
/// it catches up when the load falls.
fn run_at_idle_priority() -> bool {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadPriority, ThreadSchedulePolicy,
        };
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        )
        .is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The merge thread: at start, then every [`MERGE_INTERVAL`] or when the writer wakes it, and
/// once more when every sender of `wake` is dropped, writes what the writer fed it into the
/// lookup file, through a connection of its own to that file alone.
fn run_merger(
    database: String,
    feed: Arc<LookupFeed>,
    mut keys: Option<SqliteAuditKeys>,
    wake: Receiver<()>,
) {
    if !run_at_idle_priority() {
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
fn open_lookup(database: &str, feed: &LookupFeed) -> Result<SqliteAuditKeys, StorageError> {
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

/// The writer's side of the lookup merge (SQLite): its feed, and how to wake the merge.
type WriterFeed = (Arc<LookupFeed>, SyncSender<()>);

fn run_writer(db: Db, queue: Arc<Queue>, feed: Option<WriterFeed>) {
    let mut batch: Vec<AuditEvent> = Vec::new();
    // SQLite: the writer's own connection, with statements prepared once (sqlite/audit.rs).
    let mut appender = match db.sqlite_path() {
        Some(_) => Appender::Sqlite(None),
        None => Appender::Postgres(PgAuditAppender::new(db.clone())),
    };
    loop {
        let last = queue.senders.load(Ordering::SeqCst) == 0;
        if !last {
            std::thread::sleep(FLUSH_INTERVAL);
        }
        std::mem::swap(&mut batch, &mut *queue.events());
        queue.room.notify_all();
        let appended = flush(&db, &mut appender, &mut batch);
        if let Appender::Sqlite(sqlite) = &mut appender {
            if let (Some(_), None, Some(path)) = (&feed, &sqlite, db.sqlite_path()) {
                // With nothing written yet, the feed may still have events to read back.
                *sqlite = SqliteAuditAppender::open(path)
                    .map_err(|error| log::debug!("audit writer connection: {error}"))
                    .ok();
            }
            if let (Some((feed, wake)), Some(sqlite)) = (&feed, sqlite.as_mut()) {
                let fed = sqlite.feed(feed, appended.as_ref().map(|(b, l)| (b.as_slice(), *l)));
                match fed {
                    Ok(true) => {
                        let _ = wake.try_send(());
                    }
                    Ok(false) => {}
                    Err(error) => log::warn!("audit lookup feed: {error}"),
                }
            }
        }
        if let Some((mut written, _)) = appended {
            written.clear();
            batch = written;
        }
        if last && queue.events().is_empty() {
            // What the feed still misses, as far as it has room, for the merge's last run.
            if let (Some((feed, _)), Appender::Sqlite(Some(sqlite))) = (&feed, &mut appender) {
                for _ in 0..FEED_CAPACITY / READ_DOSE as usize {
                    if !sqlite.is_behind() || sqlite.feed(feed, None).is_err() {
                        break;
                    }
                }
            }
            return;
        }
    }
}

/// Appends a batch: on SQLite through the writer's own connection, on PostgreSQL by `COPY` on
/// the writer's own connection (`storage::postgres::audit`). Returns the id of the last event on
/// SQLite. On PostgreSQL the batch is emptied when written.
fn append(
    db: &Db,
    appender: &mut Appender,
    batch: &mut Vec<AuditEvent>,
) -> Result<Option<i64>, StorageError> {
    let sqlite = match appender {
        Appender::Postgres(pg) => return pg.append(batch).map(|()| None),
        Appender::Sqlite(sqlite) => sqlite,
    };
    let Some(path) = db.sqlite_path() else {
        return Err(StorageError::Unavailable("no SQLite file".into()));
    };
    let writer = match sqlite {
        Some(writer) => writer,
        None => sqlite.insert(SqliteAuditAppender::open(path)?),
    };
    let appended = writer.append(batch);
    if appended.is_err() {
        // A new connection for the next attempt.
        *sqlite = None;
    }
    appended.map(Some)
}

/// The writer's connection: SQLite's appender (opened when first needed), or PostgreSQL's.
enum Appender {
    Sqlite(Option<SqliteAuditAppender>),
    Postgres(PgAuditAppender),
}

/// Writes the batch and leaves it empty. On SQLite, returns the events written and the id of the
/// last one (the lookup feed's input).
fn flush(
    db: &Db,
    appender: &mut Appender,
    batch: &mut Vec<AuditEvent>,
) -> Option<(Vec<AuditEvent>, i64)> {
    // A few attempts cover a short database outage; after that the events are logged (without
    // emails) and dropped rather than growing memory without bound. (A PostgreSQL batch left
    // with a connection that stopped answering is not tried again: see postgres/audit.rs.)
    for attempt in 0..5 {
        if batch.is_empty() {
            return None;
        }
        let size = batch.len();
        match append(db, appender, batch) {
            Ok(Some(last)) => return Some((std::mem::take(batch), last)),
            Ok(None) => {
                batch.clear();
                return None;
            }
            Err(error) => {
                log::warn!(
                    "audit batch of {size} events not written (attempt {}): {error}",
                    attempt + 1
                );
                std::thread::sleep(Duration::from_millis(200 * (attempt + 1)));
            }
        }
    }
    for event in batch.drain(..) {
        log::error!(
            "audit event lost: request_id={} source={} outcome={} code={}",
            event.request_id,
            event.source,
            event.outcome,
            event.code.as_deref().unwrap_or("-")
        );
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::storage::sqlite::audit::merge_from_database;
    use crate::storage::PoolOptions;

    /// A sign-in's event (issuers alternate between two), for the storage tests.
    pub(crate) fn event(n: usize, email: &str, subject: &str) -> AuditEvent {
        AuditEvent {
            at: crate::storage::now(),
            request_id: format!("r{n}"),
            actor: "b2c".into(),
            source: "test".into(),
            step: None,
            channel: Some("web".into()),
            outcome: "AlreadyLinked".into(),
            code: None,
            email_key: Some(email.into()),
            issuer: Some(if n % 2 == 0 { "iss-a" } else { "iss-b" }.into()),
            subject: Some(subject.into()),
            account_number: None,
            detail: None,
        }
    }

    fn ids(conn: &mut DbConn, filter: AuditFilter<'_>) -> Vec<String> {
        query(
            conn,
            &AuditFilter {
                limit: 100,
                ..filter
            },
        )
        .unwrap()
        .into_iter()
        .map(|r| r.event.request_id)
        .collect()
    }

    #[test]
    fn the_writer_writes_every_queued_event_before_it_stops() {
        let (_dir, db) = crate::storage::temp_sqlite();
        let (writer, handle) = AuditWriter::start(db.clone());
        let second = writer.clone();
        for n in 0..10 {
            assert!(writer.try_record(event(n, "q@x.com", "s")));
        }
        second.record(event(10, "q@x.com", "s"));
        drop(writer);
        drop(second);
        handle.join();
        let mut conn = db.get().unwrap();
        let found = ids(
            &mut conn,
            AuditFilter {
                email_key: Some("q@x.com"),
                ..Default::default()
            },
        );
        assert_eq!(found.len(), 11, "{found:?}");
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_makes_record_wait_for_room() {
        let queue = Arc::new(Queue {
            events: Mutex::new(Vec::new()),
            room: Condvar::new(),
            senders: AtomicUsize::new(1),
        });
        // No writer thread: the test takes the events itself.
        let writer = AuditWriter {
            queue: queue.clone(),
        };
        for n in 0..QUEUE_CAPACITY {
            assert!(writer.try_record(event(n, "f@x.com", "s")));
        }
        assert!(!writer.try_record(event(0, "f@x.com", "s")), "full");
        let waiting = writer.clone();
        let blocked = std::thread::spawn(move || waiting.record(event(1, "f@x.com", "s")));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !blocked.is_finished(),
            "record waits while the queue is full"
        );
        let taken = std::mem::take(&mut *queue.events());
        queue.room.notify_all();
        blocked.join().unwrap();
        assert_eq!(taken.len(), QUEUE_CAPACITY);
        assert_eq!(queue.events().len(), 1, "the waiting event went in");
    }

    #[test]
    fn a_colliding_lookup_key_never_returns_another_email_s_event() {
        let (_dir, db) = crate::storage::temp_sqlite();
        let mut conn = db.get().unwrap();
        insert(
            &mut conn,
            &[event(0, "a@x.com", "s0"), event(1, "b@x.com", "s1")],
        )
        .unwrap();
        merge_from_database(db.sqlite_path().unwrap()).unwrap();
        {
            // As if b@x.com's key were a@x.com's too.
            let DbConn::Sqlite(c) = &mut *conn else {
                panic!("not SQLite")
            };
            crate::storage::attach_audit_lookup(c, db.sqlite_path().unwrap()).unwrap();
            diesel::insert_into(audit_keys::table)
                .values((
                    audit_keys::lookup_key.eq(email_lookup_key(b"a@x.com")),
                    audit_keys::event_id.eq(2),
                ))
                .execute(c)
                .unwrap();
            crate::storage::detach_audit_lookup(c).unwrap();
        }
        let found = ids(
            &mut conn,
            AuditFilter {
                email_key: Some("a@x.com"),
                ..Default::default()
            },
        );
        assert_eq!(found, ["r0"]);
    }

    #[test]
    fn a_lookup_file_of_another_layout_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db").display().to_string();
        {
            let lookup =
                rusqlite::Connection::open(crate::storage::audit_lookup_path(&path)).unwrap();
            lookup
                .execute_batch(
                    "CREATE TABLE audit_lookup (lookup_key TEXT NOT NULL, \
                       event_id INTEGER NOT NULL, PRIMARY KEY (lookup_key, event_id)) WITHOUT ROWID; \
                     CREATE TABLE audit_lookup_state (singleton INTEGER PRIMARY KEY, \
                       indexed_through INTEGER NOT NULL); \
                     INSERT INTO audit_lookup VALUES ('e:a@x.com', 1); \
                     INSERT INTO audit_lookup_state VALUES (1, 1);",
                )
                .unwrap();
        }
        let db = Db::open(&format!("sqlite://{path}"), &PoolOptions::default()).unwrap();
        let mut conn = db.get().unwrap();
        insert(&mut conn, &[event(0, "a@x.com", "s0")]).unwrap();
        // Indexed from the start of the log again, under the new keys.
        assert_eq!(merge_from_database(&path).unwrap(), 1);
        let lookup = rusqlite::Connection::open(crate::storage::audit_lookup_path(&path)).unwrap();
        let old: i64 = lookup
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'audit_lookup'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
        let rows: i64 = lookup
            .query_row("SELECT count(*) FROM audit_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }

    #[test]
    fn an_unreadable_lookup_file_is_rebuilt_and_the_database_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.db").display().to_string();
        let url = format!("sqlite://{path}");
        {
            let db = Db::open(&url, &PoolOptions::default()).unwrap();
            insert(&mut db.get().unwrap(), &[event(0, "a@x.com", "s0")]).unwrap();
            assert_eq!(merge_from_database(&path).unwrap(), 1);
        }
        let lookup = crate::storage::audit_lookup_path(&path);
        std::fs::write(&lookup, vec![0x5a; 8192]).unwrap();
        // The server and the commands open the database as before; the file is rebuilt and
        // indexed again from the start of the log.
        let db = Db::open(&url, &PoolOptions::default()).unwrap();
        assert_eq!(lookup_state(&path), (0, 0));
        assert_eq!(merge_from_database(&path).unwrap(), 1);
        assert_eq!(lookup_state(&path).1, 2);
        let mut conn = db.get().unwrap();
        let found = ids(
            &mut conn,
            AuditFilter {
                email_key: Some("a@x.com"),
                ..Default::default()
            },
        );
        assert_eq!(found, ["r0"]);
    }

    /// The lookup file's watermark and number of pairs.
    fn lookup_state(path: &str) -> (i64, i64) {
        let lookup = rusqlite::Connection::open(crate::storage::audit_lookup_path(path)).unwrap();
        let through = lookup
            .query_row("SELECT indexed_through FROM audit_lookup_state", [], |r| {
                r.get(0)
            })
            .unwrap();
        let pairs = lookup
            .query_row("SELECT count(*) FROM audit_keys", [], |r| r.get(0))
            .unwrap();
        (through, pairs)
    }

    #[test]
    fn the_service_s_merge_indexes_what_the_writer_fed_it_by_the_time_it_stops() {
        let (_dir, db) = crate::storage::temp_sqlite();
        let path = db.sqlite_path().unwrap().to_string();
        let mut conn = db.get().unwrap();
        // Written before the service started: the writer reads them back for the feed.
        insert(&mut conn, &[event(0, "old@x.com", "s-old")]).unwrap();
        let (writer, handle) = AuditWriter::start(db.clone());
        for n in 1..=40 {
            writer.record(event(n, &format!("u{n}@x.com"), &format!("s{n}")));
            if n == 20 {
                // A link's event, written in its own transaction: also read back.
                insert(&mut conn, &[event(100, "link@x.com", "s-link")]).unwrap();
            }
        }
        drop(writer);
        handle.join();
        assert_eq!(lookup_state(&path), (42, 84), "every event, two pairs each");
        for (email, request_id) in [
            ("old@x.com", "r0"),
            ("link@x.com", "r100"),
            ("u33@x.com", "r33"),
        ] {
            let found = ids(
                &mut conn,
                AuditFilter {
                    email_key: Some(email),
                    ..Default::default()
                },
            );
            assert_eq!(found, [request_id], "{email}");
        }
    }

    /// The scheduling policy of the threads of this process named `name` (Linux: field 41 of
    /// `/proc/self/task/*/stat`).
    #[cfg(target_os = "linux")]
    fn thread_policies(name: &str) -> Vec<u32> {
        let mut policies = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the command name, which is in parentheses, start at field 3.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let policy = after.split(' ').nth(41 - 3).unwrap().parse().unwrap();
            policies.push(policy);
        }
        policies
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_lookup_merge_runs_at_idle_priority_and_the_writer_does_not() {
        const SCHED_OTHER: u32 = 0;
        const SCHED_IDLE: u32 = 5;
        let (_dir, db) = crate::storage::temp_sqlite();
        let (writer, handle) = AuditWriter::start(db.clone());
        // Thread names are cut to 15 bytes: "autolink-audit-lookup" shows as "autolink-audit-".
        // A thread shows its name once it has started running.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let (merge, writers) = loop {
            let merge = thread_policies("autolink-audit-");
            let writers = thread_policies("autolink-audit");
            let started = merge.contains(&SCHED_IDLE) && !writers.is_empty();
            if started || std::time::Instant::now() > deadline {
                break (merge, writers);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(merge.contains(&SCHED_IDLE), "merge threads: {merge:?}");
        assert!(
            !writers.is_empty() && writers.iter().all(|p| *p == SCHED_OTHER),
            "{writers:?}"
        );
        drop(writer);
        handle.join();
    }

    #[test]
    fn lookups_find_events_on_both_sides_of_the_merge() {
        let (_dir, db) = crate::storage::temp_sqlite();
        let mut conn = db.get().unwrap();
        let path = db.sqlite_path().unwrap();
        let first: Vec<AuditEvent> = (0..6)
            .map(|n| {
                event(
                    n,
                    if n < 3 { "a@x.com" } else { "b@x.com" },
                    &format!("s{}", n % 3),
                )
            })
            .collect();
        insert(&mut conn, &first).unwrap();
        assert_eq!(merge_from_database(path).unwrap(), 6);
        assert_eq!(merge_from_database(path).unwrap(), 0, "nothing new");
        {
            let DbConn::Sqlite(c) = &mut *conn else {
                panic!("not SQLite")
            };
            crate::storage::attach_audit_lookup(c, db.sqlite_path().unwrap()).unwrap();
            let keys: i64 = audit_keys::table.count().get_result(c).unwrap();
            crate::storage::detach_audit_lookup(c).unwrap();
            assert_eq!(keys, 12, "an email and an identity each");
        }
        // After the watermark: found by the scan until the next merge.
        insert(
            &mut conn,
            &[event(6, "a@x.com", "s0"), event(7, "c@x.com", "s1")],
        )
        .unwrap();
        for round in ["before the second merge", "after it"] {
            assert_eq!(
                ids(
                    &mut conn,
                    AuditFilter {
                        email_key: Some("a@x.com"),
                        ..Default::default()
                    }
                ),
                ["r6", "r2", "r1", "r0"],
                "{round}"
            );
            assert_eq!(
                ids(
                    &mut conn,
                    AuditFilter {
                        issuer: Some("iss-a"),
                        subject: Some("s0"),
                        ..Default::default()
                    }
                ),
                ["r6", "r0"],
                "{round}"
            );
            assert_eq!(
                ids(
                    &mut conn,
                    AuditFilter {
                        issuer: Some("iss-b"),
                        ..Default::default()
                    }
                ),
                ["r7", "r5", "r3", "r1"],
                "{round}: an issuer alone"
            );
            assert_eq!(
                ids(
                    &mut conn,
                    AuditFilter {
                        email_key: Some("b@x.com"),
                        subject: Some("s1"),
                        ..Default::default()
                    }
                ),
                ["r4"],
                "{round}: two filters"
            );
            merge_from_database(path).unwrap();
        }
        // The pool's connection does not keep the lookup attached: its next BEGIN IMMEDIATE
        // would take the lookup's write lock too.
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let DbConn::Sqlite(c) = &mut *conn else {
            panic!("not SQLite")
        };
        let attached: Count = diesel::sql_query(
            "SELECT count(*) AS n FROM pragma_database_list WHERE name = 'lookup'",
        )
        .get_result(c)
        .unwrap();
        assert_eq!(attached.n, 0);
    }
}
