//! The executor: the one writer of links, the same on both databases.
//!
//! One thread with a database connection of its own takes every request that is waiting (at
//! most [`MAX_GROUP`]) and decides them together ([`super::plan`]): a few set-based reads for the
//! whole group. Links are written in one transaction with multi-row inserts that skip what
//! another writer wrote first (`ON CONFLICT DO NOTHING RETURNING`); a request that lost such a
//! race is decided again in the next group.
//! The transaction commits (durable on SQLite by default: one sync per group), and only then is
//! each request answered. So:
//! - a link is never answered before it is committed; when the commit fails, every request of
//!   the group gets the error (and its caller fails closed);
//! - a request answered as failed never takes effect: each request carries a [`Ticket`]; its
//!   caller, at its time limit, either abandons it (then the group that holds it rolls back
//!   and is written again without it) or finds it committing and waits for the commit's answer;
//! - when a write of the group fails for another reason (a constraint, a trigger), each request
//!   is written again alone, in a savepoint, so only the one that fails gets the error;
//! - the requests of one group see each other's writes: two requests for one new email on a
//!   B2C channel create one customer, as they do one after the other.
//!
//! Sign-up checks and previews write nothing but their audit event: they go to a second thread of
//! the same kind with a connection of its own (the read lane), decided in groups by the same
//! [`super::plan`], so that a check never waits behind a group's writes and commit, and a group
//! of links never waits behind the reads of checks.
//!
//! Nobody waits to fill a group: the next one starts as soon as the previous one committed, with
//! whatever arrived meanwhile. A thread whose database call never returns (a server that stopped
//! answering without closing the connection) is left behind: the next request that finds it
//! busy for longer than any call may take starts a new thread with a new connection.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

mod batch;
mod write;

use super::plan::{self, Kind};
use super::{Answer, Decider, LinkRequest};
use crate::domain::Refusal;
use crate::storage::audit::AuditWriter;
use crate::storage::{Db, DbConn, StorageError};
use write::{is_connection_error, write_links, Written};

/// Most requests one group takes.
const MAX_GROUP: usize = 256;
/// Most requests waiting for the executor; beyond, a request is answered as unavailable at once.
const QUEUE: usize = 4096;
/// How often a request is decided again after losing a race before it fails.
const MAX_ATTEMPTS: u8 = 4;

type Reply = Result<Answer, StorageError>;

/// Where a request stands with respect to the commit of its group.
pub(crate) struct Ticket(AtomicU8);

const WAITING: u8 = 0;
const COMMITTING: u8 = 1;
const ABANDONED: u8 = 2;

impl Ticket {
    fn new() -> Arc<Ticket> {
        Arc::new(Ticket(AtomicU8::new(WAITING)))
    }

    /// The caller's time limit passed: true when the request will never take effect; false
    /// when its group is committing (its answer must be waited for).
    fn abandon(&self) -> bool {
        match self
            .0
            .compare_exchange(WAITING, ABANDONED, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(state) => state == ABANDONED,
        }
    }

    /// Before the commit: false when the caller gave up.
    fn begin_commit(&self) -> bool {
        match self
            .0
            .compare_exchange(WAITING, COMMITTING, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => true,
            Err(state) => state == COMMITTING,
        }
    }

