//! Group commit of link writes on SQLite.
//!
//! SQLite has one writer at a time, and every write transaction pays for a turn at the process's
//! writer mutex, `BEGIN IMMEDIATE`, and a commit that appends every page it changed to the WAL.
//! When each link was its own transaction, the new-link rate was bound by those costs rather than
//! by the work of the link (BENCHMARKS.md).
//!
//! Here one thread writes every link of the process. It takes all the requests that are waiting
//! (at most [`MAX_BATCH`]), decides and writes each in a savepoint of its own inside one
//! transaction, commits, and only then answers each request. So:
//! - a link is never answered before it is committed; when the commit fails, every request of the
//!   group gets the error (and the caller fails closed);
//! - a request whose write fails is rolled back to its savepoint alone, and only it gets the error;
//! - a request whose caller stopped waiting (its time limit passed) before its group started is
//!   not written at all, so nothing is linked that was answered as unavailable;
//! - the requests of one group see each other's rows: two requests for one new email on a B2C
//!   channel create one customer, as they do in separate transactions.
//!
//! Nobody waits to fill a group: the thread starts the next one as soon as the previous one is
//! committed, with whatever arrived meanwhile. Under light load a group is one request.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use diesel::Connection;
use tokio::sync::oneshot;

use super::{Answer, Decider, LinkRequest};
use crate::storage::{self, Db, DbConn, StorageError};

/// Most requests one transaction takes.
const MAX_BATCH: usize = 256;

type Reply = Result<Answer, StorageError>;

struct Job {
    request: LinkRequest,
    reply: oneshot::Sender<Reply>,
}

/// The answer to a link handed to the group-commit thread, once its transaction committed.
pub struct PendingLink(oneshot::Receiver<Reply>);

impl PendingLink {
    /// An answer that the database is unavailable (nothing will write the link).
    pub(super) fn unavailable() -> PendingLink {
        PendingLink(oneshot::channel().1)
    }

    /// Waits for the answer. A thread that stopped (it never does, short of a panic in the
    /// database driver) is reported as the database being unavailable.
    pub async fn answer(self) -> Reply {
        self.0.await.unwrap_or_else(|_| {
            Err(StorageError::Unavailable(
                "the link writer stopped before answering".into(),
            ))
        })
    }
}

/// The sending side of the group-commit thread. Dropping it lets the thread finish the requests
/// it has and stop; the drop waits for that.
pub(super) struct LinkWriter {
    sender: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl LinkWriter {
    /// Starts the thread, which opens a connection of its own to `db`'s database. `None` (and an
    /// error in the log) when the thread cannot be started; links then take the blocking path.
    pub(super) fn start(decider: Arc<Decider>, db: Db) -> Option<LinkWriter> {
        let (sender, jobs) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("autolink-links".into())
            .spawn(move || run(&decider, &db, jobs));
        match thread {
            Ok(thread) => Some(LinkWriter {
                sender: Some(sender),
                thread: Some(thread),
            }),
            Err(error) => {
                log::error!("could not start the link writer thread ({error}); links are written one by one");
                None
            }
        }
    }

    /// Queues a request. If the thread is gone, the answer is that the database is unavailable.
    pub(super) fn submit(&self, request: LinkRequest) -> PendingLink {
        let (reply, answer) = oneshot::channel();
        if let Some(sender) = &self.sender {
            // On failure the job, and with it `reply`, is dropped: the receiver reports it.
            let _ = sender.send(Job { request, reply });
        }
        PendingLink(answer)
    }
}

impl Drop for LinkWriter {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(decider: &Decider, db: &Db, jobs: Receiver<Job>) {
    let mut conn: Option<DbConn> = None;
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Ok(job) = jobs.recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Callers that stopped waiting were answered "unavailable": write nothing for them.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let written = catch_unwind(AssertUnwindSafe(|| write(decider, db, &mut conn, &batch)));
        match written {
            Ok(Ok(replies)) => {
                for (job, reply) in batch.drain(..).zip(replies) {
                    if let Ok(answer) = &reply {
                        decider.count(&job.request, answer);
                    }
                    let _ = job.reply.send(reply);
                }
            }
            Ok(Err(error)) => {
                // Nothing of the group was committed. A new connection next time.
                conn = None;
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(StorageError::Unavailable(format!(
                        "the group of links was not written: {error}"
                    ))));
                }
            }
            Err(_) => {
                // Dropping the senders answers every caller "unavailable".
                log::error!("the link writer failed on a group of {} links", batch.len());
                conn = None;
                batch.clear();
            }
        }
    }
}

