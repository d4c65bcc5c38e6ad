//! PostgreSQL reliability, with the fault injected from outside the server: a database whose
//! connections stay open but never answer again (a frozen server, a failover), a table lock held
//! longer than the request time limit, and SIGTERM while a database call waits on a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use crate::helpers::*;

/// The request time limit the tests run with (`[database] request_timeout_ms`, the default).
const REQUEST_LIMIT: Duration = Duration::from_millis(1500);
/// What a fail-closed answer may take beyond the request time limit.
const MARGIN: Duration = Duration::from_millis(1000);

/// A TCP proxy in front of PostgreSQL that can freeze: every connection stays open, and nothing
/// is forwarded any more, in either direction. A connection open when the freeze began never
/// forwards again, even after `resume` (its server is gone: a failover, or a server that hangs
/// for good while its kernel still acknowledges); only connections opened after `resume` reach
/// the database.
struct FreezingProxy {
    port: u16,
    /// Moves at every freeze; a connection forwards only while it is the one it was born in.
    epoch: Arc<AtomicU64>,
    frozen: Arc<AtomicBool>,
    accept: JoinHandle<()>,
}

impl FreezingProxy {
    async fn start(upstream: String) -> FreezingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let epoch = Arc::new(AtomicU64::new(0));
        let frozen = Arc::new(AtomicBool::new(false));
        let accept = {
            let (epoch, frozen) = (epoch.clone(), frozen.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        return;
                    };
                    let born = epoch.load(Ordering::SeqCst);
                    let (epoch, frozen, upstream) =
                        (epoch.clone(), frozen.clone(), upstream.clone());
                    tokio::spawn(async move {
                        if frozen.load(Ordering::SeqCst) {
                            // Accepted (the kernel answered) and never served.
                            let _held = &inbound;
                            std::future::pending::<()>().await;
                        }
                        let Ok(outbound) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let (client_read, client_write) = inbound.into_split();
                        let (server_read, server_write) = outbound.into_split();
                        let up = pump(client_read, server_write, epoch.clone(), born);
                        let down = pump(server_read, client_write, epoch, born);
                        tokio::join!(up, down);
                    });
                }
            })
        };
        FreezingProxy {
            port,
            epoch,
            frozen,
            accept,
        }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn resume(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards bytes while the proxy is in the epoch the connection was born in; after that, holds
/// both ends open and forwards nothing, for good.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    epoch: Arc<AtomicU64>,
    born: u64,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) if epoch.load(Ordering::SeqCst) == born => return,
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if epoch.load(Ordering::SeqCst) != born {
            break;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
    // Frozen: keep both halves, answer nothing.
    let _held = (from, to);
    std::future::pending::<()>().await;
}

/// Posts a connector body; returns the status, the answer and how long it took.
async fn timed_connector(
    client: &reqwest::Client,
    address: &str,
    body: &Value,
) -> (u16, Value, Duration) {
    let started = Instant::now();
    let response = client
        .post(format!("{address}/b2c/api-connector"))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let value: Value = response.json().await.unwrap();
    (status, value, started.elapsed())
}

/// Whether a token-step answer is the fail-closed one: continue, no account, ServiceUnavailable.
fn is_token_step_fail_closed(status: u16, body: &Value) -> bool {
    status == 200
        && body["action"] == "Continue"
        && body["extension_AutoLinkError"] == "ServiceUnavailable"
        && body.get("extension_CustomerAccountNumber").is_none()
}

fn sign_in(oid: &str) -> Value {
    token_step("frozen@example.com", oid, local_identity(), B2C_CLIENT)
}

