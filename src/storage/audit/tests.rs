//! The storage tests of the audit log (SQLite); PostgreSQL's are in `storage/postgres/audit.rs`.

use super::*;
use crate::storage::sqlite::audit_lookup::merge_from_database;
use std::time::Duration;

use crate::storage::schema::audit_keys;
use crate::storage::{Db, PoolOptions};

/// A sign-in's event (issuers alternate between two), for the storage tests.
pub(crate) fn event(n: usize, email: &str, subject: &str) -> AuditEvent {
    AuditEvent {
        at: crate::storage::now(),
        request_id: format!("r{n}"),
        actor: "b2c".into(),
        source: "test".into(),
        step: None,
        channel: Some("web".into()),
        outcome: "AlreadyLinked".into(),
        code: None,
        email_key: Some(email.into()),
        issuer: Some(if n % 2 == 0 { "iss-a" } else { "iss-b" }.into()),
        subject: Some(subject.into()),
        account_number: None,
        detail: None,
    }
}

fn ids(conn: &mut DbConn, filter: AuditFilter<'_>) -> Vec<String> {
    query(
        conn,
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
fn the_writer_writes_every_queued_event_before_it_stops() {
    let (_dir, db) = crate::storage::temp_sqlite();
    let (writer, handle) = AuditWriter::start(db.clone());
    let second = writer.clone();
    for n in 0..10 {
        assert!(writer.try_record(event(n, "q@x.com", "s")).is_ok());
    }
    second.record(event(10, "q@x.com", "s"));
    drop(writer);
    drop(second);
    handle.join();
    let mut conn = db.get().unwrap();
    let found = ids(
        &mut conn,
        AuditFilter {
            email_key: Some("q@x.com"),
            ..Default::default()
        },
    );
    assert_eq!(found.len(), 11, "{found:?}");
}

#[test]
fn a_colliding_lookup_key_never_returns_another_email_s_event() {
    let (_dir, db) = crate::storage::temp_sqlite();
    let mut conn = db.get().unwrap();
    insert(
        &mut conn,
        &[event(0, "a@x.com", "s0"), event(1, "b@x.com", "s1")],
    )
    .unwrap();
    merge_from_database(db.sqlite_path().unwrap()).unwrap();
    {
        // As if b@x.com's key were a@x.com's too.
        let DbConn::Sqlite(c) = &mut *conn else {
            panic!("not SQLite")
        };
        crate::storage::attach_audit_lookup(c, db.sqlite_path().unwrap()).unwrap();
        diesel::insert_into(audit_keys::table)
            .values((
                audit_keys::lookup_key.eq(email_lookup_key(b"a@x.com")),
                audit_keys::event_id.eq(2),
            ))
            .execute(c)
            .unwrap();
        crate::storage::detach_audit_lookup(c).unwrap();
    }
    let found = ids(
        &mut conn,
        AuditFilter {
            email_key: Some("a@x.com"),
            ..Default::default()
        },
    );
    assert_eq!(found, ["r0"]);
}

#[test]
fn a_lookup_file_of_another_layout_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db").display().to_string();
    {
        let lookup = rusqlite::Connection::open(crate::storage::audit_lookup_path(&path)).unwrap();
        lookup
            .execute_batch(
                "CREATE TABLE audit_lookup (lookup_key TEXT NOT NULL, \
                   event_id INTEGER NOT NULL, PRIMARY KEY (lookup_key, event_id)) WITHOUT ROWID; \
                 CREATE TABLE audit_lookup_state (singleton INTEGER PRIMARY KEY, \
                   indexed_through INTEGER NOT NULL); \
                 INSERT INTO audit_lookup VALUES ('e:a@x.com', 1); \
                 INSERT INTO audit_lookup_state VALUES (1, 1);",
            )
            .unwrap();
    }
    let db = Db::open(&format!("sqlite://{path}"), &PoolOptions::default()).unwrap();
    let mut conn = db.get().unwrap();
    insert(&mut conn, &[event(0, "a@x.com", "s0")]).unwrap();
    // Indexed from the start of the log again, under the new keys.
    assert_eq!(merge_from_database(&path).unwrap(), 1);
    let lookup = rusqlite::Connection::open(crate::storage::audit_lookup_path(&path)).unwrap();
    let old: i64 = lookup
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'audit_lookup'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0);
    let rows: i64 = lookup
        .query_row("SELECT count(*) FROM audit_keys", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
}

#[test]
fn an_unreadable_lookup_file_is_rebuilt_and_the_database_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("main.db").display().to_string();
    let url = format!("sqlite://{path}");
    {
        let db = Db::open(&url, &PoolOptions::default()).unwrap();
        insert(&mut db.get().unwrap(), &[event(0, "a@x.com", "s0")]).unwrap();
        assert_eq!(merge_from_database(&path).unwrap(), 1);
    }
    let lookup = crate::storage::audit_lookup_path(&path);
    std::fs::write(&lookup, vec![0x5a; 8192]).unwrap();
    // The server and the commands open the database as before; the file is rebuilt and
    // indexed again from the start of the log.
    let db = Db::open(&url, &PoolOptions::default()).unwrap();
    assert_eq!(lookup_state(&path), (0, 0));
    assert_eq!(merge_from_database(&path).unwrap(), 1);
    assert_eq!(lookup_state(&path).1, 2);
    let mut conn = db.get().unwrap();
    let found = ids(
        &mut conn,
        AuditFilter {
            email_key: Some("a@x.com"),
            ..Default::default()
        },
    );
    assert_eq!(found, ["r0"]);
}

