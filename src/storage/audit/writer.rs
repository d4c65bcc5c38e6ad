//! The background writer of the events of decisions that wrote nothing: a queue that requests
//! append to, and one thread that writes it in batches every few milliseconds, through a
//! connection of its own (SQLite: `storage/sqlite/audit.rs`; PostgreSQL:
//! `storage/postgres/audit.rs`). On SQLite it also feeds the lookup merge
//! (`storage/sqlite/audit_merge.rs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::AuditEvent;
use crate::storage::postgres::audit::PgAuditAppender;
use crate::storage::sqlite::audit::{LookupFeed, SqliteAuditAppender, FEED_CAPACITY, READ_DOSE};
use crate::storage::sqlite::audit_merge::{open_lookup, run_merger};
use crate::storage::{Db, StorageError};

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
/// [`AuditWriter::record_within`] is woken when the writer takes the queue; it also looks for
/// room this often (a safety net: no wake-up is known to be missed).
const ROOM_POLL: Duration = Duration::from_millis(20);

/// The queue between requests and the writer. Requests append under a mutex and wake nobody:
/// the writer takes everything every [`FLUSH_INTERVAL`]. (With a channel, the writer woke for
/// every event, and the context switches were a quarter of the sign-in path's CPU.)
struct Queue {
    events: Mutex<Vec<AuditEvent>>,
    /// Signalled when the writer took the events (room for waiting senders): for blocking
    /// senders, and for async ones.
    room: Condvar,
    async_room: tokio::sync::Notify,
    /// Live [`AuditWriter`]s; the writer stops after the last one is dropped.
    senders: AtomicUsize,
}

impl Queue {
    fn events(&self) -> MutexGuard<'_, Vec<AuditEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes every queued event into `batch` (which must be empty) and wakes the senders waiting
    /// for room.
    fn take_into(&self, batch: &mut Vec<AuditEvent>) {
        std::mem::swap(batch, &mut *self.events());
        self.room.notify_all();
        self.async_room.notify_waiters();
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
            async_room: tokio::sync::Notify::new(),
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

    /// A writer whose queue no thread takes (tests): it fills up; [`AuditWriter::take_all`]
    /// empties it as the writer thread would.
    #[cfg(test)]
    pub(crate) fn unattended() -> AuditWriter {
        AuditWriter {
            queue: Arc::new(Queue {
                events: Mutex::new(Vec::new()),
                room: Condvar::new(),
                async_room: tokio::sync::Notify::new(),
                senders: AtomicUsize::new(1),
            }),
        }
    }

    /// Takes every queued event, as the writer thread does (tests).
    #[cfg(test)]
    pub(crate) fn take_all(&self) -> Vec<AuditEvent> {
        let mut taken = Vec::new();
        self.queue.take_into(&mut taken);
        taken
    }

    /// Queues an event without waiting; gives it back when the queue is full (the caller then
    /// takes a path that may wait).
    pub fn try_record(&self, event: AuditEvent) -> Result<(), Box<AuditEvent>> {
        let mut events = self.queue.events();
        if events.len() >= QUEUE_CAPACITY {
            return Err(Box::new(event));
        }
        events.push(event);
        Ok(())
    }

    /// Queues an event from async code, waiting at most `limit` for room without holding a
    /// thread: the writer empties the queue every [`FLUSH_INTERVAL`], so the queue stays full
    /// only while its database does not take a batch (a stall). The sender is woken when the
    /// writer takes the queue. Gives the event back when there was no room in time.
    pub async fn record_within(
        &self,
        mut event: Box<AuditEvent>,
        limit: Duration,
    ) -> Result<(), Box<AuditEvent>> {
        let until = Instant::now() + limit;
        loop {
            // Registered before the attempt, so that a take between the attempt and the wait
            // still wakes this sender.
            let room = self.queue.async_room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            event = match self.try_record(*event) {
                Ok(()) => return Ok(()),
                Err(event) => event,
            };
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(event);
            }
            let _ = tokio::time::timeout(left.min(ROOM_POLL), room).await;
        }
    }