/// Writes one group in one transaction; each request in a savepoint. The outer error means that
/// nothing was committed.
fn write(
    decider: &Decider,
    db: &Db,
    conn: &mut Option<DbConn>,
    batch: &[Job],
) -> Result<Vec<Reply>, StorageError> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(db.connect_unpooled()?),
    };
    storage::write_transaction(conn, |conn| {
        let replies = batch
            .iter()
            .map(|job| {
                // A nested diesel transaction is a savepoint.
                conn.transaction(|conn| {
                    let (answer, event) = decider.link_in(conn, &job.request)?;
                    storage::audit::insert(conn, &[event])?;
                    Ok(answer)
                })
            })
            .collect();
        Ok(replies)
    })
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::RunQueryDsl;

    use super::*;
    use crate::domain::verification::VerificationPolicy;
    use crate::domain::{Channel, ChannelDirectory, CustomerType, Identity, SignInEvidence};
    use crate::linking::{LinkingSettings, Outcome};
    use crate::metrics::Metrics;

    fn setup() -> (tempfile::TempDir, Db, Arc<Decider>) {
        let (dir, db) = crate::storage::temp_sqlite();
        let channels = ChannelDirectory::new(
            vec![Channel {
                id: "web".into(),
                legal_entity: "USRT".into(),
                customer_type: CustomerType::B2C,
                client_ids: vec!["app".into()],
                linking_enabled: None,
            }],
            None,
        )
        .unwrap();
        let metrics = Arc::new(Metrics::new(&channels).unwrap());
        let settings = LinkingSettings {
            linking_enabled: true,
            allow_link_after_email_change: false,
            verification: VerificationPolicy {
                local_accounts_verify_email: true,
                email_verifying_idps: Vec::new(),
                treat_missing_identities_as_local: false,
            },
            account_number_prefix: "AL".into(),
        };
        let decider = Arc::new(Decider {
            channels,
            settings,
            metrics,
        });
        (dir, db, decider)
    }

    fn request(subject: &str, email: &str) -> LinkRequest {
        LinkRequest {
            request_id: format!("req-{subject}"),
            source: "api-connector",
            step: Some("PreTokenIssuance"),
            client_id: Some("app".into()),
            email: Some(email.into()),
            evidence: SignInEvidence::Local,
            email_verified: None,
            identity: Some(Identity {
                issuer: "tenant".into(),
                subject: subject.into(),
            }),
            given_name: None,
            surname: None,
        }
    }

    fn job(request: LinkRequest) -> (Job, oneshot::Receiver<Reply>) {
        let (reply, answer) = oneshot::channel();
        (Job { request, reply }, answer)
    }

    fn count(db: &Db, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = db.get().unwrap();
        let row: Count = diesel::sql_query(sql).get_result(&mut *conn).unwrap();
        row.n
    }

    #[test]
    fn a_group_sees_its_own_rows_and_a_failed_request_is_rolled_back_alone() {
        let (_dir, db, decider) = setup();
        // The database refuses one link, as a failing write would.
        db.get()
            .unwrap()
            .batch_execute(
                "CREATE TRIGGER refuse_boom BEFORE INSERT ON identity_links \
                 WHEN NEW.subject = 'boom' BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .unwrap();
        let (jobs, _answers): (Vec<Job>, Vec<_>) = [
            request("s1", "Ann@Example.com"),
            request("s2", "ann@example.com"),
            request("boom", "ann@example.com"),
            request("s4", "bob@example.com"),
        ]
        .into_iter()
        .map(job)
        .unzip();
        let mut conn = None;
        let replies = write(&decider, &db, &mut conn, &jobs).unwrap();

        let answers: Vec<_> = replies.iter().map(|r| r.as_ref().ok().cloned()).collect();
        let first = answers[0].clone().unwrap().unwrap();
        let second = answers[1].clone().unwrap().unwrap();
        let fourth = answers[3].clone().unwrap().unwrap();
        assert_eq!(first.outcome, Outcome::Created);
        // The second request saw the customer the first one created, in the same transaction.
        assert_eq!(second.outcome, Outcome::Linked);
        assert_eq!(second.account_number, first.account_number);
        assert!(
            matches!(replies[2], Err(StorageError::Query(_))),
            "{:?}",
            replies[2]
        );
        assert_eq!(fourth.outcome, Outcome::Created);
        assert_ne!(fourth.account_number, first.account_number);

        assert_eq!(count(&db, "SELECT count(*) AS n FROM customers"), 2);
        assert_eq!(
            count(&db, "SELECT count(*) AS n FROM identity_links WHERE active"),
            3
        );
        assert_eq!(
            count(
                &db,
                "SELECT count(*) AS n FROM identity_links WHERE subject = 'boom'"
            ),
            0
        );
        // One event per written request, none for the one rolled back.
        assert_eq!(count(&db, "SELECT count(*) AS n FROM audit_events"), 3);
        assert_eq!(
            count(
                &db,
                "SELECT count(*) AS n FROM audit_events WHERE subject = 'boom'"
            ),
            0
        );
    }

    #[tokio::test]
    async fn a_request_whose_caller_gave_up_is_not_written() {
        let (_dir, db, decider) = setup();
        let writer = LinkWriter::start(decider, db.clone()).unwrap();
        let (gone, answer) = job(request("gone", "carol@example.com"));
        drop(answer);
        writer.sender.as_ref().unwrap().send(gone).unwrap();
        let kept = writer.submit(request("kept", "carol@example.com"));
        let answer = kept.answer().await.unwrap().unwrap();
        // Sent after the abandoned request, so in its group or a later one.
        assert_eq!(answer.outcome, Outcome::Created);
        drop(writer);
        assert_eq!(
            count(
                &db,
                "SELECT count(*) AS n FROM identity_links WHERE subject = 'gone'"
            ),
            0
        );
        assert_eq!(
            count(
                &db,
                "SELECT count(*) AS n FROM identity_links WHERE subject = 'kept'"
            ),
            1
        );
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_new_email_create_one_customer() {
        let (_dir, db, decider) = setup();
        let writer = Arc::new(LinkWriter::start(decider, db.clone()).unwrap());
        let pending: Vec<PendingLink> = (0..64)
            .map(|i| writer.submit(request(&format!("s{i}"), "dana@example.com")))
            .collect();
        let mut numbers = std::collections::BTreeSet::new();
        let mut created = 0;
        for pending in pending {
            let answer = pending.answer().await.unwrap().unwrap();
            created += usize::from(answer.outcome == Outcome::Created);
            numbers.insert(answer.account_number.unwrap());
        }
        assert_eq!(created, 1);
        assert_eq!(numbers.len(), 1);
        assert_eq!(count(&db, "SELECT count(*) AS n FROM customers"), 1);
        assert_eq!(
            count(&db, "SELECT count(*) AS n FROM identity_links WHERE active"),
            64
        );
    }
}
