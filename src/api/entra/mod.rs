//! Microsoft Entra External ID's custom authentication extensions (`[entra]`):
//! `POST /entra/attribute-collection-submit` ([`submit`]) and `POST /entra/token-issuance-start`
//! ([`token`]).
//!
//! What the two have in common lives here: the bearer token Entra sends
//! ([`require_entra_caller`], checked before the body is read), the call's envelope (`type`,
//! `data.tenantId`, `data.authenticationContext`) and the time budget. Every answer Entra reads
//! is HTTP 200 with exactly one action; a token defect is 401, and a body that is not an event of
//! the endpoint's type is 400 (Entra logs either and ends the sign-up: README, "Microsoft Entra
//! External ID").

pub mod submit;
pub mod token;

use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use utoipa::ToSchema;

use super::authn::{scheme_of, token_refusal, Refused, Scheme};
use super::body::{read_json, timed_out, Unreadable};
use super::errors::ErrorBody;
use super::{noted, request_id, AppState};
use crate::auth::graph::GraphClient;
use crate::auth::oidc::{EntraCaller, EntraTokenVerifier};
use crate::domain::verification::VerificationPolicy;
use crate::linking::verified_signups::VerifiedSignups;

/// Time kept back from the deadline for writing the answer.
const ANSWER_MARGIN: Duration = Duration::from_millis(40);

/// What the Entra endpoints need, when `[entra]` is configured.
pub struct EntraState {
    /// Verifies Entra's bearer tokens.
    pub verifier: EntraTokenVerifier,
    /// Every answer within this (`[entra] deadline_ms`).
    pub deadline: Duration,
    /// The issuer of the identities token issuance links (`[entra] identity_issuer`).
    pub identity_issuer: String,
    /// Verified submits, remembered for token issuance.
    pub signups: VerifiedSignups,
    /// Microsoft Graph (`[entra.graph]`), when configured.
    pub graph: Option<GraphClient>,
    /// What counts as a verified email (`[linking]`), for reading a Graph user.
    pub verification: VerificationPolicy,
    /// The channels' client ids: the audiences of the store's ID tokens (`POST /v1/link`).
    pub client_ids: Vec<String>,
}

/// When the call arrived and what its token said (request extensions).
#[derive(Debug, Clone)]
struct Call {
    started: Instant,
    caller: EntraCaller,
}

/// The time left before the call's answer must leave.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    until: Instant,
}

impl Budget {
    fn new(started: Instant, deadline: Duration) -> Budget {
        Budget {
            until: started + deadline.saturating_sub(ANSWER_MARGIN),
        }
    }

    /// The time left.
    pub fn left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// The instant the answer must be ready.
    pub fn until(&self) -> Instant {
        self.until
    }
}

/// Middleware for the `/entra` scope: 404 when `[entra]` is not configured; otherwise 401 unless
/// the request carries a valid Entra bearer token.
pub async fn require_entra_caller(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let started = Instant::now();
    let entra = req
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.entra.clone());
    let Some(entra) = entra else {
        let answer = HttpResponse::NotFound().json(ErrorBody::new(
            "not_found",
            "Microsoft Entra External ID is not configured ([entra])",
        ));
        return Ok(req.into_response(answer).map_into_right_body());
    };
    let value = req.headers().get(header::AUTHORIZATION).cloned();
    let refused = match value {
        None => Refused::because("a bearer token from Microsoft Entra is required", None),
        Some(value) if scheme_of(value.as_bytes()) != Some(Scheme::Bearer) => {
            Refused::because("only bearer tokens are accepted here", None)
        }
        Some(value) => {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.trim().get("bearer".len()..))
                .map(str::trim)
                .unwrap_or_default();
            match entra.verifier.verify(token).await {
                Ok(caller) => {
                    req.extensions_mut().insert(Call { started, caller });
                    return Ok(next.call(req).await?.map_into_left_body());
                }
                Err(error) => Refused::because(&token_refusal(&error), None),
            }
        }
    };
    refused.log(&req, "entra");
    let answer = refused.response("Bearer realm=\"autolink\"", "a bearer token is required");
    Ok(req.into_response(answer).map_into_right_body())
}

