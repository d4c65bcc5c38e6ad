//! The user-flow API connector (DESIGN 2.1): `POST /b2c/api-connector`.
//!
//! B2C posts a flat JSON object whose `step` says where in the journey it is. Every answer is a
//! well-formed B2C answer: continue, block page, or (at `PostAttributeCollection`) validation
//! error. Nothing a caller sends can produce a 500.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::{read_json, timed_out, Unreadable};
use super::errors::ErrorBody;
use super::{check_identity, decision_note, link_identity, noted, request_id, AppState};
use crate::domain::{Identity, Refusal, SignInEvidence};
use crate::linking::{Answer, LinkRequest};

/// The answer version B2C expects in every answer.
pub const API_VERSION: &str = "1.0.0";
/// Claim carrying the customer account number back to B2C.
pub const CLAIM_ACCOUNT_NUMBER: &str = "extension_CustomerAccountNumber";
/// Claim carrying the outcome (`Linked`, `Created`, `AlreadyLinked`).
pub const CLAIM_OUTCOME: &str = "extension_AutoLinkOutcome";
/// Claim carrying a refusal's code at the token step, where B2C cannot block.
pub const CLAIM_ERROR: &str = "extension_AutoLinkError";

/// The steps of a user flow at which B2C calls a connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Social sign-up, after the identity provider returns.
    PostFederationSignup,
    /// Any sign-up, after the attribute page, before the account is created.
    PostAttributeCollection,
    /// Sign-up and sign-in, before the token is issued (also spelt `PreTokenApplicationClaims`).
    PreTokenIssuance,
}

impl Step {
    /// Parses the `step` field (case-insensitively; both spellings of the token step).
    pub fn parse(step: &str) -> Option<Step> {
        let step = step.trim();
        [
            ("PostFederationSignup", Step::PostFederationSignup),
            ("PostAttributeCollection", Step::PostAttributeCollection),
            ("PreTokenIssuance", Step::PreTokenIssuance),
            ("PreTokenApplicationClaims", Step::PreTokenIssuance),
        ]
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(step))
        .map(|(_, s)| s)
    }

    fn name(self) -> &'static str {
        match self {
            Step::PostFederationSignup => "PostFederationSignup",
            Step::PostAttributeCollection => "PostAttributeCollection",
            Step::PreTokenIssuance => "PreTokenIssuance",
        }
    }
}

/// What B2C posts to the user-flow API connector: the fields autolink reads. Any may be missing;
/// the rest of the object (collected and custom attributes, `displayName`, an identity's
/// `issuerAssignedId`) is accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConnectorRequest {
    /// The user's email.
    email: Option<String>,
    /// The user's identities.
    identities: Option<Vec<ConnectorIdentity>>,
    /// Given name, for a customer autolink creates.
    #[serde(rename = "givenName")]
    given_name: Option<String>,
    /// Surname, for a customer autolink creates.
    surname: Option<String>,
    /// The user's object id (at `PreTokenIssuance` only).
    #[serde(rename = "objectId")]
    object_id: Option<String>,
    /// `PostFederationSignup`, `PostAttributeCollection`, `PreTokenIssuance` (or
    /// `PreTokenApplicationClaims`).
    step: Option<String>,
    /// The relying party's client id; selects the channel.
    client_id: Option<String>,
    /// The same, as some B2C pages spell it (read when `client_id` is absent).
    #[serde(rename = "clientId")]
    client_id_camel: Option<String>,
    /// The user's language.
    ui_locales: Option<String>,
}

/// One entry of the `identities` claim.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConnectorIdentity {
    /// `emailAddress` (local account), `federated` (social), `userName`, ...
    #[serde(rename = "signInType")]
    sign_in_type: Option<String>,
    /// The tenant, or the social provider (`google.com`).
    issuer: Option<String>,
}

