//! The decision linking: gathers facts from storage, asks the pure rules, applies the decision in
//! one transaction, and audits it. Every wire format calls this; none re-implements a rule.
//!
//! All functions here block (database I/O); HTTP handlers call them through `web::block`, or
//! hand links to the group-commit thread of [`group_commit`] on SQLite.

mod group_commit;
mod signin_cache;

use std::borrow::Cow;
use std::sync::Arc;

use crate::domain::rules::{self, Decision, ExistingLink, Facts};
use crate::domain::verification::{self, Verification, VerificationPolicy};
use crate::domain::{Channel, ChannelDirectory, EmailAddress, Identity, Refusal, SignInEvidence};
use crate::metrics::Metrics;
use crate::storage::audit::{AuditEvent, AuditWriter};
use crate::storage::customers::{self, NewCustomer};
use crate::storage::links::{self, NewLink};
use crate::storage::{self, BackendKind, Db, DbConn, StorageError};

use group_commit::LinkWriter;
pub use group_commit::PendingLink;
use signin_cache::SigninCache;

/// How often a write is attempted when it loses a race (a unique violation) before giving up.
const MAX_ATTEMPTS: usize = 4;

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
}

/// What happened (or, for checks and previews, what would happen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The identity was linked to an existing customer.
    Linked,
    /// A customer was created and the identity linked to it.
    Created,
    /// The identity was linked already.
    AlreadyLinked,
    /// A check: the identity would be linked to an existing customer.
    WouldLink,
    /// A check: a customer would be created.
    WouldCreate,
}

impl Outcome {
    /// The name sent to B2C and written to the audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Linked => "Linked",
            Outcome::Created => "Created",
            Outcome::AlreadyLinked => "AlreadyLinked",
            Outcome::WouldLink => "WouldLink",
            Outcome::WouldCreate => "WouldCreate",
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// What happened.
    pub outcome: Outcome,
    /// The customer account number (absent for `WouldCreate`).
    pub account_number: Option<String>,
    /// The channel id.
    pub channel: String,
}

/// The linking's answer: a resolution or a refusal. Storage failures are the `Err` of the outer
/// `Result` of each method.
pub type Answer = Result<Resolution, Refusal>;

/// The decision linking. Cheap to share behind an `Arc`.
pub struct LinkingService {
    db: Db,
    decider: Arc<Decider>,
    audit: AuditWriter,
    /// SQLite: the thread that writes links in groups ([`group_commit`]).
    links: Option<LinkWriter>,
    /// SQLite: the links the sign-in path resolved ([`signin_cache`]).
    signins: SigninCache,
}

/// The rules and their settings, shared by the linking service and the group-commit thread: everything
/// that decides and writes inside a transaction the caller holds.
pub(crate) struct Decider {
    channels: ChannelDirectory,
    settings: LinkingSettings,
    metrics: Arc<Metrics>,
}

/// Everything learnt about a request before the decision.
struct Prepared<'a> {
    channel: &'a Channel,
    email: EmailAddress,
    verified: bool,
}

