//! Who may call the admin API: `Authorization: Bearer <admin token>`, and nothing else. The
//! connector's credentials (HTTP Basic, the API key header, B2C's bearer tokens) are refused here
//! with 401, as the admin token is refused on `/b2c/*`.
//!
//! The token is checked against its argon2id hash ([`crate::auth::HashedSecret`]): the first time
//! on a blocking thread, then from the cache of recent successes in constant time.
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
use crate::api::{request_id, unauthorized, AppState};

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

/// Checks the admin token. `Err` carries the reason for the 401 body.
async fn authenticate(req: &ServiceRequest, state: &web::Data<AppState>) -> Result<(), String> {
    let Some(authorization) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err("the admin token is required as Authorization: Bearer".into());
    };
    let scheme = authorization.split_whitespace().next().unwrap_or_default();
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!(
            "the authorization scheme {scheme:?} is not accepted here: the admin API takes only \
             the admin token as Authorization: Bearer"
        ));
    }
    let token = authorization[scheme.len()..].trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err("the bearer token is not the admin token".into());
    }
    let ok = state.admin_token.verified_before(token.as_bytes()) || {
        let state = state.clone();
        let token = token.to_string();
        web::block(move || {
            state
                .admin_token
                .verify(token.as_bytes(), token.as_bytes(), true)
        })
        .await
        .unwrap_or(false)
    };
    if ok {
        Ok(())
    } else {
        Err("the bearer token is not the admin token".into())
    }
}

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
    if let Err(reason) = authenticate(&req, &state).await {
        log::warn!("{} {}: admin refused: {reason}", req.method(), req.path());
        return Ok(req
            .into_response(unauthorized(&reason, CHALLENGE))
            .map_into_right_body());
    }
    req.extensions_mut().insert(Authenticated);
    Ok(next.call(req).await?.map_into_left_body())
}
