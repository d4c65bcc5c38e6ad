//! Deciding many requests at once.
//!
//! The facts of every request of a group are read in two set-based queries (the active links
//! of all identities; the candidates of all emails, each with whether its identities were linked
//! under another email), then [`rules::decide`], the only place a rule is written, is applied
//! to each request in order, as if the requests had come one after another: a request sees the
//! links and customers that the earlier requests of its group would write. Nothing is written
//! here; [`Plan`] says what to write ([`super::executor`]).

use std::collections::HashMap;

use super::{Answer, Decider, LinkRequest, Outcome, Prepared, Resolution};
use crate::domain::rules::{self, Candidate, Decision, ExistingLink, Facts};
use crate::domain::{Channel, CustomerType, EmailAddress, Refusal};
use crate::storage::customers::{self, CandidateRow};
use crate::storage::links;
use crate::storage::{DbConn, StorageError};

/// What a request asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Link the identity (or resolve its link).
    Link,
    /// The sign-up checks before the account exists: what would happen, without writing.
    Check,
    /// An administrator's preview on a channel named by id: as a check, assuming a verified
    /// email and a new identity.
    Preview(String),
}

/// Where a planned link goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// An existing customer, by database id.
    Existing(i64),
    /// The customer at this index of [`Plan::customers`].
    New(usize),
}

/// A link to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LinkWrite {
    /// The customer.
    pub target: Target,
    /// The email key the identity is linked under.
    pub email_key: String,
}

/// A customer to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CustomerWrite {
    /// The new account number.
    pub account_number: String,
    /// The channel's legal entity.
    pub legal_entity: String,
    /// The verified email as given, and its key.
    pub email: String,
    pub email_key: String,
    /// The race guard ([`customers::creation_key`]), while linking is on.
    pub creation_key: Option<String>,
    /// The request that creates it.
    pub request: usize,
}

/// The decision on one request.
#[derive(Debug)]
pub(crate) struct Planned<'d> {
    /// The answer the request gets once the plan is written.
    pub answer: Answer,
    /// Its channel, when resolved.
    pub channel: Option<&'d Channel>,
    /// The link to write, for `Linked` and `Created`.
    pub link: Option<LinkWrite>,
}

/// What a group of requests decided, in request order, and the customers to create.
#[derive(Debug, Default)]
pub(crate) struct Plan<'d> {
    pub planned: Vec<Planned<'d>>,
    pub customers: Vec<CustomerWrite>,
}

/// A request with what is known of it before the reads.
struct Pending<'d> {
    channel: Option<&'d Channel>,
    /// Prepared (verified or not), or the refusal of its preparation.
    prepared: Result<Prepared<'d>, Refusal>,
}

/// Decides every request of `requests`, with the reads on `conn`.
pub(crate) fn plan<'d>(
    decider: &'d Decider,
    conn: &mut DbConn,
    requests: &[(&LinkRequest, Kind)],
) -> Result<Plan<'d>, StorageError> {
    plan_over(decider, conn, requests, None)
}

