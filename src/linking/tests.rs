//! Unit tests of the service's sign-in path when the audit queue is full (SQLite; the executor's
//! own tests are in `executor/tests.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::domain::{Channel, CustomerType};
use crate::storage::audit::AuditWriter;

const LIMIT: Duration = Duration::from_millis(300);

/// One B2C channel `web` (client id `app`, legal entity USRT) and the default rules, for the
/// service's and the executor's unit tests.
pub(super) fn web_channel() -> (ChannelDirectory, LinkingSettings) {
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
    (channels, settings)
}

/// A service on a new SQLite database whose audit queue no thread takes.
fn service() -> (
    tempfile::TempDir,
    Arc<LinkingService>,
    AuditWriter,
    Arc<Metrics>,
) {
    let (dir, db) = crate::storage::temp_sqlite();
    let (channels, settings) = web_channel();
    let metrics = Arc::new(Metrics::new(&channels).unwrap());
    let audit = AuditWriter::unattended();
    let service = Arc::new(LinkingService::new(
        db,
        channels,
        settings,
        audit.clone(),
        metrics.clone(),
        Outbox::default(),
        LIMIT,
    ));
    (dir, service, audit, metrics)
}

/// A token-step request of `subject` (issuer `tenant`) on channel `web`, with a local account's
/// email: for the service's and the executor's unit tests.
pub(super) fn request(subject: &str, email: &str) -> LinkRequest {
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
        time_limit: None,
    }
}

fn sign_in(subject: &str) -> LinkRequest {
    request(subject, "ann@example.com")
}

/// Fills the queue; returns how many events it took.
fn fill(audit: &AuditWriter) -> usize {
    let mut queued = 0;
    while audit
        .try_record(crate::storage::audit::tests::event(queued, "f@x.com", "f"))
        .is_ok()
    {
        queued += 1;
    }
    queued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_from_memory_waits_for_audit_room_counts_it_and_fails_closed_at_its_limit() {
    let (_dir, service, audit, metrics) = service();
    let first = service.link(sign_in("s1")).await.unwrap();
    assert_eq!(first.outcome, Outcome::Created);
    let number = first.account_number.clone().unwrap();
    assert_eq!(metrics.audit_queue_waits(), 0);

    // Room: answered from memory at once.
    let again = service.link(sign_in("s1")).await.unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyLinked);
    assert_eq!(again.account_number.as_deref(), Some(number.as_str()));
    assert_eq!(metrics.audit_queue_waits(), 0);
    let queued = audit.take_all();
    assert_eq!(
        queued.len(),
        1,
        "the sign-in's event; the link's commits with it"
    );
    assert_eq!(queued[0].outcome, "AlreadyLinked");

    // No room and nobody takes the queue: the answer waits its limit, then fails closed.
    assert!(fill(&audit) > 0);
    let started = std::time::Instant::now();
    let refused = service.link(sign_in("s1")).await;
    assert_eq!(refused, Err(Refusal::ServiceUnavailable));
    assert!(started.elapsed() >= LIMIT, "{:?}", started.elapsed());
    assert_eq!(metrics.audit_queue_waits(), 1);

    // No room until the queue is taken while the sign-in waits: then it is answered.
    let waiting = tokio::spawn({
        let service = service.clone();
        async move { service.link(sign_in("s1")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "waits for room");
    let taken = audit.take_all();
    assert!(
        taken.iter().all(|e| e.source != "api-connector"),
        "the fillers only"
    );
    let answered = waiting.await.unwrap().unwrap();
    assert_eq!(answered.outcome, Outcome::AlreadyLinked);
    assert_eq!(answered.account_number.as_deref(), Some(number.as_str()));
    assert_eq!(metrics.audit_queue_waits(), 2);
    let events = audit.take_all();
    assert_eq!(events.len(), 1, "the waiting sign-in's event went in");
    assert_eq!(events[0].request_id, "req-s1");
}