    /// After a rolled-back commit attempt: the request may still be abandoned.
    fn reopen(&self) {
        let _ = self
            .0
            .compare_exchange(COMMITTING, WAITING, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn abandoned(&self) -> bool {
        self.0.load(Ordering::SeqCst) == ABANDONED
    }
}

struct Job {
    request: LinkRequest,
    kind: Kind,
    ticket: Arc<Ticket>,
    reply: oneshot::Sender<Reply>,
    attempts: u8,
}

impl Job {
    fn gone(&self) -> bool {
        self.ticket.abandoned() || self.reply.is_closed()
    }
}

/// A running writer thread.
struct Writer {
    sender: SyncSender<Job>,
    /// Milliseconds since [`Shared::epoch`] at which its current group started; 0 when idle.
    busy_since: Arc<AtomicU64>,
}

/// What the writer threads share with the executor. It holds no sender of their queue: when
/// the executor is dropped, the thread finishes what it has and stops (and with it the last
/// audit sender it holds, which the server waits for at shutdown).
struct Shared {
    decider: Arc<Decider>,
    db: Db,
    audit: AuditWriter,
    /// The time limit of a request.
    limit: Duration,
    epoch: Instant,
}

/// The executor. Dropping it lets its threads finish what they have and stop.
pub(crate) struct Executor {
    shared: Arc<Shared>,
    /// The link writer: every [`Kind::Link`].
    writer: Lane,
    /// The read lane: checks and previews.
    reader: Lane,
}

/// A thread of the executor, started when first needed.
struct Lane {
    /// For the log.
    name: &'static str,
    /// The thread's name.
    thread: &'static str,
    current: Mutex<Option<Writer>>,
}

impl Lane {
    fn new(name: &'static str, thread: &'static str) -> Self {
        Lane {
            name,
            thread,
            current: Mutex::new(None),
        }
    }
}

impl Executor {
    /// An executor over `db`; requests are answered within `limit` (more only while their
    /// group's COMMIT is under way).
    pub(crate) fn new(decider: Arc<Decider>, db: Db, audit: AuditWriter, limit: Duration) -> Self {
        Executor {
            shared: Arc::new(Shared {
                decider,
                db,
                audit,
                limit,
                epoch: Instant::now(),
            }),
            writer: Lane::new("link writer", "autolink-links"),
            reader: Lane::new("read lane", "autolink-checks"),
        }
    }

    /// Decides (and for [`Kind::Link`], applies) a request. Storage failures, time-outs and a
    /// full queue are `ServiceUnavailable`: the caller fails closed.
    pub(crate) async fn run(&self, request: LinkRequest, kind: Kind) -> Answer {
        use actix_web::rt::time::timeout;
        let request_id = request.request_id.clone();
        let source = request.source;
        let limit = request
            .time_limit
            .map_or(self.shared.limit, |own| own.min(self.shared.limit));
        let ticket = Ticket::new();
        let (reply, answer) = oneshot::channel();
        let job = Job {
            request,
            kind,
            ticket: ticket.clone(),
            reply,
            attempts: 0,
        };
        if !self.submit(job) {
            log::warn!("request_id={request_id} {source}: the executor's queue is full");
            return Err(Refusal::ServiceUnavailable);
        }
        let mut answer = std::pin::pin!(answer);
        let reply = match timeout(limit, &mut answer).await {
            Ok(reply) => reply,
            Err(_) if ticket.abandon() => {
                log::warn!("request_id={request_id} {source}: database did not answer in time");
                return Err(Refusal::ServiceUnavailable);
            }
            // Its group is committing: that commit's outcome is the answer.
            Err(_) => match timeout(limit, &mut answer).await {
                Ok(reply) => reply,
                Err(_) => {
                    log::error!("request_id={request_id} {source}: a COMMIT did not answer in time: its outcome is unknown");
                    return Err(Refusal::ServiceUnavailable);
                }
            },
        };
        match reply {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                log::warn!("request_id={request_id} {source}: storage failed: {error}");
                Err(Refusal::ServiceUnavailable)
            }
            Err(_) => {
                log::error!(
                    "request_id={request_id} {source}: the executor stopped before answering"
                );
                Err(Refusal::ServiceUnavailable)
            }
        }
    }

    /// Hands a job to its lane's thread (links to the writer, the rest to the read lane),
    /// starting one when there is none, or when the one there has been busy with one group for
    /// longer than any database call may take.
    fn submit(&self, job: Job) -> bool {
        let shared = &self.shared;
        let lane = match job.kind {
            Kind::Link => &self.writer,
            Kind::Check | Kind::Preview(_) => &self.reader,
        };
        let name = lane.name;
        let mut writer = lane.current.lock().unwrap_or_else(|e| e.into_inner());
        let stuck_after = shared.limit * 2 + Duration::from_secs(1);
        if let Some(current) = writer.as_ref() {
            let since = current.busy_since.load(Ordering::SeqCst);
            let now = shared.now_ms();
            if since != 0 && now.saturating_sub(since) > stuck_after.as_millis() as u64 {
                log::error!(
                    "the {name} has not finished a group for {} ms: starting a new one with a new connection",
                    now - since
                );
                *writer = None;
            }
        }
        if writer.is_none() {
            *writer = start(shared.clone(), lane);
        }
        let Some(current) = writer.as_ref() else {
            return false;
        };
        match current.sender.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(job)) => {
                // The thread ended (a panic): start another once.
                *writer = start(shared.clone(), lane);
                writer
                    .as_ref()
                    .is_some_and(|w| w.sender.try_send(job).is_ok())
            }
        }
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        (self.epoch.elapsed().as_millis() as u64).max(1)
    }
}