/// [`plan`], over the database as it would be after the writes of earlier groups that were
/// planned but not written ([`Overlay`], a dry run of many groups).
pub(crate) fn plan_over<'d>(
    decider: &'d Decider,
    conn: &mut DbConn,
    requests: &[(&LinkRequest, Kind)],
    overlay: Option<&Overlay>,
) -> Result<Plan<'d>, StorageError> {
    let pending: Vec<Pending<'d>> = requests
        .iter()
        .map(|(request, kind)| prepare(decider, request, kind))
        .collect();

    // 1. The active links of the identities that ask to be linked, one query per issuer.
    let mut subjects: HashMap<&str, Vec<&str>> = HashMap::new();
    for (request, kind) in requests {
        if let (Kind::Link, Some(identity)) = (kind, &request.identity) {
            subjects
                .entry(identity.issuer.as_str())
                .or_default()
                .push(identity.subject.as_str());
        }
    }
    let mut existing: HashMap<(String, String), ExistingLink> = HashMap::new();
    for (issuer, subjects) in &subjects {
        for (subject, link) in links::find_active_many(conn, issuer, subjects)? {
            existing.insert((issuer.to_string(), subject), link);
        }
    }
    if let Some(overlay) = overlay {
        overlay.add_links(&subjects, &mut existing);
    }

    // 2. The candidates of every email that the rules may need, in one query.
    let needs_candidates = |i: usize| -> Option<&Prepared<'d>> {
        let prepared = pending[i].prepared.as_ref().ok()?;
        let (request, kind) = &requests[i];
        let linked = *kind == Kind::Link
            && request.identity.as_ref().is_some_and(|identity| {
                existing.contains_key(&(identity.issuer.clone(), identity.subject.clone()))
            });
        let wanted = !linked
            && prepared.verified
            && prepared
                .channel
                .linking_enabled(decider.settings.linking_enabled);
        wanted.then_some(prepared)
    };
    let mut legal_entities: Vec<&str> = Vec::new();
    let mut email_keys: Vec<&str> = Vec::new();
    for i in 0..requests.len() {
        if let Some(prepared) = needs_candidates(i) {
            legal_entities.push(&prepared.channel.legal_entity);
            email_keys.push(prepared.email.key());
        }
    }
    legal_entities.sort_unstable();
    legal_entities.dedup();
    email_keys.sort_unstable();
    email_keys.dedup();
    let mut rows = if email_keys.is_empty() {
        Vec::new()
    } else {
        customers::find_candidate_rows(conn, &legal_entities, &email_keys)?
    };
    if let Some(overlay) = overlay {
        overlay.add_candidates(&legal_entities, &email_keys, &mut rows);
    }
    // The rows of each (legal entity, email key), in the order read: a group of thousands of
    // requests (the backfill's) must not scan every row for each request.
    let mut by_email: HashMap<(&str, &str), Vec<&CandidateRow>> = HashMap::new();
    for row in &rows {
        by_email
            .entry((row.legal_entity.as_str(), row.email_key.as_str()))
            .or_default()
            .push(row);
    }
    // 3. The rules, request by request, over the facts and what the earlier requests do.
    let mut group = Group::default();
    let mut plan = Plan::default();
    for (i, (pending, (request, kind))) in pending.into_iter().zip(requests).enumerate() {
        let planned = decide_one(
            decider,
            i,
            request,
            kind,
            pending,
            &existing,
            &by_email,
            &mut group,
            &mut plan.customers,
        );
        plan.planned.push(planned);
    }
    Ok(plan)
}

/// What the earlier requests of a group will write.
#[derive(Default)]
struct Group {
    /// Identities linked by an earlier request: (issuer, subject) -> (target, account number).
    links: HashMap<(String, String), (Target, String)>,
    /// Customers created by an earlier request: (legal entity, email key) -> index.
    created: HashMap<(String, String), usize>,
}

/// Resolves the channel and prepares the email of one request.
fn prepare<'d>(decider: &'d Decider, request: &LinkRequest, kind: &Kind) -> Pending<'d> {
    if let Kind::Preview(channel_id) = kind {
        let Some(channel) = decider.channels.by_id(channel_id) else {
            return Pending {
                channel: None,
                prepared: Err(Refusal::UnknownChannel),
            };
        };
        let email = request.email.as_deref().unwrap_or_default();
        let prepared = EmailAddress::parse(email)
            .map(|email| Prepared {
                channel,
                email,
                verified: true,
            })
            .map_err(|_| Refusal::InvalidEmail);
        return Pending {
            channel: Some(channel),
            prepared,
        };
    }
    let channel = decider.channels.resolve(request.client_id.as_deref()).ok();
    Pending {
        channel,
        prepared: decider.prepare(request),
    }
}