impl LinkingService {
    /// Builds the linking service. `metrics` counts its decisions. On SQLite it starts the thread that
    /// writes links in groups ([`group_commit`]).
    pub fn new(
        db: Db,
        channels: ChannelDirectory,
        settings: LinkingSettings,
        audit: AuditWriter,
        metrics: Arc<Metrics>,
    ) -> Self {
        let decider = Arc::new(Decider {
            channels,
            settings,
            metrics,
        });
        let links = match db.backend() {
            BackendKind::Sqlite => LinkWriter::start(decider.clone(), db.clone()),
            BackendKind::Postgres => None,
        };
        let signins = SigninCache::new(db.sqlite_path());
        Self {
            db,
            decider,
            audit,
            links,
            signins,
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

    /// The sign-up checks (before the B2C account exists): would the rules refuse? Writes
    /// nothing but the audit event.
    pub fn check(&self, request: &LinkRequest) -> Result<Answer, StorageError> {
        let answer = self.check_inner(request);
        if let Ok(answer) = &answer {
            self.audit.record(self.decider.event(request, answer, None));
            self.decider.count(request, answer);
        }
        answer
    }

    fn check_inner(&self, request: &LinkRequest) -> Result<Answer, StorageError> {
        let prepared = match self.decider.prepare(request) {
            Ok(p) => p,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let mut conn = self.db.get()?;
        let decision = self.decider.decide(&mut conn, &prepared, None)?;
        Ok(check_answer(&prepared, decision))
    }

    /// Links the identity (or resolves its existing link) and returns the account number, in a
    /// write transaction of its own. Blocks; on SQLite the HTTP handlers use
    /// [`LinkingService::submit_link`] instead, which writes links in groups.
    pub fn link(&self, request: &LinkRequest) -> Result<Answer, StorageError> {
        let answer = self.link_inner(request)?;
        self.decider.count(request, &answer);
        Ok(answer)
    }

    fn link_inner(&self, request: &LinkRequest) -> Result<Answer, StorageError> {
        let decider = &self.decider;
        let channel = match decider.channels.resolve(request.client_id.as_deref()) {
            Ok(c) => c,
            Err(refusal) => return Ok(self.refuse(request, None, refusal)),
        };
        let Some(identity) = &request.identity else {
            return Ok(self.refuse(request, Some(channel), Refusal::ObjectIdMissing));
        };
        // The sign-in hot path: an identity that is linked resolves without a write transaction,
        // whatever its email claim says now. The audit queue is emptied by a writer that needs a
        // connection of its own: never wait for room in the queue while holding one of the
        // request pool's connections.
        let mut conn = self.db.get()?;
        if let Some(link) = links::find_active(&mut conn, &identity.issuer, &identity.subject)? {
            drop(conn);
            let answer = Ok(already_linked(channel, link));
            self.audit
                .record(decider.event(request, &answer, Some(channel)));
            return Ok(answer);
        }
        if let Err(refusal) = decider.prepare(request) {
            drop(conn);
            return Ok(self.refuse(request, Some(channel), refusal));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = storage::write_transaction(&mut conn, |conn| {
                let (answer, event) = decider.link_in(conn, request)?;
                storage::audit::insert(conn, &[event])?;
                Ok::<_, StorageError>(answer)
            });
            match result {
                Err(error) if error.is_unique_violation() && attempt < MAX_ATTEMPTS => {
                    // Another request linked this identity or created this customer first; the
                    // next attempt sees its row.
                    log::debug!("request_id={} lost a race, retrying", request.request_id);
                }
                other => return other,
            }
        }
    }

    /// Whether links are written in groups by one thread (SQLite; see [`LinkingService::submit_link`]).
    /// On PostgreSQL each link is its own transaction, through [`LinkingService::link`].
    pub fn links_in_groups(&self) -> bool {
        self.links.is_some()
    }

    /// Hands a link to the group-commit thread (SQLite). The answer comes after the transaction
    /// that holds it has committed. Without that thread, the answer is that the database is
    /// unavailable: check [`LinkingService::links_in_groups`] first.
    pub fn submit_link(&self, request: LinkRequest) -> PendingLink {
        match &self.links {
            Some(writer) => writer.submit(request),
            None => PendingLink::unavailable(),
        }
    }

    /// The sign-in hot path on SQLite without leaving the calling (async) thread: when the
    /// identity is already linked and its kept link is known to be current without a read
    /// ([`SigninCache::without_reading`]), or an idle connection is at hand, answer at once.
    /// SQLite in WAL mode never makes a reader wait for a writer, the lookup is one indexed
    /// read, and the audit event is queued only if the queue has room; anything else returns
    /// `None` and the caller takes the blocking path, which decides everything again.
    pub fn resolve_linked_without_waiting(&self, request: &LinkRequest) -> Option<Answer> {
        if self.db.backend() != BackendKind::Sqlite {
            return None;
        }
        let decider = &self.decider;
        let channel = decider
            .channels
            .resolve(request.client_id.as_deref())
            .ok()?;
        let identity = request.identity.as_ref()?;
        let link = match self.signins.without_reading(identity) {
            Some(link) => link,
            None => {
                let mut conn = self.db.try_get()?;
                self.signins.find_active(&mut conn, identity).ok()??
            }
        };
        let answer = Ok(already_linked(channel, link));
        let queued = self
            .audit
            .try_record(decider.event(request, &answer, Some(channel)));
        if queued {
            decider.metrics.decision(Some(&channel.id), &answer);
        }
        queued.then_some(answer)
    }

    /// The sign-up checks on SQLite without leaving the calling (async) thread, under the same
    /// conditions as [`LinkingService::resolve_linked_without_waiting`]: an idle connection at hand and
    /// room in the audit queue, else `None` and the caller takes the blocking path.
    pub fn check_without_waiting(&self, request: &LinkRequest) -> Option<Answer> {
        if self.db.backend() != BackendKind::Sqlite {
            return None;
        }
        let decider = &self.decider;
        let mut conn = self.db.try_get()?;
        let answer = match decider.prepare(request) {
            Err(refusal) => Err(refusal),
            Ok(prepared) => {
                let decision = decider.decide(&mut conn, &prepared, None).ok()?;
                check_answer(&prepared, decision)
            }
        };
        drop(conn);
        if !self.audit.try_record(decider.event(request, &answer, None)) {
            return None;
        }
        decider.count(request, &answer);
        Some(answer)
    }

    /// What would happen for this email on this channel, assuming a verified email and a new
    /// identity. Writes only the audit event, in the name of `actor` (the administrator).
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
        };
        let answer = match (channel, EmailAddress::parse(email)) {
            (None, _) => Err(Refusal::UnknownChannel),
            (Some(_), Err(_)) => Err(Refusal::InvalidEmail),
            (Some(channel), Ok(email)) => {
                let prepared = Prepared {
                    channel,
                    email,
                    verified: true,
                };
                let mut conn = self.db.get()?;
                match decider.decide(&mut conn, &prepared, None)? {
                    Decision::Link { account_number, .. } => Ok(Resolution {
                        outcome: Outcome::WouldLink,
                        account_number: Some(account_number),
                        channel: channel.id.clone(),
                    }),
                    Decision::Create => Ok(Resolution {
                        outcome: Outcome::WouldCreate,
                        account_number: None,
                        channel: channel.id.clone(),
                    }),
                    Decision::AlreadyLinked(link) => Ok(already_linked(channel, link)),
                    Decision::Refuse(refusal) => Err(refusal),
                }
            }
        };
        let mut event = decider.event(&request, &answer, channel);
        event.actor = actor.to_string().into();
        self.audit.record(event);
        Ok(answer)
    }

    fn refuse(&self, request: &LinkRequest, channel: Option<&Channel>, refusal: Refusal) -> Answer {
        let answer = Err(refusal);
        self.audit
            .record(self.decider.event(request, &answer, channel));
        answer
    }
}

impl Decider {
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