fn start(shared: Arc<Shared>, lane: &Lane) -> Option<Writer> {
    let (sender, jobs) = mpsc::sync_channel(QUEUE);
    let busy_since = Arc::new(AtomicU64::new(0));
    let busy = busy_since.clone();
    let name = lane.name;
    let spawned = std::thread::Builder::new()
        .name(lane.thread.into())
        .spawn(move || run(&shared, &busy, jobs));
    match spawned {
        Ok(_) => Some(Writer { sender, busy_since }),
        Err(error) => {
            log::error!("could not start the {name} thread: {error}");
            None
        }
    }
}

fn run(shared: &Shared, busy: &AtomicU64, jobs: Receiver<Job>) {
    let mut conn: Option<DbConn> = None;
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    loop {
        if group.is_empty() {
            match jobs.recv() {
                Ok(job) => group.push(job),
                Err(_) => return,
            }
        }
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        // Callers that stopped waiting were answered "unavailable": decide nothing for them.
        group.retain(|job| !job.gone());
        if group.is_empty() {
            continue;
        }
        busy.store(shared.now_ms(), Ordering::SeqCst);
        let batch = std::mem::take(&mut group);
        let size = batch.len();
        let result = catch_unwind(AssertUnwindSafe(|| execute(shared, &mut conn, batch)));
        busy.store(0, Ordering::SeqCst);
        match result {
            Ok(again) => group = again,
            Err(_) => {
                // Dropping the jobs answers every caller "unavailable".
                log::error!("the link writer failed on a group of {size} requests");
                conn = None;
            }
        }
    }
}

/// Decides and writes one group; returns the requests to decide again in the next one.
fn execute(shared: &Shared, conn_slot: &mut Option<DbConn>, group: Vec<Job>) -> Vec<Job> {
    let conn = match conn_slot {
        Some(conn) => conn,
        None => match shared.db.connect_for_groups() {
            Ok(new) => conn_slot.insert(new),
            Err(error) => {
                for job in group {
                    let _ = job
                        .reply
                        .send(Err(StorageError::Unavailable(error.to_string())));
                }
                return Vec::new();
            }
        },
    };
    let (checks, links): (Vec<Job>, Vec<Job>) =
        group.into_iter().partition(|job| job.kind != Kind::Link);
    if !checks.is_empty() && !answer_checks(shared, conn, checks) {
        *conn_slot = None;
    }
    let mut again = Vec::new();
    let mut links = links;
    while !links.is_empty() {
        let Some(conn) = conn_slot.as_mut() else {
            for job in links {
                let _ = job.reply.send(Err(StorageError::Unavailable(
                    "the connection of the link writer failed".into(),
                )));
            }
            break;
        };
        match write_links(shared, conn, links) {
            Written::Done(retry) => {
                again = retry;
                break;
            }
            // Requests abandoned before the commit: the group rolled back; write it again
            // without them.
            Written::Again(rest) => links = rest,
            Written::Failed => {
                // A new connection for the next group: this one may be unusable.
                *conn_slot = None;
                break;
            }
        }
    }
    let mut next = Vec::new();
    for mut job in again {
        job.attempts += 1;
        if job.attempts >= MAX_ATTEMPTS {
            let _ = job.reply.send(Err(StorageError::Unavailable(
                "the link lost a race with another writer too many times".into(),
            )));
        } else {
            next.push(job);
        }
    }
    next
}

/// Sign-up checks and previews: decided from the reads, no transaction; their audit events go
/// to the audit writer (see "Database down" in the README for what may be lost). False when the
/// connection failed.
fn answer_checks(shared: &Shared, conn: &mut DbConn, checks: Vec<Job>) -> bool {
    let decider = &*shared.decider;
    let requests: Vec<(&LinkRequest, Kind)> = checks
        .iter()
        .map(|job| (&job.request, job.kind.clone()))
        .collect();
    match plan::plan(decider, conn, &requests) {
        Ok(plan) => {
            for (job, planned) in checks.iter().zip(&plan.planned) {
                let event = decider.event(&job.request, &planned.answer, planned.channel);
                decider.record(&shared.audit, event);
                decider.count(&job.request, &planned.answer);
            }
            for (job, planned) in checks.into_iter().zip(plan.planned) {
                let _ = job.reply.send(Ok(planned.answer));
            }
            true
        }
        Err(error) => {
            let message = error.to_string();
            for job in checks {
                let _ = job
                    .reply
                    .send(Err(StorageError::Unavailable(message.clone())));
            }
            !is_connection_error(&error)
        }
    }
}

#[cfg(test)]
mod tests;