#[allow(clippy::too_many_arguments)]
fn decide_one<'d>(
    decider: &'d Decider,
    index: usize,
    request: &LinkRequest,
    kind: &Kind,
    pending: Pending<'d>,
    existing: &HashMap<(String, String), ExistingLink>,
    rows: &HashMap<(&str, &str), Vec<&CandidateRow>>,
    group: &mut Group,
    customers_to_create: &mut Vec<CustomerWrite>,
) -> Planned<'d> {
    let refused = |channel, refusal| Planned {
        answer: Err(refusal),
        channel,
        link: None,
    };
    let Some(channel) = pending.channel else {
        // Unknown channel: the preparation's refusal says which.
        let refusal = pending.prepared.err().unwrap_or(Refusal::UnknownChannel);
        return refused(None, refusal);
    };
    let answered = |outcome, account_number: Option<String>| Planned {
        answer: Ok(Resolution {
            outcome,
            account_number,
            channel: channel.id.clone(),
        }),
        channel: Some(channel),
        link: None,
    };
    // The identity's active link: read, or written by an earlier request of the group.
    let identity = match kind {
        Kind::Link => match &request.identity {
            Some(identity) => Some((identity.issuer.clone(), identity.subject.clone())),
            None => return refused(Some(channel), Refusal::ObjectIdMissing),
        },
        // Checks and previews decide for an identity that does not exist yet.
        Kind::Check | Kind::Preview(_) => None,
    };
    let current = identity.as_ref().and_then(|key| {
        existing
            .get(key)
            .map(|link| link.account_number.clone())
            .or_else(|| group.links.get(key).map(|(_, number)| number.clone()))
    });
    let prepared = match pending.prepared {
        Ok(prepared) => prepared,
        // An identity that is linked resolves whatever its email claim says now.
        Err(refusal) => {
            return match current {
                Some(number) => answered(Outcome::AlreadyLinked, Some(number)),
                None => refused(Some(channel), refusal),
            }
        }
    };
    if let Some(number) = current {
        return answered(Outcome::AlreadyLinked, Some(number));
    }
    let key = prepared.email.key();
    let b2b_only = channel.customer_type == CustomerType::B2B;
    let mut candidates: Vec<Candidate> = rows
        .get(&(channel.legal_entity.as_str(), key))
        .into_iter()
        .flatten()
        .filter(|row| row.is_b2b || !b2b_only)
        .map(|row| Candidate {
            customer_id: row.id,
            account_number: row.account_number.clone(),
            // The row's email key is `key`: "under another email" is under another than its own.
            has_links_under_other_email: row.has_links_under_other_email,
        })
        .collect();
    // A customer an earlier request of the group creates is a person record of the legal entity
    // with this email, not B2B; its identities are linked under this email. Its id is not known
    // before it is written: a negative stand-in, mapped back below.
    let created = group
        .created
        .get(&(channel.legal_entity.clone(), key.to_string()))
        .copied();
    if let (Some(slot), false) = (created, b2b_only) {
        candidates.push(Candidate {
            customer_id: stand_in(slot),
            account_number: customers_to_create[slot].account_number.clone(),
            has_links_under_other_email: false,
        });
    }
    let decision = rules::decide(&Facts {
        channel,
        linking_enabled: decider.settings.linking_enabled,
        allow_link_after_email_change: decider.settings.allow_link_after_email_change,
        email_verified: prepared.verified,
        existing_link: None,
        candidates: &candidates,
    });
    let (outcome, would, target, account_number) = match decision {
        Decision::AlreadyLinked(link) => {
            return answered(Outcome::AlreadyLinked, Some(link.account_number))
        }
        Decision::Refuse(refusal) => return refused(Some(channel), refusal),
        Decision::Link {
            customer_id,
            account_number,
        } => {
            let target = match slot_of(customer_id) {
                Some(slot) => Target::New(slot),
                None => Target::Existing(customer_id),
            };
            (Outcome::Linked, Outcome::WouldLink, target, account_number)
        }
        Decision::Create => {
            if *kind != Kind::Link {
                return answered(Outcome::WouldCreate, None);
            }
            let account_number = decider.new_account_number();
            let slot = customers_to_create.len();
            let creation_key = channel
                .linking_enabled(decider.settings.linking_enabled)
                .then(|| customers::creation_key(&channel.legal_entity, key));
            customers_to_create.push(CustomerWrite {
                account_number: account_number.clone(),
                legal_entity: channel.legal_entity.clone(),
                email: prepared.email.as_str().to_string(),
                email_key: key.to_string(),
                creation_key,
                request: index,
            });
            group
                .created
                .insert((channel.legal_entity.clone(), key.to_string()), slot);
            (
                Outcome::Created,
                Outcome::WouldCreate,
                Target::New(slot),
                account_number,
            )
        }
    };
    if *kind != Kind::Link {
        return answered(would, Some(account_number));
    }
    if let Some(identity) = identity {
        group
            .links
            .insert(identity, (target, account_number.clone()));
    }
    let mut planned = answered(outcome, Some(account_number));
    planned.link = Some(LinkWrite {
        target,
        email_key: key.to_string(),
    });
    planned
}

