//! Signed webhooks from the outbox, and the pull feed: every change told once by id, signatures a
//! Standard Webhooks implementation other than ours accepts, retries with the same id, failed
//! deliveries retried by an administrator, a `kill -9` between the commit and the delivery, and
//! two instances on one PostgreSQL delivering each event once.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use autolink::config::WebhookSettings;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::webhook_receiver::{Answer, Received, Receiver, SECRET};

/// A webhook to `url` for every event, retried after `retries` seconds.
fn webhook(url: &str, retries: &[u64]) -> WebhookSettings {
    WebhookSettings {
        url: url.into(),
        secret: SECRET.into(),
        events: None,
        timeout_ms: 1000,
        retry_schedule_s: retries.to_vec(),
        include_email: false,
    }
}

async fn spawn_with_webhooks(webhooks: Vec<WebhookSettings>) -> TestApp {
    spawn_app_with(|s| {
        s.webhooks = webhooks;
        s.webhook_delivery.poll_ms = 100;
    })
    .await
}

async fn sign_up(app: &TestApp, email: &str, oid: &str, client: &str) -> Value {
    let (status, answer) = app
        .connector(&token_step(email, oid, local_identity(), client))
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The id of the active link of `account_number`.
fn link_id(app: &TestApp, account_number: &str) -> i64 {
    app.links_of(account_number)
        .into_iter()
        .find(|l| l.active)
        .map(|l| l.id)
        .unwrap_or_else(|| panic!("{account_number} has no active link"))
}

/// Every event of the feed, read `page` at a time; checks the cursors on the way.
async fn read_feed(app: &TestApp, page: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(cursor) => format!("/admin/v1/events?limit={page}&after={cursor}"),
            None => format!("/admin/v1/events?limit={page}"),
        };
        let (status, body) = app.admin_get(&path).await;
        assert_eq!(status, 200, "{body}");
        let cursor = body["nextCursor"]
            .as_str()
            .unwrap_or_else(|| panic!("no nextCursor: {body}"))
            .to_string();
        let items = body["items"].as_array().unwrap().clone();
        assert!(items.len() <= page, "{body}");
        if items.is_empty() {
            // An empty page gives the cursor back, so a poller keeps it.
            assert_eq!(Some(&cursor), after.as_ref().or(Some(&"0".to_string())));
            return events;
        }
        events.extend(items);
        after = Some(cursor);
    }
}

