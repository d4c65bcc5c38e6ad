//! A store's webhook endpoint for the tests: a real HTTP server on a free local port that answers
//! as it is told (a status, a redirect, or no answer for a while) and verifies every delivery's
//! signature with the `standardwebhooks` crate, an implementation of the specification that
//! shares no code with autolink's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

/// The secret of the tests' webhooks (24 random bytes).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status.
    Status(u16),
    /// A redirect to another path of the receiver (which answers 200 and is never followed).
    Redirect,
    /// Nothing for this long, then 200.
    Hang(Duration),
    /// This status with a body that never ends.
    Endless(u16),
}

/// A delivery as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub body: Value,
    /// The signature verified with the `standardwebhooks` crate.
    pub verified: bool,
    /// What the receiver answered (`None`: it hung).
    pub status: u16,
    pub path: String,
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    received: Vec<Received>,
}

/// The running receiver; stopped when dropped.
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    /// Answers `script` in order, then 200 to everything.
    pub fn start(script: Vec<Answer>) -> Receiver {
        let state = Arc::new(Mutex::new(State {
            script: script.into(),
            received: Vec::new(),
        }));
        let shared = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(shared.clone()))
                .default_service(web::to(receive))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver {
            url: format!("http://127.0.0.1:{port}/hooks/autolink"),
            state,
            handle,
        }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until `done` holds of what was received, at most `within`.
    pub async fn wait_for(
        &self,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(
                started.elapsed() < within,
                "not received within {within:?}: {:#?}",
                received
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        if let Some(value) = req.headers().get(name) {
            headers.insert(
                name,
                http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
    }
    let verified = standardwebhooks::Webhook::new(SECRET)
        .unwrap()
        .verify(&body, &headers)
        .is_ok();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let answer = state.lock().unwrap().script.pop_front();
    let path = req.path().to_string();
    let status = match (&answer, path.ends_with("/elsewhere")) {
        (_, true) => 200,
        (Some(Answer::Status(status)), _) => *status,
        (Some(Answer::Redirect), _) => 302,
        (Some(Answer::Hang(_)), _) => 0,
        (Some(Answer::Endless(status)), _) => *status,
        (None, _) => 200,
    };
    let received = Received {
        id,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        verified,
        status,
        path,
    };
    state.lock().unwrap().received.push(received);
    match answer {
        Some(Answer::Hang(time)) => {
            tokio::time::sleep(time).await;
            HttpResponse::Ok().finish()
        }
        Some(Answer::Endless(_)) => {
            let chunk = web::Bytes::from(vec![b'x'; 64 * 1024]);
            let endless =
                futures_util::stream::repeat_with(move || Ok::<_, actix_web::Error>(chunk.clone()));
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                .streaming(endless)
        }
        Some(Answer::Redirect) => HttpResponse::Found()
            .insert_header(("location", "/hooks/elsewhere"))
            .finish(),
        _ => HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).finish(),
    }
}
