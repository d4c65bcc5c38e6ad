//! The HTTP surface: routes, request ids and logging, authentication, and the wire formats.
//!
//! Handlers parse into domain types, call the engine, and render the answer; no rule lives here.

pub mod connector;
pub mod health;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpMessage, HttpResponse};
use serde_json::json;

use crate::auth::bootstrap::Credentials;
use crate::engine::Engine;

/// Shared state of every worker.
pub struct AppState {
    /// The decision engine.
    pub engine: Arc<Engine>,
    /// Credentials to check.
    pub credentials: Credentials,
    /// The issuer of identities named by connector `objectId`s.
    pub tenant_issuer: String,
    /// Largest body accepted from B2C.
    pub max_body_bytes: usize,
    /// Time limit of the database part of a request.
    pub request_timeout: Duration,
}

/// The id of the current request, in request extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The decision of the current request, put in response extensions for the request log line.
#[derive(Clone, Debug)]
pub struct DecisionNote(pub String);

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(
            web::scope("/b2c")
                .wrap(from_fn(require_connector_auth))
                .route("/api-connector", web::post().to(connector::api_connector)),
        )
        .default_service(web::to(not_found));
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": "not_found", "message": "no such endpoint"}))
}

/// Gives every request an id (`x-request-id` on the answer) and logs one line per request with
/// its decision. Never logs bodies, credentials or emails.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().clone();
    let path = req.path().to_string();
    let mut res = next.call(req).await?;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        res.headers_mut()
            .insert(header::HeaderName::from_static("x-request-id"), value);
    }
    if log::log_enabled!(log::Level::Info) {
        let decision = res
            .response()
            .extensions()
            .get::<DecisionNote>()
            .map(|d| d.0.clone())
            .unwrap_or_else(|| "-".into());
        log::info!(
            "request_id={request_id} {method} {path} status={} decision={decision} elapsed_ms={:.1}",
            res.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
    Ok(res)
}

/// The request id of a request (a fresh one if the middleware did not run).
pub fn request_id(req: &actix_web::HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// A 401 answer with a JSON reason.
pub fn unauthorized(reason: &str, challenge: &'static str) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, challenge))
        .json(json!({"error": "unauthorized", "message": reason}))
}

/// Requires B2C's connector credentials before the body is read.
async fn require_connector_auth(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req
            .into_response(unauthorized("server misconfigured", "Basic"))
            .map_into_right_body());
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::parse_basic);
    let Some((user, password)) = presented else {
        log::warn!("{} {}: no HTTP Basic credentials", req.method(), req.path());
        return Ok(req
            .into_response(unauthorized(
                "HTTP Basic credentials are required",
                "Basic realm=\"autolink\"",
            ))
            .map_into_right_body());
    };
    let ok = if state
        .credentials
        .connector_basic
        .verified_before(&user, &password)
    {
        true
    } else {
        let state = state.clone();
        web::block(move || state.credentials.connector_basic.verify(&user, &password))
            .await
            .unwrap_or(false)
    };
    if !ok {
        log::warn!(
            "{} {}: wrong HTTP Basic credentials",
            req.method(),
            req.path()
        );
        return Ok(req
            .into_response(unauthorized(
                "the HTTP Basic credentials are not valid",
                "Basic realm=\"autolink\"",
            ))
            .map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}