/// The stand-in id of the customer at `slot` of the plan (negative: never a database id).
fn stand_in(slot: usize) -> i64 {
    -1 - slot as i64
}

fn slot_of(customer_id: i64) -> Option<usize> {
    (customer_id < 0).then(|| (-1 - customer_id) as usize)
}

/// What the earlier groups of a dry run would have written: the identities they would link
/// and the customers they would create, as 128-bit hashes of their keys in sorted runs ([`Runs`],
/// 24 bytes a key, and the account numbers in one string), so that a dry run of millions stays
/// small. A later group is planned as if those were in the database, so that the dry run decides
/// each request as the real run, group after group, will.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    /// (issuer, subject) -> the index of the account number in `numbers`, [`NONE`] for a customer
    /// that would be created.
    links: Runs,
    /// The account numbers of the links, one after the other; `starts` says where each begins.
    numbers: String,
    starts: Vec<u32>,
    /// (legal entity, email key) of the customers that would be created.
    customers: Runs,
}

/// The stand-in id of a customer that a dry run would have created: no database id is 0, and it
/// is not negative (a [`stand_in`] of the group).
const OVERLAY_CUSTOMER: i64 = 0;

/// No account number (a customer that would be created).
const NONE: u32 = u32::MAX;

impl Overlay {
    fn key(a: &str, b: &str) -> [u64; 2] {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(a.as_bytes());
        hasher.update(&[0]);
        hasher.update(b.as_bytes());
        let digest = hasher.digest128();
        [(digest >> 64) as u64, digest as u64]
    }

    /// Adds what `plan` (planned over this overlay) would write.
    pub(crate) fn record(&mut self, requests: &[(&LinkRequest, Kind)], plan: &Plan<'_>) {
        let customers = plan
            .customers
            .iter()
            .map(|customer| Entry {
                key: Self::key(&customer.legal_entity, &customer.email_key),
                value: 0,
            })
            .collect();
        self.customers.add(customers);
        let mut links = Vec::new();
        for ((request, _), planned) in requests.iter().zip(&plan.planned) {
            let (Some(link), Some(identity)) = (&planned.link, &request.identity) else {
                continue;
            };
            let number = match (link.target, &planned.answer) {
                (Target::Existing(id), Ok(resolution)) if id != OVERLAY_CUSTOMER => {
                    resolution.account_number.as_deref()
                }
                _ => None,
            };
            let value = match number {
                Some(number) => {
                    self.starts.push(self.numbers.len() as u32);
                    self.numbers.push_str(number);
                    (self.starts.len() - 1) as u32
                }
                None => NONE,
            };
            links.push(Entry {
                key: Self::key(&identity.issuer, &identity.subject),
                value,
            });
        }
        self.links.add(links);
    }

    /// The account number at `index` of `numbers`.
    fn number(&self, index: u32) -> &str {
        let index = index as usize;
        let start = self.starts[index] as usize;
        let end = self
            .starts
            .get(index + 1)
            .map_or(self.numbers.len(), |&end| end as usize);
        &self.numbers[start..end]
    }

    /// Whether the account number a dry run answers is one it made up (a customer it would
    /// create, whose number the real run draws anew).
    pub(crate) fn made_up(planned: &Planned<'_>) -> bool {
        match planned.link.as_ref().map(|l| l.target) {
            Some(Target::New(_)) | Some(Target::Existing(OVERLAY_CUSTOMER)) => true,
            _ => matches!(&planned.answer, Ok(r) if r.account_number.as_deref() == Some("")),
        }
    }

