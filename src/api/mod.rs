//! The HTTP surface: routes, request ids and logging, authentication, and the wire formats.
//!
//! Handlers parse into domain types, call the linking service, and render the answer; no rule lives here.

pub mod admin;
pub mod authn;
pub mod body;
pub mod connector;
pub mod entra;
pub mod errors;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod relying_party;
pub mod rest;
pub mod routes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};

use self::errors::ErrorBody;
use crate::auth::oidc::B2cIdTokenVerifier;
use crate::domain::EmailAddress;
use crate::linking::{Answer, LinkRequest, LinkingService};
use crate::messages::Catalogue;

/// Shared state of every worker.
pub struct AppState {
    /// The decision linking.
    pub linking: Arc<LinkingService>,
    /// How B2C authenticates.
    pub connector_auth: authn::ConnectorAuth,
    /// The issuer of identities named by connector `objectId`s.
    pub tenant_issuer: String,
    /// Largest body accepted from B2C.
    pub max_body_bytes: usize,
    /// Time a body has to arrive, on every endpoint that reads one (`[limits] body_timeout_ms`).
    pub body_timeout: Duration,
    /// Time limit of the database part of a request.
    pub request_timeout: Duration,
    /// Refusal messages.
    pub messages: Catalogue,
    /// Verifies B2C ID tokens for `POST /v1/link`, when `[relying_party]` is configured.
    pub id_tokens: Option<Arc<B2cIdTokenVerifier>>,
    /// The administrative operations of `/admin/v1/`.
    pub admin: Arc<crate::admin::Admin>,
    /// The admin token's hash (the admin API's only credential).
    pub admin_token: crate::auth::HashedSecret,
    /// Failed credential checks: remembered, and throttled per client.
    pub credential_gate: crate::auth::gate::Gate,
    /// The header naming the client's address behind a proxy, when configured.
    pub client_ip_header: Option<header::HeaderName>,
    /// Microsoft Entra External ID's custom authentication extensions, when `[entra]` is
    /// configured.
    pub entra: Option<Arc<entra::EntraState>>,
}

/// The id of the current request, in request extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The decision of the current request, put in response extensions for the request log line.
#[derive(Clone, Debug)]
pub struct DecisionNote(pub String);

/// Registers every route of [`routes::ROUTES`], and a JSON 404 for the rest.
pub fn configure(cfg: &mut web::ServiceConfig) {
    routes::configure(cfg);
    cfg.default_service(web::to(not_found));
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(ErrorBody::new("not_found", "no such endpoint"))
}

/// Gives every request an id (`x-request-id` on the answer) and logs one line per request with
/// its decision. Never logs bodies, credentials or emails.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = new_request_id();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let method = req.method().clone();
    let path = loggable_path(req.path());
    if let Some(state) = req.app_data::<web::Data<AppState>>() {
        // Once per server (the metrics keep the first call): every endpoint's latency histogram
        // exists before the first answer, `/metrics` included.
        state
            .linking
            .metrics()
            .register_endpoints(routes::endpoints());
    }
    let mut res = next.call(req).await?;
    if let Some(state) = res.request().app_data::<web::Data<AppState>>() {
        // The matched resource's name is its route pattern (routes::configure names them).
        state.linking.metrics().observe_request(
            res.request().match_name(),
            &method,
            started.elapsed().as_secs_f64(),
        );
    }
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
            "request_id={request_id} {} {path} status={} decision={decision} elapsed_ms={:.1}",
            loggable_method(&method),
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
        .unwrap_or_else(new_request_id)
}

/// A new request id: a random (version 4) UUID in its 32-digit form. The bits come from the
/// thread's cryptographically secure generator, seeded once, rather than from a system call per
/// request (`Uuid::new_v4`), which showed in the sign-in profile.
pub fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .simple()
        .to_string()
}

/// Why blocking database work gave no result.
#[derive(Debug)]
pub enum Late {
    /// Its time limit passed; it committed nothing and will commit nothing.
    TimedOut,
    /// The blocking thread failed.
    WorkerFailed,
}

