//! PostgreSQL: the sign-in cache's [`LinkChanges`], from `LISTEN`/`NOTIFY`.
//!
//! The triggers of migration 000006 move the link generation and notify channel
//! [`CHANNEL`] whenever an existing link, or a linked customer's account number, changes. A
//! [`LinkListener`] keeps a connection of its own that listens on that channel, and a counter
//! (the stamp) that moves on every notification. About twice a second it also reads the
//! generation on that connection: when the generation moved without a notification, the
//! counter moves too; and each such read that answers renews, for [`LEASE`] from when it was
//! sent, the listener's claim that the counter is current. While the connection is down, being
//! opened again, or silent past the lease, the stamp is `None` ("cannot tell").
//!
//! How the socket is read: diesel's `PgConnection::notifications_iter` calls libpq's
//! `PQconsumeInput`, which reads whatever has arrived on the connection's socket without waiting
//! (libpq keeps its sockets non-blocking), then `PQnotifies`. It never waits for input, and it
//! sends nothing to the server. Waiting on the socket itself would need `PQsocket`, which diesel
//! does not expose. So the listener reads every [`POLL`]: a non-blocking `recv` that returns at
//! once when nothing came, and costs the database nothing; a notification is seen within that
//! time. A connection the server closed (a restart, `pg_terminate_backend`) shows as an error of
//! that read, and the stamp is `None` at once.
//!
//! A call that waits for the server (the connection, `LISTEN`, the read of the generation) cannot
//! be cut short either: when one has not answered after [`STUCK`] (a server or network that
//! went silent without closing the connection), the connection is abandoned to its thread, and a
//! new one is opened beside it. Connections are opened again with a backoff from
//! [`FIRST_RETRY`] to [`LAST_RETRY`]. The listener opens nothing until first asked for a stamp
//! (a command that builds the linking service never signs anyone in), and stops when dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;

use crate::storage::links::{self, LinkChanges};
use crate::storage::{Db, DbConn, StorageError};

/// The channel the triggers of migration 000006 notify.
pub const CHANNEL: &str = "autolink_links";
/// The listener's `application_name`, as `pg_stat_activity` shows it.
pub const APPLICATION_NAME: &str = "autolink-link-listener";
/// How often the socket is read for notifications.
pub const POLL: Duration = Duration::from_millis(10);
/// How often the generation is read.
pub const CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long after a read of the generation was sent the counter counts as current.
pub const LEASE: Duration = Duration::from_millis(1000);
/// A call to the server not answered after this is abandoned with its connection.
pub const STUCK: Duration = Duration::from_secs(5);
/// The first wait before the connection is opened again; it doubles up to [`LAST_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait before the connection is opened again.
pub const LAST_RETRY: Duration = Duration::from_secs(5);

/// Tells whether a link may have changed, from PostgreSQL's notifications; see the module
/// documentation.
pub struct LinkListener {
    db: Db,
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

impl LinkListener {
    /// A listener of `db`'s notifications. Opens nothing until first asked for a stamp.
    pub fn new(db: Db) -> Self {
        LinkListener {
            db,
            shared: Arc::new(Shared::new()),
            started: OnceLock::new(),
        }
    }

    fn start(&self) {
        let (shared, db) = (self.shared.clone(), self.db.clone());
        let spawned = std::thread::Builder::new()
            .name("autolink-link-listener".into())
            .spawn(move || supervise(&shared, &db));
        if let Err(error) = spawned {
            log::error!("the link listener could not start ({error}): the sign-in cache is off");
        }
    }
}

impl LinkChanges for LinkListener {
    fn stamp(&self) -> Option<u64> {
        self.started.get_or_init(|| self.start());
        self.shared.stamp()
    }
}

impl Drop for LinkListener {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

/// What the listener's threads and the stamp's readers share.
struct Shared {
    origin: Instant,
    /// The stamp: moves on every notification, every change a read found without one, and every
    /// new connection.
    counter: AtomicU64,
    /// Until when (milliseconds after `origin`) the counter is known to be current; 0: not known.
    valid_until: AtomicU64,
    state: Mutex<State>,
    /// Wakes the threads when the listener stops.
    wake: Condvar,
    #[cfg(test)]
    counts: Counts,
}

struct State {
    /// The connection whose reports count; an abandoned one's are ignored.
    session: u64,
    /// When the current connection's thread began a call to the server, while it waits for one.
    waiting_since: Option<Instant>,
    stopping: bool,
}

/// What the listener did, for the tests.
#[cfg(test)]
#[derive(Default)]
struct Counts {
    notifications: AtomicU64,
    missed: AtomicU64,
    sessions: AtomicU64,
}

impl Shared {
    fn new() -> Self {
        Shared {
            origin: Instant::now(),
            counter: AtomicU64::new(0),
            valid_until: AtomicU64::new(0),
            state: Mutex::new(State {
                session: 0,
                waiting_since: None,
                stopping: false,
            }),
            wake: Condvar::new(),
            #[cfg(test)]
            counts: Counts::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds from `origin` to `at`, at least 1 (0 means "not known").
    fn millis(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.origin).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX).max(1)
    }