/// `POST /b2c/api-connector`.
#[utoipa::path(
    post, path = "/b2c/api-connector", tag = "b2c",
    request_body = ConnectorRequest,
    responses(
        (status = 200, description = "Continue (with the account number at PreTokenIssuance) or a block page (action ShowBlockPage with the refusal's code). Unreadable input (no body, not JSON, a field of the wrong type, over the body limit) is also answered 200 with a block page, code InvalidRequest: B2C shows any other answer as its error page", body = ConnectorResponse),
        (status = 400, description = "Validation error (PostAttributeCollection only)", body = ConnectorResponse),
        (status = 401, description = "Not the connector's credentials", body = ErrorBody),
    ),
    security(("connector_basic" = []), ("connector_api_key" = []), ("connector_bearer" = []))
)]
pub async fn api_connector(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let request_id = request_id(&req);
    let read = read_json(&req, payload, state.max_body_bytes, state.body_timeout).await;
    let body: ConnectorRequest = match read {
        Ok(body) => body,
        Err(Unreadable::TimedOut(limit, unread)) => {
            log::info!("request_id={request_id} api-connector: the body did not arrive in time");
            return noted(timed_out(limit, &unread), "body timed out");
        }
        Err(why) => {
            log::info!("request_id={request_id} api-connector: {why}");
            return noted(
                block(&state, Refusal::InvalidRequest, "en"),
                "unreadable request",
            );
        }
    };
    let language = state.messages.language(body.ui_locales.as_deref());
    let Some(step) = body.step.as_deref().and_then(Step::parse) else {
        log::info!(
            "request_id={request_id} api-connector: unknown or missing step {:?}",
            body.step
                .as_deref()
                .map(|step| super::loggable_value(step, 40))
        );
        return noted(
            block(&state, Refusal::InvalidRequest, &language),
            "unknown step",
        );
    };
    let request = link_request(&request_id, step, body, &state.tenant_issuer);
    let email = request.email.clone();
    let answer = match step {
        Step::PreTokenIssuance => link_identity(&state, request, "api-connector").await,
        _ => check_identity(&state, request, "api-connector").await,
    };
    let note = decision_note(Some(step.name()), &answer, email.as_deref());
    noted(render(&state, step, &answer, &language), &note)
}

fn link_request(
    request_id: &str,
    step: Step,
    body: ConnectorRequest,
    tenant_issuer: &str,
) -> LinkRequest {
    let evidence = match &body.identities {
        Some(entries) => SignInEvidence::from_identities(entries.iter().map(|e| {
            (
                e.sign_in_type.as_deref().unwrap_or_default(),
                e.issuer.as_deref(),
            )
        })),
        None => SignInEvidence::Missing,
    };
    let identity = match step {
        Step::PreTokenIssuance => body
            .object_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(|subject| Identity {
                issuer: tenant_issuer.to_string(),
                subject: subject.to_string(),
            }),
        _ => None,
    };
    if step == Step::PreTokenIssuance && identity.is_none() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            log::warn!(
                "a token step came without objectId: nothing is linked and the token carries \
                 extension_AutoLinkError=ObjectIdMissing (README, \"The token step without \
                 objectId\"); counted in autolink_refusals_total, logged once"
            )
        });
    }
    LinkRequest {
        request_id: request_id.to_string(),
        source: "api-connector",
        step: Some(step.name()),
        client_id: body.client_id.or(body.client_id_camel),
        email: body.email,
        evidence,
        // User flows cannot carry a provider's verified flag; only the rules of section 5 apply.
        email_verified: None,
        identity,
        given_name: body.given_name,
        surname: body.surname,
        time_limit: None,
    }
}

/// What the API connector answers: a continuation (with claims at the token step), a block
/// page, or a validation error (HTTP 400). An absent value is left out, never null.
// A struct, not a map of values (which cost a tree of allocations on the sign-in path); its
// fields are in the alphabetical order that the maps it replaced gave the keys.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ConnectorResponse<'a> {
    /// `Continue`, `ShowBlockPage` or `ValidationError`.
    action: &'static str,
    /// The refusal's code (block page, validation error).
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    /// The refusal's code at `PreTokenIssuance`, which cannot block.
    #[serde(
        rename = "extension_AutoLinkError",
        skip_serializing_if = "Option::is_none"
    )]
    auto_link_error: Option<&'static str>,
    /// `Linked`, `Created` or `AlreadyLinked` (`PreTokenIssuance`, continue).
    #[serde(
        rename = "extension_AutoLinkOutcome",
        skip_serializing_if = "Option::is_none"
    )]
    auto_link_outcome: Option<&'static str>,
    /// The customer account number (`PreTokenIssuance`, continue).
    #[serde(
        rename = "extension_CustomerAccountNumber",
        skip_serializing_if = "Option::is_none"
    )]
    customer_account_number: Option<&'a str>,
    /// 400 on a validation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// The message B2C shows (block page, validation error).
    #[serde(rename = "userMessage", skip_serializing_if = "Option::is_none")]
    user_message: Option<&'a str>,
    /// Always `1.0.0`.
    version: &'static str,
}