/// The lookup file's watermark and number of pairs.
fn lookup_state(path: &str) -> (i64, i64) {
    let lookup = rusqlite::Connection::open(crate::storage::audit_lookup_path(path)).unwrap();
    let through = lookup
        .query_row("SELECT indexed_through FROM audit_lookup_state", [], |r| {
            r.get(0)
        })
        .unwrap();
    let pairs = lookup
        .query_row("SELECT count(*) FROM audit_keys", [], |r| r.get(0))
        .unwrap();
    (through, pairs)
}

#[test]
fn the_service_s_merge_indexes_what_the_writer_fed_it_by_the_time_it_stops() {
    let (_dir, db) = crate::storage::temp_sqlite();
    let path = db.sqlite_path().unwrap().to_string();
    let mut conn = db.get().unwrap();
    // Written before the service started: the writer reads them back for the feed.
    insert(&mut conn, &[event(0, "old@x.com", "s-old")]).unwrap();
    let (writer, handle) = AuditWriter::start(db.clone());
    for n in 1..=40 {
        writer.record(event(n, &format!("u{n}@x.com"), &format!("s{n}")));
        if n == 20 {
            // A link's event, written in its own transaction: also read back.
            insert(&mut conn, &[event(100, "link@x.com", "s-link")]).unwrap();
        }
    }
    drop(writer);
    handle.join();
    assert_eq!(lookup_state(&path), (42, 84), "every event, two pairs each");
    for (email, request_id) in [
        ("old@x.com", "r0"),
        ("link@x.com", "r100"),
        ("u33@x.com", "r33"),
    ] {
        let found = ids(
            &mut conn,
            AuditFilter {
                email_key: Some(email),
                ..Default::default()
            },
        );
        assert_eq!(found, [request_id], "{email}");
    }
}

/// The scheduling policy of the threads of this process named `name` (Linux: field 41 of
/// `/proc/self/task/*/stat`).
#[cfg(target_os = "linux")]
fn thread_policies(name: &str) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command name, which is in parentheses, start at field 3.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        policies.push(policy);
    }
    policies
}

#[cfg(target_os = "linux")]
#[test]
fn the_lookup_merge_runs_at_idle_priority_and_the_writer_does_not() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_IDLE: u32 = 5;
    let (_dir, db) = crate::storage::temp_sqlite();
    let (writer, handle) = AuditWriter::start(db.clone());
    // Thread names are cut to 15 bytes: "autolink-audit-lookup" shows as "autolink-audit-".
    // A thread shows its name once it has started running.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (merge, writers) = loop {
        let merge = thread_policies("autolink-audit-");
        let writers = thread_policies("autolink-audit");
        let started = merge.contains(&SCHED_IDLE) && !writers.is_empty();
        if started || std::time::Instant::now() > deadline {
            break (merge, writers);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(merge.contains(&SCHED_IDLE), "merge threads: {merge:?}");
    assert!(
        !writers.is_empty() && writers.iter().all(|p| *p == SCHED_OTHER),
        "{writers:?}"
    );
    drop(writer);
    handle.join();
}

#[test]
fn lookups_find_events_on_both_sides_of_the_merge() {
    let (_dir, db) = crate::storage::temp_sqlite();
    let mut conn = db.get().unwrap();
    let path = db.sqlite_path().unwrap();
    let first: Vec<AuditEvent> = (0..6)
        .map(|n| {
            event(
                n,
                if n < 3 { "a@x.com" } else { "b@x.com" },
                &format!("s{}", n % 3),
            )
        })
        .collect();
    insert(&mut conn, &first).unwrap();
    assert_eq!(merge_from_database(path).unwrap(), 6);
    assert_eq!(merge_from_database(path).unwrap(), 0, "nothing new");
    {
        let DbConn::Sqlite(c) = &mut *conn else {
            panic!("not SQLite")
        };
        crate::storage::attach_audit_lookup(c, db.sqlite_path().unwrap()).unwrap();
        let keys: i64 = audit_keys::table.count().get_result(c).unwrap();
        crate::storage::detach_audit_lookup(c).unwrap();
        assert_eq!(keys, 12, "an email and an identity each");
    }
    // After the watermark: found by the scan until the next merge.
    insert(
        &mut conn,
        &[event(6, "a@x.com", "s0"), event(7, "c@x.com", "s1")],
    )
    .unwrap();
    for round in ["before the second merge", "after it"] {
        assert_eq!(
            ids(
                &mut conn,
                AuditFilter {
                    email_key: Some("a@x.com"),
                    ..Default::default()
                }
            ),
            ["r6", "r2", "r1", "r0"],
            "{round}"
        );
        assert_eq!(
            ids(
                &mut conn,
                AuditFilter {
                    issuer: Some("iss-a"),
                    subject: Some("s0"),
                    ..Default::default()
                }
            ),
            ["r6", "r0"],
            "{round}"
        );
        assert_eq!(
            ids(
                &mut conn,
                AuditFilter {
                    issuer: Some("iss-b"),
                    ..Default::default()
                }
            ),
            ["r7", "r5", "r3", "r1"],
            "{round}: an issuer alone"
        );
        assert_eq!(
            ids(
                &mut conn,
                AuditFilter {
                    email_key: Some("b@x.com"),
                    subject: Some("s1"),
                    ..Default::default()
                }
            ),
            ["r4"],
            "{round}: two filters"
        );
        merge_from_database(path).unwrap();
    }
    // The pool's connection does not keep the lookup attached: its next BEGIN IMMEDIATE
    // would take the lookup's write lock too.
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let DbConn::Sqlite(c) = &mut *conn else {
        panic!("not SQLite")
    };
    let attached: Count =
        diesel::sql_query("SELECT count(*) AS n FROM pragma_database_list WHERE name = 'lookup'")
            .get_result(c)
            .unwrap();
    assert_eq!(attached.n, 0);
}
