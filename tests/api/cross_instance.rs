//! The sign-in cache across instances: two server processes on one database (the SQLite file, or
//! the PostgreSQL database when `AUTOLINK_TEST_POSTGRES_URL` is set). A link moved through one
//! instance's admin API is answered by the other's next sign-ins within a second, and, on
//! PostgreSQL, never from memory while its listening connection is down.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::{json, Value};

use crate::helpers::*;

/// The identity every sign-in of these tests is made with.
const OID: &str = "oid-cross-instance";
/// How long a change made through one instance may go unseen by another (DESIGN section 10).
const WITHIN: Duration = Duration::from_secs(1);

/// A token-step sign-in of the test identity (carol@example.com) through `address`.
async fn sign_in(client: &reqwest::Client, address: &str) -> Value {
    let body = token_step("carol@example.com", OID, local_identity(), B2C_CLIENT);
    let response = client
        .post(format!("{address}/b2c/api-connector"))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The account number a sign-in answered, `None` when it failed closed.
fn account(answer: &Value) -> Option<&str> {
    assert_eq!(answer["action"], "Continue", "{answer}");
    match answer["extension_CustomerAccountNumber"].as_str() {
        Some(number) => Some(number),
        None => {
            assert_eq!(
                answer["extension_AutoLinkError"], "ServiceUnavailable",
                "{answer}"
            );
            None
        }
    }
}

/// Moves link `id` to customer `to` through the admin API at `address`; returns the new link's
/// id and when the answer came.
async fn move_link(client: &reqwest::Client, address: &str, id: i64, to: &str) -> (i64, Instant) {
    let response = client
        .post(format!("{address}/admin/v1/links/{id}/move"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"accountNumber": to, "reason": "merged duplicate records"}))
        .send()
        .await
        .unwrap();
    let answered = Instant::now();
    let status = response.status().as_u16();
    let moved: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["accountNumber"], to, "{moved}");
    (moved["id"].as_i64().unwrap(), answered)
}

/// Signs in through `address` until the answer is `to`, asserting that every answer before is
/// `from` and that `to` comes within [`WITHIN`] of `since`; then that it stays `to`.
async fn seen_within_a_second(
    client: &reqwest::Client,
    address: &str,
    since: Instant,
    from: &str,
    to: &str,
) -> Duration {
    loop {
        let answer = sign_in(client, address).await;
        let elapsed = since.elapsed();
        match account(&answer) {
            Some(number) if number == to => break,
            Some(number) => assert_eq!(number, from, "{answer}"),
            None => {}
        }
        assert!(
            elapsed < WITHIN,
            "still {from} {elapsed:?} after the move: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = since.elapsed();
    assert!(took < WITHIN, "{took:?}");
    for _ in 0..5 {
        assert_eq!(account(&sign_in(client, address).await), Some(to));
    }
    took
}

/// Points the identity's active link at customer `to` in the database, without the triggers:
/// the link generation does not move, so only a kept link would still answer the old customer.
fn relink_without_triggers(db: &TestDatabase, to: &str) {
    let update = format!(
        "UPDATE identity_links SET customer_id = \
         (SELECT id FROM customers WHERE account_number = '{to}') \
         WHERE subject = '{OID}' AND active"
    );
    let pool = db.open();
    let mut conn = pool.get().unwrap();
    let sql = if postgres_base_url().is_some() {
        format!("BEGIN; SET LOCAL session_replication_role = replica; {update}; COMMIT;")
    } else {
        format!(
            "BEGIN IMMEDIATE; DROP TRIGGER identity_links_updated; {update}; \
             CREATE TRIGGER identity_links_updated AFTER UPDATE ON identity_links \
             BEGIN UPDATE link_generation SET n = n + 1; END; COMMIT;"
        )
    };
    conn.batch_execute(&sql).unwrap();
}

/// The PostgreSQL listener backends of the test's database.
fn listeners(admin: &mut PgConnection, database: &str) -> i64 {
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "count(*) FROM pg_stat_activity WHERE datname = '{database}' \
         AND application_name = 'autolink-link-listener'"
    )))
    .get_result(admin)
    .unwrap()
}