    fn stamp(&self) -> Option<u64> {
        let until = self.valid_until.load(Ordering::Acquire);
        if until == 0 || self.millis(Instant::now()) >= until {
            return None;
        }
        Some(self.counter.load(Ordering::Acquire))
    }

    fn stop(&self) {
        let mut state = self.lock();
        state.stopping = true;
        self.valid_until.store(0, Ordering::Release);
        self.wake.notify_all();
    }

    /// Waits up to `time`; true when the listener is stopping.
    fn wait_stopping(&self, time: Duration) -> bool {
        let state = self.lock();
        if state.stopping {
            return true;
        }
        let (state, _) = self
            .wake
            .wait_timeout(state, time)
            .unwrap_or_else(|e| e.into_inner());
        state.stopping
    }

    /// Starts the next connection's session and returns its number.
    fn next_session(&self) -> u64 {
        let mut state = self.lock();
        state.session += 1;
        state.waiting_since = None;
        #[cfg(test)]
        self.counts.sessions.fetch_add(1, Ordering::SeqCst);
        state.session
    }

    /// Runs `call` (one that waits for the server) as session `session`'s, so that it can be
    /// seen to be stuck.
    fn waiting<T>(&self, session: u64, call: impl FnOnce() -> T) -> T {
        self.mark_waiting(session, Some(Instant::now()));
        let result = call();
        self.mark_waiting(session, None);
        result
    }

    fn mark_waiting(&self, session: u64, since: Option<Instant>) {
        let mut state = self.lock();
        if state.session == session {
            state.waiting_since = since;
        }
    }

    /// Whether session `session` has waited for the server longer than [`STUCK`].
    fn stuck(&self, session: u64) -> bool {
        let state = self.lock();
        state.session == session && state.waiting_since.is_some_and(|t| t.elapsed() > STUCK)
    }