impl<'a> ConnectorResponse<'a> {
    fn continuation() -> ConnectorResponse<'a> {
        ConnectorResponse {
            action: "Continue",
            version: API_VERSION,
            ..ConnectorResponse::default()
        }
    }

    fn refusal(action: &'static str, refusal: Refusal, message: &'a str) -> ConnectorResponse<'a> {
        ConnectorResponse {
            action,
            code: Some(refusal.code()),
            user_message: Some(message),
            version: API_VERSION,
            ..ConnectorResponse::default()
        }
    }
}

/// Renders the linking service's answer in the wire format the step allows.
fn render(state: &AppState, step: Step, answer: &Answer, language: &str) -> HttpResponse {
    match (step, answer) {
        (Step::PreTokenIssuance, Ok(resolution)) => HttpResponse::Ok().json(ConnectorResponse {
            customer_account_number: resolution.account_number.as_deref(),
            auto_link_outcome: Some(resolution.outcome.as_str()),
            ..ConnectorResponse::continuation()
        }),
        // The token step cannot block: continue without an account number, with the code.
        (Step::PreTokenIssuance, Err(refusal)) => HttpResponse::Ok().json(ConnectorResponse {
            auto_link_error: Some(refusal.code()),
            ..ConnectorResponse::continuation()
        }),
        (_, Ok(_)) => HttpResponse::Ok().json(ConnectorResponse::continuation()),
        (Step::PostAttributeCollection, Err(refusal)) if refusal.user_can_fix() => {
            validation_error(state, *refusal, language)
        }
        (_, Err(refusal)) => block(state, *refusal, language),
    }
}

fn block(state: &AppState, refusal: Refusal, language: &str) -> HttpResponse {
    let message = state.messages.message(refusal, language);
    HttpResponse::Ok().json(ConnectorResponse::refusal(
        "ShowBlockPage",
        refusal,
        message,
    ))
}

fn validation_error(state: &AppState, refusal: Refusal, language: &str) -> HttpResponse {
    let message = state.messages.message(refusal, language);
    HttpResponse::BadRequest().json(ConnectorResponse {
        status: Some(400),
        ..ConnectorResponse::refusal("ValidationError", refusal, message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_of_the_token_step_parse() {
        assert_eq!(
            Step::parse("PreTokenIssuance"),
            Some(Step::PreTokenIssuance)
        );
        assert_eq!(
            Step::parse("PreTokenApplicationClaims"),
            Some(Step::PreTokenIssuance)
        );
        assert_eq!(
            Step::parse("postattributecollection"),
            Some(Step::PostAttributeCollection)
        );
        assert_eq!(
            Step::parse("PostFederationSignup"),
            Some(Step::PostFederationSignup)
        );
        assert_eq!(Step::parse("Other"), None);
    }
}

#[cfg(test)]
mod answer_tests {
    use super::*;

    #[test]
    fn a_continuation_names_its_claims_as_b2c_expects_and_leaves_out_absent_ones() {
        let full = serde_json::to_value(ConnectorResponse {
            auto_link_error: Some("E"),
            auto_link_outcome: Some("Linked"),
            customer_account_number: Some("C1"),
            ..ConnectorResponse::continuation()
        })
        .unwrap();
        assert_eq!(
            full,
            serde_json::json!({
                "version": API_VERSION,
                "action": "Continue",
                CLAIM_ERROR: "E",
                CLAIM_OUTCOME: "Linked",
                CLAIM_ACCOUNT_NUMBER: "C1",
            })
        );
        let plain = serde_json::to_string(&ConnectorResponse::continuation()).unwrap();
        assert_eq!(plain, r#"{"action":"Continue","version":"1.0.0"}"#);
    }

    #[test]
    fn block_pages_and_validation_errors_keep_their_keys_in_alphabetical_order() {
        let block = ConnectorResponse::refusal("ShowBlockPage", Refusal::UnknownChannel, "Hi.");
        assert_eq!(
            serde_json::to_string(&block).unwrap(),
            r#"{"action":"ShowBlockPage","code":"UnknownChannel","userMessage":"Hi.","version":"1.0.0"}"#
        );
        let validation = ConnectorResponse {
            status: Some(400),
            ..ConnectorResponse::refusal("ValidationError", Refusal::InvalidEmail, "Fix.")
        };
        assert_eq!(
            serde_json::to_string(&validation).unwrap(),
            r#"{"action":"ValidationError","code":"InvalidEmail","status":400,"userMessage":"Fix.","version":"1.0.0"}"#
        );
    }
}