    fn add_links(
        &self,
        subjects: &HashMap<&str, Vec<&str>>,
        existing: &mut HashMap<(String, String), ExistingLink>,
    ) {
        for (issuer, subjects) in subjects {
            for subject in subjects {
                let Some(value) = self.links.get(Self::key(issuer, subject)) else {
                    continue;
                };
                existing
                    .entry((issuer.to_string(), subject.to_string()))
                    .or_insert_with(|| ExistingLink {
                        customer_id: OVERLAY_CUSTOMER,
                        account_number: match value {
                            NONE => String::new(),
                            index => self.number(index).to_string(),
                        },
                    });
            }
        }
    }

    fn add_candidates(
        &self,
        legal_entities: &[&str],
        email_keys: &[&str],
        rows: &mut Vec<CandidateRow>,
    ) {
        for legal_entity in legal_entities {
            for email_key in email_keys {
                if self
                    .customers
                    .get(Self::key(legal_entity, email_key))
                    .is_some()
                {
                    rows.push(CandidateRow {
                        id: OVERLAY_CUSTOMER,
                        account_number: String::new(),
                        legal_entity: legal_entity.to_string(),
                        email_key: email_key.to_string(),
                        is_b2b: false,
                        has_links_under_other_email: false,
                    });
                }
            }
        }
    }
}

/// A key of the overlay and its value.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: [u64; 2],
    value: u32,
}

/// Keys in sorted runs, each at least twice as long as the next (a few dozen at most), searched
/// by bisection. A batch of keys becomes a run; runs are merged in place into the longer one.
#[derive(Debug, Default)]
struct Runs {
    runs: Vec<Vec<Entry>>,
}

impl Runs {
    fn get(&self, key: [u64; 2]) -> Option<u32> {
        self.runs.iter().find_map(|run| {
            run.binary_search_by(|entry| entry.key.cmp(&key))
                .ok()
                .map(|i| run[i].value)
        })
    }

    fn add(&mut self, mut new: Vec<Entry>) {
        if new.is_empty() {
            return;
        }
        new.sort_unstable_by_key(|entry| entry.key);
        while self
            .runs
            .last()
            .is_some_and(|last| last.len() < 2 * new.len())
        {
            let last = self.runs.pop().unwrap_or_default();
            new = merge(last, new);
        }
        new.shrink_to_fit();
        self.runs.push(new);
    }
}

/// Merges two sorted runs into the longer one, from its end (no third buffer).
fn merge(mut a: Vec<Entry>, mut b: Vec<Entry>) -> Vec<Entry> {
    if a.len() < b.len() {
        std::mem::swap(&mut a, &mut b);
    }
    let (n, m) = (a.len(), b.len());
    a.reserve_exact(m);
    a.resize(
        n + m,
        Entry {
            key: [0; 2],
            value: 0,
        },
    );
    let (mut i, mut j) = (n, m);
    for k in (0..n + m).rev() {
        if j == 0 {
            break;
        }
        if i > 0 && a[i - 1].key > b[j - 1].key {
            a[k] = a[i - 1];
            i -= 1;
        } else {
            a[k] = b[j - 1];
            j -= 1;
        }
    }
    a
}

#[cfg(test)]
mod runs_tests {
    use super::*;

    #[test]
    fn runs_find_every_key_added_and_no_other() {
        let mut runs = Runs::default();
        let key = |n: u64| [n.wrapping_mul(0x9e37_79b9_7f4a_7c15), n];
        for batch in 0..50u64 {
            let size = 1 + (batch * 37) % 23;
            let new = (0..size)
                .map(|i| Entry {
                    key: key(batch * 100 + i),
                    value: (batch * 100 + i) as u32,
                })
                .collect();
            runs.add(new);
        }
        assert!(runs.runs.len() <= 12, "{} runs", runs.runs.len());
        for batch in 0..50u64 {
            let size = 1 + (batch * 37) % 23;
            for i in 0..100 {
                let n = batch * 100 + i;
                let found = runs.get(key(n));
                if i < size {
                    assert_eq!(found, Some(n as u32), "{n}");
                } else {
                    assert_eq!(found, None, "{n}");
                }
            }
        }
        for run in &runs.runs {
            assert!(run.windows(2).all(|w| w[0].key < w[1].key));
        }
    }
}
