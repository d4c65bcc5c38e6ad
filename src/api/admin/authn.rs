//! Who may call the admin API: `Authorization: Bearer <admin token>`, and nothing else. The
//! connector's credentials (HTTP Basic, the API key header, B2C's bearer tokens) are refused here
//! with 401, as the admin token is refused on `/b2c/*`.
//!
//! The token is checked against its hash ([`crate::auth::HashedSecret`]): argon2id the first
//! time (a keyed SHA-256 for a generated token), then from the cache of recent successes in
//! constant time. Failed checks are remembered and throttled per client ([`crate::auth::gate`]).
//!
//! Handlers take an [`AdminCaller`], which reads the administrator's name for the audit from
//! `X-Autolink-Actor` (validated; `admin` when absent).

use std::future::{ready, Ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use super::error::ApiError;
use crate::admin::{Actor, AdminError, Context};
use crate::api::authn::{client_key, scheme_of, Refused, Scheme};
use crate::api::{request_id, unauthorized, AppState};
use crate::auth::gate::Verdict;

/// The header naming the administrator for the audit.
pub const ACTOR_HEADER: HeaderName = HeaderName::from_static("x-autolink-actor");
/// The challenge of admin 401 answers.
const CHALLENGE: &str = "Bearer realm=\"autolink-admin\"";
/// Longest token considered; longer ones are refused without hashing.
const MAX_TOKEN_LEN: usize = 1024;

/// The authenticated administrator, for handlers.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    /// The name recorded in the audit.
    pub actor: Actor,
}

impl AdminCaller {
    /// The operation context of this request: who, which request, through the admin API.
    pub fn context(&self, req: &HttpRequest) -> Context {
        Context {
            actor: self.actor.clone(),
            request_id: request_id(req),
            source: "admin-api",
        }
    }
}

impl FromRequest for AdminCaller {
    type Error = ApiError;
    type Future = Ready<Result<AdminCaller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Set by `require_admin`; a handler outside the admin scope has no caller.
        if req.extensions().get::<Authenticated>().is_none() {
            return ready(Err(ApiError::Unavailable));
        }
        // Read here rather than in the middleware, so that a method the path does not serve
        // is answered 405 whatever this header says.
        let actor = match req.headers().get(ACTOR_HEADER) {
            None => Ok(Actor::default_admin()),
            Some(value) => value
                .to_str()
                .map_err(|_| "must be plain text".to_string())
                .and_then(Actor::parse),
        };
        ready(
            actor
                .map(|actor| AdminCaller { actor })
                .map_err(|message| AdminError::invalid("X-Autolink-Actor", message).into()),
        )
    }
}

/// Marks a request whose admin token `require_admin` accepted.
#[derive(Debug, Clone, Copy)]
struct Authenticated;

/// Checks the admin token.
async fn authenticate(req: &ServiceRequest, state: &web::Data<AppState>) -> Result<(), Refused> {
    let gate = &state.credential_gate;
    let Some(authorization) = req.headers().get(header::AUTHORIZATION) else {
        return Err(Refused::because(
            "the admin token is required as Authorization: Bearer",
            None,
        ));
    };
    // Computed only for a refusal: an accepted call pays nothing for the log.
    let fingerprint = || Some(gate.log_fingerprint(authorization.as_bytes()));
    if scheme_of(authorization.as_bytes()) != Some(Scheme::Bearer) {
        return Err(Refused::because(
            "the authorization scheme is not accepted here: the admin API takes only the admin \
             token as Authorization: Bearer",
            fingerprint(),
        ));
    }
    let token = authorization
        .to_str()
        .ok()
        .map(|v| v.trim()["bearer".len()..].trim())
        .unwrap_or_default();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Refused::because(NOT_THE_TOKEN, fingerprint()));
    }
    let verdict = if state.admin_token.verified_before(token.as_bytes()) {
        Verdict::Accepted
    } else {
        let client = client_key(req, state);
        let check = state
            .admin_token
            .verify(token.as_bytes(), token.as_bytes(), true);
        gate.check(client, "admin", token.as_bytes(), check).await
    };
    match verdict {
        Verdict::Accepted => Ok(()),
        Verdict::Refused => Err(Refused::because(NOT_THE_TOKEN, fingerprint())),
        Verdict::Throttled(wait) => Err(Refused::throttled(wait)),
        Verdict::Busy => Err(Refused::throttled(std::time::Duration::from_secs(1))),
    }
}

const NOT_THE_TOKEN: &str = "the bearer token is not the admin token";

/// Middleware for the admin API (and `/openapi.json`).
pub async fn require_admin(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req
            .into_response(unauthorized("server misconfigured", CHALLENGE))
            .map_into_right_body());
    };
    if let Err(refused) = authenticate(&req, &state).await {
        refused.log(&req, "admin");
        return Ok(req
            .into_response(refused.response(CHALLENGE, NOT_THE_TOKEN))
            .map_into_right_body());
    }
    req.extensions_mut().insert(Authenticated);
    Ok(next.call(req).await?.map_into_left_body())
}
