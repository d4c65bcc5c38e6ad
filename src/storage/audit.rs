//! The append-only audit log, and a background writer that batches events.
//!
//! Decisions that change data (a link, a new customer) write their event in the same transaction
//! as the change. Decisions that change nothing (already linked, refusals, checks) go through
//! [`AuditWriter`], which appends them in batches from one thread so the sign-in hot path does not
//! pay for one write transaction per request. The writer flushes on a short interval and when it
//! is dropped.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::prelude::*;

use super::schema::audit_events;
use super::{Db, DbConn, StorageError};

/// One audit event.
#[derive(Debug, Clone, Insertable, Queryable, PartialEq, Eq)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    /// When it happened (UTC).
    pub at: chrono::NaiveDateTime,
    /// The request id, also in the log line and the `x-request-id` header.
    pub request_id: String,
    /// Who acted: `b2c`, or the administrator.
    pub actor: String,
    /// The endpoint or command.
    pub source: String,
    /// The connector step, when there is one.
    pub step: Option<String>,
    /// The channel id, when resolved.
    pub channel: Option<String>,
    /// The outcome (`Linked`, `Created`, `AlreadyLinked`, `WouldLink`, `WouldCreate`, `Refused`).
    pub outcome: String,
    /// The refusal code.
    pub code: Option<String>,
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

/// Events matching the filter, newest first.
pub fn query(
    conn: &mut DbConn,
    filter: &AuditFilter<'_>,
) -> Result<Vec<AuditRecord>, StorageError> {
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
    let rows: Vec<(i64, AuditEvent)> = query.load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, event)| AuditRecord { id, event })
        .collect())
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

/// Largest batch written in one transaction.
const MAX_BATCH: usize = 1024;
/// Longest an event waits before its batch is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Events queued before senders wait (back-pressure rather than unbounded memory).
const QUEUE_CAPACITY: usize = 16 * 1024;

/// Sends events to the background writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    sender: SyncSender<AuditEvent>,
}

/// Owns the writer thread; dropping it after every [`AuditWriter`] is gone flushes and joins.
pub struct AuditWriterHandle {
    thread: Option<JoinHandle<()>>,
}

impl AuditWriter {
    /// Starts the writer thread on the pool.
    pub fn start(db: Db) -> (AuditWriter, AuditWriterHandle) {
        let (sender, receiver) = mpsc::sync_channel(QUEUE_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("autolink-audit".into())
            .spawn(move || run_writer(db, receiver))
            .ok();
        if thread.is_none() {
            log::error!("could not start the audit writer thread; audit events will be lost");
        }
        (AuditWriter { sender }, AuditWriterHandle { thread })
    }

    /// Queues an event without waiting; false when the queue is full (the caller then takes a
    /// path that may wait).
    pub fn try_record(&self, event: AuditEvent) -> bool {
        self.sender.try_send(event).is_ok()
    }

    /// Queues an event. Blocks when the queue is full; call from blocking code only.
    pub fn record(&self, event: AuditEvent) {
        if self.sender.send(event).is_err() {
            log::error!("audit writer has stopped; an audit event was lost");
        }
    }
}

impl AuditWriterHandle {
    /// Waits for the writer to flush and stop. The writer stops once every [`AuditWriter`] clone
    /// is dropped.
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How often the writer checkpoints SQLite's WAL (the server's connections do not; see
/// [`PoolOptions::automatic_checkpoints`](super::PoolOptions)).
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

fn run_writer(db: Db, receiver: Receiver<AuditEvent>) {
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(MAX_BATCH);
    let mut deadline: Option<Instant> = None;
    let mut last_checkpoint = Instant::now();
    loop {
        if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            if let Err(error) = db.checkpoint() {
                log::warn!("WAL checkpoint failed: {error}");
            }
            last_checkpoint = Instant::now();
        }
        let until_checkpoint = CHECKPOINT_INTERVAL.saturating_sub(last_checkpoint.elapsed());
        let timeout = deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(until_checkpoint)
            .min(until_checkpoint.max(Duration::from_millis(1)));
        match receiver.recv_timeout(timeout) {
            Ok(event) => {
                if batch.is_empty() {
                    deadline = Some(Instant::now() + FLUSH_INTERVAL);
                }
                batch.push(event);
                if batch.len() >= MAX_BATCH {
                    flush(&db, &mut batch);
                    deadline = None;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| d <= Instant::now()) {
                    flush(&db, &mut batch);
                    deadline = None;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                flush(&db, &mut batch);
                return;
            }
        }
    }
}

fn flush(db: &Db, batch: &mut Vec<AuditEvent>) {
    if batch.is_empty() {
        return;
    }
    // A few attempts cover a short database outage; after that the events are logged (without
    // emails) and dropped rather than growing memory without bound.
    for attempt in 0..5 {
        let result = db
            .get()
            .and_then(|mut conn| super::write_transaction(&mut conn, |c| insert(c, batch)));
        match result {
            Ok(()) => {
                batch.clear();
                return;
            }
            Err(error) => {
                log::warn!(
                    "audit batch of {} events not written (attempt {}): {error}",
                    batch.len(),
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
}
