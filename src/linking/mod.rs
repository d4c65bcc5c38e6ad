//! The linking service: one decision from request to committed answer, the same on both
//! databases. The wire adapters (user-flow connector, REST technical profiles, `/v1/link`) parse,
//! call [`LinkingService::link`] or [`LinkingService::check`], and format the answer; none of them
//! knows which database is used or how writes are batched.
//!
//! - [`plan`] gathers the facts of a group of requests in set-based reads and applies
//!   [`crate::domain::rules::decide`], the only place a rule is written;
//! - [`executor`] is the one writer: it decides waiting requests together and writes their links
//!   in one transaction, answering each only after the commit;
//! - [`signin_cache`] answers the sign-in of an identity linked already from memory while
//!   nothing has changed.

mod batch;
mod executor;
mod plan;
mod signin_cache;
#[cfg(test)]
mod tests;
pub mod verified_signups;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

pub use crate::domain::answer::{Answer, Outcome, Resolution};
use crate::domain::verification::{self, Verification, VerificationPolicy};
use crate::domain::{Channel, ChannelDirectory, EmailAddress, Identity, Refusal, SignInEvidence};
use crate::metrics::Metrics;
use crate::storage::audit::{AuditEvent, AuditWriter};
use crate::storage::{self, Db, StorageError};
use crate::webhooks::Outbox;
pub use batch::DryRun;

use executor::Executor;
use plan::Kind;
use signin_cache::SigninCache;

/// The rule settings the linking service applies.
#[derive(Debug, Clone)]
pub struct LinkingSettings {
    /// The environment-wide linking switch.
    pub linking_enabled: bool,
    /// Link although the customer's identities were linked under another email.
    pub allow_link_after_email_change: bool,
    /// What counts as a verified email.
    pub verification: VerificationPolicy,
    /// Prefix of account numbers of customers autolink creates.
    pub account_number_prefix: String,
}

/// What a request asks the linking service.
#[derive(Debug, Clone)]
pub struct LinkRequest {
    /// Request id (log, audit, response header).
    pub request_id: String,
    /// Endpoint or command, for the audit (`api-connector`, `cli-preview`, ...).
    pub source: &'static str,
    /// Connector step, for the audit.
    pub step: Option<&'static str>,
    /// Relying-party client id; selects the channel.
    pub client_id: Option<String>,
    /// The email claim as sent.
    pub email: Option<String>,
    /// What kind of account vouches for the email.
    pub evidence: SignInEvidence,
    /// An explicit `emailVerified` flag, when the caller sends one.
    pub email_verified: Option<bool>,
    /// The identity; required to link, absent on the checks before the account exists.
    pub identity: Option<Identity>,
    /// Given name, for a customer autolink creates.
    pub given_name: Option<String>,
    /// Surname, for a customer autolink creates.
    pub surname: Option<String>,
    /// A time limit shorter than the service's own (`[database] request_timeout_ms`), for a
    /// caller with a deadline of its own (Entra External ID). The answer comes within it, or
    /// within twice it while the request's COMMIT is under way.
    pub time_limit: Option<Duration>,
}

/// The linking service. Cheap to share behind an `Arc`.
pub struct LinkingService {
    db: Db,
    decider: Arc<Decider>,
    audit: AuditWriter,
    /// The one writer ([`executor`]).
    executor: Executor,
    /// The links the sign-in path resolved ([`signin_cache`]).
    signins: SigninCache,
    /// The time limit of a request (`[database] request_timeout_ms`).
    limit: Duration,
}

/// What the sign-in hot path found without waiting.
enum Fast {
    /// Answered, its event queued.
    Answered(Answer),
    /// Resolved, but the audit queue had no room for its event.
    AuditQueueFull(Answer, Box<AuditEvent>),
    /// For the executor.
    NotResolved,
}

/// The rules and their settings, shared by the service and its executor.
pub(crate) struct Decider {
    channels: ChannelDirectory,
    settings: LinkingSettings,
    metrics: Arc<Metrics>,
    /// Where the events of the links written go, in the same transaction.
    outbox: Outbox,
}

/// Everything learnt about a request before the decision.
#[derive(Debug)]
struct Prepared<'a> {
    channel: &'a Channel,
    email: EmailAddress,
    verified: bool,
}

impl LinkingService {
    /// Builds the service and starts its executor. `metrics` counts its decisions; the links it
    /// writes tell `outbox`; a request is answered within `request_timeout` (more only while its
    /// COMMIT is under way).
    pub fn new(
        db: Db,
        channels: ChannelDirectory,
        settings: LinkingSettings,
        audit: AuditWriter,
        metrics: Arc<Metrics>,
        outbox: Outbox,
        request_timeout: Duration,
    ) -> Self {
        let decider = Arc::new(Decider {
            channels,
            settings,
            metrics,
            outbox,
        });
        let executor = Executor::new(decider.clone(), db.clone(), audit.clone(), request_timeout);
        let signins = SigninCache::new(&db);
        Self {
            db,
            decider,
            audit,
            executor,
            signins,
            limit: request_timeout,
        }
    }

