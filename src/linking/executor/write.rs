//! Writing one group of links: one transaction per pass (savepoints only when requests are
//! written one at a time after a failed pass), multi-row inserts that skip what another writer
//! wrote first (see the parent module).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use diesel::Connection;

use super::{Job, Reply, Shared};
use crate::linking::plan::{self, Kind, Plan, Target};
use crate::linking::{Answer, Decider, LinkRequest, Outcome};
use crate::storage::audit::{self, AuditEvent};
use crate::storage::customers::{self, NewCustomer};
use crate::storage::links::{self, NewLink};
use crate::storage::{self, DbConn, StorageError};
use crate::webhooks::{Event, LinkFacts};

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

/// Why an attempt at writing the group was rolled back.
enum Failure {
    /// These requests (indices into the group) lost a race; the others may be written.
    Lost(Vec<usize>),
    /// A pass over several requests failed: they may be written one at a time.
    Pass(StorageError),
    /// Anything else (beginning or committing the transaction included).
    Storage(StorageError),
    /// A caller gave up before the commit.
    GaveUp,
}

impl From<diesel::result::Error> for Failure {
    fn from(error: diesel::result::Error) -> Self {
        Failure::Storage(error.into())
    }
}

impl From<StorageError> for Failure {
    fn from(error: StorageError) -> Self {
        Failure::Storage(error)
    }
}

/// What one committed attempt wrote: the answers, and, when written one request at a time,
/// the requests that lost a race and those whose write failed.
#[derive(Default)]
struct Attempt {
    answers: Vec<Decided>,
    lost: Vec<usize>,
    failed: Vec<(usize, StorageError)>,
}

