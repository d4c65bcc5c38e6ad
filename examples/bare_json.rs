//! A bare actix-web JSON endpoint for the benchmark in `bench/run.sh` (see BENCHMARKS.md).
//!
//! One route, `POST /`, that reads the body, parses it into a `serde_json::Value` (the JSON work a
//! connector call does) and answers `{"version":"1.0.0","action":"Continue"}`. No authentication,
//! no database, no middleware: it is the ceiling the connector is compared with.
//!
//! Usage: `bare_json [PORT]` (or `BARE_JSON_PORT`; default 0, an ephemeral port). Binds
//! 127.0.0.1 (`BARE_JSON_HOST` to change). Workers: `BARE_JSON_WORKERS`, or actix-web's default,
//! one per core, the same default `autolink serve` uses when `workers` is not configured.
//! Prints `bare_json listening on http://HOST:PORT` once the socket is bound.

use std::io::Write;
use std::net::TcpListener;

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

/// Largest body accepted, as in the service's default `limits.max_body_bytes`.
const MAX_BODY_BYTES: usize = 64 * 1024;

async fn post(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        return HttpResponse::UnsupportedMediaType().finish();
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(_)) => {
            HttpResponse::Ok().json(json!({"version": "1.0.0", "action": "Continue"}))
        }
        _ => HttpResponse::BadRequest().json(json!({"error": "invalid_json"})),
    }
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("BARE_JSON_PORT").ok())
        .map(|p| p.parse().expect("the port must be a number"))
        .unwrap_or(0);
    let host = std::env::var("BARE_JSON_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let workers: Option<usize> = std::env::var("BARE_JSON_WORKERS")
        .ok()
        .map(|w| w.parse().expect("BARE_JSON_WORKERS must be a number"));

    actix_web::rt::System::new().block_on(async move {
        let listener = TcpListener::bind((host.as_str(), port))?;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(|| {
            App::new()
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .route("/", web::post().to(post))
        });
        if let Some(workers) = workers {
            server = server.workers(workers.max(1));
        }
        let server = server.listen(listener)?.run();
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "bare_json listening on http://{host}:{port}")?;
            out.flush()?;
        }
        server.await
    })
}