    /// Queues an event. Blocks while the queue is full; call from blocking code only. True when
    /// it had to wait for room.
    pub fn record(&self, event: AuditEvent) -> bool {
        let mut events = self.queue.events();
        let waited = events.len() >= QUEUE_CAPACITY;
        while events.len() >= QUEUE_CAPACITY {
            events = self
                .queue
                .room
                .wait_timeout(events, FLUSH_INTERVAL)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        events.push(event);
        waited
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

/// The writer's side of the lookup merge (SQLite): its feed, and how to wake the merge.
type WriterFeed = (Arc<LookupFeed>, SyncSender<()>);

fn run_writer(db: Db, queue: Arc<Queue>, feed: Option<WriterFeed>) {
    let mut batch: Vec<AuditEvent> = Vec::new();
    // SQLite: the writer's own connection, with statements prepared once (sqlite/audit.rs).
    let mut appender = match db.sqlite_path() {
        Some(_) => Appender::Sqlite(None),
        None => Appender::Postgres(PgAuditAppender::new(db.clone())),
    };
    let mut taken = Instant::now();
    loop {
        let last = queue.senders.load(Ordering::SeqCst) == 0;
        // The events wait at most FLUSH_INTERVAL from the last batch taken: after a batch that
        // took longer to write, the next is taken at once (sleeping then would hold a queue that
        // filled during the write, and the requests waiting for room, for another interval).
        let wait = FLUSH_INTERVAL.saturating_sub(taken.elapsed());
        if !last && !wait.is_zero() {
            std::thread::sleep(wait);
        }
        taken = Instant::now();
        queue.take_into(&mut batch);
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
mod tests {
    use super::*;
    use crate::storage::audit::tests::event;

    /// A full queue and a writer over it, with no writer thread: the test takes the events.
    fn full_queue() -> (Arc<Queue>, AuditWriter) {
        let queue = Arc::new(Queue {
            events: Mutex::new(Vec::new()),
            room: Condvar::new(),
            async_room: tokio::sync::Notify::new(),
            senders: AtomicUsize::new(1),
        });
        let writer = AuditWriter {
            queue: queue.clone(),
        };
        for n in 0..QUEUE_CAPACITY {
            assert!(writer.try_record(event(n, "f@x.com", "s")).is_ok());
        }
        (queue, writer)
    }

    #[test]
    fn a_full_queue_refuses_at_once_and_makes_record_wait_for_room() {
        let (queue, writer) = full_queue();
        assert!(writer.try_record(event(0, "f@x.com", "s")).is_err(), "full");
        let waiting = writer.clone();
        let blocked = std::thread::spawn(move || waiting.record(event(1, "f@x.com", "s")));
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !blocked.is_finished(),
            "record waits while the queue is full"
        );
        let mut taken = Vec::new();
        queue.take_into(&mut taken);
        assert!(blocked.join().unwrap(), "it says it waited");
        assert_eq!(taken.len(), QUEUE_CAPACITY);
        assert_eq!(queue.events().len(), 1, "the waiting event went in");
        assert!(!writer.record(event(2, "f@x.com", "s")), "room: no wait");
    }

    #[tokio::test]
    async fn record_within_waits_for_room_and_gives_the_event_back_at_its_limit() {
        let (queue, writer) = full_queue();
        // Nobody empties the queue: the event comes back once the limit has passed.
        let started = Instant::now();
        let back = writer
            .record_within(
                Box::new(event(7, "g@x.com", "s")),
                Duration::from_millis(60),
            )
            .await
            .expect_err("no room");
        assert!(started.elapsed() >= Duration::from_millis(60));
        assert_eq!(back.email_key.as_deref(), Some("g@x.com"));

        // The writer takes the queue while the event waits: it goes in.
        let taker = queue.clone();
        let emptied = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut taken = Vec::new();
            taker.take_into(&mut taken);
            taken.len()
        });
        writer
            .record_within(back, Duration::from_secs(5))
            .await
            .expect("room once the queue was taken");
        assert_eq!(emptied.join().unwrap(), QUEUE_CAPACITY);
        let queued = queue.events();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].email_key.as_deref(), Some("g@x.com"));
    }

    /// A sender waiting for room goes in as soon as the writer takes the queue, not at its next
    /// look ([`ROOM_POLL`]): polled right after the take, it is done.
    #[tokio::test]
    async fn a_sender_waiting_for_room_is_woken_when_the_queue_is_taken() {
        use std::future::Future;
        use std::task::Poll;
        let (queue, writer) = full_queue();
        let waiting =
            writer.record_within(Box::new(event(8, "h@x.com", "s")), Duration::from_secs(5));
        tokio::pin!(waiting);
        let ready = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx).is_ready()));
        assert!(!ready.await, "the queue is full: it waits");
        let mut taken = Vec::new();
        queue.take_into(&mut taken);
        let ready = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx).is_ready()));
        assert!(ready.await, "woken by the take, it went in");
        assert_eq!(queue.events().len(), 1);
    }
}