#[tokio::test]
async fn every_change_is_delivered_once_signed_without_email_and_in_the_feed_in_commit_order() {
    let receiver = Receiver::start(Vec::new());
    let app = spawn_with_webhooks(vec![webhook(&receiver.url, &[1])]).await;
    app.import_csv(&csv(&[
        "C-1,USRT,person,false,carol@example.com,Carol,One",
        "C-2,USRT,person,false,other@example.com,Carol,Two",
    ]));

    // Linked (identity.linked), then the same sign-in again (AlreadyLinked: nothing).
    let carol = sign_up(&app, "carol@example.com", "oid-carol", B2C_CLIENT).await;
    assert_eq!(carol["extension_CustomerAccountNumber"], "C-1");
    sign_up(&app, "carol@example.com", "oid-carol", B2C_CLIENT).await;
    // Created (customer.created, identity.linked).
    let dave = sign_up(&app, "Dave@Example.com", "oid-dave", B2C_CLIENT).await;
    let dave_number = dave["extension_CustomerAccountNumber"]
        .as_str()
        .unwrap()
        .to_string();
    // A refusal (B2B, no customer): nothing.
    let refused = sign_up(&app, "nobody@example.com", "oid-nobody", B2B_CLIENT).await;
    assert!(
        refused["extension_CustomerAccountNumber"].is_null(),
        "{refused}"
    );
    // An administrator unlinks carol, moves dave's link to C-2, creates a customer, approves a
    // prospect (two customers).
    let carol_link = link_id(&app, "C-1");
    let (status, body) = app
        .admin_post(
            &format!("/admin/v1/links/{carol_link}/unlink"),
            &json!({"reason": "asked by the customer"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let dave_link = link_id(&app, &dave_number);
    let (status, moved) = app
        .admin_post(
            &format!("/admin/v1/links/{dave_link}/move"),
            &json!({"accountNumber": "C-2", "reason": "merged duplicate records"}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    let (status, body) = app
        .admin_post(
            "/admin/v1/customers",
            &json!({"accountNumber": "C-9", "legalEntity": "USRT", "partyType": "person",
                    "primaryEmail": "erin@example.com"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, prospect) = app
        .admin_post(
            "/admin/v1/prospects",
            &json!({"email": "kim@example.com", "companyName": "Fabrikam", "legalEntity": "USRT"}),
        )
        .await;
    assert_eq!(status, 201, "{prospect}");
    let (status, approved) = app
        .admin_post(
            &format!("/admin/v1/prospects/{}/approve", prospect["id"]),
            &json!({"organizationAccountNumber": "ORG-1", "personAccountNumber": "KIM-1"}),
        )
        .await;
    assert_eq!(status, 200, "{approved}");

    let expected = [
        "identity.linked",
        "customer.created",
        "identity.linked",
        "identity.unlinked",
        "identity.moved",
        "customer.created",
        "customer.created",
        "customer.created",
    ];
    receiver
        .wait_for(Duration::from_secs(30), |r| r.len() >= expected.len())
        .await;
    // Anything sent twice would arrive within this.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = receiver.received();
    assert_eq!(received.len(), expected.len(), "{received:#?}");
    let ids: HashSet<&str> = received.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), expected.len(), "an event was sent twice");
    for r in &received {
        assert!(r.verified, "signature refused: {r:?}");
        assert!(r.id.starts_with("msg_"), "{}", r.id);
        let text = r.body.to_string();
        assert!(
            !text.to_lowercase().contains("@example.com"),
            "an email left: {text}"
        );
        assert!(!text.contains("null"), "a null field: {text}");
        assert!(r.body["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    // The feed: every event, in commit order, with the ids of the deliveries.
    let feed = read_feed(&app, 3).await;
    let types: Vec<&str> = feed.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, expected);
    let feed_ids: HashSet<&str> = feed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(feed_ids, ids);
    let by_id: HashMap<&str, &Value> = received.iter().map(|r| (r.id.as_str(), &r.body)).collect();
    for event in &feed {
        let delivered = by_id[event["id"].as_str().unwrap()];
        assert_eq!(event["data"], delivered["data"]);
        assert_eq!(event["type"], delivered["type"]);
        assert_eq!(event["timestamp"], delivered["timestamp"]);
    }

    // The bodies, field by field.
    let data = |n: usize| feed[n]["data"].clone();
    assert_eq!(
        data(0),
        json!({"accountNumber": "C-1", "legalEntity": "USRT", "channel": "fabrikam-web",
               "issuer": TENANT_ISSUER, "subject": "oid-carol", "linkId": carol_link,
               "outcome": "Linked"})
    );
    assert_eq!(
        data(1),
        json!({"accountNumber": dave_number, "legalEntity": "USRT", "origin": "autolink",
               "channel": "fabrikam-web"})
    );
    assert_eq!(
        data(2),
        json!({"accountNumber": dave_number, "legalEntity": "USRT", "channel": "fabrikam-web",
               "issuer": TENANT_ISSUER, "subject": "oid-dave", "linkId": dave_link,
               "outcome": "Created"})
    );
    assert_eq!(
        data(3),
        json!({"accountNumber": "C-1", "issuer": TENANT_ISSUER, "subject": "oid-carol",
               "linkId": carol_link, "reason": "asked by the customer"})
    );
    assert_eq!(
        data(4),
        json!({"fromAccountNumber": dave_number, "accountNumber": "C-2",
               "issuer": TENANT_ISSUER, "subject": "oid-dave", "previousLinkId": dave_link,
               "linkId": moved["id"], "reason": "merged duplicate records"})
    );
    assert_eq!(
        data(5),
        json!({"accountNumber": "C-9", "legalEntity": "USRT", "origin": "admin"})
    );
    assert_eq!(
        data(6),
        json!({"accountNumber": "ORG-1", "legalEntity": "USRT", "origin": "prospect"})
    );
    assert_eq!(
        data(7),
        json!({"accountNumber": "KIM-1", "legalEntity": "USRT", "origin": "prospect"})
    );

    // The deliveries, as the admin API lists them once every outcome is recorded (after the
    // receiver's answers).
    let items = wait_for_status(&app, "delivered", expected.len()).await;
    assert_eq!(items.len(), expected.len(), "{items:?}");
    for item in &items {
        assert_eq!(item["attempts"], 1, "{item}");
        assert_eq!(item["url"], receiver.url.as_str());
        assert!(ids.contains(item["eventId"].as_str().unwrap()));
        assert!(item.get("nextAttemptAt").is_none(), "{item}");
    }
    let (_, pending) = app.admin_get("/admin/v1/webhook-deliveries").await;
    assert_eq!(pending["items"], json!([]), "{pending}");
}

#[tokio::test]
async fn an_endpoint_gets_only_its_events_and_the_email_only_when_it_asks() {
    let all = Receiver::start(Vec::new());
    let customers_only = Receiver::start(Vec::new());
    let mut with_email = webhook(&customers_only.url, &[1]);
    with_email.events = Some(vec!["customer.created".into()]);
    with_email.include_email = true;
    let app = spawn_with_webhooks(vec![webhook(&all.url, &[1]), with_email]).await;
    sign_up(&app, "Dave@Example.com", "oid-dave", B2C_CLIENT).await;
    all.wait_for(Duration::from_secs(30), |r| r.len() >= 2)
        .await;
    let received = customers_only
        .wait_for(Duration::from_secs(30), |r| !r.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let received_again = customers_only.received();
    assert_eq!(received_again.len(), 1, "{received_again:#?}");
    assert_eq!(received[0].body["type"], "customer.created");
    assert_eq!(received[0].body["data"]["email"], "Dave@Example.com");
    assert!(received[0].verified);
    for r in all.received() {
        assert!(r.body["data"].get("email").is_none(), "{:?}", r.body);
    }
    // The same event went to both, under one id.
    let created = all
        .received()
        .into_iter()
        .find(|r| r.body["type"] == "customer.created")
        .unwrap();
    assert_eq!(created.id, received[0].id);
    // The feed never carries the email.
    let feed = read_feed(&app, 50).await;
    assert!(!Value::from(feed).to_string().contains("Example.com"));
}

#[tokio::test]
async fn errors_time_outs_and_redirects_are_retried_with_the_same_id() {
    let receiver = Receiver::start(vec![
        Answer::Status(500),
        Answer::Hang(Duration::from_secs(4)),
        Answer::Redirect,
        Answer::Status(200),
    ]);
    let app = spawn_with_webhooks(vec![webhook(&receiver.url, &[1, 1, 1, 1])]).await;
    app.import_csv(&csv(&["C-1,USRT,person,false,carol@example.com,Carol,One"]));
    sign_up(&app, "carol@example.com", "oid-carol", B2C_CLIENT).await;
    let received = receiver
        .wait_for(Duration::from_secs(30), |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    let attempts: Vec<&Received> = received
        .iter()
        .filter(|r| !r.path.ends_with("/elsewhere"))
        .collect();
    assert_eq!(attempts.len(), 4, "{received:#?}");
    assert!(
        received.iter().all(|r| !r.path.ends_with("/elsewhere")),
        "a redirect was followed"
    );
    assert!(attempts
        .iter()
        .all(|r| r.id == attempts[0].id && r.verified));
    assert!(attempts.iter().all(|r| r.body == attempts[0].body));
    // The outcome of the last attempt is recorded after the receiver answered it.
    let delivered = wait_for_status(&app, "delivered", 1).await;
    assert_eq!(delivered[0]["attempts"], 4, "{delivered:?}");
    assert_eq!(delivered[0]["eventId"], attempts[0].id.as_str());
}

#[tokio::test]
async fn a_failed_delivery_is_retried_through_the_admin_api_and_the_cli() {
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(503)]);
    // No retry: one attempt, then failed.
    let app = spawn_with_webhooks(vec![webhook(&receiver.url, &[])]).await;
    app.import_csv(&csv(&["C-1,USRT,person,false,carol@example.com,Carol,One"]));
    sign_up(&app, "carol@example.com", "oid-carol", B2C_CLIENT).await;
    let failed = wait_for_status(&app, "failed", 1).await;
    let delivery = &failed[0];
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    assert_eq!(delivery["lastError"], "HTTP 500", "{delivery}");
    assert_eq!(delivery["type"], "identity.linked");
    let id = delivery["id"].as_i64().unwrap();

    // Not failed, unknown: refused.
    let (status, body) = app
        .admin_post("/admin/v1/webhook-deliveries/999999/retry", &json!({}))
        .await;
    assert_eq!(status, 404, "{body}");

    let (status, retried) = app
        .admin_post(
            &format!("/admin/v1/webhook-deliveries/{id}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["attempts"], 0, "{retried}");
    // Answered 503: failed again.
    let failed = wait_for_status(&app, "failed", 1).await;
    assert_eq!(failed[0]["lastError"], "HTTP 503", "{failed:?}");

    // The CLI, on the same database and configuration.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_autolink"))
        .args(["webhooks", "retry", &id.to_string(), "--actor", "ops"])
        .env_remove("AUTOLINK_CONFIG")
        .env("AUTOLINK_DATABASE_URL", &app.db.url)
        .env("AUTOLINK_TENANT_ISSUER", TENANT_ISSUER)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["status"], "pending", "{shown}");
    wait_for_status(&app, "delivered", 1).await;
    let (status, body) = app
        .admin_post(
            &format!("/admin/v1/webhook-deliveries/{id}/retry"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let received = receiver.received();
    assert_eq!(received.len(), 3, "{received:#?}");
    assert!(received
        .iter()
        .all(|r| r.id == received[0].id && r.verified));
}

/// Waits for `count` deliveries of `status`; returns them.
async fn wait_for_status(app: &TestApp, status: &str, count: usize) -> Vec<Value> {
    let started = std::time::Instant::now();
    loop {
        let (code, body) = app
            .admin_get(&format!("/admin/v1/webhook-deliveries?status={status}"))
            .await;
        assert_eq!(code, 200, "{body}");
        let items = body["items"].as_array().unwrap().clone();
        if items.len() >= count {
            return items;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no {count} {status} deliveries: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server process with one webhook to `url` (time limit 1 s, retried after 1 s).
fn server_with_webhook(database_url: &str, url: &str) -> ServerProcess {
    let mut command = ServerProcess::command(database_url);
    command
        .env(
            "AUTOLINK_WEBHOOKS",
            format!(
                "[{{url=\"{url}\",secret=\"{SECRET}\",timeout_ms=1000,retry_schedule_s=[1,1,1]}}]"
            ),
        )
        .env("AUTOLINK_WEBHOOK_DELIVERY__POLL_MS", "100");
    ServerProcess::spawn(command)
}

#[tokio::test]
async fn kill_9_between_the_commit_and_the_delivery_loses_nothing() {
    // The first attempts get no answer: the server is killed while they are under way.
    let receiver = Receiver::start(vec![
        Answer::Hang(Duration::from_secs(30)),
        Answer::Hang(Duration::from_secs(30)),
    ]);
    let db = TestDatabase::new();
    let mut server = server_with_webhook(&db.url, &receiver.url);
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(format!("{}/b2c/api-connector", server.address))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(&token_step(
            "dave@example.com",
            "oid-dave",
            local_identity(),
            B2C_CLIENT,
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        answer["extension_CustomerAccountNumber"].is_string(),
        "{answer}"
    );
    let hung = receiver
        .wait_for(Duration::from_secs(30), |r| r.len() >= 2)
        .await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);

    let _server = server_with_webhook(&db.url, &receiver.url);
    let delivered = receiver
        .wait_for(Duration::from_secs(30), |r| {
            r.iter().filter(|r| r.status == 200).count() >= 2
        })
        .await;
    let hung_ids: HashSet<&str> = hung.iter().map(|r| r.id.as_str()).collect();
    let delivered_ids: HashSet<&str> = delivered
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(hung_ids, delivered_ids, "{delivered:#?}");
    assert!(delivered.iter().all(|r| r.verified));
    let types: HashSet<&str> = delivered
        .iter()
        .map(|r| r.body["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        HashSet::from(["customer.created", "identity.linked"])
    );
}

#[tokio::test]
async fn two_instances_on_postgresql_deliver_each_event_once() {
    if postgres_base_url().is_none() {
        needs_postgres("two_instances_on_postgresql_deliver_each_event_once");
        return;
    }
    let receiver = Receiver::start(Vec::new());
    let db = TestDatabase::new();
    let first = server_with_webhook(&db.url, &receiver.url);
    let second = server_with_webhook(&db.url, &receiver.url);
    let client = reqwest::Client::new();
    const SIGN_UPS: usize = 200;
    let mut calls = Vec::new();
    for n in 0..SIGN_UPS {
        let address = if n % 2 == 0 {
            &first.address
        } else {
            &second.address
        };
        let request = client
            .post(format!("{address}/b2c/api-connector"))
            .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
            .json(&token_step(
                &format!("user{n}@example.com"),
                &format!("oid-{n}"),
                local_identity(),
                B2C_CLIENT,
            ));
        calls.push(async move { request.send().await.unwrap().status() });
    }
    for status in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200);
    }
    // Each sign-up created a customer: two events each.
    receiver
        .wait_for(Duration::from_secs(30), |r| r.len() >= 2 * SIGN_UPS)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = receiver.received();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for r in &received {
        assert!(r.verified);
        *count.entry(r.id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(count.len(), 2 * SIGN_UPS);
    // Both instances delivered, and together exactly the events.
    let mut total = 0;
    for server in [&first, &second] {
        let delivered = delivered_by(&client, &server.address).await;
        assert!(delivered > 0, "{} delivered nothing", server.address);
        total += delivered;
    }
    assert_eq!(total, 2 * SIGN_UPS);
}

/// The deliveries an instance made, from its metrics.
async fn delivered_by(client: &reqwest::Client, address: &str) -> usize {
    metric(
        client,
        address,
        "autolink_webhook_attempts_total{outcome=\"delivered\"}",
    )
    .await
}

/// A metric's value at `address`.
async fn metric(client: &reqwest::Client, address: &str, name: &str) -> usize {
    let text = client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics of {address}"))
}

#[tokio::test]
async fn metrics_count_attempts_by_outcome_and_show_the_age_of_the_oldest_pending() {
    // Always 500: retried after a minute (pending meanwhile), after two failures failed.
    let receiver = Receiver::start(vec![Answer::Status(500); 10]);
    let app = spawn_with_webhooks(vec![webhook(&receiver.url, &[60])]).await;
    app.import_csv(&csv(&["C-1,USRT,person,false,carol@example.com,Carol,One"]));
    let oldest = "autolink_webhook_oldest_pending_seconds";
    assert_eq!(metric(&app.client, &app.address, oldest).await, 0);
    sign_up(&app, "carol@example.com", "oid-carol", B2C_CLIENT).await;
    receiver
        .wait_for(Duration::from_secs(30), |r| !r.is_empty())
        .await;
    let started = std::time::Instant::now();
    while metric(&app.client, &app.address, oldest).await < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the age does not grow"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let retry = "autolink_webhook_attempts_total{outcome=\"retry\"}";
    assert_eq!(metric(&app.client, &app.address, retry).await, 1);
    let failed = "autolink_webhook_attempts_total{outcome=\"failed\"}";
    assert_eq!(metric(&app.client, &app.address, failed).await, 0);
    let pending = wait_for_status(&app, "pending", 1).await;
    assert_eq!(pending[0]["lastError"], "HTTP 500", "{pending:?}");
    assert!(pending[0]["nextAttemptAt"].is_string(), "{pending:?}");
}

#[tokio::test]
async fn delivered_rows_are_pruned_after_their_time_and_the_feed_keeps_the_events() {
    let receiver = Receiver::start(Vec::new());
    let app = spawn_app_with(|s| {
        s.webhooks = vec![webhook(&receiver.url, &[1])];
        s.webhook_delivery.poll_ms = 100;
        s.webhook_delivery.keep_delivered_s = 1;
    })
    .await;
    sign_up(&app, "dave@example.com", "oid-dave", B2C_CLIENT).await;
    receiver
        .wait_for(Duration::from_secs(30), |r| r.len() >= 2)
        .await;
    // The outcomes are recorded after the receiver answered: the rows are pending until then.
    // Pruning deletes only delivered rows, so once no row is left in any status, both were
    // delivered and then pruned.
    let started = std::time::Instant::now();
    loop {
        let mut left = Vec::new();
        for status in ["pending", "delivered", "failed"] {
            let (_, rows) = app
                .admin_get(&format!("/admin/v1/webhook-deliveries?status={status}"))
                .await;
            left.extend(rows["items"].as_array().unwrap().iter().cloned());
        }
        if left.is_empty() {
            break;
        }
        assert!(left.iter().all(|row| row["status"] != "failed"), "{left:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not pruned: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let feed = read_feed(&app, 10).await;
    assert_eq!(feed.len(), 2, "{feed:?}");
}

#[test]
fn a_bad_webhook_stops_the_start_with_a_message_naming_its_key() {
    let db = TestDatabase::new();
    let cases = [
        (
            format!("[{{url=\"http://store.example/hooks\",secret=\"{SECRET}\"}}]"),
            "webhooks[0].url",
        ),
        (
            "[{url=\"https://store.example/hooks\",secret=\"whsec_c2hvcnQ=\"}]".to_string(),
            "webhooks[0].secret",
        ),
        (
            format!("[{{url=\"https://store.example/hooks\",secret=\"{SECRET}\",events=[\"identity.deleted\"]}}]"),
            "webhooks[0].events",
        ),
    ];
    for (webhooks, key) in cases {
        let output = ServerProcess::command(&db.url)
            .env("AUTOLINK_WEBHOOKS", &webhooks)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{webhooks}: started");
        assert!(stderr.contains(key), "{webhooks}: {stderr}");
        assert!(
            !stderr.contains("c2hvcnQ"),
            "the secret was printed: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_failing_endpoint_is_paused_and_gets_batches_not_an_attempt_per_event() {
    // Two batches of 4 fail; every later attempt is answered 200.
    let receiver = Receiver::start(vec![Answer::Status(500); 8]);
    let app = spawn_app_with(|s| {
        s.webhooks = vec![webhook(&receiver.url, &[1, 1, 1, 1, 1])];
        s.webhook_delivery.poll_ms = 100;
        s.webhook_delivery.max_in_flight = 4;
    })
    .await;
    const SIGN_UPS: usize = 30;
    app.import_csv(&csv(&["C-1,USRT,person,false,carol@example.com,Carol,One"]));
    for n in 0..SIGN_UPS {
        // Each links to an existing customer: one event each.
        let answer = sign_up(&app, "carol@example.com", &format!("oid-{n}"), B2C_CLIENT).await;
        assert_eq!(answer["extension_CustomerAccountNumber"], "C-1", "{answer}");
    }
    let first = receiver
        .wait_for(Duration::from_secs(30), |r| !r.is_empty())
        .await;
    assert_eq!(first[0].status, 500);
    // The first failure paused the endpoint for 1 s, the second batch's for 2 s: within 2.5 s
    // of the first attempt, at most three batches of 4 (not one attempt per event).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let early = receiver.received().len();
    assert!(
        early <= 12,
        "{early} attempts in 2.5 s: the endpoint was not paused"
    );
    // Once it answers, the pause ends and every event is delivered.
    let received = receiver
        .wait_for(Duration::from_secs(30), |r| {
            r.iter()
                .filter(|r| r.status == 200)
                .map(|r| r.id.as_str())
                .collect::<HashSet<_>>()
                .len()
                >= SIGN_UPS
        })
        .await;
    // Attempts are counted only when made (once every outcome is recorded, which follows the
    // receiver's answer).
    let delivered = wait_for_status(&app, "delivered", SIGN_UPS).await;
    let counted: i64 = delivered
        .iter()
        .map(|d| d["attempts"].as_i64().unwrap())
        .sum();
    assert_eq!(counted as usize, received.len(), "{delivered:?}");
}

#[tokio::test]
async fn deliveries_to_an_endpoint_no_longer_configured_fail() {
    let receiver = Receiver::start(vec![Answer::Status(500)]);
    let app = spawn_with_webhooks(vec![webhook(&receiver.url, &[3600])]).await;
    app.import_csv(&csv(&["C-1,USRT,person,false,carol@example.com,Carol,One"]));
    sign_up(&app, "carol@example.com", "oid-carol", B2C_CLIENT).await;
    wait_for_status(&app, "pending", 1).await;
    receiver
        .wait_for(Duration::from_secs(30), |r| !r.is_empty())
        .await;
    // The endpoint is removed from the configuration (another one takes its place).
    let other = Receiver::start(Vec::new());
    let app = app
        .restart(|s| {
            s.webhooks = vec![webhook(&other.url, &[1])];
            s.webhook_delivery.poll_ms = 100;
            s.webhook_delivery.keep_delivered_s = 1;
        })
        .await;
    let failed = wait_for_status(&app, "failed", 1).await;
    assert_eq!(
        failed[0]["lastError"],
        "the webhook is no longer configured"
    );
    assert_eq!(failed[0]["url"], receiver.url.as_str());
    assert_eq!(receiver.received().len(), 1);
    assert!(other.received().is_empty());
}

#[tokio::test]
async fn an_answer_whose_body_never_ends_is_not_read_and_the_delivery_is_retried() {
    // 500 with an endless body, then the same with 200: neither body is read.
    let receiver = Receiver::start(vec![Answer::Endless(500), Answer::Endless(200)]);
    let app = spawn_with_webhooks(vec![webhook(&receiver.url, &[1])]).await;
    app.import_csv(&csv(&["C-1,USRT,person,false,carol@example.com,Carol,One"]));
    sign_up(&app, "carol@example.com", "oid-carol", B2C_CLIENT).await;
    let delivered = wait_for_status(&app, "delivered", 1).await;
    assert_eq!(delivered[0]["attempts"], 2, "{delivered:?}");
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:#?}");
    assert_eq!(received[0].id, received[1].id);
}
