//! PostgreSQL's connections: `serve` starts while the database is away and applies the
//! migrations once it answers; the pool tests a connection only when it may have died unseen;
//! commands fail at once, with a clear message, when the database does not answer.

use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::db_proxy::{Asked, Proxy, OPEN, REFUSE};
use crate::helpers::*;

/// The request time limit (`[database] request_timeout_ms`, the default), and what a
/// fail-closed answer may take beyond it.
const REQUEST_LIMIT: Duration = Duration::from_millis(1500);
const MARGIN: Duration = Duration::from_millis(1000);

/// The URL with a libpq parameter added.
fn with_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

/// The URL with a password in it, and that password: the URL's own, or one that a server with
/// trust authentication never asks for.
fn with_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, _)) => match userinfo.split_once(':') {
            Some((_, password)) => (url.to_string(), password.to_string()),
            None => {
                let password = "not-the-password-3c1f";
                let after = &rest[userinfo.len()..];
                (
                    format!("{scheme}://{userinfo}:{password}{after}"),
                    password.into(),
                )
            }
        },
        None => panic!("the test database URL names no user: {url}"),
    }
}

async fn status_of(client: &reqwest::Client, url: String) -> u16 {
    client.get(url).send().await.unwrap().status().as_u16()
}

async fn connector(client: &reqwest::Client, address: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(format!("{address}/b2c/api-connector"))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Whether the database has the migrations' bookkeeping table (read directly, not through the
/// proxy).
fn has_migrations_table(url: &str) -> bool {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(url).unwrap();
    let found: Found = diesel::sql_query(
        "SELECT count(*) AS n FROM information_schema.tables \
         WHERE table_name = '__diesel_schema_migrations'",
    )
    .get_result(&mut conn)
    .unwrap();
    found.n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_starts_while_postgres_is_away_and_applies_the_migrations_once_it_answers() {
    if postgres_base_url().is_none() {
        needs_postgres(
            "serve_starts_while_postgres_is_away_and_applies_the_migrations_once_it_answers",
        );
        return;
    }
    // A fresh database that nothing has migrated, reached through a proxy that refuses.
    let db = TestDatabase::new();
    let proxy = Proxy::start(host_and_port(&db.url)).await;
    proxy.set(REFUSE).await;
    let (url, password) = with_password(&through_proxy(&db.url, proxy.port));
    let mut command = ServerProcess::command(&url);
    command.stderr(std::process::Stdio::piped());
    let mut server = tokio::task::spawn_blocking(move || ServerProcess::spawn(command))
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = server.child.stderr.take().unwrap();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let address = server.address.clone();

    assert_eq!(status_of(&client, format!("{address}/healthz")).await, 200);
    assert_eq!(status_of(&client, format!("{address}/readyz")).await, 503);
    let started = Instant::now();
    let (status, body) = connector(
        &client,
        &address,
        &attribute_collection("early@example.com", B2C_CLIENT),
    )
    .await;
    assert_block(status, &body, "ServiceUnavailable");
    let (status, body) = connector(
        &client,
        &address,
        &token_step(
            "early@example.com",
            "oid-early",
            local_identity(),
            B2C_CLIENT,
        ),
    )
    .await;
    assert_continue(status, &body);
    assert_eq!(
        body["extension_AutoLinkError"], "ServiceUnavailable",
        "{body}"
    );
    assert!(
        body.get("extension_CustomerAccountNumber").is_none(),
        "{body}"
    );
    let response = client
        .post(format!("{address}/b2c/rest/precheck"))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(&json!({"email": "early@example.com", "identityProvider": "local", "clientId": B2C_CLIENT}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "ServiceUnavailable", "{body}");
    let response = client
        .get(format!(
            "{address}/admin/v1/customers?email=early@example.com"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < REQUEST_LIMIT + MARGIN,
        "four fail-closed answers took {:?}",
        started.elapsed()
    );
    assert_eq!(status_of(&client, format!("{address}/readyz")).await, 503);
    assert!(
        !has_migrations_table(&db.url),
        "nothing reached the database"
    );

    proxy.set(OPEN).await;
    let opened = Instant::now();
    while status_of(&client, format!("{address}/readyz")).await != 200 {
        assert!(
            opened.elapsed() < Duration::from_secs(10),
            "not ready 10 s after the database answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_after = opened.elapsed();
    assert!(
        has_migrations_table(&db.url),
        "the server applied the migrations"
    );
    let (status, body) = connector(
        &client,
        &address,
        &token_step(
            "later@example.com",
            "oid-later",
            local_identity(),
            B2C_CLIENT,
        ),
    )
    .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkOutcome"], "Created", "{body}");
    let account = body["extension_CustomerAccountNumber"].as_str().unwrap();
    let app_db = db.open();
    let mut conn = app_db.get().unwrap();
    let customer = autolink::storage::customers::find_by_account_number(&mut conn, account)
        .unwrap()
        .expect("the linked customer is in the database");
    let links =
        autolink::storage::links::list_for_customer(&mut conn, customer.id, None, 10).unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].subject, "oid-later");
    drop(conn);

    drop(server);
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("PostgreSQL does not answer") && log.contains(":***@"),
        "the wait is logged, with the URL: {log}"
    );
    assert!(!log.contains(&password), "the password was logged: {log}");
    eprintln!("serve without PostgreSQL at start: ready {ready_after:?} after it answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_its_credentials_kept_in_postgres_serve_waits_for_it_before_listening() {
    if postgres_base_url().is_none() {
        needs_postgres("with_its_credentials_kept_in_postgres_serve_waits_for_it_before_listening");
        return;
    }
    let db = TestDatabase::new();
    let proxy = Proxy::start(host_and_port(&db.url)).await;
    proxy.set(REFUSE).await;
    // No credentials configured: they are generated at the first start and kept in the database.
    let mut command = ServerProcess::command(&through_proxy(&db.url, proxy.port));
    command
        .env_remove("AUTOLINK_AUTH__BASIC__USERNAME")
        .env_remove("AUTOLINK_AUTH__BASIC__PASSWORD_HASH")
        .env_remove("AUTOLINK_ADMIN__TOKEN_HASH")
        .stdout(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut server = ServerProcess {
        child,
        address: String::new(),
    };
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(server.child.try_wait().unwrap().is_none(), "serve exited");
    assert!(
        printed.try_recv().is_err(),
        "it printed before the database answered"
    );

    proxy.set(OPEN).await;
    let mut shown = Vec::new();
    let address = loop {
        let line = printed
            .recv_timeout(Duration::from_secs(10))
            .expect("not listening 10 s after the database answered");
        if let Some(address) = line.strip_prefix("autolink listening on ") {
            break address.to_string();
        }
        shown.push(line);
    };
    server.address = address.clone();
    assert!(
        shown.iter().any(|l| l.contains("connector (HTTP Basic)"))
            && shown.iter().any(|l| l.contains("admin API (Bearer)")),
        "the generated credentials are shown once: {shown:?}"
    );
    let client = reqwest::Client::new();
    assert_eq!(status_of(&client, format!("{address}/readyz")).await, 200);
}

/// The sum of what connections asked between two readings of the proxy, per connection.
fn asked_since(before: &[Asked], now: &[Asked]) -> Vec<Asked> {
    now.iter()
        .enumerate()
        .map(|(i, n)| {
            let b = before.get(i).copied().unwrap_or_default();
            Asked {
                round_trips: n.round_trips - b.round_trips,
                select_ones: n.select_ones - b.select_ones,
            }
        })
        .collect()
}

/// An admin search by email (served from the request pool); the status.
async fn admin_search(client: &reqwest::Client, address: &str, email: &str) -> u16 {
    client
        .get(format!("{address}/admin/v1/customers?email={email}"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Sign-ins of linked identities (answered by the link writer when not from memory), sign-up
/// checks (by the executor's read lane; each of the two on a connection of its own, and audited
/// by the audit writer, on its pool's) and admin searches (on the request pool's connections),
/// `concurrency` at a time, `rounds` times; every answer must be a success.
async fn busy(app: &TestApp, rounds: usize, concurrency: usize) {
    for round in 0..rounds {
        let mut requests = JoinSet::new();
        for i in 0..concurrency {
            let (client, address) = (app.client.clone(), app.address.clone());
            let body = match i % 4 {
                0 => token_step(
                    "busy@example.com",
                    &format!("oid-busy-{}", i % 3),
                    local_identity(),
                    B2C_CLIENT,
                ),
                1 => attribute_collection(&format!("check-{round}-{i}@example.com"), B2C_CLIENT),
                _ => {
                    requests.spawn(async move {
                        let status = admin_search(&client, &address, "busy@example.com").await;
                        assert_eq!(status, 200);
                    });
                    continue;
                }
            };
            requests.spawn(async move {
                let (status, body) = connector(&client, &address, &body).await;
                assert_continue(status, &body);
                assert!(body.get("extension_AutoLinkError").is_none(), "{body}");
            });
        }
        while let Some(done) = requests.join_next().await {
            done.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_lends_its_connections_without_a_test_and_tests_one_left_idle() {
    if postgres_base_url().is_none() {
        needs_postgres("a_busy_pool_lends_its_connections_without_a_test_and_tests_one_left_idle");
        return;
    }
    let db = TestDatabase::new();
    db.open();
    let proxy = Proxy::start(host_and_port(&db.url)).await;
    // Without TLS, so that the proxy reads the messages.
    let proxied = with_param(&through_proxy(&db.url, proxy.port), "sslmode=disable");
    let app = spawn_on(db, |s| s.database_url = proxied.clone()).await;
    app.import_csv(&csv(&["POS-400,USRT,person,false,busy@example.com,B,Usy"]));
    // The identities link, and the pool opens its connections (each is tested once, the first
    // time it is lent).
    let warmed = Instant::now();
    busy(&app, 2, 8).await;

    let before = proxy.asked();
    let started = Instant::now();
    busy(&app, 4, 8).await;
    let during = asked_since(&before, &proxy.asked());
    let took = started.elapsed();
    assert!(
        warmed.elapsed() < autolink::storage::postgres::IDLE_BEFORE_CHECK,
        "warming up and the busy phase took {:?}: longer than a connection may stay idle \
         untested (a machine too slow for this test)",
        warmed.elapsed()
    );
    // A connection is tested the first time it is lent. The pool may have opened one before the
    // busy phase that no request of the warm-up borrowed (a sign-in of a linked identity needs
    // none): its first loan comes now, and it counts with the new ones.
    let lent_before = |i: usize| before.get(i).is_some_and(|b| b.select_ones > 0);
    let old: Vec<Asked> = (0..during.len())
        .filter(|&i| lent_before(i))
        .map(|i| during[i])
        .collect();
    let new: Vec<Asked> = (0..during.len())
        .filter(|&i| !lent_before(i))
        .map(|i| during[i])
        .collect();
    let round_trips: u64 = during.iter().map(|a| a.round_trips).sum();
    assert!(
        round_trips >= 32,
        "the proxy read {round_trips} round trips for 32 requests: {during:?}"
    );
    assert!(
        !old.is_empty() && old.iter().all(|a| a.select_ones == 0),
        "connections lent within the last seconds were tested: {during:?} (before: {before:?})"
    );
    assert!(
        new.iter().all(|a| a.select_ones <= 1),
        "a new connection is tested at most once: {during:?}"
    );

    // Left idle for longer than the limit, the connection lent next is tested, once: an admin
    // search (it writes no audit event, so no other connection is used).
    tokio::time::sleep(autolink::storage::postgres::IDLE_BEFORE_CHECK + Duration::from_secs(1))
        .await;
    let before = proxy.asked();
    let status = admin_search(&app.client, &app.address, "after-idle@example.com").await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_idle = asked_since(&before, &proxy.asked());
    let tested: Vec<usize> = (0..after_idle.len())
        .filter(|&i| after_idle[i].select_ones > 0)
        .collect();
    assert!(
        tested.len() == 1 && tested[0] < before.len() && after_idle[tested[0]].select_ones == 1,
        "after the pause, one pooled connection is tested, once: {after_idle:?}"
    );
    let tested = tested.len();
    eprintln!(
        "busy pool: {} requests in {took:?}, {round_trips} round trips, {} `SELECT 1` \
         (of which {} on connections opened during the phase); after {:?} idle: {} tested",
        32,
        during.iter().map(|a| a.select_ones).sum::<u64>(),
        new.iter().map(|a| a.select_ones).sum::<u64>(),
        autolink::storage::postgres::IDLE_BEFORE_CHECK + Duration::from_secs(1),
        tested
    );
}

/// Holds `LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE` on its own connection until released.
fn lock_table(url: &str, table: &str) -> PgConnection {
    use diesel::connection::SimpleConnection;
    let mut conn = PgConnection::establish(url).unwrap();
    conn.batch_execute(&format!(
        "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    ))
    .unwrap();
    conn
}

/// The connections to the test database other than `conn`'s own.
fn others_connected(conn: &mut PgConnection) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .get_result(conn)
    .unwrap();
    count.n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_database_ends_every_connection_one_request_fails_closed_and_the_next_get_new_ones(
) {
    if postgres_base_url().is_none() {
        needs_postgres(
            "when_the_database_ends_every_connection_one_request_fails_closed_and_the_next_get_new_ones",
        );
        return;
    }
    let app = spawn_app().await;
    // Eight admin searches at once, held behind a short lock: eight pooled connections, every
    // one lent a moment ago. And a sign-up check: the link writer's own connection.
    let (status, body) = app
        .connector(&attribute_collection("before@example.com", B2C_CLIENT))
        .await;
    assert_continue(status, &body);
    let mut lock = lock_table(&app.db.url, "customers");
    let mut requests = JoinSet::new();
    for i in 0..8 {
        let (client, address) = (app.client.clone(), app.address.clone());
        requests.spawn(async move {
            admin_search(&client, &address, &format!("held-{i}@example.com")).await
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        use diesel::connection::SimpleConnection;
        lock.batch_execute("ROLLBACK").unwrap();
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }

    // What a restart does to the service's connections: the server ends every one of them.
    let mut admin = PgConnection::establish(&app.db.url).unwrap();
    let connected = others_connected(&mut admin);
    assert!(connected >= 9, "the service had {connected} connections");
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .execute(&mut admin)
    .unwrap();
    let ended = Instant::now();
    while others_connected(&mut admin) > 0 {
        assert!(
            ended.elapsed() < Duration::from_secs(5),
            "connections not ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One after the other: only the first of each kind may fail, closed.
    let (mut searches, mut checks) = (Vec::new(), Vec::new());
    for i in 0..10 {
        searches
            .push(admin_search(&app.client, &app.address, &format!("after-{i}@example.com")).await);
        checks.push(
            app.connector(&attribute_collection(
                &format!("after-{i}@example.com"),
                B2C_CLIENT,
            ))
            .await,
        );
    }
    assert!(matches!(searches[0], 200 | 503), "{searches:?}");
    assert!(searches[1..].iter().all(|s| *s == 200), "{searches:?}");
    let (first_status, first) = &checks[0];
    if first["action"] != "Continue" {
        assert_block(*first_status, first, "ServiceUnavailable");
    }
    for (status, body) in &checks[1..] {
        assert_continue(*status, body);
    }
    eprintln!(
        "every connection ended by the database ({connected} open): of the next 10 admin \
         searches (request pool) {} failed closed, of the next 10 sign-up checks (read lane) {}",
        searches.iter().filter(|s| **s != 200).count(),
        checks
            .iter()
            .filter(|(_, b)| b["action"] != "Continue")
            .count()
    );
}

#[test]
fn commands_fail_at_once_with_a_clear_message_when_postgres_does_not_answer() {
    // A port nothing listens on: the connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://autolink:s3cret-4d2a@127.0.0.1:{port}/autolink");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("customers.csv");
    std::fs::write(&file, csv(&["C-1,USRT,person,false,a@example.com,A,B"])).unwrap();
    let file = file.to_str().unwrap();
    for args in [
        vec!["customers", "import", file],
        vec!["migrate"],
        vec!["preview", "--channel", "web", "--email", "a@example.com"],
    ] {
        let started = Instant::now();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_autolink"))
            .args(&args)
            .env_remove("AUTOLINK_CONFIG")
            .env("AUTOLINK_DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert!(
            stderr.contains(&format!(
                "cannot connect to postgres://autolink:***@127.0.0.1:{port}/autolink"
            )),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("s3cret"), "{args:?}: {stderr}");
    }
}