/// Customers with this email plus links of this subject, read directly (not through the proxy).
fn traces_of(app: &TestApp, email: &str, subject: &str) -> (usize, i64) {
    use autolink::storage::schema::identity_links;
    let customers = app.customers_with_email(email).len();
    let mut conn = app.db().get().unwrap();
    let links: i64 = identity_links::table
        .filter(identity_links::subject.eq(subject))
        .count()
        .get_result(&mut *conn)
        .unwrap();
    (customers, links)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_stops_answering_fails_requests_closed_and_the_service_recovers_after_it() {
    if postgres_base_url().is_none() {
        needs_postgres(
            "a_database_that_stops_answering_fails_requests_closed_and_the_service_recovers_after_it",
        );
        return;
    }
    let db = TestDatabase::new();
    db.open();
    let proxy = FreezingProxy::start(host_and_port(&db.url)).await;
    let proxied = through_proxy(&db.url, proxy.port);
    let app = spawn_on(db, |s| s.database_url = proxied.clone()).await;
    assert_eq!(app.db().backend(), autolink::storage::BackendKind::Postgres);
    app.import_csv(&csv(&[
        "POS-300,USRT,person,false,frozen@example.com,F,Rozen",
    ]));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Every pooled connection open when the database freezes, as under steady load: sign-ins
    // pile up behind a short lock, each holding a connection, and finish once it is released.
    let lock = TableLock::take(&app.db.url, "customers");
    let mut warm = JoinSet::new();
    for i in 0..16 {
        let (client, address) = (client.clone(), app.address.clone());
        warm.spawn(async move {
            timed_connector(&client, &address, &sign_in(&format!("oid-warm-{}", i % 4))).await
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    lock.release();
    while let Some(answer) = warm.join_next().await {
        let (status, body, _) = answer.unwrap();
        assert_continue(status, &body);
        assert_eq!(body["extension_CustomerAccountNumber"], "POS-300", "{body}");
    }

    proxy.freeze();
    let freeze = Duration::from_secs(10);
    let frozen_at = Instant::now();
    let mut callers = JoinSet::new();
    for caller in 0..4 {
        let (client, address) = (client.clone(), app.address.clone());
        callers.spawn(async move {
            let mut answers = Vec::new();
            let mut n = 0;
            while frozen_at.elapsed() < freeze {
                n += 1;
                let body = match n % 3 {
                    // A linked identity signing in.
                    0 => sign_in(&format!("oid-warm-{caller}")),
                    // A sign-up check.
                    1 => {
                        attribute_collection(&format!("check-{caller}-{n}@example.com"), B2C_CLIENT)
                    }
                    // A sign-up that would create a customer.
                    _ => token_step(
                        &format!("new-{caller}-{n}@example.com"),
                        &format!("oid-new-{caller}-{n}"),
                        local_identity(),
                        B2C_CLIENT,
                    ),
                };
                let (status, answer, took) = timed_connector(&client, &address, &body).await;
                answers.push((body, status, answer, took));
            }
            answers
        });
    }
    let mut during = Vec::new();
    while let Some(answers) = callers.join_next().await {
        during.extend(answers.unwrap());
    }
    let slowest = during.iter().map(|a| a.3).max().unwrap();
    for (body, status, answer, took) in &during {
        assert!(
            *took < REQUEST_LIMIT + MARGIN,
            "an answer during the freeze took {took:?}: {answer}"
        );
        if body["step"] == "PostAttributeCollection" {
            assert_block(*status, answer, "ServiceUnavailable");
        } else {
            assert!(is_token_step_fail_closed(*status, answer), "{answer}");
        }
    }
    let readyz = client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);

    proxy.resume();
    let resumed_at = Instant::now();
    let recovered = loop {
        let (status, answer, _) =
            timed_connector(&client, &app.address, &sign_in("oid-warm-0")).await;
        if status == 200 && answer["extension_CustomerAccountNumber"] == "POS-300" {
            break resumed_at.elapsed();
        }
        assert!(
            resumed_at.elapsed() < Duration::from_secs(5),
            "no sign-in succeeded within 5 s of the database answering again: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Back to normal, not one lucky request: concurrent sign-ins and a new sign-up all succeed.
    let mut after = JoinSet::new();
    for i in 0..16 {
        let (client, address) = (client.clone(), app.address.clone());
        after.spawn(async move {
            timed_connector(&client, &address, &sign_in(&format!("oid-warm-{}", i % 4))).await
        });
    }
    while let Some(answer) = after.join_next().await {
        let (status, body, _) = answer.unwrap();
        assert_continue(status, &body);
        assert_eq!(body["extension_CustomerAccountNumber"], "POS-300", "{body}");
    }
    let (status, body, _) = timed_connector(
        &client,
        &app.address,
        &token_step(
            "after@example.com",
            "oid-after",
            local_identity(),
            B2C_CLIENT,
        ),
    )
    .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkOutcome"], "Created", "{body}");
    let readyz = client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200);

    // What was answered as failed during the freeze took no effect.
    for (body, ..) in &during {
        if body["step"] == "PreTokenIssuance" && body["objectId"] != "oid-warm-0" {
            let email = body["email"].as_str().unwrap();
            let subject = body["objectId"].as_str().unwrap();
            if email != "frozen@example.com" {
                assert_eq!(traces_of(&app, email, subject), (0, 0), "{body}");
            }
        }
    }
    eprintln!(
        "frozen database: {} requests answered during the freeze, slowest {slowest:?}; \
         first success {recovered:?} after it answered again",
        during.len()
    );
}

/// Holds `LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE` on its own connection until dropped.
struct TableLock {
    conn: PgConnection,
}

impl TableLock {
    fn take(url: &str, table: &str) -> TableLock {
        let mut conn = PgConnection::establish(url).unwrap();
        conn.batch_execute(&format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        ))
        .unwrap();
        TableLock { conn }
    }

    fn release(mut self) {
        self.conn.batch_execute("ROLLBACK").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_ups_answered_as_failed_while_a_table_is_locked_take_no_effect_afterwards() {
    if postgres_base_url().is_none() {
        needs_postgres(
            "sign_ups_answered_as_failed_while_a_table_is_locked_take_no_effect_afterwards",
        );
        return;
    }
    let app = spawn_app().await;
    let (status, body) = app
        .connector(&token_step(
            "warm@example.com",
            "oid-warm",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    let customers_before = app.customer_count();
    let links_before = app.active_links();

    for table in ["customers", "identity_links"] {
        let lock = TableLock::take(&app.db.url, table);
        let locked_at = Instant::now();
        // More sign-ups than the pool has connections, all at once.
        let mut requests = JoinSet::new();
        for i in 0..24 {
            let (client, address) = (app.client.clone(), app.address.clone());
            let body = token_step(
                &format!("locked-{table}-{i}@example.com"),
                &format!("oid-locked-{table}-{i}"),
                local_identity(),
                B2C_CLIENT,
            );
            requests.spawn(async move { timed_connector(&client, &address, &body).await });
        }
        let mut slowest = Duration::ZERO;
        while let Some(answer) = requests.join_next().await {
            let (status, body, took) = answer.unwrap();
            assert!(is_token_step_fail_closed(status, &body), "{table}: {body}");
            assert!(
                took < REQUEST_LIMIT + MARGIN,
                "{table}: answered in {took:?}"
            );
            slowest = slowest.max(took);
        }
        // Longer than the request time limit in all.
        let held = locked_at.elapsed();
        if held < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_secs(3) - held).await;
        }
        lock.release();
        // Work that outlived its answer would commit now.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for i in 0..24 {
            assert_eq!(
                traces_of(
                    &app,
                    &format!("locked-{table}-{i}@example.com"),
                    &format!("oid-locked-{table}-{i}")
                ),
                (0, 0),
                "{table}: sign-up {i} answered ServiceUnavailable took effect"
            );
        }
        assert_eq!(app.customer_count(), customers_before, "{table}");
        assert_eq!(app.active_links(), links_before, "{table}");
        eprintln!("{table} locked: 24 sign-ups failed closed, slowest answer {slowest:?}");
    }

    // And the service works once the lock is gone.
    let (status, body) = app
        .connector(&token_step(
            "unlocked@example.com",
            "oid-unlocked",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkOutcome"], "Created", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_while_a_database_call_waits_on_a_lock() {
    if postgres_base_url().is_none() {
        needs_postgres("sigterm_stops_the_server_while_a_database_call_waits_on_a_lock");
        return;
    }
    let db = TestDatabase::new();
    db.open();
    let mut server = ServerProcess::start(&db.url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let (status, body, _) = timed_connector(
        &client,
        &server.address,
        &token_step("warm@example.com", "oid-warm", local_identity(), B2C_CLIENT),
    )
    .await;
    assert_continue(status, &body);

    let lock = TableLock::take(&db.url, "customers");
    let pending = {
        let (client, address) = (client.clone(), server.address.clone());
        tokio::spawn(async move {
            let body = token_step(
                "pending@example.com",
                "oid-pending",
                local_identity(),
                B2C_CLIENT,
            );
            let response = client
                .post(format!("{address}/b2c/api-connector"))
                .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
                .json(&body)
                .send()
                .await;
            match response {
                Ok(response) => Some((
                    response.status().as_u16(),
                    response.json::<Value>().await.ok(),
                )),
                Err(_) => None,
            }
        })
    };
    // The request is in the database, waiting on the lock.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    // The lock is held for longer than the process may take to stop.
    let shutdown_timeout = Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = server.child.try_wait().unwrap() {
            break Some((exit, signalled.elapsed()));
        }
        if signalled.elapsed() > shutdown_timeout + Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    lock.release();
    let (exit, took) = exit.expect("the server did not stop after SIGTERM");
    assert!(
        took < shutdown_timeout,
        "the server took {took:?} to stop after SIGTERM (exit {exit})"
    );
    assert!(exit.success(), "{exit}");
    if let Some((status, Some(body))) = pending.await.unwrap() {
        assert!(is_token_step_fail_closed(status, &body), "{body}");
    }
    // The request that was waiting took no effect, then or later.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let app = spawn_on(db, |_| {}).await;
    assert_eq!(
        traces_of(&app, "pending@example.com", "oid-pending"),
        (0, 0)
    );
    eprintln!("SIGTERM with a call waiting on a lock: stopped in {took:?}");
}