pub(super) fn write_links(shared: &Shared, conn: &mut DbConn, group: Vec<Job>) -> Written {
    let decider = &*shared.decider;
    let started = Instant::now();
    let mut lost: Vec<usize> = Vec::new();
    let mut live: Vec<usize> = (0..group.len()).collect();
    // After a pass fails with an error other than a lost race, each request is written in a
    // savepoint of its own, so that only the request that fails gets the error.
    let mut one_by_one = false;
    // Each attempt is a transaction of its own: the common case, one pass that commits, pays for
    // no savepoint (two round trips on PostgreSQL). A pass that fails rolls the transaction back.
    // `Err(None)`: a caller gave up, and the group is to be written again without it.
    let outcome: Result<Attempt, Option<StorageError>> = loop {
        if live.is_empty() {
            break Ok(Attempt::default());
        }
        let attempt = storage::write_transaction(conn, |conn| {
            let mut attempt = Attempt::default();
            if one_by_one {
                for &i in &live {
                    match conn.transaction(|conn| pass(decider, conn, &group, &[i])) {
                        Ok(done) => attempt.answers.extend(done),
                        Err(Failure::Lost(l)) => attempt.lost.extend(l),
                        Err(Failure::Pass(error) | Failure::Storage(error)) => {
                            attempt.failed.push((i, error))
                        }
                        Err(Failure::GaveUp) => return Err(Failure::GaveUp),
                    }
                }
            } else {
                attempt.answers = pass(decider, conn, &group, &live).map_err(|f| match f {
                    Failure::Storage(error) => Failure::Pass(error),
                    other => other,
                })?;
            }
            // The last moment a caller can give up and be sure nothing is written.
            let all_there = attempt
                .answers
                .iter()
                .all(|(i, _, _)| group[*i].ticket.begin_commit());
            if !all_there {
                return Err(Failure::GaveUp);
            }
            Ok(attempt)
        });
        match attempt {
            Err(Failure::Lost(lost_now)) => {
                live.retain(|i| !lost_now.contains(i));
                lost.extend(lost_now);
            }
            // An error that took the time limit (a lock, a statement time-out) or broke the
            // connection fails the group; any other is written again one request at a time.
            Err(Failure::Pass(error))
                if live.len() > 1
                    && started.elapsed() <= shared.limit / 2
                    && !is_connection_error(&error) =>
            {
                one_by_one = true;
            }
            Ok(attempt) => break Ok(attempt),
            Err(Failure::GaveUp) => break Err(None),
            Err(Failure::Pass(error) | Failure::Storage(error)) => break Err(Some(error)),
        }
    };
    match outcome {
        Ok(Attempt {
            answers,
            lost: lost_now,
            failed,
        }) => {
            lost.extend(lost_now);
            let linked = answers.iter().any(|(_, answer, _)| {
                matches!(answer, Ok(r) if matches!(r.outcome, Outcome::Linked | Outcome::Created))
            });
            if linked {
                decider.outbox.committed();
            }
            let mut replies: Vec<Option<Reply>> = (0..group.len()).map(|_| None).collect();
            for (i, answer, event) in answers {
                if let Some(event) = event {
                    decider.record(&shared.audit, event);
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
        Err(None) => {
            for job in &group {
                job.ticket.reopen();
            }
            Written::Again(group.into_iter().filter(|job| !job.gone()).collect())
        }
        Err(Some(error)) => {
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
/// audit events. Runs in a transaction or a savepoint: an error rolls all of it back.
fn pass(
    decider: &Decider,
    conn: &mut DbConn,
    group: &[Job],
    live: &[usize],
) -> Result<Vec<Decided>, Failure> {
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
        let inserted: HashMap<String, i64> = customers::insert_skipping_taken(conn, &rows)?
            .into_iter()
            .map(|(id, number)| (number, id))
            .collect();
        for (slot, customer) in customers.iter().enumerate() {
            ids[slot] = inserted.get(&customer.account_number).copied();
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
        return Err(Failure::Lost(lost));
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
    // The id of each request's new link, by its index in `planned`.
    let mut link_ids: HashMap<usize, i64> = HashMap::with_capacity(rows.len());
    if !rows.is_empty() {
        let new: Vec<NewLink<'_>> = rows.iter().map(|(_, row)| row.clone()).collect();
        let inserted: HashMap<(String, String), i64> = links::insert_skipping_taken(conn, &new)?
            .into_iter()
            .map(|(id, issuer, subject)| ((issuer, subject), id))
            .collect();
        let mut lost = Vec::new();
        for (n, row) in &rows {
            match inserted.get(&(row.issuer.to_string(), row.subject.to_string())) {
                Some(id) => {
                    link_ids.insert(*n, *id);
                }
                None => lost.push(live[*n]),
            }
        }
        if !lost.is_empty() {
            return Err(Failure::Lost(lost));
        }
    }

    // The event of a decision that wrote commits with its write; the others (already linked,
    // refused) go to the audit writer once the group is answered, as every read-only
    // decision's does: a group that wrote no link commits nothing (no sync).
    let mut written = Vec::new();
    let mut told = Vec::new();
    let mut done = Vec::with_capacity(planned.len());
    for (n, p) in planned.into_iter().enumerate() {
        let request = &group[live[n]].request;
        let event = decider.event(request, &p.answer, p.channel);
        if let (Some(link), Some(&link_id)) = (&p.link, link_ids.get(&n)) {
            told.extend(events_of(request, n, &p, link, link_id, &customers));
            written.push(event);
            done.push((live[n], p.answer, None));
        } else {
            done.push((live[n], p.answer, Some(event)));
        }
    }
    if !written.is_empty() {
        audit::insert(conn, &written)?;
    }
    // Last: on PostgreSQL the event sequence is held from here to the commit.
    decider.outbox.write(conn, told)?;
    Ok(done)
}

/// What the store is told of a decision that linked: `identity.linked`, after `customer.created`
/// when the decision created the customer (request `n` of the plan; a later request of the
/// group that links to that customer tells only of its link).
fn events_of(
    request: &LinkRequest,
    n: usize,
    planned: &plan::Planned<'_>,
    link: &plan::LinkWrite,
    link_id: i64,
    customers: &[plan::CustomerWrite],
) -> Vec<Event> {
    let (Ok(resolution), Some(identity), Some(channel)) =
        (&planned.answer, &request.identity, planned.channel)
    else {
        return Vec::new();
    };
    let Some(account_number) = resolution.account_number.as_deref() else {
        return Vec::new();
    };
    let mut events = Vec::with_capacity(2);
    let created = match link.target {
        Target::New(slot) => customers.get(slot).filter(|c| c.request == n),
        Target::Existing(_) => None,
    };
    let email = created
        .map(|c| c.email.as_str())
        .or(request.email.as_deref().map(str::trim));
    if let Some(customer) = created {
        events.push(Event::customer_created(
            &customer.account_number,
            &customer.legal_entity,
            "autolink",
            Some(&channel.id),
            email,
        ));
    }
    events.push(Event::identity_linked(
        &LinkFacts {
            account_number,
            issuer: &identity.issuer,
            subject: &identity.subject,
            link_id,
        },
        &channel.legal_entity,
        &channel.id,
        resolution.outcome.as_str(),
        email,
    ));
    events
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
