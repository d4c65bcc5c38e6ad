//! Races: concurrent sign-ups for one new email create exactly one customer, in one server and,
//! on PostgreSQL, across two server processes.

use tokio::task::JoinSet;

use crate::helpers::*;

const IDENTITIES: usize = 32;

/// Sends the token step for `IDENTITIES` different identities with one new email, all at once,
/// spread over the given server addresses.
async fn race(addresses: &[String], email: &str) -> Vec<serde_json::Value> {
    let client = reqwest::Client::new();
    let mut tasks = JoinSet::new();
    for i in 0..IDENTITIES {
        let client = client.clone();
        let url = format!("{}/b2c/api-connector", addresses[i % addresses.len()]);
        let identities = if i % 2 == 0 {
            local_identity()
        } else {
            social_identity("google.com")
        };
        let body = token_step(email, &format!("racer-{i}"), identities, B2C_CLIENT);
        tasks.spawn(async move {
            let response = client
                .post(url)
                .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<serde_json::Value>().await.unwrap()
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.unwrap());
    }
    answers
}

fn check_one_customer_and_all_links(app_db: &TestApp, answers: &[serde_json::Value], email: &str) {
    let customers = app_db.customers_with_email(email);
    assert_eq!(customers.len(), 1, "exactly one customer for the new email");
    let number = &customers[0].account_number;
    for answer in answers {
        assert_eq!(answer["action"], "Continue", "{answer}");
        assert_eq!(
            answer["extension_CustomerAccountNumber"],
            number.as_str(),
            "{answer}"
        );
    }
    let created = answers
        .iter()
        .filter(|a| a["extension_AutoLinkOutcome"] == "Created")
        .count();
    assert_eq!(
        created, 1,
        "one answer created the customer, the others linked"
    );
    assert_eq!(app_db.links_of(number).len(), IDENTITIES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_two_concurrent_sign_ups_for_one_new_email_create_one_customer() {
    let app = spawn_app_with(|s| s.workers = Some(4)).await;
    let answers = race(std::slice::from_ref(&app.address), "crowd@example.com").await;
    check_one_customer_and_all_links(&app, &answers, "crowd@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_request_make_one_link() {
    let app = spawn_app().await;
    let body = token_step(
        "retry@example.com",
        "same-oid",
        local_identity(),
        B2C_CLIENT,
    );
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let client = app.client.clone();
        let url = format!("{}/b2c/api-connector", app.address);
        let body = body.clone();
        tasks.spawn(async move {
            client
                .post(url)
                .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        });
    }
    let mut numbers = std::collections::HashSet::new();
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.unwrap();
        numbers.insert(
            answer["extension_CustomerAccountNumber"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(numbers.len(), 1);
    assert_eq!(app.active_links(), 1);
    assert_eq!(app.customer_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_server_processes_on_one_postgres_create_one_customer_for_one_new_email() {
    if postgres_base_url().is_none() {
        needs_postgres(
            "two_server_processes_on_one_postgres_create_one_customer_for_one_new_email",
        );
        return;
    }
    let db = TestDatabase::new();
    db.open(); // migrate once, as `autolink migrate` would before a rollout
    let first = ServerProcess::start(&db.url);
    let second = ServerProcess::start(&db.url);
    let addresses = vec![first.address.clone(), second.address.clone()];
    // The checker reads the same database; it does not serve requests.
    let app = spawn_on(db, |_| {}).await;
    let answers = race(&addresses, "two-processes@example.com").await;
    check_one_customer_and_all_links(&app, &answers, "two-processes@example.com");
}