    /// Decides a link request and applies the decision, inside the write transaction the caller
    /// holds; returns the answer and its audit event, which the caller writes in the same
    /// transaction. Refusals and already-linked identities write nothing else.
    fn link_in(
        &self,
        conn: &mut DbConn,
        request: &LinkRequest,
    ) -> Result<(Answer, AuditEvent), StorageError> {
        let channel = match self.channels.resolve(request.client_id.as_deref()) {
            Ok(c) => c,
            Err(refusal) => return Ok(self.answered(request, None, Err(refusal))),
        };
        let Some(identity) = &request.identity else {
            let answer = Err(Refusal::ObjectIdMissing);
            return Ok(self.answered(request, Some(channel), answer));
        };
        let existing = links::find_active(conn, &identity.issuer, &identity.subject)?;
        let prepared = match self.prepare(request) {
            Ok(p) => p,
            // An identity that is linked resolves whatever its email claim says now.
            Err(refusal) => {
                let answer = match existing {
                    Some(link) => Ok(already_linked(channel, link)),
                    None => Err(refusal),
                };
                return Ok(self.answered(request, Some(channel), answer));
            }
        };
        let decision = self.decide(conn, &prepared, existing)?;
        let now = storage::now();
        let (customer_id, account_number, outcome) = match decision {
            Decision::AlreadyLinked(link) => {
                let answer = Ok(already_linked(channel, link));
                return Ok(self.answered(request, Some(channel), answer));
            }
            Decision::Refuse(refusal) => {
                return Ok(self.answered(request, Some(channel), Err(refusal)))
            }
            Decision::Link {
                customer_id,
                account_number,
            } => (customer_id, account_number, Outcome::Linked),
            Decision::Create => {
                let account_number = self.new_account_number();
                let guard = channel
                    .linking_enabled(self.settings.linking_enabled)
                    .then(|| customers::creation_key(&channel.legal_entity, prepared.email.key()));
                let id = customers::insert(
                    conn,
                    &NewCustomer {
                        account_number: &account_number,
                        legal_entity: &channel.legal_entity,
                        party_type: "person",
                        is_b2b: false,
                        primary_email: Some(prepared.email.as_str()),
                        email_key: Some(prepared.email.key()),
                        first_name: request.given_name.as_deref(),
                        last_name: request.surname.as_deref(),
                        origin: "autolink",
                        creation_key: guard.as_deref(),
                        created_at: now,
                        updated_at: now,
                    },
                )?;
                (id, account_number, Outcome::Created)
            }
        };
        links::insert(
            conn,
            &NewLink {
                issuer: &identity.issuer,
                subject: &identity.subject,
                customer_id,
                sign_in_type: request.evidence.sign_in_type(),
                identity_provider: request.evidence.provider(),
                email_key: prepared.email.key(),
                linked_by: "auto",
                created_at: now,
                updated_at: now,
            },
        )?;
        let answer = Ok(Resolution {
            outcome,
            account_number: Some(account_number),
            channel: channel.id.clone(),
        });
        Ok(self.answered(request, Some(channel), answer))
    }

