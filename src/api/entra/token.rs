//! `POST /entra/token-issuance-start`: Entra External ID's `tokenIssuanceStart` event, before a
//! token is issued to the store (sign-up and every sign-in).
//!
//! The identity is (`[entra] identity_issuer`, `authenticationContext.user.id`). The payload
//! says nothing about how `user.mail` was proven, so the evidence comes from:
//! 1. a verified submit of the same correlation id and the same email, remembered
//!    ([`crate::linking::verified_signups`]);
//! 2. otherwise nothing: an identity that is linked already resolves whatever the email; an
//!    unlinked one is refused `EmailNotVerified` by the linking service...
//! 3. ...unless `[entra.graph]` is configured: then Graph's `identities` and `mail` of the user
//!    are read ([`crate::domain::entra_signup::directory_evidence`]) and, when they prove the
//!    address, the link is asked for again with that evidence.
//!
//! The event cannot block: the answer is always `provideClaimsForToken`, with
//! `customerAccountNumber` and `autoLinkOutcome`, or `autoLinkError` (the refusal's code).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{read_event, AuthenticationContext, Budget, EntraState, Envelope};
use crate::api::errors::ErrorBody;
use crate::api::{decision_note, link_identity, noted, request_id, AppState};
use crate::auth::graph::GraphError;
use crate::domain::entra_signup::{directory_evidence, UNPROVEN};
use crate::domain::{EmailAddress, Identity, Refusal, SignInEvidence};
use crate::linking::{Answer, LinkRequest};

/// The event type this endpoint handles.
pub const EVENT: &str = "microsoft.graph.authenticationEvent.tokenIssuanceStart";

/// Claim: the customer account number.
pub const CLAIM_ACCOUNT_NUMBER: &str = "customerAccountNumber";
/// Claim: `Linked`, `Created` or `AlreadyLinked`.
pub const CLAIM_OUTCOME: &str = "autoLinkOutcome";
/// Claim: the refusal's code, when nothing was linked.
pub const CLAIM_ERROR: &str = "autoLinkError";

/// What Entra posts at `tokenIssuanceStart` (the members autolink reads).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenIssuanceEvent {
    /// `microsoft.graph.authenticationEvent.tokenIssuanceStart`.
    #[serde(rename = "type")]
    event_type: String,
    /// The call.
    data: TokenIssuanceData,
}

/// `data` of a token issuance.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenIssuanceData {
    /// The tenant: equal to the token's `tid`.
    tenant_id: String,
    /// The sign-in, with its user.
    authentication_context: TokenContext,
}

/// `data.authenticationContext` with its `user`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenContext {
    /// Correlation id, client, client application.
    #[serde(flatten)]
    context: AuthenticationContext,
    /// The user (only `id` is always there).
    user: EntraUser,
}

/// `authenticationContext.user`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntraUser {
    /// The user's object id: the subject of the identity.
    id: String,
    /// The user's email.
    #[serde(default)]
    mail: Option<String>,
    /// Given name, for a customer autolink creates.
    #[serde(default)]
    given_name: Option<String>,
    /// Surname, for a customer autolink creates.
    #[serde(default)]
    surname: Option<String>,
}

impl Envelope for TokenIssuanceEvent {
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn tenant_id(&self) -> &str {
        &self.data.tenant_id
    }
}

/// The answer: one `provideClaimsForToken` action.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenIssuanceResponse<'a> {
    /// The response data.
    data: TokenIssuanceResponseData<'a>,
}

/// `data` of the answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenIssuanceResponseData<'a> {
    /// `microsoft.graph.onTokenIssuanceStartResponseData`.
    #[serde(rename = "@odata.type")]
    odata_type: &'static str,
    /// Exactly one action.
    actions: [ProvideClaims<'a>; 1],
}

/// `microsoft.graph.tokenIssuanceStart.provideClaimsForToken`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProvideClaims<'a> {
    /// The action's type.
    #[serde(rename = "@odata.type")]
    odata_type: &'static str,
    /// String claims only, absent ones left out.
    claims: TokenClaims<'a>,
}

/// The claims: the account number and outcome, or the refusal's code.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct TokenClaims<'a> {
    /// The customer account number.
    #[serde(
        rename = "customerAccountNumber",
        skip_serializing_if = "Option::is_none"
    )]
    customer_account_number: Option<&'a str>,
    /// `Linked`, `Created` or `AlreadyLinked`.
    #[serde(rename = "autoLinkOutcome", skip_serializing_if = "Option::is_none")]
    auto_link_outcome: Option<&'static str>,
    /// The refusal's code.
    #[serde(rename = "autoLinkError", skip_serializing_if = "Option::is_none")]
    auto_link_error: Option<&'static str>,
}

fn respond(claims: TokenClaims<'_>) -> HttpResponse {
    HttpResponse::Ok().json(TokenIssuanceResponse {
        data: TokenIssuanceResponseData {
            odata_type: "microsoft.graph.onTokenIssuanceStartResponseData",
            actions: [ProvideClaims {
                odata_type: "microsoft.graph.tokenIssuanceStart.provideClaimsForToken",
                claims,
            }],
        },
    })
}

/// The claims for the linking service's answer.
fn claims(answer: &Answer) -> TokenClaims<'_> {
    match answer {
        Ok(resolution) => TokenClaims {
            customer_account_number: resolution.account_number.as_deref(),
            auto_link_outcome: Some(resolution.outcome.as_str()),
            auto_link_error: None,
        },
        Err(refusal) => TokenClaims {
            auto_link_error: Some(refusal.code()),
            ..TokenClaims::default()
        },
    }
}

