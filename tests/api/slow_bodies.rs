//! A request whose body never arrives (or trickles) is answered 408 within `[limits]
//! body_timeout_ms` and its connection is closed, on every endpoint that reads a body; the
//! server keeps serving everyone else, and nothing is written.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// Time allowed beyond the limit for the answer and the close (a loaded 2-core machine).
const MARGIN: Duration = Duration::from_secs(2);

/// How the announced body (100 bytes) fails to arrive.
#[derive(Clone, Copy, Debug)]
enum Body {
    /// `Content-Length: 100`, then 9 bytes, then nothing.
    Silent,
    /// Chunked, one chunk, then nothing.
    SilentChunked,
    /// `Content-Length: 100`, one byte every 200 ms.
    Trickle,
}

/// What a raw client saw.
#[derive(Debug)]
struct Seen {
    /// Everything received.
    text: String,
    /// When the first byte of the answer arrived, after the head was sent.
    answered_after: Option<Duration>,
    /// Whether the server closed the connection before `limit + MARGIN`.
    closed: bool,
}

fn port(app: &TestApp) -> u16 {
    app.address.rsplit(':').next().unwrap().parse().unwrap()
}

fn basic() -> String {
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("{CONNECTOR_USER}:{CONNECTOR_PASSWORD}"));
    format!("Basic {credentials}")
}

fn bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