#[tokio::test]
async fn a_link_moved_through_one_instance_is_answered_by_the_other_within_a_second() {
    let db = TestDatabase::new();
    {
        let pool = db.open();
        let csv = csv(&[
            "C-1,USRT,person,false,carol@example.com,Carol,One",
            "C-2,USRT,person,false,carol.two@example.com,Carol,Two",
            "C-3,USRT,person,false,carol.three@example.com,Carol,Three",
        ]);
        autolink::import::import_reader(
            &pool,
            csv.as_bytes(),
            autolink::import::Format::Csv,
            autolink::import::OnError::RejectFile,
        )
        .unwrap();
    }
    // One after the other: the second finds the migrations applied.
    let server_a = ServerProcess::start(&db.url);
    let server_b = ServerProcess::start(&db.url);
    let (a, b) = (server_a.address.clone(), server_b.address.clone());
    let client = reqwest::Client::new();

    let first = sign_in(&client, &b).await;
    assert_eq!(account(&first), Some("C-1"));
    assert_eq!(first["extension_AutoLinkOutcome"], "Linked");
    if let Some((mut admin, name)) = pg_admin(&db) {
        // B listens from its first sign-in on.
        let listening = Instant::now();
        while listeners(&mut admin, &name) == 0 {
            assert!(listening.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Read (and kept) by B, then answered from B's memory: a change that moves no generation
    // goes unseen by B, though the database has it.
    for _ in 0..2 {
        let again = sign_in(&client, &b).await;
        assert_eq!(account(&again), Some("C-1"));
        assert_eq!(again["extension_AutoLinkOutcome"], "AlreadyLinked");
    }
    relink_without_triggers(&db, "C-3");
    assert_eq!(account(&sign_in(&client, &b).await), Some("C-1"));
    assert_eq!(account(&sign_in(&client, &a).await), Some("C-3"));
    relink_without_triggers(&db, "C-1");
    assert_eq!(account(&sign_in(&client, &b).await), Some("C-1"));

    // Moved through A: B answers the new customer within a second.
    let links: Value = client
        .get(format!("{a}/admin/v1/links?accountNumber=C-1"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = links["items"][0]["id"].as_i64().unwrap();
    let (id, moved) = move_link(&client, &a, id, "C-2").await;
    let took = seen_within_a_second(&client, &b, moved, "C-1", "C-2").await;
    eprintln!("B answered the moved link {took:?} after A's answer");

    let Some((mut admin, name)) = pg_admin(&db) else {
        return;
    };
    // PostgreSQL: B's listening connection is cut, and no new one can be opened. B cannot tell
    // what changes, so it answers nothing from memory: the move made meanwhile through A is
    // answered at once (read through B's pool, whose connections are open), never C-2.
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"
        ))
        .unwrap();
    let terminated: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{name}' \
         AND (query LIKE 'LISTEN%' OR application_name = 'autolink-link-listener')"
    )))
    .get_result(&mut admin)
    .unwrap();
    assert!(terminated >= 1, "B's listener was found and terminated");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (id, _) = move_link(&client, &a, id, "C-1").await;
    let mut answered = 0;
    for _ in 0..10 {
        let answer = sign_in(&client, &b).await;
        if let Some(number) = account(&answer) {
            assert_eq!(number, "C-1", "a stale link answered: {answer}");
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered > 0, "B answered through its pool");
    assert_eq!(listeners(&mut admin, &name), 0, "no listener could connect");

    // Connections allowed again: B listens again and follows the next move within a second.
    admin
        .batch_execute(&format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"))
        .unwrap();
    let back = Instant::now();
    while listeners(&mut admin, &name) == 0 {
        assert!(back.elapsed() < Duration::from_secs(10), "B listens again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        assert_eq!(account(&sign_in(&client, &b).await), Some("C-1"));
    }
    let (_, moved) = move_link(&client, &a, id, "C-3").await;
    let took = seen_within_a_second(&client, &b, moved, "C-1", "C-3").await;
    eprintln!("after the outage, B answered the moved link {took:?} after A's answer");
}

/// A connection to the PostgreSQL server's own database and the test database's name, on
/// PostgreSQL.
fn pg_admin(db: &TestDatabase) -> Option<(PgConnection, String)> {
    let base = postgres_base_url()?;
    let name = db.url.rsplit('/').next()?.split('?').next()?.to_string();
    Some((PgConnection::establish(&base).unwrap(), name))
}
