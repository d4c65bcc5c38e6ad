//! The relying-party call (DESIGN 2.3): `POST /v1/link`.
//!
//! A site that links on the return call sends the B2C ID token as `Authorization: Bearer`. The
//! token is verified against the configured B2C policies' discovery documents and keys; the
//! identity is (`iss`, `sub`), the email `emails[0]` or `email`, the provider `idp`. The token is
//! the caller's authentication: no connector credentials are involved. With `[entra]`, an ID
//! token of the External ID tenant (its `iss` one of `[entra] issuers`) is verified against that
//! tenant instead, and its identity is (`[entra] identity_issuer`, `oid`), the identity token
//! issuance links (External ID's `sub` is pairwise per application).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::authn::token_refusal;
use super::errors::ErrorBody;
use super::{decision_note, link_identity, noted, request_id, unauthorized, AppState};
use crate::auth::oidc::TokenError;
use crate::domain::{Identity, Refusal, SignInEvidence};
use crate::linking::LinkRequest;

/// A successful relying-party call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelyingPartySuccess<'a> {
    /// The channel id.
    channel: &'a str,
    /// The customer account number.
    customer_account_number: Option<&'a str>,
    /// `Linked`, `Created` or `AlreadyLinked`.
    outcome: &'static str,
    /// The request id.
    request_id: &'a str,
}

/// A refused relying-party call.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelyingPartyRefusal<'a> {
    /// The refusal's code (`not_configured` when relying-party calls are not configured).
    code: &'static str,
    /// The error name (Commerce's for the Commerce refusals).
    error: &'static str,
    /// The message for the user.
    message: &'a str,
    /// The request id.
    request_id: &'a str,
}

/// The HTTP status of a refusal on `/v1/link`.
pub fn status_of(refusal: Refusal) -> StatusCode {
    match refusal {
        Refusal::CommerceIdentityNotFound => StatusCode::NOT_FOUND,
        Refusal::MultipleAccounts | Refusal::LinkRequiresReview => StatusCode::CONFLICT,
        Refusal::EmailNotVerified | Refusal::UnknownChannel => StatusCode::FORBIDDEN,
        Refusal::EmailMissing
        | Refusal::InvalidEmail
        | Refusal::ObjectIdMissing
        | Refusal::InvalidRequest => StatusCode::BAD_REQUEST,
        Refusal::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `POST /v1/link`.
#[utoipa::path(
    post, path = "/v1/link", tag = "relying party",
    responses(
        (status = 200, description = "Linked, created or already linked", body = RelyingPartySuccess),
        (status = 400, description = "The token lacks what linking needs", body = RelyingPartyRefusal),
        (status = 401, description = "The ID token is missing or not valid", body = ErrorBody),
        (status = 403, description = "Email not verified, or unknown channel", body = RelyingPartyRefusal),
        (status = 404, description = "No business customer (B2B), or relying-party calls not configured", body = RelyingPartyRefusal),
        (status = 409, description = "Several customers, or the link needs review", body = RelyingPartyRefusal),
        (status = 503, description = "The database or the B2C keys are unavailable", body = RelyingPartyRefusal),
    ),
    security(("id_token" = []))
)]
pub async fn link(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let request_id = request_id(&req);
    if state.id_tokens.is_none() && state.entra.is_none() {
        return HttpResponse::NotFound().json(RelyingPartyRefusal {
            code: "not_configured",
            error: "not_configured",
            message: "this deployment does not accept relying-party calls ([relying_party] and [entra] are not configured)",
            request_id: &request_id,
        });
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let Some(token) = token else {
        return unauthorized("an ID token is required as Authorization: Bearer", "Bearer");
    };
    // A token naming the External ID tenant's issuer is verified against that tenant; any other
    // against the configured B2C policies.
    let entra = state
        .entra
        .as_ref()
        .filter(|entra| entra.verifier.names_issuer(&token));
    let verified = match (entra, &state.id_tokens) {
        (Some(entra), _) => {
            entra
                .verifier
                .verify_id_token(&token, &entra.client_ids, &entra.identity_issuer)
                .await
        }
        (None, Some(verifier)) => verifier.verify(&token).await,
        (None, None) => Err(TokenError::WrongIssuer),
    };
    let identity = match verified {
        Ok(identity) => identity,
        Err(error) if error.is_provider_unavailable() => {
            log::warn!("request_id={request_id} /v1/link: {error}");
            return HttpResponse::ServiceUnavailable().json(RelyingPartyRefusal {
                code: Refusal::ServiceUnavailable.code(),
                error: "issuer_unavailable",
                message: "the issuer's keys could not be fetched; try again later",
                request_id: &request_id,
            });
        }
        Err(error) => {
            log::warn!("request_id={request_id} /v1/link: token refused: {error}");
            return unauthorized(&token_refusal(&error), "Bearer error=\"invalid_token\"");
        }
    };
    let language = state.messages.language(
        req.headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    );
    let evidence = match identity.identity_provider.as_deref() {
        Some(idp) if !idp.trim().is_empty() => SignInEvidence::Federated {
            provider: idp.trim().to_ascii_lowercase(),
        },
        // B2C puts no `idp` in tokens of local accounts.
        _ => SignInEvidence::Local,
    };
    let request = LinkRequest {
        request_id: request_id.clone(),
        source: "v1-link",
        step: None,
        client_id: Some(identity.audience.clone()),
        email: identity.email.clone(),
        evidence,
        email_verified: identity.email_verified,
        identity: Some(Identity {
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
        }),
        given_name: None,
        surname: None,
        time_limit: None,
    };
    let email = request.email.clone();
    let answer = link_identity(&state, request, "v1-link").await;
    let note = decision_note(Some(&identity.policy), &answer, email.as_deref());
    let response = match answer {
        Ok(resolution) => HttpResponse::Ok().json(RelyingPartySuccess {
            channel: &resolution.channel,
            customer_account_number: resolution.account_number.as_deref(),
            outcome: resolution.outcome.as_str(),
            request_id: &request_id,
        }),
        Err(refusal) => HttpResponse::build(status_of(refusal)).json(RelyingPartyRefusal {
            code: refusal.code(),
            error: refusal.error_name(),
            message: state.messages.message(refusal, &language),
            request_id: &request_id,
        }),
    };
    noted(response, &note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_but_an_outage_is_a_4xx() {
        for refusal in Refusal::ALL {
            let status = status_of(refusal);
            if refusal == Refusal::ServiceUnavailable {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            } else {
                assert!(status.is_client_error(), "{refusal:?}");
            }
        }
    }

    #[test]
    fn answers_keep_their_keys_in_alphabetical_order() {
        let linked = RelyingPartySuccess {
            channel: "web",
            customer_account_number: Some("C-1"),
            outcome: "Linked",
            request_id: "r1",
        };
        assert_eq!(
            serde_json::to_string(&linked).unwrap(),
            r#"{"channel":"web","customerAccountNumber":"C-1","outcome":"Linked","requestId":"r1"}"#
        );
        let refused = RelyingPartyRefusal {
            code: "EmailMissing",
            error: "EmailMissing",
            message: "Hi.",
            request_id: "r1",
        };
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"code":"EmailMissing","error":"EmailMissing","message":"Hi.","requestId":"r1"}"#
        );
    }
}
