//! Writing one group of links: one transaction, a savepoint per pass, multi-row inserts that
//! skip what another writer wrote first (see the parent module).

use std::collections::HashSet;
use std::time::Instant;

use diesel::Connection;

use super::{Job, Reply, Shared};
use crate::linking::plan::{self, Kind, Plan, Target};
use crate::linking::{Answer, Decider, LinkRequest};
use crate::storage::audit::{self, AuditEvent};
use crate::storage::customers::{self, NewCustomer};
use crate::storage::links::{self, NewLink};
use crate::storage::{self, DbConn, StorageError};

pub(super) enum Written {
    /// Committed (or failed) and answered; these lost a race and go to the next group.
    Done(Vec<Job>),
    /// Rolled back because callers gave up; these are to be written again.
    Again(Vec<Job>),
    /// Not written; every request was answered with the error.
    Failed,
}

/// A request's answer, by its index in the group, with the event to hand to the audit writer
/// after the commit (`None`: the event was written with the decision's write).
type Decided = (usize, Answer, Option<AuditEvent>);

/// Why a pass over the group's requests was rolled back.
enum PassError {
    /// These requests (indices into the group) lost a race; the others may be written.
    Lost(Vec<usize>),
    Storage(StorageError),
}

impl From<diesel::result::Error> for PassError {
    fn from(error: diesel::result::Error) -> Self {
        PassError::Storage(error.into())
    }
}

impl From<StorageError> for PassError {
    fn from(error: StorageError) -> Self {
        PassError::Storage(error)
    }
}

pub(super) fn write_links(shared: &Shared, conn: &mut DbConn, group: Vec<Job>) -> Written {
    let decider = &*shared.decider;
    let started = Instant::now();
    let mut lost: Vec<usize> = Vec::new();
    let mut failed: Vec<(usize, StorageError)> = Vec::new();
    let mut answers: Vec<Decided> = Vec::new();
    let mut rolled_back_for_callers = false;
    let outcome = storage::write_transaction(conn, |conn| {
        let mut live: Vec<usize> = (0..group.len()).collect();
        while !live.is_empty() {
            match conn.transaction(|conn| pass(decider, conn, &group, &live)) {
                Ok(done) => {
                    answers.extend(done);
                    break;
                }
                Err(PassError::Lost(lost_now)) => {
                    live.retain(|i| !lost_now.contains(i));
                    lost.extend(lost_now);
                }
                Err(PassError::Storage(error)) => {
                    // An error that took the time limit (a lock, a statement time-out) or
                    // broke the connection fails the group; any other is written again one
                    // request at a time, so that only the request that fails gets it.
                    let slow = started.elapsed() > shared.limit / 2;
                    if live.len() == 1 || slow || is_connection_error(&error) {
                        return Err(error);
                    }
                    for i in std::mem::take(&mut live) {
                        match conn.transaction(|conn| pass(decider, conn, &group, &[i])) {
                            Ok(done) => answers.extend(done),
                            Err(PassError::Lost(l)) => lost.extend(l),
                            Err(PassError::Storage(error)) => failed.push((i, error)),
                        }
                    }
                }
            }
        }
        // The last moment a caller can give up and be sure nothing is written.
        let gave_up: Vec<usize> = answers
            .iter()
            .map(|(i, _, _)| *i)
            .filter(|&i| !group[i].ticket.begin_commit())
            .collect();
        if !gave_up.is_empty() {
            rolled_back_for_callers = true;
            return Err(StorageError::Query(
                diesel::result::Error::RollbackTransaction,
            ));
        }
        Ok(())
    });
    match outcome {
        Ok(()) => {
            let mut replies: Vec<Option<Reply>> = (0..group.len()).map(|_| None).collect();
            for (i, answer, event) in answers {
                if let Some(event) = event {
                    shared.audit.record(event);
                }
                decider.count(&group[i].request, &answer);
                replies[i] = Some(Ok(answer));
            }
            for (i, error) in failed {
                replies[i] = Some(Err(error));
            }
            let lost: HashSet<usize> = lost.into_iter().collect();
            let mut retry = Vec::new();
            for (i, (job, reply)) in group.into_iter().zip(replies).enumerate() {
                match reply {
                    Some(reply) => {
                        let _ = job.reply.send(reply);
                    }
                    None if lost.contains(&i) => retry.push(job),
                    None => {
                        let _ = job.reply.send(Err(StorageError::Unavailable(
                            "the request was not written".into(),
                        )));
                    }
                }
            }
            Written::Done(retry)
        }
        Err(_) if rolled_back_for_callers => {
            for job in &group {
                job.ticket.reopen();
            }
            Written::Again(group.into_iter().filter(|job| !job.gone()).collect())
        }
        Err(error) => {
            log::warn!("a group of {} links was not written: {error}", group.len());
            let message = error.to_string();
            for job in group {
                let _ = job
                    .reply
                    .send(Err(StorageError::Unavailable(message.clone())));
            }
            Written::Failed
        }
    }
}