    /// The pool, for readiness checks.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The configured channels.
    pub fn channels(&self) -> &ChannelDirectory {
        &self.decider.channels
    }

    /// The environment-wide linking switch.
    pub fn linking_enabled(&self) -> bool {
        self.decider.settings.linking_enabled
    }

    /// The service's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.decider.metrics
    }

    /// Where every change's events are written (the admin operations write theirs too).
    pub fn outbox(&self) -> &Outbox {
        &self.decider.outbox
    }

    /// Links the identity (or resolves its existing link) and answers with the account number,
    /// once the link is committed. Storage failures and time-outs are `ServiceUnavailable`.
    pub async fn link(&self, request: LinkRequest) -> Answer {
        match self.resolve_linked_without_waiting(&request) {
            Fast::Answered(answer) => return answer,
            // Resolved from memory but the audit queue is full: its database stalls. Waiting
            // for room costs no database work, where the executor would read from the same
            // stalled database; at the time limit the answer fails closed, as the executor's.
            Fast::AuditQueueFull(answer, event) => {
                self.decider.metrics.audit_queue_wait();
                let limit = request
                    .time_limit
                    .map_or(self.limit, |own| own.min(self.limit));
                if self.audit.record_within(event, limit).await.is_err() {
                    log::warn!(
                        "request_id={} {}: no room in the audit queue within {} ms",
                        request.request_id,
                        request.source,
                        limit.as_millis()
                    );
                    return Err(Refusal::ServiceUnavailable);
                }
                self.decider.count(&request, &answer);
                return answer;
            }
            Fast::NotResolved => {}
        }
        // Taken before the executor reads the link: the account number it answers is kept
        // under it, and the next sign-in of the identity is answered from memory.
        let before = self.signins.before_read();
        let identity = request.identity.clone();
        let answer = self.executor.run(request, Kind::Link).await;
        if let (Some(identity), Ok(resolution)) = (&identity, &answer) {
            if let Some(number) = &resolution.account_number {
                self.signins.keep_read(before, identity, number);
            }
        }
        answer
    }

    /// The sign-up checks (before the account exists): what would happen, without writing
    /// anything but the audit event.
    pub async fn check(&self, request: LinkRequest) -> Answer {
        if let Some(answer) = self.check_without_waiting(&request) {
            return answer;
        }
        self.executor.run(request, Kind::Check).await
    }

    /// SQLite: a check decided on the calling (async) thread, by the same [`plan`], when an idle
    /// connection is at hand and the audit queue has room. SQLite in WAL mode never makes a
    /// reader wait for a writer, and the reads are a few indexed lookups; on PostgreSQL each
    /// would be a round trip, so the executor decides. `None`: the executor decides.
    fn check_without_waiting(&self, request: &LinkRequest) -> Option<Answer> {
        if self.db.backend() != storage::BackendKind::Sqlite {
            return None;
        }
        let decider = &self.decider;
        let mut conn = self.db.try_get()?;
        let plan = plan::plan(decider, &mut conn, &[(request, Kind::Check)]).ok()?;
        drop(conn);
        let planned = plan.planned.into_iter().next()?;
        let event = decider.event(request, &planned.answer, planned.channel);
        self.audit.try_record(event).ok()?;
        decider.count(request, &planned.answer);
        Some(planned.answer)
    }

    /// The sign-in hot path without leaving the calling (async) thread: when the identity is
    /// linked already and its kept link is known to be current without a read ([`SigninCache`]),
    /// on either database, or (SQLite) an idle connection is at hand, answer at once; PostgreSQL
    /// never reads here (a round trip). The audit event is queued only if the queue has room
    /// ([`Fast::AuditQueueFull`] otherwise); anything else is for the executor.
    fn resolve_linked_without_waiting(&self, request: &LinkRequest) -> Fast {
        let decider = &self.decider;
        let Ok(channel) = decider.channels.resolve(request.client_id.as_deref()) else {
            return Fast::NotResolved;
        };
        let Some(identity) = request.identity.as_ref() else {
            return Fast::NotResolved;
        };
        let account_number = match self.signins.without_reading(identity) {
            Some(number) => Some(number),
            None if self.db.backend() == storage::BackendKind::Sqlite => self
                .db
                .try_get()
                .and_then(|mut conn| self.signins.find_active(&mut conn, identity).ok())
                .flatten(),
            None => None,
        };
        let Some(account_number) = account_number else {
            return Fast::NotResolved;
        };
        let answer = Ok(Resolution {
            outcome: Outcome::AlreadyLinked,
            account_number: Some(account_number),
            channel: channel.id.clone(),
        });
        match self
            .audit
            .try_record(decider.event(request, &answer, Some(channel)))
        {
            Ok(()) => {
                decider.metrics.decision(Some(&channel.id), &answer);
                Fast::Answered(answer)
            }
            Err(event) => Fast::AuditQueueFull(answer, event),
        }
    }

    /// What would happen for this email on this channel, assuming a verified email and a new
    /// identity. Writes only the audit event, in the name of `actor` (the administrator).
    /// Blocks (database I/O).
    pub fn preview(
        &self,
        request_id: &str,
        actor: &str,
        channel_id: &str,
        email: &str,
    ) -> Result<Answer, StorageError> {
        let decider = &self.decider;
        let channel = decider.channels.by_id(channel_id);
        let request = LinkRequest {
            request_id: request_id.to_string(),
            source: "preview",
            step: None,
            client_id: channel.and_then(|c| c.client_ids.first().cloned()),
            email: Some(email.to_string()),
            evidence: SignInEvidence::Local,
            email_verified: Some(true),
            identity: None,
            given_name: None,
            surname: None,
            time_limit: None,
        };
        let mut conn = self.db.get()?;
        let kind = Kind::Preview(channel_id.to_string());
        let plan = plan::plan(decider, &mut conn, &[(&request, kind)])?;
        drop(conn);
        let planned = plan.planned.into_iter().next();
        let (answer, channel) = match planned {
            Some(planned) => (planned.answer, planned.channel),
            None => (Err(Refusal::ServiceUnavailable), None),
        };
        let mut event = decider.event(&request, &answer, channel);
        event.actor = actor.to_string().into();
        decider.record(&self.audit, event);
        Ok(answer)
    }
}

