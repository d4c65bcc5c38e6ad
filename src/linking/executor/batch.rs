//! Links for bulk callers (the backfill): a batch written on the caller's thread and connection by
//! the same code as the executor's groups ([`super::write`]), without the queue, the group size
//! and the time limit of a B2C request.

use tokio::sync::oneshot;

use super::{execute, Executor, Job, Reply, Ticket};
use crate::linking::plan::Kind;
use crate::linking::LinkRequest;
use crate::storage::{DbConn, StorageError};

impl Executor {
    /// Decides and writes `requests` in one transaction on `conn` (opened when `None`; dropped
    /// when it failed); requests that lose a race with another writer are decided again, as the
    /// executor's are. Answers in request order.
    pub(crate) fn link_batch(
        &self,
        conn: &mut Option<DbConn>,
        requests: Vec<LinkRequest>,
    ) -> Vec<Reply> {
        let mut answers = Vec::with_capacity(requests.len());
        let mut jobs = Vec::with_capacity(requests.len());
        for request in requests {
            let (reply, answer) = oneshot::channel();
            jobs.push(Job {
                request,
                kind: Kind::Link,
                ticket: Ticket::new(),
                reply,
                attempts: 0,
            });
            answers.push(answer);
        }
        while !jobs.is_empty() {
            jobs = execute(&self.shared, conn, jobs);
        }
        answers
            .into_iter()
            .map(|mut answer| {
                answer.try_recv().unwrap_or_else(|_| {
                    Err(StorageError::Unavailable(
                        "the request was not answered".into(),
                    ))
                })
            })
            .collect()
    }
}