    /// An answer with its audit event.
    fn answered(
        &self,
        request: &LinkRequest,
        channel: Option<&Channel>,
        answer: Answer,
    ) -> (Answer, AuditEvent) {
        let event = self.event(request, &answer, channel);
        (answer, event)
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

    /// Loads the candidates (when the rules need them) and applies the rules.
    fn decide(
        &self,
        conn: &mut DbConn,
        prepared: &Prepared<'_>,
        existing_link: Option<ExistingLink>,
    ) -> Result<Decision, StorageError> {
        let channel = prepared.channel;
        let needs_candidates = existing_link.is_none()
            && prepared.verified
            && channel.linking_enabled(self.settings.linking_enabled);
        let candidates = if needs_candidates {
            customers::find_candidates(
                conn,
                &channel.legal_entity,
                prepared.email.key(),
                channel.customer_type == crate::domain::CustomerType::B2B,
            )?
        } else {
            Vec::new()
        };
        Ok(rules::decide(&Facts {
            channel,
            linking_enabled: self.settings.linking_enabled,
            allow_link_after_email_change: self.settings.allow_link_after_email_change,
            email_verified: prepared.verified,
            existing_link,
            candidates: &candidates,
        }))
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

/// What a check answers for a decision: what would happen, or the refusal.
fn check_answer(prepared: &Prepared<'_>, decision: Decision) -> Answer {
    let channel = prepared.channel.id.clone();
    match decision {
        Decision::Link { account_number, .. } => Ok(Resolution {
            outcome: Outcome::WouldLink,
            account_number: Some(account_number),
            channel,
        }),
        Decision::Create => Ok(Resolution {
            outcome: Outcome::WouldCreate,
            account_number: None,
            channel,
        }),
        Decision::AlreadyLinked(link) => Ok(Resolution {
            outcome: Outcome::AlreadyLinked,
            account_number: Some(link.account_number),
            channel,
        }),
        Decision::Refuse(refusal) => Err(refusal),
    }
}

fn already_linked(channel: &Channel, link: ExistingLink) -> Resolution {
    Resolution {
        outcome: Outcome::AlreadyLinked,
        account_number: Some(link.account_number),
        channel: channel.id.clone(),
    }
}