/// PostgreSQL: runs blocking database work on the blocking pool under a
/// [`Deadline`](crate::storage::postgres::Deadline) of `limit`. At the deadline the work is
/// answered as failed unless a COMMIT of it is under way or done, in which case its own answer
/// is awaited (at most one limit more). Work still running one limit after its deadline holds
/// connections that stopped answering: their pool is retired, and the thread left to them.
pub async fn postgres_within<R, F>(limit: Duration, work: F) -> Result<R, Late>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    use crate::storage::postgres::Deadline;
    use actix_web::rt::time::{sleep, timeout};
    let deadline = Deadline::start(limit);
    let scope = deadline.clone();
    let mut blocking = std::pin::pin!(web::block(move || scope.run(work)));
    let left = deadline.at().saturating_duration_since(Instant::now());
    match timeout(left, &mut blocking).await {
        Ok(Ok(result)) => return Ok(result),
        Ok(Err(_)) => return Err(Late::WorkerFailed),
        Err(_) => {}
    }
    let abandon_at = deadline.at() + deadline.abandon_after();
    if deadline.expire() {
        actix_web::rt::spawn(async move {
            sleep(abandon_at.saturating_duration_since(Instant::now())).await;
            deadline.abandon();
        });
        return Err(Late::TimedOut);
    }
    // A COMMIT is under way or done: its outcome is the answer.
    let left = abandon_at.saturating_duration_since(Instant::now());
    match timeout(left, &mut blocking).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(_)) => Err(Late::WorkerFailed),
        Err(_) => {
            deadline.abandon();
            log::error!("a COMMIT did not answer in time: its outcome is unknown");
            Err(Late::TimedOut)
        }
    }
}

/// The sign-up checks (wire adapters call this; the linking service decides).
pub async fn check_identity(state: &AppState, request: LinkRequest, _source: &str) -> Answer {
    state.linking.check(request).await
}

/// Links (or resolves) an identity within the request's time limit.
pub async fn link_identity(state: &AppState, request: LinkRequest, _source: &str) -> Answer {
    state.linking.link(request).await
}

/// The decision part of the request log line; the email is redacted.
pub fn decision_note(step: Option<&str>, answer: &Answer, email: Option<&str>) -> String {
    // Only the request log line reads it; skip the work when that line is not written.
    if !log::log_enabled!(log::Level::Info) {
        return String::new();
    }
    let email = email
        .and_then(|e| EmailAddress::parse(e).ok())
        .map(|e| e.redacted())
        .unwrap_or_else(|| "-".into());
    let step = step.map(|s| format!("step={s} ")).unwrap_or_default();
    match answer {
        Ok(r) => format!(
            "{step}channel={} outcome={} email={email}",
            r.channel,
            r.outcome.as_str()
        ),
        Err(refusal) => format!(
            "{step}outcome=Refused code={} email={email}",
            refusal.code()
        ),
    }
}

/// Attaches the decision to a response for the request log line.
pub fn noted(mut response: HttpResponse, note: &str) -> HttpResponse {
    // Only the request log line reads it.
    if log::log_enabled!(log::Level::Info) {
        response
            .extensions_mut()
            .insert(DecisionNote(note.to_string()));
    }
    response
}

/// Longest part of a request path written to the log: one request adds a bounded line.
pub const MAX_LOGGED_PATH: usize = 160;

/// A request path as logs show it: at most [`MAX_LOGGED_PATH`] characters, control characters
/// escaped, and how much was cut.
pub fn loggable_path(path: &str) -> String {
    loggable_value(path, MAX_LOGGED_PATH)
}

/// A request method as logs show it (actix accepts any token as a method).
pub fn loggable_method(method: &actix_web::http::Method) -> String {
    loggable_value(method.as_str(), 16)
}

/// A value a caller sent, as logs show it: at most `limit` characters, control characters
/// escaped, and how much was cut.
pub fn loggable_value(text: &str, limit: usize) -> String {
    let mut out = String::with_capacity(text.len().min(limit) + 24);
    for (count, c) in text.chars().enumerate() {
        if count == limit {
            out.push_str(&format!("...({} bytes)", text.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A 429 answer: too many failed credential checks from this client, or too many checks at once.
pub fn too_many_attempts(retry_after: Duration) -> HttpResponse {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, seconds.max(1).to_string()))
        .json(ErrorBody::new(
            "too_many_requests",
            "too many failed credential checks; retry later",
        ))
}

/// A 401 answer with a JSON reason.
pub fn unauthorized(reason: &str, challenge: &'static str) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, challenge))
        .json(ErrorBody::new("unauthorized", reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_paths_are_bounded_and_escaped() {
        assert_eq!(loggable_path("/b2c/api-connector"), "/b2c/api-connector");
        let long = format!("/b2c/{}", "a".repeat(60_000));
        let logged = loggable_path(&long);
        assert!(logged.len() < MAX_LOGGED_PATH + 32, "{}", logged.len());
        assert!(logged.ends_with("...(60005 bytes)"), "{logged}");
        assert_eq!(loggable_path("/a\nb\u{1b}"), "/a\\nb\\u{1b}");
    }

    #[test]
    fn request_ids_are_random_version_4_uuids() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 32);
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version_num(), 4);
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
        }
    }
}
