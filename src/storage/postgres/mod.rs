//! PostgreSQL only: every database call bounded in time, and connections that stop answering
//! abandoned rather than waited for.
//!
//! - The URL gets libpq's `connect_timeout`, TCP keepalives and `tcp_user_timeout` unless the
//!   operator set them ([`with_connection_params`]): a peer that vanished from the network is
//!   noticed by the kernel.
//! - The server's connections carry `statement_timeout`, `lock_timeout` and
//!   `idle_in_transaction_session_timeout` ([`session_limits_sql`]): a statement that waits on a
//!   lock or runs too long is ended by the server itself.
//! - Neither sees a server that accepted the connection and then answers nothing (a frozen
//!   server, a failover whose old connections the kernel still acknowledges). A thread in libpq
//!   waits for such an answer for good, and diesel does not hand out libpq's socket to cut it.
//!   So the work of a request runs under a [`Deadline`]: it is answered when the deadline
//!   passes, it cannot COMMIT after that ([`begin_commit`]), and when it is still running
//!   [`Deadline::abandon_after`] later, the pool that lent its connections is retired
//!   ([`Pools::retire`]): a new pool takes its place, every connection of the old one is dropped
//!   when it comes back (`has_broken`), and the stuck thread no longer holds a place in the pool
//!   the service uses.
//! - A pooled connection is lent without a test when it was lent within the last few seconds
//!   ([`IDLE_BEFORE_CHECK`]) and no broken connection came back to its pool since; otherwise it
//!   answers a `SELECT 1` first ([`Pools::get`]). A call that fails at the connection level
//!   marks its connection broken, and it never goes back to the pool. So right after the
//!   database restarted, a request whose connection was in use a moment before fails closed
//!   (its first call finds the connection closed), and the requests after it are lent tested or
//!   new connections.
//! - [`start`]: the migrations at the server's start, applied once the database answers.

pub mod start;

pub mod audit;

pub mod link_changes;
pub(crate) mod unnest;
pub mod webhooks;

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use diesel::r2d2;

use super::{Manager, PoolOptions, PooledConn, StorageError};

