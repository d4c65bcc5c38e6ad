//! The floor of `bench/backfill.sh` on SQLite (see BENCHMARKS.md, "Backfill"): the SQLite work of
//! the benchmark's backfill and nothing else, to compare the backfill's time with.
//!
//! It writes what a backfill of the benchmark's export writes, into a database prepared as the
//! benchmark prepares it (migrated, the customers of `bench/backfill.sh` imported): for each user,
//! the two reads that decide it (the identity's active link; the customers with its email, each
//! with whether it holds identities linked under another email), then its customer when new (with
//! a random account number and the creation key), its link, its audit event and its outbox events
//! (`customer.created` for a new customer, `identity.linked`), in batches of 5,000 users, each
//! one transaction, with the service's SQLite settings (WAL, `synchronous = FULL`, foreign keys,
//! the backfill's page cache), and the backfill's checkpoint thread
//! ([`autolink::storage::sqlite::checkpoints`]). Every statement is prepared once and bound in
//! place (rusqlite); the users are made up in memory, as the benchmark's generator makes them, so
//! no JSON is read. What it does not do: parse the export, decide with the rules, write the
//! report, or anything of diesel.
//!
//! Usage: `backfill_floor DATABASE USERS [BATCH] [CACHE_KIB]`. Prints one line:
//! `floor: N users in S s (R users/s), ...` with the time of the reads, the writes and the
//! commits. Fails (exit status 1) when the database does not hold the benchmark's customers.

use std::time::{Duration, Instant};

use rand::Rng;
use rusqlite::{params, Connection, OptionalExtension};

use autolink::storage::sqlite::checkpoints::Checkpoints;

/// The issuer of `bench/backfill.sh`.
const ISSUER: &str = "https://fabrikam.b2clogin.com/775527ff-9a37-4307-8b3d-cc311f58d925/v2.0/";
const FIRST: [&str; 16] = [
    "Ana", "Bo", "Carla", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Jun", "Kim", "Lee", "Mia",
    "Noor", "Oscar", "Pia",
];
const LAST: [&str; 10] = [
    "Smith", "Chen", "Garcia", "Muller", "Rossi", "Novak", "Kowalski", "Haddad", "Tanaka", "Silva",
];

const FIND_LINK: &str = "SELECT c.id, c.account_number FROM identity_links l \
     JOIN customers c ON c.id = l.customer_id WHERE l.issuer = ?1 AND l.subject = ?2 AND l.active";
const FIND_CUSTOMERS: &str =
    "SELECT c.id, c.account_number, EXISTS (SELECT 1 FROM identity_links l \
     WHERE l.customer_id = c.id AND l.active AND l.email_key != c.email_key) FROM customers c \
     WHERE c.email_key = ?1 AND c.legal_entity = ?2 AND c.party_type = 'person' AND c.active \
     ORDER BY c.id";
const INSERT_CUSTOMER: &str = "INSERT INTO customers (account_number, legal_entity, party_type, \
     is_b2b, primary_email, email_key, first_name, last_name, origin, creation_key, created_at, \
     updated_at) VALUES (?1, 'USRT', 'person', 0, ?2, ?3, ?4, ?5, 'autolink', ?6, ?7, ?7) \
     ON CONFLICT DO NOTHING RETURNING id";
const INSERT_LINK: &str =
    "INSERT INTO identity_links (issuer, subject, customer_id, sign_in_type, \
     identity_provider, email_key, linked_by, created_at, updated_at) \
     VALUES (?1, ?2, ?3, 'emailAddress', 'local', ?4, 'auto', ?5, ?5) \
     ON CONFLICT DO NOTHING RETURNING id";
const INSERT_AUDIT: &str =
    "INSERT INTO audit_events (at, request_id, actor, source, step, channel, \
     outcome, code, email_key, issuer, subject, account_number, detail) \
     VALUES (?1, ?2, 'b2c', 'backfill', NULL, 'web', ?3, NULL, ?4, ?5, ?6, ?7, NULL)";
const INSERT_EVENT: &str =
    "INSERT INTO webhook_events (position, event_id, type, at, data, email) \
     VALUES (?1, ?2, ?3, ?4, ?5, NULL)";

/// One user of the benchmark's export, and what its reads found.
struct User {
    number: usize,
    email: String,
    key: String,
    subject: String,
    customer: Option<(i64, String)>,
}

#[derive(Default)]
struct Times {
    reads: Duration,
    writes: Duration,
    commits: Duration,
}