impl Decider {
    /// Queues a decision's audit event from blocking code, and counts it in the metrics when it
    /// had to wait for room in the queue.
    fn record(&self, audit: &AuditWriter, event: AuditEvent) {
        if audit.record(event) {
            self.metrics.audit_queue_wait();
        }
    }

    /// Counts a decision taken on B2C's call in the metrics (previews are not counted).
    fn count(&self, request: &LinkRequest, answer: &Answer) {
        match answer {
            Ok(resolution) => self.metrics.decision(Some(&resolution.channel), answer),
            Err(_) => {
                let channel = self.channels.resolve(request.client_id.as_deref()).ok();
                self.metrics
                    .decision(channel.map(|c| c.id.as_str()), answer);
            }
        }
    }

    /// Resolves the channel, parses the email and decides whether it is verified.
    fn prepare(&self, request: &LinkRequest) -> Result<Prepared<'_>, Refusal> {
        let channel = self.channels.resolve(request.client_id.as_deref())?;
        let raw = request.email.as_deref().filter(|e| !e.trim().is_empty());
        let raw = raw.ok_or(Refusal::EmailMissing)?;
        let email = EmailAddress::parse(raw).map_err(|_| Refusal::InvalidEmail)?;
        let verification = verification::verify(
            &request.evidence,
            request.email_verified,
            &self.settings.verification,
        );
        if verification != Verification::Verified {
            log::info!(
                "request_id={} email {} not verified: {:?} ({})",
                request.request_id,
                email.redacted(),
                verification,
                request.evidence.sign_in_type()
            );
        }
        Ok(Prepared {
            channel,
            email,
            verified: verification.is_verified(),
        })
    }

    fn new_account_number(&self) -> String {
        crate::domain::AccountNumber::generate(&self.settings.account_number_prefix).into_string()
    }

    fn event(
        &self,
        request: &LinkRequest,
        answer: &Answer,
        channel: Option<&Channel>,
    ) -> AuditEvent {
        let channel = channel
            .map(|c| c.id.clone())
            .or_else(|| answer.as_ref().ok().map(|r| r.channel.clone()));
        let (outcome, code, account_number) = match answer {
            Ok(r) => (r.outcome.as_str(), None, r.account_number.clone()),
            Err(refusal) => ("Refused", Some(Cow::Borrowed(refusal.code())), None),
        };
        let email_key = request
            .email
            .as_deref()
            .and_then(|e| EmailAddress::parse(e).ok())
            .map(EmailAddress::into_key);
        AuditEvent {
            at: storage::now(),
            request_id: request.request_id.clone(),
            actor: Cow::Borrowed("b2c"),
            source: Cow::Borrowed(request.source),
            step: request.step.map(Cow::Borrowed),
            channel,
            outcome: Cow::Borrowed(outcome),
            code,
            email_key,
            issuer: request.identity.as_ref().map(|i| i.issuer.clone()),
            subject: request.identity.as_ref().map(|i| i.subject.clone()),
            account_number,
            detail: None,
        }
    }
}