/// libpq connection parameters added to a PostgreSQL URL unless it sets them: TCP keepalives on
/// idle connections (a dead peer is noticed after about 5 + 3 x 2 = 11 s), and
/// `tcp_user_timeout`: a connection whose sent data stays unacknowledged for 10 s is closed by
/// the kernel.
const NETWORK_PARAMS: [(&str, &str); 5] = [
    ("keepalives", "1"),
    ("keepalives_idle", "5"),
    ("keepalives_interval", "2"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
];

/// Adds libpq's `connect_timeout` (whole seconds, at least 2 as libpq requires), TCP keepalives
/// and `tcp_user_timeout` to a URL, each unless the URL sets it.
pub(crate) fn with_connection_params(url: &str, connect_timeout: Duration) -> String {
    let seconds = connect_timeout.as_secs().max(2).to_string();
    let mut url = url.to_string();
    let params = [("connect_timeout", seconds.as_str())];
    for (name, value) in params.iter().chain(NETWORK_PARAMS.iter()) {
        if has_param(&url, name) {
            continue;
        }
        let separator = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{separator}{name}={value}");
    }
    url
}

fn has_param(url: &str, name: &str) -> bool {
    url.split_once('?').is_some_and(|(_, query)| {
        query
            .split('&')
            .any(|pair| pair.split('=').next() == Some(name))
    })
}

/// The statements that set a connection's time limits: a statement (and a wait for a lock) may
/// take `limit`; a transaction left idle is ended by the server after twice that (its client is
/// gone or stuck: the locks it holds are released).
pub(crate) fn session_limits_sql(limit: Duration) -> String {
    let ms = limit.as_millis().max(1);
    format!(
        "SET statement_timeout = {ms}; SET lock_timeout = {ms}; \
         SET idle_in_transaction_session_timeout = {}",
        ms.saturating_mul(2)
    )
}

/// Set on the connections that decide groups of requests ([`crate::storage::Db::connect_for_groups`]):
/// their reads bind one array of identities or emails (`= ANY($1)`), and for such a statement
/// PostgreSQL's default (`plan_cache_mode = auto`) plans each execution anew for its values. The
/// plan is the same index scan whatever the values (an index of the email key, of the identity);
/// planning it took longer than running it (0.085 against 0.055 ms for two emails), and was most
/// of the read lane's database CPU under a sign-up load (BENCHMARKS.md). PostgreSQL still plans
/// again when the tables' statistics change.
pub(crate) const GENERIC_PLANS: &str = "SET plan_cache_mode = force_generic_plan";

/// A pooled connection lent within this time is lent again without a test; one idle for longer
/// may have died meanwhile (a database restart, a firewall or pooler that ends idle connections)
/// and is tested first. A busy pool lends its connections again well within it and pays no
/// round trip; r2d2 lends the connection returned last first, so a quiet service keeps one
/// connection in use and tests it only after a pause.
pub const IDLE_BEFORE_CHECK: Duration = Duration::from_secs(5);

/// When a pooled connection was last lent, and how many broken connections its pool had seen
/// then; in its r2d2 extensions.
#[derive(Clone, Copy)]
struct LastLent {
    at: Instant,
    broken_seen: u64,
}

/// The limits a pooled connection was last set to, in its r2d2 extensions (none: the pool's).
#[derive(Clone, Copy)]
struct SessionLimits(Option<Duration>);

/// The PostgreSQL pool: one r2d2 pool at a time, replaced when one of its connections stopped
/// answering ([`Pools::retire`]).
pub(crate) struct Pools {
    current: RwLock<Generation>,
    /// Connections of generations below this are dropped when they come back to their pool.
    retired_below: Arc<AtomicU64>,
    manager: Manager,
    options: PoolOptions,
}

struct Generation {
    number: u64,
    pool: r2d2::Pool<Manager>,
}

impl Pools {
    pub(crate) fn new(manager: Manager, options: &PoolOptions) -> Arc<Pools> {
        let retired_below = manager.retired_below.clone();
        let pool = build(&manager, options, 0);
        Arc::new(Pools {
            current: RwLock::new(Generation { number: 0, pool }),
            retired_below,
            manager,
            options: options.clone(),
        })
    }

    fn current(&self) -> (u64, r2d2::Pool<Manager>) {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        (current.number, current.pool.clone())
    }

    /// The pool in use now.
    pub(crate) fn pool(&self) -> r2d2::Pool<Manager> {
        self.current().1
    }

    /// A connection, within the current [`Deadline`] if there is one (the time left bounds the
    /// wait, and a connection that stops answering retires its pool).
    pub(crate) fn get(self: &Arc<Self>) -> Result<PooledConn, StorageError> {
        let (number, pool) = self.current();
        let deadline = current_deadline();
        let wait = match &deadline {
            Some(deadline) => {
                let left = deadline.time_left();
                if left.is_zero() {
                    return Err(StorageError::Unavailable(
                        "the request's time limit passed".into(),
                    ));
                }
                deadline.lent_from(Arc::downgrade(self), number);
                left.min(self.options.checkout_timeout)
            }
            None => self.options.checkout_timeout,
        };
        let mut conn = self.lend(&pool, wait)?;
        // The connection's limits follow the work's: an administrator's operation may take
        // longer than a request. Set only when they differ from what the connection has.
        let wanted = deadline
            .as_ref()
            .map(|d| d.0.limit)
            .or(self.manager.statement_timeout);
        let has = r2d2::PooledConnection::extensions(&conn)
            .get::<SessionLimits>()
            .map_or(self.manager.statement_timeout, |l| l.0);
        if wanted != has {
            use diesel::connection::SimpleConnection;
            let sql = match wanted {
                Some(limit) => session_limits_sql(limit),
                None => "SET statement_timeout = DEFAULT; SET lock_timeout = DEFAULT; \
                         SET idle_in_transaction_session_timeout = DEFAULT"
                    .to_string(),
            };
            conn.batch_execute(&sql)?;
            r2d2::PooledConnection::extensions_mut(&mut conn).insert(SessionLimits(wanted));
        }
        Ok(conn)
    }

    /// A connection of `pool` within `wait`, tested first (`SELECT 1`) only when it may have died
    /// unseen: it was not lent for [`IDLE_BEFORE_CHECK`] (or never was), or a broken connection
    /// came back to the pool since it was last lent (the database may have restarted: its
    /// connections all die at once). A connection that fails the test is broken, so r2d2 drops
    /// it when it comes back (`has_broken`), and the next one is taken.
    fn lend(&self, pool: &r2d2::Pool<Manager>, wait: Duration) -> Result<PooledConn, StorageError> {
        let started = Instant::now();
        // Each idle connection can be found dead once; then a new one is opened.
        for _ in 0..=self.options.max_size {
            let mut conn = pool
                .get_timeout(wait.saturating_sub(started.elapsed()))
                .map_err(|e| StorageError::Unavailable(e.to_string()))?;
            let now = Instant::now();
            let lent = LastLent {
                at: now,
                broken_seen: self.manager.broken_seen.load(Ordering::SeqCst),
            };
            let recent = r2d2::PooledConnection::extensions(&conn)
                .get::<LastLent>()
                .is_some_and(|last| {
                    last.broken_seen == lent.broken_seen
                        && now.duration_since(last.at) < IDLE_BEFORE_CHECK
                });
            if !recent {
                use diesel::connection::SimpleConnection;
                if let Err(error) = conn.batch_execute("SELECT 1") {
                    log::debug!("PostgreSQL: a pooled connection failed its test: {error}");
                    continue;
                }
            }
            r2d2::PooledConnection::extensions_mut(&mut conn).insert(lent);
            return Ok(conn);
        }
        Err(StorageError::Unavailable(
            "every pooled connection failed its test".into(),
        ))
    }

    /// Replaces the pool of generation `number` with a new one (once: a later call for the same
    /// generation does nothing). Its connections that come back are dropped; those that never
    /// come back (a thread waiting in libpq for an answer that will not come) no longer count
    /// against the pool the service uses.
    pub(crate) fn retire(&self, number: u64) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.number != number {
            return;
        }
        let next = number + 1;
        self.retired_below.store(next, Ordering::SeqCst);
        *current = Generation {
            number: next,
            pool: build(&self.manager, &self.options, next),
        };
        log::warn!(
            "PostgreSQL: a connection did not answer within its time limit; its pool is retired \
             and new connections are opened"
        );
    }
}