fn main() {
    if let Err(error) = run() {
        eprintln!("backfill_floor: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(users)) = (args.get(1), args.get(2)) else {
        return Err("usage: backfill_floor DATABASE USERS [BATCH] [CACHE_KIB]".into());
    };
    let users: usize = users.parse()?;
    let batch: usize = args.get(3).map_or(Ok(5000), |b| b.parse())?;
    let cache_kib: u64 = args.get(4).map_or(Ok(16 * 1024), |c| c.parse())?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; \
         PRAGMA cache_size = -{cache_kib}; PRAGMA wal_autocheckpoint = 0;"
    ))?;
    let imported: i64 = conn.query_row("SELECT count(*) FROM customers", [], |r| r.get(0))?;
    if imported != (users / 2) as i64 {
        return Err(format!(
            "{path} holds {imported} customers, not the {} of bench/backfill.sh's import",
            users / 2
        )
        .into());
    }
    let checkpoints = Checkpoints::start(path)?;
    let started = Instant::now();
    let mut times = Times::default();
    let (mut linked, mut created) = (0u64, 0u64);
    let mut event_ids: u64 = 0;
    let mut rng = rand::thread_rng();
    let run_id = format!("{:032x}", rng.gen::<u128>());
    let mut first = 1;
    while first <= users {
        let end = (first + batch).min(users + 1);
        let at = chrono::Utc::now()
            .naive_utc()
            .format("%F %T%.f")
            .to_string();
        let t0 = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut find_link = conn.prepare_cached(FIND_LINK)?;
        let mut find_customers = conn.prepare_cached(FIND_CUSTOMERS)?;
        let mut batch_users = Vec::with_capacity(end - first);
        for number in first..end {
            let (first_name, last_name) = (FIRST[number % 16], LAST[number % 10]);
            let email = format!(
                "{first_name}.{last_name}+{number}@Example{}.com",
                number % 400
            );
            let key = email.to_lowercase();
            let subject = format!(
                "{:08}-{:04}-4000-8000-{number:012}",
                number % 99991,
                number % 9973
            );
            let link: Option<i64> = find_link
                .query_row(params![ISSUER, subject], |r| r.get(0))
                .optional()?;
            if link.is_some() {
                return Err("the database already holds links: use a fresh one".into());
            }
            let customer = find_customers
                .query_row(params![key, "USRT"], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            batch_users.push(User {
                number,
                email,
                key,
                subject,
                customer,
            });
        }
        let t1 = Instant::now();
        let events =
            batch_users.len() + batch_users.iter().filter(|u| u.customer.is_none()).count();
        let last: i64 = conn.query_row(
            "UPDATE event_sequence SET n = n + ?1 RETURNING n",
            [events as i64],
            |r| r.get(0),
        )?;
        let mut position = last - events as i64 + 1;
        let mut insert_customer = conn.prepare_cached(INSERT_CUSTOMER)?;
        let mut insert_link = conn.prepare_cached(INSERT_LINK)?;
        let mut insert_audit = conn.prepare_cached(INSERT_AUDIT)?;
        let mut insert_event = conn.prepare_cached(INSERT_EVENT)?;
        let mut append_event = |kind: &str, data: String| -> rusqlite::Result<()> {
            event_ids += 1;
            let id = format!("msg_{:016x}{event_ids:016x}", started.elapsed().as_millis());
            insert_event.execute(params![position, id, kind, at, data])?;
            position += 1;
            Ok(())
        };
        for user in &batch_users {
            let (customer_id, account_number, outcome) = match &user.customer {
                Some((id, number)) => (*id, number.clone(), "Linked"),
                None => {
                    let names = (FIRST[user.number % 16], LAST[user.number % 10]);
                    // A random account number that is taken (about one in eight runs draws
                    // one) is drawn again, as the service does.
                    let (id, number) = loop {
                        let number = format!("AL{:012}", rng.gen_range(0..1_000_000_000_000u64));
                        let id: Option<i64> = insert_customer
                            .query_row(
                                params![
                                    number,
                                    user.email,
                                    user.key,
                                    names.0,
                                    names.1,
                                    format!("USRT|{}", user.key),
                                    at
                                ],
                                |r| r.get(0),
                            )
                            .optional()?;
                        if let Some(id) = id {
                            break (id, number);
                        }
                    };
                    append_event(
                        "customer.created",
                        format!(
                            r#"{{"accountNumber":"{number}","channel":"web","legalEntity":"USRT","origin":"autolink"}}"#
                        ),
                    )?;
                    (id, number, "Created")
                }
            };
            let link_id: i64 = insert_link.query_row(
                params![ISSUER, user.subject, customer_id, user.key, at],
                |r| r.get(0),
            )?;
            insert_audit.execute(params![
                at,
                format!("{run_id}-{}", user.number),
                outcome,
                user.key,
                ISSUER,
                user.subject,
                account_number
            ])?;
            append_event(
                "identity.linked",
                format!(
                    r#"{{"accountNumber":"{account_number}","channel":"web","issuer":"{ISSUER}","legalEntity":"USRT","linkId":{link_id},"outcome":"{outcome}","subject":"{}"}}"#,
                    user.subject
                ),
            )?;
            if outcome == "Created" {
                created += 1;
            } else {
                linked += 1;
            }
        }
        let t2 = Instant::now();
        drop((find_link, find_customers));
        drop((insert_customer, insert_link, insert_audit));
        conn.execute_batch("COMMIT")?;
        checkpoints.committed();
        let t3 = Instant::now();
        times.reads += t1 - t0;
        times.writes += t2 - t1;
        times.commits += t3 - t2;
        first = end;
    }
    drop(checkpoints);
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "floor: {users} users in {seconds:.2} s ({:.0} users/s), Linked {linked}, Created {created}; \
         reads {:.2} s, writes {:.2} s, commits {:.2} s (batches of {batch}, cache {cache_kib} KiB)",
        users as f64 / seconds,
        times.reads.as_secs_f64(),
        times.writes.as_secs_f64(),
        times.commits.as_secs_f64(),
    );
    Ok(())
}
