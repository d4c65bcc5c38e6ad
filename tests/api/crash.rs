//! `kill -9` of a server process under load (the SQLite file, or the PostgreSQL database when
//! `AUTOLINK_TEST_POSTGRES_URL` is set). The event of every decision that wrote (`Linked`,
//! `Created`) commits with its link, so none of those answered is missing; events of read-only
//! decisions (`AlreadyLinked`) are batched, and only those answered within the last 100 ms before
//! the kill may be lost (README, "Audit").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::*;

/// How long before the kill an answered read-only decision may still be missing its event.
const LOSS_WINDOW: Duration = Duration::from_millis(100);
/// Identities linked before the load: their sign-ins answer `AlreadyLinked`.
const LINKED: usize = 16;

/// One answered request: its outcome and when the answer was read.
struct Answered {
    outcome: String,
    at: Instant,
}

/// Sends token steps through `address` until the server stops answering: even workers sign in
/// linked identities, odd ones sign up new shoppers (each creates a customer).
async fn load(
    client: reqwest::Client,
    address: String,
    worker: usize,
    answered: Arc<Mutex<HashMap<String, Answered>>>,
) {
    for n in 0.. {
        let body = if worker % 2 == 0 {
            let i = n % LINKED;
            token_step(
                &format!("linked-{i}@example.com"),
                &format!("oid-linked-{i}"),
                local_identity(),
                B2C_CLIENT,
            )
        } else {
            token_step(
                &format!("new-{worker}-{n}@example.com"),
                &format!("oid-new-{worker}-{n}"),
                local_identity(),
                B2C_CLIENT,
            )
        };
        let sent = client
            .post(format!("{address}/b2c/api-connector"))
            .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
            .json(&body)
            .send()
            .await;
        let Ok(response) = sent else { return };
        let id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Ok(answer) = response.json::<serde_json::Value>().await else {
            return;
        };
        let at = Instant::now();
        let outcome = answer["extension_AutoLinkOutcome"].as_str();
        if let (Some(id), Some(outcome)) = (id, outcome) {
            let outcome = outcome.to_string();
            answered
                .lock()
                .unwrap()
                .insert(id, Answered { outcome, at });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_keeps_every_written_event_and_loses_read_only_ones_only_from_its_last_100_ms(
) {
    let db = TestDatabase::new();
    {
        let pool = db.open();
        let rows: Vec<String> = (0..LINKED)
            .map(|i| format!("K-{i},USRT,person,false,linked-{i}@example.com,Kim,{i}"))
            .collect();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        autolink::import::import_reader(
            &pool,
            csv(&rows).as_bytes(),
            autolink::import::Format::Csv,
            autolink::import::OnError::RejectFile,
        )
        .unwrap();
    }
    let mut server = ServerProcess::start(&db.url);
    let client = reqwest::Client::new();
    let answered = Arc::new(Mutex::new(HashMap::new()));
    // The identities linked first (each answer `Linked`, counted with the others).
    for i in 0..LINKED {
        let body = token_step(
            &format!("linked-{i}@example.com"),
            &format!("oid-linked-{i}"),
            local_identity(),
            B2C_CLIENT,
        );
        let response = client
            .post(format!("{}/b2c/api-connector", server.address))
            .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
            .json(&body)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["extension_AutoLinkOutcome"], "Linked", "{answer}");
        let at = Instant::now();
        let outcome = "Linked".to_string();
        answered
            .lock()
            .unwrap()
            .insert(id, Answered { outcome, at });
    }

    let workers: Vec<_> = (0..8)
        .map(|worker| {
            tokio::spawn(load(
                client.clone(),
                server.address.clone(),
                worker,
                answered.clone(),
            ))
        })
        .collect();
    // Load until there is enough of it to judge (at least 1.5 s; a busy machine answers
    // fewer requests a second), then the kill.
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (created, signed_in) = {
            let answered = answered.lock().unwrap();
            let count = |o: &str| answered.values().filter(|a| a.outcome == o).count();
            (count("Created"), count("AlreadyLinked"))
        };
        let enough = created >= 20 && signed_in >= 100;
        if (enough && started.elapsed() >= Duration::from_millis(1500))
            || started.elapsed() >= Duration::from_secs(30)
        {
            break;
        }
    }
    // SIGKILL: nothing of the server runs after this.
    server.child.kill().unwrap();
    let killed = Instant::now();
    server.child.wait().unwrap();
    for worker in workers {
        worker.await.unwrap();
    }

    let pool = db.open();
    let mut conn = pool.get().unwrap();
    let stored: HashMap<String, String> = autolink::storage::audit::recent(&mut conn, 1_000_000)
        .unwrap()
        .into_iter()
        .map(|event| (event.request_id, event.outcome.into_owned()))
        .collect();
    let answered = answered.lock().unwrap();
    let count = |outcome: &str| answered.values().filter(|a| a.outcome == outcome).count();
    let (linked, created, signed_in) = (count("Linked"), count("Created"), count("AlreadyLinked"));
    assert!(
        created >= 20 && signed_in >= 100,
        "too little load to judge: {linked} linked, {created} created, {signed_in} signed in"
    );
    // Every sign-in whose event is missing, by how long before the kill it was answered.
    let mut lost: Vec<Duration> = answered
        .iter()
        .filter(|(id, a)| a.outcome == "AlreadyLinked" && !stored.contains_key(*id))
        .map(|(_, a)| killed.saturating_duration_since(a.at))
        .collect();
    lost.sort();
    let mut lost_recent = 0;
    for (id, a) in answered.iter() {
        let found = stored.get(id);
        match a.outcome.as_str() {
            "Linked" | "Created" => assert_eq!(
                found,
                Some(&a.outcome),
                "request {id} was answered {} but its event is not in the audit",
                a.outcome
            ),
            "AlreadyLinked" if found.is_none() => {
                let before_kill = killed.saturating_duration_since(a.at);
                assert!(
                    before_kill < LOSS_WINDOW,
                    "the event of sign-in {id}, answered {before_kill:?} before the kill, is lost \
                     ({linked} linked, {created} created, {signed_in} signed in; every lost \
                     sign-in event by its time before the kill: {lost:?})"
                );
                lost_recent += 1;
            }
            "AlreadyLinked" => assert_eq!(found.map(String::as_str), Some("AlreadyLinked")),
            other => panic!("unexpected outcome {other} for {id}"),
        }
    }
    eprintln!(
        "answered before the kill: {linked} linked, {created} created, {signed_in} signed in; \
         {lost_recent} sign-in events of the last {LOSS_WINDOW:?} lost"
    );
}