fn build(manager: &Manager, options: &PoolOptions, generation: u64) -> r2d2::Pool<Manager> {
    let manager = Manager {
        generation,
        ..manager.clone()
    };
    // min_idle 0 and build_unchecked: start without waiting for the database, and keep running
    // (answering "not ready") while it is away. r2d2 does not test connections when it lends
    // them (that costs a round trip on every request): `Pools::lend` tests only those that may
    // have died unseen.
    r2d2::Pool::builder()
        .max_size(options.max_size)
        .test_on_check_out(false)
        .min_idle(Some(0))
        .connection_timeout(options.checkout_timeout)
        .build_unchecked(manager)
}

/// Where a piece of work stands with respect to COMMIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Working; nothing committed yet, or committed and working on.
    Open,
    /// A COMMIT was sent and has not answered.
    Committing,
    /// The deadline passed first: the work was answered as failed and commits nothing more.
    Expired,
}

struct State {
    phase: Phase,
    /// Some transaction of the work committed.
    committed: bool,
    /// The work returned.
    finished: bool,
    /// The pools (and generations) that lent the work connections.
    lenders: Vec<(Weak<Pools>, u64)>,
}

/// The time limit of one piece of database work (a request's), shared by the thread that does
/// it and the one that answers for it. Cheap to clone.
#[derive(Clone)]
pub struct Deadline(Arc<DeadlineInner>);

struct DeadlineInner {
    /// The limit of each statement, and of the whole work.
    limit: Duration,
    /// When the work must be answered.
    at: Instant,
    state: Mutex<State>,
}

thread_local! {
    static CURRENT: RefCell<Option<Deadline>> = const { RefCell::new(None) };
}

fn current_deadline() -> Option<Deadline> {
    CURRENT.with(|c| c.borrow().clone())
}