/// Sends a request head with valid credentials and a body that does not come, and reads what
/// the server does until it closes or `limit + MARGIN` has passed.
async fn send_without_body(
    port: u16,
    method: &str,
    path: &str,
    authorization: &str,
    body: Body,
    limit: Duration,
) -> Seen {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let framing = match body {
        Body::Silent | Body::Trickle => "Content-Length: 100\r\n",
        Body::SilentChunked => "Transfer-Encoding: chunked\r\n",
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\n\
         Content-Type: application/json\r\n{framing}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    match body {
        Body::Silent => stream.write_all(b"{\"email\":").await.unwrap(),
        Body::SilentChunked => stream.write_all(b"5\r\n{\"ema\r\n").await.unwrap(),
        Body::Trickle => {}
    }
    let sent = Instant::now();
    let deadline = tokio::time::Instant::now() + limit + MARGIN;
    let mut received = Vec::new();
    let mut answered_after = None;
    let mut buffer = [0u8; 4096];
    let mut trickled = 0;
    let closed = loop {
        if let Body::Trickle = body {
            // One byte every 200 ms, as long as the server reads and has not answered.
            if answered_after.is_none() && trickled < 100 {
                let next = tokio::time::Instant::now() + Duration::from_millis(200);
                match tokio::time::timeout_at(next.min(deadline), stream.read(&mut buffer)).await {
                    Err(_) => {
                        if tokio::time::Instant::now() >= deadline {
                            break false;
                        }
                        if stream.write_all(b" ").await.is_err() {
                            break true;
                        }
                        trickled += 1;
                        continue;
                    }
                    Ok(Ok(0)) | Ok(Err(_)) => break true,
                    Ok(Ok(n)) => {
                        answered_after.get_or_insert(sent.elapsed());
                        received.extend_from_slice(&buffer[..n]);
                        continue;
                    }
                }
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => {
                answered_after.get_or_insert(sent.elapsed());
                received.extend_from_slice(&buffer[..n]);
            }
        }
    };
    Seen {
        text: String::from_utf8_lossy(&received).into_owned(),
        answered_after,
        closed,
    }
}

/// Asserts a 408 JSON answer after about `limit`, and a closed connection.
fn assert_timed_out(case: &str, seen: &Seen, limit: Duration) {
    assert!(
        seen.text.starts_with("HTTP/1.1 408"),
        "{case}: no 408 within {:?}: {seen:?}",
        limit + MARGIN
    );
    let answered_after = seen.answered_after.unwrap_or_default();
    assert!(
        answered_after >= limit.mul_f64(0.9) && answered_after <= limit + MARGIN,
        "{case}: answered after {answered_after:?} for a limit of {limit:?}"
    );
    assert!(
        seen.closed,
        "{case}: the connection is still open: {seen:?}"
    );
    assert!(
        seen.text.to_ascii_lowercase().contains("connection: close"),
        "{case}: {seen:?}"
    );
    let body = seen.text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{case}: not JSON: {seen:?}"));
    assert_eq!(body["error"], "request_timeout", "{case}: {body}");
}

#[tokio::test]
async fn a_body_that_never_arrives_gets_408_and_a_closed_connection_on_every_endpoint_that_reads_one(
) {
    let limit = Duration::from_millis(2000);
    let app = spawn_app_with(|s| s.limits.body_timeout_ms = 2000).await;
    let (link, prospect) = seed_customers_link_and_prospect(&app).await;

    let (basic, bearer) = (basic(), bearer());
    let mut cases: Vec<(&str, String, &str, Body)> = vec![
        (
            "POST",
            "/b2c/api-connector".into(),
            basic.as_str(),
            Body::Silent,
        ),
        (
            "POST",
            "/b2c/api-connector".into(),
            basic.as_str(),
            Body::SilentChunked,
        ),
        (
            "POST",
            "/b2c/api-connector".into(),
            basic.as_str(),
            Body::Trickle,
        ),
        (
            "POST",
            "/b2c/rest/precheck".into(),
            basic.as_str(),
            Body::Silent,
        ),
        (
            "POST",
            "/b2c/rest/link".into(),
            basic.as_str(),
            Body::Silent,
        ),
        (
            "POST",
            "/b2c/rest/link".into(),
            basic.as_str(),
            Body::Trickle,
        ),
        (
            "POST",
            "/admin/v1/customers".into(),
            bearer.as_str(),
            Body::Silent,
        ),
        (
            "POST",
            "/admin/v1/customers".into(),
            bearer.as_str(),
            Body::SilentChunked,
        ),
        (
            "PATCH",
            "/admin/v1/customers/C-2".into(),
            bearer.as_str(),
            Body::Trickle,
        ),
        (
            "POST",
            "/admin/v1/preview".into(),
            bearer.as_str(),
            Body::Silent,
        ),
        (
            "POST",
            "/admin/v1/prospects".into(),
            bearer.as_str(),
            Body::Silent,
        ),
    ];
    cases.extend([
        (
            "POST",
            format!("/admin/v1/links/{link}/unlink"),
            bearer.as_str(),
            Body::Silent,
        ),
        (
            "POST",
            format!("/admin/v1/links/{link}/move"),
            bearer.as_str(),
            Body::Silent,
        ),
        (
            "POST",
            format!("/admin/v1/prospects/{prospect}/approve"),
            bearer.as_str(),
            Body::Silent,
        ),
        (
            "POST",
            format!("/admin/v1/prospects/{prospect}/reject"),
            bearer.as_str(),
            Body::Silent,
        ),
    ]);
    let port = port(&app);
    let slow = futures_util::future::join_all(cases.iter().map(|(method, path, auth, body)| {
        send_without_body(port, method, path, auth, *body, limit)
    }));
    // While every one of them waits, the server answers others at once: not after the slow
    // ones' answers, which come 1.7 s after these start.
    let others = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let (status, answer) = app
            .connector(&attribute_collection("new@example.com", B2C_CLIENT))
            .await;
        assert_continue(status, &answer);
        let status = app
            .client
            .get(format!("{}/admin/v1/customers/C-1", app.address))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200);
        started.elapsed()
    };
    let (seen, others_took) = tokio::join!(slow, others);
    assert!(
        others_took < Duration::from_millis(1500),
        "other requests waited {others_took:?} behind the slow ones"
    );
    for ((method, path, _, body), seen) in cases.iter().zip(&seen) {
        assert_timed_out(&format!("{method} {path} ({body:?})"), seen, limit);
    }

    // And after: the server still serves, and none of the slow requests wrote anything.
    let (status, answer) = app
        .connector(&attribute_collection("new@example.com", B2C_CLIENT))
        .await;
    assert_continue(status, &answer);
    assert_eq!(app.customer_count(), 2);
    assert_eq!(app.customers_with_email("other@example.com").len(), 1);
    assert_eq!(app.active_links(), 1);
    assert_eq!(app.links_of("C-1").len(), 1);
    let prospect: Value = app
        .client
        .get(format!("{}/admin/v1/prospects/{prospect}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prospect["status"], "pending", "{prospect}");
}

#[tokio::test]
async fn by_default_a_body_has_five_seconds() {
    let app = spawn_app().await;
    let limit = Duration::from_secs(5);
    let seen = send_without_body(
        port(&app),
        "POST",
        "/b2c/api-connector",
        &basic(),
        Body::Silent,
        limit,
    )
    .await;
    assert_timed_out("the connector with the default limit", &seen, limit);
}