    /// A notification arrived on session `session`. False: the session was abandoned.
    fn notified(&self, session: u64) -> bool {
        let state = self.lock();
        if state.session != session || state.stopping {
            return false;
        }
        self.counter.fetch_add(1, Ordering::AcqRel);
        #[cfg(test)]
        self.counts.notifications.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// A read of the generation sent at `sent` answered on session `session`; `moved`: the
    /// generation was not the one known. False: the session was abandoned.
    fn checked(&self, session: u64, sent: Instant, moved: bool) -> bool {
        let state = self.lock();
        if state.session != session || state.stopping {
            return false;
        }
        if moved {
            self.counter.fetch_add(1, Ordering::AcqRel);
            #[cfg(test)]
            self.counts.missed.fetch_add(1, Ordering::SeqCst);
        }
        self.valid_until
            .store(self.millis(sent + LEASE), Ordering::Release);
        true
    }

    /// Session `session` ended or is abandoned: the counter is not known until another answers.
    fn lost(&self, session: u64) {
        let mut state = self.lock();
        if state.session == session {
            self.valid_until.store(0, Ordering::Release);
            state.waiting_since = None;
        }
    }
}

/// Keeps one connection listening: opens it, watches that its calls answer, and opens another
/// when it ends or stops answering, until the listener stops.
fn supervise(shared: &Arc<Shared>, db: &Db) {
    let mut retry = FIRST_RETRY;
    let mut was_up = true;
    loop {
        let session = shared.next_session();
        let worker = {
            let (shared, db) = (shared.clone(), db.clone());
            std::thread::Builder::new()
                .name("autolink-link-listener-connection".into())
                .spawn(move || listen(&shared, &db, session))
        };
        let up = match worker {
            Ok(worker) => match watch(shared, session, worker) {
                Some(up) => up,
                None => return,
            },
            Err(error) => {
                log::warn!("link listener: no thread for its connection ({error})");
                Err(error.to_string())
            }
        };
        match up {
            Ok(()) => {
                retry = FIRST_RETRY;
                was_up = true;
            }
            Err(error) => {
                // Said once per outage: the sign-in cache is off until the listener is back.
                if was_up {
                    log::warn!(
                        "link listener: {error}; the sign-in cache answers nothing from memory \
                         until PostgreSQL's notifications are heard again"
                    );
                } else {
                    log::debug!("link listener: {error}");
                }
                retry = if was_up {
                    FIRST_RETRY
                } else {
                    (retry * 2).min(LAST_RETRY)
                };
                was_up = false;
            }
        }
        if shared.wait_stopping(retry) {
            return;
        }
    }
}

/// Waits for the session's thread to end, or to be stuck in a call; abandons it then. `None`:
/// the listener is stopping. Otherwise how the session went: `Ok` when it had been listening and
/// ended, `Err` when it never was, or got stuck.
fn watch(
    shared: &Shared,
    session: u64,
    worker: JoinHandle<Result<(), String>>,
) -> Option<Result<(), String>> {
    loop {
        if shared.wait_stopping(Duration::from_millis(100)) {
            return None;
        }
        if worker.is_finished() {
            let ended = worker
                .join()
                .unwrap_or_else(|_| Err("its thread panicked".into()));
            return Some(ended);
        }
        if shared.stuck(session) {
            shared.lost(session);
            // Its thread keeps the connection until libpq returns, then finds itself abandoned.
            return Some(Err(format!(
                "the connection did not answer within {} s, another one is opened",
                STUCK.as_secs()
            )));
        }
    }
}

/// One session: a connection of its own that listens, reads notifications every [`POLL`] and
/// the generation every [`CHECK_EVERY`]. Returns `Ok` when it had been listening (and then
/// lost its connection, or was stopped or abandoned), `Err` when it never got there.
fn listen(shared: &Shared, db: &Db, session: u64) -> Result<(), String> {
    let mut listening = false;
    let ended = session_loop(shared, db, session, &mut listening);
    shared.lost(session);
    match ended {
        Ok(()) => Ok(()),
        Err(error) if listening => {
            log::warn!(
                "link listener: the connection was lost ({})",
                error.to_string().trim_end()
            );
            Ok(())
        }
        Err(error) => Err(format!("cannot listen ({})", error.to_string().trim_end())),
    }
}

fn session_loop(
    shared: &Shared,
    db: &Db,
    session: u64,
    listening: &mut bool,
) -> Result<(), StorageError> {
    let mut conn = shared.waiting(session, || db.connect_unpooled())?;
    shared.waiting(session, || {
        conn.batch_execute(&format!(
            "SET application_name = '{APPLICATION_NAME}'; LISTEN {CHANNEL}"
        ))
    })?;
    // The generation last known on this connection: none yet, so the first read moves the
    // counter (changes made while no connection listened were not heard).
    let mut known: Option<i64> = None;
    let mut next_check = Instant::now();
    loop {
        let DbConn::Postgres(pg) = &mut conn else {
            return Err(StorageError::Unavailable(
                "not a PostgreSQL connection".into(),
            ));
        };
        let mut heard = false;
        for notification in pg.notifications_iter() {
            let notification = notification?;
            if notification.channel != CHANNEL {
                continue;
            }
            heard = true;
            // The payload is the generation the notifying transaction moved it to.
            if let Ok(n) = notification.payload.parse::<i64>() {
                known = Some(known.map_or(n, |k| k.max(n)));
            }
        }
        if heard && !shared.notified(session) {
            return Ok(());
        }
        if Instant::now() >= next_check {
            let sent = Instant::now();
            let n = shared.waiting(session, || links::generation(&mut conn))?;
            let moved = known != Some(n);
            known = Some(n);
            if !shared.checked(session, sent, moved) {
                return Ok(());
            }
            if !*listening {
                *listening = true;
                log::info!("link listener: listening on {CHANNEL}");
            }
            next_check = sent + CHECK_EVERY;
        }
        if shared.wait_stopping(POLL) {
            return Ok(());
        }
    }
}

#[cfg(test)]
pub(crate) mod test_database;

#[cfg(test)]
mod tests;