impl Deadline {
    /// A deadline `limit` from now.
    pub fn start(limit: Duration) -> Deadline {
        Deadline(Arc::new(DeadlineInner {
            limit,
            at: Instant::now() + limit,
            state: Mutex::new(State {
                phase: Phase::Open,
                committed: false,
                finished: false,
                lenders: Vec::new(),
            }),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the work must be answered.
    pub fn at(&self) -> Instant {
        self.0.at
    }

    /// How long after [`Deadline::at`] a connection still busy with the work counts as one that
    /// will not answer: the server ends any statement within the limit (`statement_timeout`),
    /// so a statement begun before the deadline has answered one limit after it.
    pub fn abandon_after(&self) -> Duration {
        self.0.limit
    }

    fn time_left(&self) -> Duration {
        self.0.at.saturating_duration_since(Instant::now())
    }

    fn lent_from(&self, pools: Weak<Pools>, number: u64) {
        let mut state = self.state();
        if !state
            .lenders
            .iter()
            .any(|(p, n)| *n == number && p.ptr_eq(&pools))
        {
            state.lenders.push((pools, number));
        }
    }

    /// Runs `work` on this thread under the deadline: connections it takes are bounded by it,
    /// and its transactions cannot commit after it.
    pub fn run<R>(&self, work: impl FnOnce() -> R) -> R {
        /// Puts back the thread's previous deadline, and marks the work finished, however the
        /// work ends.
        struct Scope(Option<Deadline>, Deadline);
        impl Drop for Scope {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = previous);
                self.1.state().finished = true;
            }
        }
        let _scope = Scope(
            CURRENT.with(|c| c.replace(Some(self.clone()))),
            self.clone(),
        );
        work()
    }

    /// At the deadline: answers whether the work may be answered as failed now. True: it has
    /// committed nothing and will commit nothing. False: it committed, or a COMMIT is under way,
    /// and its own answer must be waited for.
    pub fn expire(&self) -> bool {
        let mut state = self.state();
        if state.finished {
            return false;
        }
        match state.phase {
            Phase::Open if !state.committed => {
                state.phase = Phase::Expired;
                true
            }
            Phase::Expired => true,
            _ => false,
        }
    }

    /// After [`Deadline::abandon_after`]: when the work is still running, its connections stopped
    /// answering; their pools are retired (see [`Pools::retire`]). Returns whether it was.
    pub fn abandon(&self) -> bool {
        let lenders = {
            let mut state = self.state();
            if state.finished {
                return false;
            }
            state.phase = Phase::Expired;
            std::mem::take(&mut state.lenders)
        };
        for (pools, number) in lenders {
            if let Some(pools) = pools.upgrade() {
                pools.retire(number);
            }
        }
        true
    }
}

/// Before a COMMIT on this thread: false when the work's deadline has passed (the transaction
/// must roll back: the request was or will be answered as failed). Without a deadline, true.
pub(crate) fn begin_commit() -> bool {
    let Some(deadline) = current_deadline() else {
        return true;
    };
    let mut state = deadline.state();
    match state.phase {
        Phase::Expired => false,
        _ if Instant::now() >= deadline.0.at && !state.committed => {
            state.phase = Phase::Expired;
            false
        }
        _ => {
            state.phase = Phase::Committing;
            true
        }
    }
}

/// After a COMMIT on this thread answered.
pub(crate) fn end_commit(committed: bool) {
    if let Some(deadline) = current_deadline() {
        let mut state = deadline.state();
        if state.phase == Phase::Committing {
            state.phase = Phase::Open;
        }
        state.committed |= committed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_connection_parameters_the_url_does_not_set() {
        assert_eq!(
            with_connection_params("postgres://h/db", Duration::from_millis(500)),
            "postgres://h/db?connect_timeout=2&keepalives=1&keepalives_idle=5\
             &keepalives_interval=2&keepalives_count=3&tcp_user_timeout=10000"
        );
        assert_eq!(
            with_connection_params(
                "postgres://h/db?sslmode=require&tcp_user_timeout=3000&connect_timeout=7",
                Duration::from_secs(3)
            ),
            "postgres://h/db?sslmode=require&tcp_user_timeout=3000&connect_timeout=7\
             &keepalives=1&keepalives_idle=5&keepalives_interval=2&keepalives_count=3"
        );
        // A name that only ends like a parameter is not it.
        assert!(
            with_connection_params("postgres://h/db?xkeepalives=0", Duration::ZERO)
                .contains("&keepalives=1&")
        );
    }

    #[test]
    fn session_limits_follow_the_limit() {
        assert_eq!(
            session_limits_sql(Duration::from_millis(1500)),
            "SET statement_timeout = 1500; SET lock_timeout = 1500; \
             SET idle_in_transaction_session_timeout = 3000"
        );
    }

    #[test]
    fn a_deadline_refuses_commits_after_it_and_waits_for_commits_before_it() {
        let deadline = Deadline::start(Duration::from_secs(60));
        deadline.run(|| {
            // Before the deadline a commit may start; the answer then waits for it.
            assert!(begin_commit());
            assert!(!deadline.expire());
            end_commit(true);
            assert!(!deadline.expire(), "it committed: its answer counts");
        });
        let deadline = Deadline::start(Duration::from_secs(60));
        deadline.run(|| {
            assert!(deadline.expire(), "nothing committed: answered as failed");
            assert!(!begin_commit(), "answered as failed: roll back");
        });

        let deadline = Deadline::start(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!deadline.run(begin_commit), "after the deadline: roll back");
        assert!(begin_commit(), "no deadline on this thread any more");
    }

    #[test]
    fn abandoning_finished_work_does_nothing() {
        let deadline = Deadline::start(Duration::from_secs(1));
        deadline.run(|| ());
        assert!(!deadline.abandon());
        assert!(!deadline.expire());
    }

    #[test]
    fn the_connections_that_decide_groups_keep_generic_plans_and_the_pool_s_keep_the_default() {
        use diesel::RunQueryDsl;
        let Some(test) = super::link_changes::test_database::create(
            "storage::postgres::tests::the_connections_that_decide_groups_keep_generic_plans",
        ) else {
            return;
        };
        #[derive(diesel::QueryableByName)]
        struct Mode {
            #[diesel(sql_type = diesel::sql_types::Text)]
            plan_cache_mode: String,
        }
        let mode = |conn: &mut crate::storage::DbConn| -> String {
            let mode: Mode = diesel::sql_query("SHOW plan_cache_mode")
                .get_result(conn)
                .unwrap();
            mode.plan_cache_mode
        };
        let mut groups = test.db.connect_for_groups().unwrap();
        assert_eq!(mode(&mut groups), "force_generic_plan");
        assert_eq!(mode(&mut test.db.get().unwrap()), "auto");
        assert_eq!(mode(&mut test.db.connect_unpooled().unwrap()), "auto");
    }
}
