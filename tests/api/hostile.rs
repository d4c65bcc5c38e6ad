//! The internet's side of the B2C and admin endpoints: floods of wrong credentials, secrets sent
//! to the wrong place, oversized values. Each test runs the real binary in its own process, so
//! its memory and its log can be read from the outside.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::helpers::*;

const API_KEY_HEADER: &str = "x-functions-key";
const API_KEY: &str = "api-key-chosen-by-a-person";

/// The tests' server with the three secret kinds a person chooses (Basic password, admin token,
/// API key), each kept as an argon2id hash.
fn server_with_every_password_hash(db: &TestDatabase) -> std::process::Command {
    let mut command = ServerProcess::command(&db.url);
    command.env(
        "AUTOLINK_AUTH__API_KEY",
        format!(
            "{{header=\"{API_KEY_HEADER}\",key_hashes=[\"{}\"]}}",
            autolink::auth::hash_secret(API_KEY).unwrap()
        ),
    );
    command
}

fn client_from(address: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn connector_body() -> Value {
    token_step(
        "flood-check@example.com",
        "00000000-0000-0000-0000-00000000f100",
        local_identity(),
        B2C_CLIENT,
    )
}

/// One request of the flood: a distinct wrong secret of one of the three kinds.
async fn wrong_credentials(client: &reqwest::Client, address: &str, n: u64) -> u16 {
    let connector = format!("{address}/b2c/api-connector");
    let request = match n % 3 {
        0 => client
            .post(&connector)
            .basic_auth(CONNECTOR_USER, Some(format!("wrong-password-{n}"))),
        1 => client
            .post(&connector)
            .header(API_KEY_HEADER, format!("wrong-api-key-{n}")),
        _ => client
            .get(format!("{address}/admin/v1/customers?email=a@example.com"))
            .bearer_auth(format!("wrong-admin-token-{n}")),
    };
    match request.json(&connector_body()).send().await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_wrong_credentials_keeps_memory_bounded_and_right_callers_answered() {
    let db = TestDatabase::new();
    let server = ServerProcess::spawn({
        let mut command = server_with_every_password_hash(&db);
        // Thousands of refusals are logged at warn; this test reads memory, not the log.
        command.stderr(std::process::Stdio::null());
        command
    });
    let address = server.address.clone();

    // The right callers, verified once before the flood (as B2C is on a running service).
    let right = client_from("127.0.0.1".parse().unwrap());
    let connector = format!("{address}/b2c/api-connector");
    let admin_url = format!("{address}/admin/v1/customers?email=a@example.com");
    let right_calls = || async {
        let connector_status = right
            .post(&connector)
            .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
            .json(&connector_body())
            .send()
            .await
            .unwrap()
            .status();
        let admin_status = right
            .get(&admin_url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status();
        (connector_status.as_u16(), admin_status.as_u16())
    };
    assert_eq!(right_calls().await, (200, 200));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = server.status_kib("VmRSS");

    // 48 clients, each from its own loopback address, sending distinct wrong secrets for 10 s.
    let flood_for = Duration::from_secs(10);
    let started = Instant::now();
    let flood: Vec<_> = (0..48u64)
        .map(|client_index| {
            let address = address.clone();
            let client = client_from(IpAddr::from([127, 0, 1, 1 + client_index as u8]));
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut n = client_index * 1_000_000;
                while started.elapsed() < flood_for {
                    statuses.push(wrong_credentials(&client, &address, n).await);
                    n += 1;
                }
                statuses
            })
        })
        .collect();

    // Meanwhile: the right callers every 250 ms, and the server's memory every 100 ms.
    let mut slowest = Duration::ZERO;
    let mut peak_seen_kib = 0;
    let mut next_call = Instant::now();
    while started.elapsed() < flood_for {
        peak_seen_kib = peak_seen_kib.max(server.status_kib("VmRSS"));
        if Instant::now() >= next_call {
            next_call += Duration::from_millis(250);
            let asked = Instant::now();
            let (connector_status, admin_status) = right_calls().await;
            slowest = slowest.max(asked.elapsed());
            assert_eq!(
                connector_status, 200,
                "the connector refused B2C during the flood"
            );
            assert_eq!(
                admin_status, 200,
                "the admin API refused its token during the flood"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut statuses = Vec::new();
    for client in flood {
        statuses.extend(client.await.unwrap());
    }
    let peak_kib = server.status_kib("VmHWM");

    let count = |code: u16| statuses.iter().filter(|s| **s == code).count();
    let (unauthorized, throttled) = (count(401), count(429));
    assert!(
        statuses.len() > 200,
        "the flood sent only {} requests",
        statuses.len()
    );
    assert_eq!(
        unauthorized + throttled,
        statuses.len(),
        "every wrong credential gets 401 or 429 (and no 5xx, no failed connection): {}",
        summary(&statuses)
    );
    assert!(
        throttled > 0,
        "nothing was throttled: {}",
        summary(&statuses)
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a right caller waited {slowest:?} during the flood"
    );
    assert!(
        peak_kib < 256 * 1024,
        "peak resident memory {} MiB during the flood (idle {} MiB)",
        peak_kib / 1024,
        idle_kib / 1024
    );

    // After the flood, resident memory returns to within 64 MB of idle.
    let mut after_kib = server.status_kib("VmRSS");
    for _ in 0..50 {
        if after_kib <= idle_kib + 64 * 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after_kib = server.status_kib("VmRSS");
    }
    eprintln!(
        "flood: {} requests ({}), idle {} KiB, peak {} KiB (seen {} KiB), after {} KiB, slowest right call {:?}",
        statuses.len(),
        summary(&statuses),
        idle_kib,
        peak_kib,
        peak_seen_kib,
        after_kib,
        slowest
    );
    assert!(
        after_kib <= idle_kib + 64 * 1000,
        "resident memory {} KiB after the flood, idle was {} KiB",
        after_kib,
        idle_kib
    );
}

fn summary(statuses: &[u16]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for status in statuses {
        *counts.entry(*status).or_insert(0) += 1;
    }
    format!("{counts:?}")
}

#[tokio::test]
async fn a_client_with_too_many_failed_checks_gets_429_with_retry_after_but_known_callers_pass() {
    let app = spawn_app_with(|s| s.limits.credentials.max_failures = 3).await;
    let client = reqwest::Client::new();
    let url = format!("{}/b2c/api-connector", app.address);
    let body = connector_body();
    // B2C's credentials, verified once before (as on a running service).
    let (status, answer) = app.connector(&body).await;
    assert_continue(status, &answer);
    for n in 0..3 {
        let response = client
            .post(&url)
            .basic_auth(CONNECTOR_USER, Some(format!("guess-{n}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "failure {n}");
    }
    let response = client
        .post(&url)
        .basic_auth(CONNECTOR_USER, Some("guess-3"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"], "too_many_requests");

    // The admin token has not been checked yet: from this client it must wait too.
    let response = client
        .get(format!(
            "{}/admin/v1/customers?email=a@example.com",
            app.address
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    // B2C's credentials were verified before: they still pass, from the same client.
    let (status, answer) = app.connector(&body).await;
    assert_continue(status, &answer);
}

/// Reads the server's log after it stopped.
fn log_of(server: ServerProcess, log: &std::path::Path) -> String {
    drop(server);
    std::fs::read_to_string(log).unwrap()
}

#[tokio::test]
async fn no_credential_sent_anywhere_is_echoed_or_logged_at_any_level() {
    let db = TestDatabase::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = ServerProcess::spawn({
        let mut command = server_with_every_password_hash(&db);
        command
            .env("RUST_LOG", "trace")
            .stderr(std::fs::File::create(&log).unwrap());
        command
    });
    let client = reqwest::Client::new();
    let connector = format!("{}/b2c/api-connector", server.address);
    let admin = format!("{}/admin/v1/customers?email=a@example.com", server.address);
    let body = connector_body();
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };

    // Every secret, right and wrong, sent where it does not belong or without a known scheme.
    let bare_secret = "bare-secret-without-a-scheme-7f3a";
    let long_secret = format!("x{}", "k".repeat(64 * 1024));
    let cases: Vec<(&str, &str, String)> = vec![
        (&connector, "authorization", bare_secret.to_string()),
        (&connector, "authorization", format!("Token {bare_secret}")),
        (&connector, "authorization", long_secret.clone()),
        (
            &connector,
            "authorization",
            basic(CONNECTOR_USER, "wrong-password-91c2"),
        ),
        (&connector, "authorization", format!("Bearer {ADMIN_TOKEN}")),
        (&connector, "authorization", ADMIN_TOKEN.to_string()),
        (&connector, API_KEY_HEADER, "wrong-api-key-5d1e".to_string()),
        (
            &admin,
            "authorization",
            basic(CONNECTOR_USER, CONNECTOR_PASSWORD),
        ),
        (&admin, "authorization", CONNECTOR_PASSWORD.to_string()),
        (&admin, "authorization", format!("Bearer {API_KEY}")),
        (
            &admin,
            "authorization",
            "Bearer wrong-admin-token-24b8".to_string(),
        ),
        (&admin, API_KEY_HEADER, API_KEY.to_string()),
    ];
    for (url, header, value) in &cases {
        let response = client
            .post(*url)
            .header(*header, value.as_str())
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(status, 401, "for a {header} value");
        assert!(text.len() < 1024, "a {}-byte answer", text.len());
        for secret in secrets_in(value) {
            assert!(
                !text.contains(&secret),
                "the answer echoes a secret: {text}"
            );
        }
    }

    // A 60 KB path under /b2c/ adds a bounded amount to the log.
    let before = std::fs::metadata(&log).unwrap().len();
    let long_path = format!("{}/b2c/{}", server.address, "p".repeat(60 * 1024));
    let response = client.post(long_path).json(&body).send().await.unwrap();
    assert!(response.status().is_client_error());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let added = std::fs::metadata(&log).unwrap().len() - before;
    assert!(
        added < 4096,
        "one request with a long path added {added} bytes to the log"
    );

    let text = log_of(server, &log);
    assert!(
        text.contains("refused"),
        "the refusals are logged: {} bytes",
        text.len()
    );
    let mut secrets: Vec<String> = cases.iter().flat_map(|(_, _, v)| secrets_in(v)).collect();
    secrets.extend([
        CONNECTOR_PASSWORD.to_string(),
        ADMIN_TOKEN.to_string(),
        API_KEY.to_string(),
        "p".repeat(1024),
    ]);
    for secret in secrets {
        assert!(
            !text.contains(&secret),
            "the log holds a secret ({} bytes of it)",
            secret.len()
        );
    }
}

/// The secret parts of an `Authorization` or key value: the value, what follows its scheme,
/// and the decoded Basic password.
fn secrets_in(value: &str) -> Vec<String> {
    let mut secrets = vec![value.to_string()];
    if let Some((scheme, rest)) = value.split_once(' ') {
        secrets.push(rest.to_string());
        if scheme == "Basic" {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .unwrap();
            let decoded = String::from_utf8(decoded).unwrap();
            secrets.push(decoded.split_once(':').unwrap().1.to_string());
        }
    }
    // Long values: any 64-byte piece would do as evidence.
    secrets
        .into_iter()
        .map(|s| s.chars().take(64).collect::<String>())
        .collect()
}

#[tokio::test]
async fn an_argon2_check_gives_its_memory_back_when_it_ends() {
    let db = TestDatabase::new();
    let server = ServerProcess::spawn({
        let mut command = ServerProcess::command(&db.url);
        command.stderr(std::process::Stdio::null());
        command
    });
    let client = reqwest::Client::new();
    let url = format!("{}/b2c/api-connector", server.address);
    // A refusal: without credentials (no argon2 check), or with a wrong password (one check).
    let refused = |password: Option<String>| {
        let mut request = client.post(&url).json(&connector_body());
        if let Some(password) = password {
            request = request.basic_auth(CONNECTOR_USER, Some(password));
        }
        async move { assert_eq!(request.send().await.unwrap().status(), 401) }
    };
    // Warm the request path without any argon2 check, then measure.
    for _ in 0..3 {
        refused(None).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_kib = server.status_kib("VmRSS");
    // Three argon2 checks (19 MiB each with the default parameters), one after another.
    for n in 0..3 {
        refused(Some(format!("wrong-{n}"))).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_kib = server.status_kib("VmRSS");
    let peak_kib = server.status_kib("VmHWM");
    assert!(
        peak_kib >= before_kib + 16 * 1024,
        "the checks did not use argon2's memory (peak {peak_kib} KiB, before {before_kib} KiB)"
    );
    assert!(
        after_kib < before_kib + 8 * 1024,
        "argon2's memory stayed: {before_kib} KiB before the checks, {after_kib} KiB after"
    );
}