/// `data.authenticationContext`: the members autolink reads.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationContext {
    /// One sign-in or sign-up: the key of the remembered verified submit.
    pub correlation_id: String,
    /// The user's browser: `locale` chooses the language of messages.
    #[serde(default)]
    pub client: Option<ClientContext>,
    /// The application the user signs up to: `appId` chooses the channel (`[[channels]]
    /// client_ids`).
    #[serde(default)]
    pub client_service_principal: Option<ServicePrincipal>,
}

/// `authenticationContext.client`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ClientContext {
    /// e.g. `en-us`.
    #[serde(default)]
    pub locale: Option<String>,
}

/// `authenticationContext.clientServicePrincipal`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePrincipal {
    /// The application's client id.
    #[serde(default)]
    pub app_id: Option<String>,
}

impl AuthenticationContext {
    /// The channel's client id.
    pub fn client_id(&self) -> Option<String> {
        self.client_service_principal
            .as_ref()
            .and_then(|p| p.app_id.clone())
    }

    /// The locale, for messages.
    pub fn locale(&self) -> Option<&str> {
        self.client.as_ref().and_then(|c| c.locale.as_deref())
    }
}

/// What a handler gets once the call is authenticated and its body read: the event, the token's
/// tenant and the budget.
pub struct Event<T> {
    /// The body.
    pub body: T,
    /// The token's (and the body's) tenant.
    pub tenant_id: String,
    /// The time left.
    pub budget: Budget,
}

/// The envelope every event has: checked before the handler looks further.
pub trait Envelope {
    /// `type`.
    fn event_type(&self) -> &str;
    /// `data.tenantId`.
    fn tenant_id(&self) -> &str;
}

/// Reads the body of an authenticated call: 400 when it is not an event of the documented shape
/// or not of `expected` type, 401 when its `data.tenantId` is not the token's `tid`.
pub async fn read_event<T: DeserializeOwned + Envelope>(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    expected: &'static str,
) -> Result<Event<T>, HttpResponse> {
    let request_id = request_id(req);
    let (budget, caller) = {
        let extensions = req.extensions();
        let Some(call) = extensions.get::<Call>() else {
            // Not reached: the scope's middleware put it there.
            return Err(super::unauthorized(
                "a bearer token is required",
                "Bearer realm=\"autolink\"",
            ));
        };
        let deadline = state
            .entra
            .as_ref()
            .map_or(Duration::ZERO, |entra| entra.deadline);
        (Budget::new(call.started, deadline), call.caller.clone())
    };
    let wait = state
        .body_timeout
        .min(budget.left().max(Duration::from_millis(1)));
    let body: T = match read_json(req, payload, state.max_body_bytes, wait).await {
        Ok(body) => body,
        Err(Unreadable::TimedOut(limit, unread)) => {
            log::info!("request_id={request_id} entra: the body did not arrive in time");
            return Err(noted(timed_out(limit, &unread), "body timed out"));
        }
        Err(why) => {
            log::info!("request_id={request_id} entra: {why}");
            let answer = HttpResponse::BadRequest().json(ErrorBody::new(
                "invalid_request",
                format!("the body is not a {expected} event: {why}"),
            ));
            return Err(noted(answer, "unreadable request"));
        }
    };
    if !body
        .tenant_id()
        .trim()
        .eq_ignore_ascii_case(&caller.tenant_id)
    {
        log::warn!("request_id={request_id} entra: data.tenantId is not the token's tenant");
        return Err(noted(
            super::unauthorized(
                "data.tenantId is not the tenant the bearer token was issued for",
                "Bearer realm=\"autolink\"",
            ),
            "tenant mismatch",
        ));
    }
    if !body.event_type().trim().eq_ignore_ascii_case(expected) {
        log::info!(
            "request_id={request_id} entra: event type {} sent to the {expected} endpoint",
            super::loggable_value(body.event_type(), 80)
        );
        let answer = HttpResponse::BadRequest().json(ErrorBody::new(
            "unknown_event_type",
            format!(
                "this endpoint handles {expected} events only; attach the custom authentication \
                 extension to that event (README, \"Microsoft Entra External ID\")"
            ),
        ));
        return Err(noted(answer, "unknown event type"));
    }
    Ok(Event {
        body,
        tenant_id: caller.tenant_id,
        budget,
    })
}