/// `POST /entra/token-issuance-start`.
#[utoipa::path(
    post, path = "/entra/token-issuance-start", tag = "entra",
    request_body = TokenIssuanceEvent,
    responses(
        (status = 200, description = "One provideClaimsForToken action: customerAccountNumber and autoLinkOutcome, or autoLinkError with the refusal's code", body = TokenIssuanceResponse),
        (status = 400, description = "Not a tokenIssuanceStart event of the documented shape (unknown_event_type for another event type)", body = ErrorBody),
        (status = 401, description = "No valid Entra bearer token, or data.tenantId is not its tid", body = ErrorBody),
        (status = 404, description = "[entra] is not configured", body = ErrorBody),
    ),
    security(("entra_bearer" = []))
)]
pub async fn token_issuance_start(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let event = match read_event::<TokenIssuanceEvent>(&req, payload, &state, EVENT).await {
        Ok(event) => event,
        Err(answer) => return answer,
    };
    let Some(entra) = state.entra.as_ref() else {
        return HttpResponse::NotFound()
            .json(ErrorBody::new("not_found", "[entra] is not configured"));
    };
    let budget = event.budget;
    let context = event.body.data.authentication_context;
    let user = context.user;
    let subject = user.id.trim();
    if subject.is_empty() {
        return HttpResponse::BadRequest().json(ErrorBody::new(
            "invalid_request",
            "authenticationContext.user.id is empty",
        ));
    }
    let email = user
        .mail
        .as_deref()
        .and_then(|mail| EmailAddress::parse(mail).ok());
    let remembered = email.as_ref().and_then(|email| {
        entra.signups.recall(
            &event.tenant_id,
            &context.context.correlation_id,
            email.key(),
        )
    });
    let request = LinkRequest {
        request_id: request_id(&req),
        source: "entra-token",
        step: Some("tokenIssuanceStart"),
        client_id: context.context.client_id(),
        email: user.mail.clone(),
        evidence: remembered.clone().unwrap_or(SignInEvidence::Other {
            sign_in_type: UNPROVEN.into(),
        }),
        email_verified: None,
        identity: Some(Identity {
            issuer: entra.identity_issuer.clone(),
            subject: subject.to_string(),
        }),
        given_name: user.given_name.clone(),
        surname: user.surname.clone(),
        time_limit: None,
    };
    let mut answer = link_within(&state, request.clone(), budget).await;
    if remembered.is_none() && answer == Err(Refusal::EmailNotVerified) {
        if let (Some(email), Some(_)) = (&email, &entra.graph) {
            answer = link_with_graph(&state, entra, request, email, budget).await;
        }
    }
    let note = decision_note(Some("tokenIssuanceStart"), &answer, user.mail.as_deref());
    noted(respond(claims(&answer)), &note)
}

/// Asks the linking service within the budget: half of what is left, since a request whose
/// COMMIT is under way at its limit waits as long again for the commit's outcome.
async fn link_within(state: &AppState, mut request: LinkRequest, budget: Budget) -> Answer {
    request.time_limit = Some(budget.left() / 2);
    link_identity(state, request, "entra-token").await
}

/// The Graph route: what the directory proves about the user's email, then the link with that
/// evidence. Graph gets half of the time left, the link the rest.
async fn link_with_graph(
    state: &AppState,
    entra: &EntraState,
    mut request: LinkRequest,
    email: &EmailAddress,
    budget: Budget,
) -> Answer {
    let Some(graph) = &entra.graph else {
        return Err(Refusal::EmailNotVerified);
    };
    let subject = request
        .identity
        .as_ref()
        .map(|i| i.subject.clone())
        .unwrap_or_default();
    let graph_until = std::time::Instant::now() + budget.left() / 2;
    let evidence = match graph.user(&subject, graph_until).await {
        Ok(user) => directory_evidence(
            &user.identities,
            user.mail.as_deref(),
            email,
            &entra.verification,
        ),
        Err(GraphError::NotFound) => None,
        Err(GraphError::Unavailable(why)) => {
            log::warn!("request_id={} entra-token: {why}", request.request_id);
            return Err(Refusal::ServiceUnavailable);
        }
    };
    let Some(evidence) = evidence else {
        return Err(Refusal::EmailNotVerified);
    };
    request.evidence = evidence;
    link_within(state, request, budget).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Outcome, Resolution};

    #[test]
    fn the_largest_claims_stay_far_below_entras_3_kb_and_carry_only_strings() {
        // The longest account number: 64 characters of four bytes each.
        let longest = "\u{1F600}".repeat(64);
        let answer: Answer = Ok(Resolution {
            outcome: Outcome::AlreadyLinked,
            account_number: Some(longest),
            channel: "web".into(),
        });
        let largest = serde_json::to_value(claims(&answer)).unwrap();
        let size: usize = largest
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| k.len() + v.as_str().unwrap().len())
            .sum();
        assert!(size < 3 * 1024, "{size}");
        let refused: Answer = Err(Refusal::EmailNotVerified);
        assert_eq!(
            serde_json::to_value(claims(&refused)).unwrap(),
            serde_json::json!({ CLAIM_ERROR: "EmailNotVerified" })
        );
    }
}
