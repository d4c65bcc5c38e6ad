//! PostgreSQL: the audit writer's appends, each batch one `COPY ... FROM STDIN (FORMAT binary)`
//! on a connection the writer keeps for itself.
//!
//! The connection lives on a thread of its own (`autolink-audit-pg`), which the writer hands each
//! batch and waits for at most twice [`APPEND_LIMIT`]: the server ends a statement after
//! `statement_timeout` (the audit pool's, [`APPEND_LIMIT`]), so a batch not answered by then
//! went to a server that stopped answering (frozen, or a failover that the kernel does not see).
//! That thread is then left to its connection, and the next batch opens another connection on a
//! new thread. A batch whose connection failed is tried again by the writer on a new connection.
//!
//! A `COPY` is one statement: it commits on its own, so a batch costs one round trip (no
//! `BEGIN`/`COMMIT`), and writes nothing when it fails. A batch on a thread left behind is not
//! tried again (its events are logged as lost): it may still commit when its server answers.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::Duration;

use diesel::{ExecuteCopyFromDsl, PgConnection};

use crate::storage::audit::{AuditEvent, APPEND_LIMIT};
use crate::storage::schema::audit_events;
use crate::storage::{Db, DbConn, StorageError};

/// The condition that lets a lookup by email or subject use the audit's hashed indexes
/// (migration 000009), which are led by the event's bucket of ids (`id >> 16`): every bucket
/// from the first to the newest event's, each probed once. The bucket keeps the appends in the
/// newest bucket's part of each index, whatever the size of the log.
pub(crate) const IN_EVERY_BUCKET: &str = "(audit_events.id >> 16) = ANY (ARRAY(SELECT \
     generate_series(0, (SELECT coalesce(max(id), 0) FROM audit_events) >> 16)))";

/// A batch for the connection's thread, and its answer (the batch comes back, emptied when
/// written).
type Answer = (Vec<AuditEvent>, Result<(), StorageError>);

/// The connection's thread, as the writer sees it.
struct Worker {
    batches: SyncSender<Vec<AuditEvent>>,
    answers: Receiver<Answer>,
}

/// The writer's side of the PostgreSQL appends.
pub(crate) struct PgAuditAppender {
    db: Db,
    worker: Option<Worker>,
}

/// How long the writer waits for a batch's answer before it leaves the connection's thread
/// behind: the statement limit, and as long again for the answer to come back.
fn answer_limit() -> Duration {
    APPEND_LIMIT * 2
}

impl PgAuditAppender {
    pub(crate) fn new(db: Db) -> Self {
        PgAuditAppender { db, worker: None }
    }

    /// Writes `batch` in one `COPY` and empties it. On an error the batch is kept for another
    /// attempt, unless the connection stopped answering (then it is emptied and the events are
    /// logged as lost).
    pub(crate) fn append(&mut self, batch: &mut Vec<AuditEvent>) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let worker = match &mut self.worker {
            Some(worker) => worker,
            None => self.worker.insert(start_worker(self.db.clone())?),
        };
        if worker.batches.send(std::mem::take(batch)).is_err() {
            // The thread ended (it cannot: it runs until its sender is dropped); start another.
            self.worker = None;
            return Err(StorageError::Unavailable(
                "the audit connection's thread ended".into(),
            ));
        }
        match worker.answers.recv_timeout(answer_limit()) {
            Ok((returned, result)) => {
                *batch = returned;
                result
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                // Left to its connection; a new one for the next batch.
                self.worker = None;
                log::error!(
                    "audit: the database did not answer within {} s; a batch of audit events \
                     is left with its connection and not tried again",
                    answer_limit().as_secs()
                );
                Err(StorageError::Unavailable(
                    "the database did not answer the audit append in time; that batch's \
                     events are lost unless it commits late"
                        .into(),
                ))
            }
        }
    }
}

