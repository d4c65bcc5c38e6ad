//! Unit tests of the executor on SQLite (tests/api runs every journey through it on both
//! databases, and tests/api/reliability.rs the faults on PostgreSQL).

use diesel::connection::SimpleConnection;
use diesel::RunQueryDsl;

use super::*;
use crate::linking::tests::request;
use crate::linking::{Outcome, Resolution};
use crate::metrics::Metrics;

struct Setup {
    _dir: tempfile::TempDir,
    db: Db,
    executor: Executor,
    audit: crate::storage::audit::AuditWriterHandle,
}

fn setup() -> Setup {
    let (dir, db) = crate::storage::temp_sqlite();
    let (channels, settings) = crate::linking::tests::web_channel();
    let metrics = Arc::new(Metrics::new(&channels).unwrap());
    let decider = Arc::new(Decider {
        channels,
        settings,
        metrics,
        outbox: crate::webhooks::Outbox::default(),
    });
    let (audit, handle) = AuditWriter::start(db.clone());
    let executor = Executor::new(decider, db.clone(), audit, Duration::from_secs(5));
    Setup {
        _dir: dir,
        db,
        executor,
        audit: handle,
    }
}

fn job(request: LinkRequest) -> (Job, oneshot::Receiver<Reply>) {
    let (reply, answer) = oneshot::channel();
    let job = Job {
        request,
        kind: Kind::Link,
        ticket: Ticket::new(),
        reply,
        attempts: 0,
    };
    (job, answer)
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

fn resolved(answer: &mut oneshot::Receiver<Reply>) -> Result<Resolution, String> {
    match answer.try_recv() {
        Ok(Ok(Ok(resolution))) => Ok(resolution),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn a_group_sees_its_own_writes_and_a_failed_request_is_rolled_back_alone() {
    let s = setup();
    // The database refuses one link, as a failing write would.
    s.db.get()
        .unwrap()
        .batch_execute(
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON identity_links \
             WHEN NEW.subject = 'boom' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .unwrap();
    let (jobs, mut answers): (Vec<Job>, Vec<_>) = [
        request("s1", "Ann@Example.com"),
        request("s2", "ann@example.com"),
        request("boom", "ann@example.com"),
        request("s4", "bob@example.com"),
        // The same identity twice in one group: linked once.
        request("s1", "ann@example.com"),
    ]
    .into_iter()
    .map(job)
    .unzip();
    let mut conn = None;
    let again = execute(&s.executor.shared, &mut conn, jobs);
    assert!(again.is_empty());

    let first = resolved(&mut answers[0]).unwrap();
    let second = resolved(&mut answers[1]).unwrap();
    let fourth = resolved(&mut answers[3]).unwrap();
    let fifth = resolved(&mut answers[4]).unwrap();
    assert_eq!(first.outcome, Outcome::Created);
    // The second request saw the customer the first one created, in the same transaction.
    assert_eq!(second.outcome, Outcome::Linked);
    assert_eq!(second.account_number, first.account_number);
    assert!(
        matches!(answers[2].try_recv(), Ok(Err(StorageError::Query(_)))),
        "the refused link gets the database's error"
    );
    assert_eq!(fourth.outcome, Outcome::Created);
    assert_ne!(fourth.account_number, first.account_number);
    assert_eq!(fifth.outcome, Outcome::AlreadyLinked);
    assert_eq!(fifth.account_number, first.account_number);

    let db = &s.db;
    assert_eq!(count(db, "SELECT count(*) AS n FROM customers"), 2);
    assert_eq!(
        count(db, "SELECT count(*) AS n FROM identity_links WHERE active"),
        3
    );
    assert_eq!(
        count(
            db,
            "SELECT count(*) AS n FROM identity_links WHERE subject = 'boom'"
        ),
        0
    );
    // The events of the writes committed with them; none for the one rolled back. The already
    // linked answer's event goes to the audit writer, which has written it once it stopped.
    assert_eq!(
        count(
            db,
            "SELECT count(*) AS n FROM audit_events WHERE outcome IN ('Linked', 'Created')"
        ),
        3
    );
    drop(s.executor);
    s.audit.join();
    assert_eq!(count(db, "SELECT count(*) AS n FROM audit_events"), 4);
    assert_eq!(
        count(
            db,
            "SELECT count(*) AS n FROM audit_events WHERE subject = 'boom'"
        ),
        0
    );
}

#[test]
fn a_request_that_loses_a_race_is_decided_again_in_the_next_group() {
    let s = setup();
    let db = &s.db;
    // Another writer links 'raced' to its own customer just before this group's insert (a
    // trigger stands in for it): the group's row is skipped, and the request is decided again.
    db.get()
        .unwrap()
        .batch_execute(
            "INSERT INTO customers (account_number, legal_entity, party_type, is_b2b, \
                 primary_email, email_key, origin, created_at, updated_at) \
             VALUES ('OTHER', 'USRT', 'person', 0, 'zed@example.com', 'zed@example.com', \
                 'import', '2026-01-01 00:00:00', '2026-01-01 00:00:00'); \
             CREATE TRIGGER other_writer BEFORE INSERT ON identity_links \
             WHEN NEW.subject = 'raced' AND NOT EXISTS \
                 (SELECT 1 FROM identity_links WHERE subject = 'raced') \
             BEGIN INSERT INTO identity_links (issuer, subject, customer_id, sign_in_type, \
                 email_key, linked_by, created_at, updated_at) \
               SELECT NEW.issuer, NEW.subject, id, 'emailAddress', 'zed@example.com', 'admin', \
                 NEW.created_at, NEW.updated_at FROM customers WHERE account_number = 'OTHER'; \
             END",
        )
        .unwrap();
    let (raced, mut raced_answer) = job(request("raced", "eve@example.com"));
    let (other, mut other_answer) = job(request("calm", "fay@example.com"));
    let mut conn = None;
    let again = execute(&s.executor.shared, &mut conn, vec![raced, other]);
    // The other request was written; the raced one waits for the next group.
    assert_eq!(
        resolved(&mut other_answer).unwrap().outcome,
        Outcome::Created
    );
    assert!(raced_answer.try_recv().is_err(), "not answered yet");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    // The customer it would have created was rolled back with its link.
    assert_eq!(
        count(
            db,
            "SELECT count(*) AS n FROM customers WHERE email_key = 'eve@example.com'"
        ),
        0
    );
    // The trigger's row was rolled back with the group; the other writer's own transaction
    // commits it.
    db.get()
        .unwrap()
        .batch_execute(
            "DROP TRIGGER other_writer; \
             INSERT INTO identity_links (issuer, subject, customer_id, sign_in_type, email_key, \
                 linked_by, created_at, updated_at) \
             SELECT 'tenant', 'raced', id, 'emailAddress', 'zed@example.com', 'admin', \
                 '2026-01-01 00:00:00', '2026-01-01 00:00:00' \
             FROM customers WHERE account_number = 'OTHER'",
        )
        .unwrap();
    let again = execute(&s.executor.shared, &mut conn, again);
    assert!(again.is_empty());
    let answer = resolved(&mut raced_answer).unwrap();
    assert_eq!(answer.outcome, Outcome::AlreadyLinked);
    assert_eq!(answer.account_number.as_deref(), Some("OTHER"));
}

#[test]
fn a_request_that_keeps_losing_fails_closed_and_writes_nothing() {
    let s = setup();
    let db = &s.db;
    // A deactivated customer autolink created holds the creation key of this email: every
    // attempt to create it is skipped.
    db.get()
        .unwrap()
        .batch_execute(
            "INSERT INTO customers (account_number, legal_entity, party_type, is_b2b, \
                 primary_email, email_key, origin, active, creation_key, created_at, updated_at) \
             VALUES ('GONE', 'USRT', 'person', 0, 'gus@example.com', 'gus@example.com', \
                 'autolink', 0, 'USRT|gus@example.com', '2026-01-01 00:00:00', \
                 '2026-01-01 00:00:00')",
        )
        .unwrap();
    let (stuck, mut answer) = job(request("s1", "gus@example.com"));
    let mut conn = None;
    let mut group = vec![stuck];
    let mut groups = 0;
    while !group.is_empty() {
        groups += 1;
        group = execute(&s.executor.shared, &mut conn, group);
    }
    assert_eq!(groups, usize::from(MAX_ATTEMPTS));
    assert!(matches!(
        answer.try_recv(),
        Ok(Err(StorageError::Unavailable(_)))
    ));
    assert_eq!(count(db, "SELECT count(*) AS n FROM identity_links"), 0);
    assert_eq!(count(db, "SELECT count(*) AS n FROM customers"), 1);
}

#[tokio::test]
async fn a_request_whose_caller_gave_up_is_not_written() {
    let s = setup();
    let (gone, answer) = job(request("gone", "carol@example.com"));
    assert!(gone.ticket.abandon());
    drop(answer);
    assert!(s.executor.submit(gone));
    let kept = s
        .executor
        .run(request("kept", "carol@example.com"), Kind::Link)
        .await
        .unwrap();
    // Sent after the abandoned request, so in its group or a later one.
    assert_eq!(kept.outcome, Outcome::Created);
    assert_eq!(
        count(
            &s.db,
            "SELECT count(*) AS n FROM identity_links WHERE subject = 'gone'"
        ),
        0
    );
}

#[test]
fn a_caller_that_gives_up_during_the_group_rolls_it_back_and_the_rest_is_written() {
    let s = setup();
    let (slow, _slow_answer) = job(request("slow", "hal@example.com"));
    let (kept, mut kept_answer) = job(request("kept", "ida@example.com"));
    // The caller gives up while the group is being written: its ticket is abandoned before
    // the commit (a trigger stands in for the moment: it cannot reach the ticket, so the
    // ticket is abandoned first and the group starts anyway, as when it was taken just before).
    let ticket = slow.ticket.clone();
    let mut conn = None;
    let shared = &s.executor.shared;
    let group = vec![slow, kept];
    // `execute` drops jobs already gone before the group; `write_links` is what runs when the
    // caller gives up after that.
    ticket.abandon();
    let conn = conn.insert(shared.db.connect_unpooled().unwrap());
    let written = write_links(shared, conn, group);
    let Written::Again(rest) = written else {
        panic!("the group must be rolled back");
    };
    assert_eq!(rest.len(), 1);
    assert_eq!(count(&s.db, "SELECT count(*) AS n FROM identity_links"), 0);
    let Written::Done(retry) = write_links(shared, conn, rest) else {
        panic!("the rest must be written");
    };
    assert!(retry.is_empty());
    assert_eq!(
        resolved(&mut kept_answer).unwrap().outcome,
        Outcome::Created
    );
    assert_eq!(
        count(
            &s.db,
            "SELECT count(*) AS n FROM identity_links WHERE subject = 'slow'"
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_new_email_create_one_customer() {
    let s = setup();
    let executor = Arc::new(s.executor);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let executor = executor.clone();
            tokio::spawn(async move {
                executor
                    .run(request(&format!("s{i}"), "dana@example.com"), Kind::Link)
                    .await
            })
        })
        .collect();
    let mut numbers = std::collections::BTreeSet::new();
    let mut created = 0;
    for task in tasks {
        let answer = task.await.unwrap().unwrap();
        created += usize::from(answer.outcome == Outcome::Created);
        numbers.insert(answer.account_number.unwrap());
    }
    assert_eq!(created, 1);
    assert_eq!(numbers.len(), 1);
    assert_eq!(count(&s.db, "SELECT count(*) AS n FROM customers"), 1);
    assert_eq!(
        count(
            &s.db,
            "SELECT count(*) AS n FROM identity_links WHERE active"
        ),
        64
    );
}

#[tokio::test]
async fn checks_write_nothing_but_their_event_and_see_committed_links() {
    let s = setup();
    let mut check = request("new", "jon@example.com");
    check.identity = None;
    let would = s.executor.run(check.clone(), Kind::Check).await.unwrap();
    assert_eq!(would.outcome, Outcome::WouldCreate);
    assert_eq!(would.account_number, None);
    let created = s
        .executor
        .run(request("s1", "jon@example.com"), Kind::Link)
        .await
        .unwrap();
    let would = s.executor.run(check, Kind::Check).await.unwrap();
    assert_eq!(would.outcome, Outcome::WouldLink);
    assert_eq!(would.account_number, created.account_number);
    assert_eq!(count(&s.db, "SELECT count(*) AS n FROM customers"), 1);
}