/// Decides the requests `live` (indices into `group`) and writes their customers, links and
/// audit events. Runs in a savepoint: an error rolls all of it back.
fn pass(
    decider: &Decider,
    conn: &mut DbConn,
    group: &[Job],
    live: &[usize],
) -> Result<Vec<Decided>, PassError> {
    let requests: Vec<(&LinkRequest, Kind)> = live
        .iter()
        .map(|&i| (&group[i].request, Kind::Link))
        .collect();
    let Plan { planned, customers } = plan::plan(decider, conn, &requests)?;
    let now = storage::now();

    // The customers to create; a taken creation key means another writer created the
    // customer: its requests are decided again (they will link to it).
    let mut ids: Vec<Option<i64>> = vec![None; customers.len()];
    if !customers.is_empty() {
        let rows: Vec<NewCustomer<'_>> = customers
            .iter()
            .map(|c| NewCustomer {
                account_number: &c.account_number,
                legal_entity: &c.legal_entity,
                party_type: "person",
                is_b2b: false,
                primary_email: Some(&c.email),
                email_key: Some(&c.email_key),
                first_name: group[live[c.request]].request.given_name.as_deref(),
                last_name: group[live[c.request]].request.surname.as_deref(),
                origin: "autolink",
                creation_key: c.creation_key.as_deref(),
                created_at: now,
                updated_at: now,
            })
            .collect();
        let inserted = customers::insert_skipping_taken(conn, &rows)?;
        for (slot, customer) in customers.iter().enumerate() {
            ids[slot] = inserted
                .iter()
                .find(|(_, number)| *number == customer.account_number)
                .map(|(id, _)| *id);
        }
    }
    let lost: Vec<usize> = planned
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            matches!(p.link.as_ref().map(|l| l.target), Some(Target::New(slot)) if ids[slot].is_none())
        })
        .map(|(n, _)| live[n])
        .collect();
    if !lost.is_empty() {
        return Err(PassError::Lost(lost));
    }

    // The links; one that is not inserted means another writer linked the identity first.
    let mut rows: Vec<(usize, NewLink<'_>)> = Vec::new();
    for (n, p) in planned.iter().enumerate() {
        let Some(link) = &p.link else { continue };
        let request = &group[live[n]].request;
        let Some(identity) = &request.identity else {
            continue;
        };
        let customer_id = match link.target {
            Target::Existing(id) => id,
            Target::New(slot) => ids[slot].unwrap_or_default(),
        };
        rows.push((
            n,
            NewLink {
                issuer: &identity.issuer,
                subject: &identity.subject,
                customer_id,
                sign_in_type: request.evidence.sign_in_type(),
                identity_provider: request.evidence.provider(),
                email_key: &link.email_key,
                linked_by: "auto",
                created_at: now,
                updated_at: now,
            },
        ));
    }
    if !rows.is_empty() {
        let new: Vec<NewLink<'_>> = rows.iter().map(|(_, row)| row.clone()).collect();
        let inserted: HashSet<(String, String)> = links::insert_skipping_taken(conn, &new)?
            .into_iter()
            .collect();
        let lost: Vec<usize> = rows
            .iter()
            .filter(|(_, row)| {
                !inserted.contains(&(row.issuer.to_string(), row.subject.to_string()))
            })
            .map(|(n, _)| live[*n])
            .collect();
        if !lost.is_empty() {
            return Err(PassError::Lost(lost));
        }
    }

    // The event of a decision that wrote commits with its write; the others (already linked,
    // refused) go to the audit writer once the group is answered, as every read-only
    // decision's does: a group that wrote no link commits nothing (no sync).
    let mut written = Vec::new();
    let mut done = Vec::with_capacity(planned.len());
    for (n, p) in planned.into_iter().enumerate() {
        let event = decider.event(&group[live[n]].request, &p.answer, p.channel);
        if p.link.is_some() {
            written.push(event);
            done.push((live[n], p.answer, None));
        } else {
            done.push((live[n], p.answer, Some(event)));
        }
    }
    if !written.is_empty() {
        audit::insert(conn, &written)?;
    }
    Ok(done)
}

/// Whether an error means that the connection is gone or unusable.
pub(super) fn is_connection_error(error: &StorageError) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    matches!(
        error,
        StorageError::Unavailable(_)
            | StorageError::Query(Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _))
            | StorageError::Query(Error::BrokenTransactionManager)
    )
}