fn start_worker(db: Db) -> Result<Worker, StorageError> {
    let (batches, batches_in) = mpsc::sync_channel::<Vec<AuditEvent>>(1);
    let (answers_out, answers) = mpsc::sync_channel::<Answer>(1);
    std::thread::Builder::new()
        .name("autolink-audit-pg".into())
        .spawn(move || run_worker(db, batches_in, answers_out))
        .map_err(|e| StorageError::Unavailable(format!("cannot start a thread: {e}")))?;
    Ok(Worker { batches, answers })
}

/// The connection's thread: a batch in, its answer out, until the writer lets go.
fn run_worker(db: Db, batches: Receiver<Vec<AuditEvent>>, answers: SyncSender<Answer>) {
    let mut conn: Option<PgConnection> = None;
    while let Ok(mut batch) = batches.recv() {
        let result = copy_batch(&db, &mut conn, &batch);
        match &result {
            Ok(()) => batch.clear(),
            // Whatever failed, the next batch gets a new connection: a COPY fails on bad data
            // only if the schema changed under the service, and a connection error leaves
            // nothing worth keeping.
            Err(_) => conn = None,
        }
        if answers.send((batch, result)).is_err() {
            return;
        }
    }
}

fn copy_batch(
    db: &Db,
    conn: &mut Option<PgConnection>,
    batch: &[AuditEvent],
) -> Result<(), StorageError> {
    let conn = match conn {
        Some(conn) => conn,
        None => match db.connect_unpooled()? {
            DbConn::Postgres(pg) => conn.insert(pg),
            DbConn::Sqlite(_) => {
                return Err(StorageError::Unavailable(
                    "the PostgreSQL audit writer got a SQLite connection".into(),
                ))
            }
        },
    };
    diesel::copy_from(audit_events::table)
        .from_insertable(batch)
        .execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;

    use crate::storage::audit::tests::event;
    use crate::storage::audit::{query, AuditFilter, AuditWriter};
    use crate::storage::postgres::link_changes::test_database::create;

    fn found(pg: &crate::storage::Db, filter: AuditFilter<'_>) -> Vec<String> {
        let mut conn = pg.get().unwrap();
        query(
            &mut conn,
            &AuditFilter {
                limit: 100,
                ..filter
            },
        )
        .unwrap()
        .into_iter()
        .map(|r| r.event.request_id)
        .collect()
    }

    #[test]
    fn the_writer_copies_its_batches_on_its_own_connection_and_the_lookups_find_them() {
        let Some(pg) = create("postgres audit writer") else {
            return;
        };
        let (writer, handle) = AuditWriter::start(pg.db.clone());
        for n in 0..300 {
            writer.record(event(
                n,
                &format!("u{}@x.com", n % 7),
                &format!("s{}", n % 5),
            ));
            if n % 100 == 99 {
                // Several batches.
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
        }
        let mut conn = pg.connect();
        let count = |conn: &mut PgConnection| -> i64 {
            crate::storage::schema::audit_events::table
                .count()
                .get_result(conn)
                .unwrap()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while count(&mut conn) < 300 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // The writer's connection dies (a restart, a failover): the next batch fails on it, and
        // is written again on a new connection.
        let ended: Vec<Ended> = diesel::sql_query(
            "SELECT pg_terminate_backend(pid) AS ended FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .load(&mut conn)
        .unwrap();
        assert!(
            ended.iter().any(|e| e.ended),
            "the writer's connection was open"
        );
        for n in 300..310 {
            writer.record(event(n, "after@x.com", "s-after"));
        }
        drop(writer);
        handle.join();
        assert_eq!(count(&mut conn), 310);
        let by_email = found(
            &pg.db,
            AuditFilter {
                email_key: Some("u3@x.com"),
                ..Default::default()
            },
        );
        let expected: Vec<String> = (0..300)
            .rev()
            .filter(|n| n % 7 == 3)
            .map(|n| format!("r{n}"))
            .collect();
        assert_eq!(by_email, expected);
        // Issuers alternate with n's parity, subjects follow n % 5.
        let by_identity = found(
            &pg.db,
            AuditFilter {
                issuer: Some("iss-b"),
                subject: Some("s2"),
                ..Default::default()
            },
        );
        let expected: Vec<String> = (0..300)
            .rev()
            .filter(|n| n % 5 == 2 && n % 2 == 1)
            .map(|n| format!("r{n}"))
            .collect();
        assert_eq!(by_identity, expected);
    }

    #[derive(QueryableByName)]
    struct Ended {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        ended: bool,
    }

    #[derive(QueryableByName)]
    struct Indexes {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        text_indexes: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        indexes: i64,
    }

    #[derive(QueryableByName)]
    struct Plan {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }

    /// The plan of the lookup's SQL as diesel sends it, on a table too large to scan.
    fn plan_of(conn: &mut PgConnection, column: &str, value: &str) -> String {
        let sql = format!(
            "EXPLAIN SELECT id FROM audit_events WHERE {column} = '{value}' AND \
             {} AND hashtextextended({column}, 0) = hashtextextended('{value}', 0) \
             ORDER BY id DESC LIMIT 50",
            super::IN_EVERY_BUCKET
        );
        diesel::sql_query(sql)
            .load::<Plan>(conn)
            .unwrap()
            .into_iter()
            .map(|p| p.line)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn lookups_by_email_and_by_subject_use_the_bucketed_hashed_indexes_and_compare_the_columns() {
        let Some(pg) = create("postgres audit hashed indexes") else {
            return;
        };
        let mut conn = pg.connect();
        let bulk = |tag: &str| {
            diesel::sql_query(format!(
                "INSERT INTO audit_events (at, request_id, actor, source, outcome, email_key, \
                 issuer, subject) SELECT now(), '{tag}' || i, 'b2c', 'test', 'AlreadyLinked', \
                 'e' || i || '@x.com', 'iss', 's' || i FROM generate_series(1, 10000) i"
            ))
        };
        bulk("bulk").execute(&mut conn).unwrap();
        // The next events in bucket 3 (ids from 3 * 2^16): a lookup finds the events of every
        // bucket, the newest first.
        diesel::sql_query("SELECT setval('audit_events_id_seq', 3 * 65536)")
            .execute(&mut conn)
            .unwrap();
        bulk("later").execute(&mut conn).unwrap();
        diesel::sql_query("ANALYZE audit_events")
            .execute(&mut conn)
            .unwrap();
        let email = plan_of(&mut conn, "email_key", "e5@x.com");
        assert!(email.contains("audit_events_email_bucket"), "{email}");
        let subject = plan_of(&mut conn, "subject", "s5");
        assert!(subject.contains("audit_events_subject_bucket"), "{subject}");
        // The text indexes of migration 000003 are gone.
        let indexes = diesel::sql_query(
            "SELECT count(*) FILTER (WHERE indexname IN ('audit_events_email_key', \
             'audit_events_identity')) AS text_indexes, count(*) AS indexes FROM pg_indexes \
             WHERE tablename = 'audit_events'",
        )
        .get_result::<Indexes>(&mut conn)
        .unwrap();
        assert_eq!(
            (indexes.text_indexes, indexes.indexes),
            (0, 4),
            "the key, `at`, and the two bucketed hashed indexes"
        );
        assert_eq!(
            found(
                &pg.db,
                AuditFilter {
                    email_key: Some("e5@x.com"),
                    ..Default::default()
                }
            ),
            ["later5", "bulk5"]
        );
        assert_eq!(
            found(
                &pg.db,
                AuditFilter {
                    issuer: Some("iss"),
                    subject: Some("s7"),
                    ..Default::default()
                }
            ),
            ["later7", "bulk7"]
        );
        assert_eq!(
            found(
                &pg.db,
                AuditFilter {
                    issuer: Some("other"),
                    subject: Some("s5"),
                    ..Default::default()
                }
            ),
            Vec::<String>::new(),
            "the issuer is compared on the rows the subject's index finds"
        );
    }
}
