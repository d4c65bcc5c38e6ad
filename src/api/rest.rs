//! Custom-policy RESTful technical profiles (DESIGN 2.2): `POST /b2c/rest/precheck` and
//! `POST /b2c/rest/link`.
//!
//! Flat JSON in (`SendClaimsIn=Body`), flat JSON out. Success is HTTP 200 with the output claims
//! and never a null value; a refusal is HTTP 409 in the shape B2C shows to the user. The claim
//! names are the ones the sample policies send, all in [`claims`].

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::body::{read_json, timed_out, Unreadable};
use super::errors::ErrorBody;
use super::{check_identity, decision_note, link_identity, noted, request_id, AppState};
use crate::domain::{Identity, Refusal, SignInEvidence};
use crate::linking::{Answer, LinkRequest};

/// The claim names (partner claim types) of the REST technical profiles. The sample policies in
/// `policies/` use exactly these; changing one here means changing it there.
pub mod claims {
    /// Input: the user's email address.
    pub const EMAIL: &str = "email";
    /// Input: whether the identity provider verified the email (`true`/`false`).
    pub const EMAIL_VERIFIED: &str = "emailVerified";
    /// Input: the social identity provider (`google.com`, ...); `local` or absent for local accounts.
    pub const IDENTITY_PROVIDER: &str = "identityProvider";
    /// Input: the B2C user's object id (`link` only).
    pub const OBJECT_ID: &str = "objectId";
    /// Input: the relying party's client id (`{OIDC:ClientId}`); selects the channel.
    pub const CLIENT_ID: &str = "clientId";
    /// Input: the user's language (`{Culture:RFC5646}`).
    pub const UI_LOCALES: &str = "uiLocales";
    /// Input: given name, for a customer autolink creates.
    pub const GIVEN_NAME: &str = "givenName";
    /// Input: surname, for a customer autolink creates.
    pub const SURNAME: &str = "surname";
    /// Output: the customer account number.
    pub const CUSTOMER_ACCOUNT_NUMBER: &str = "customerAccountNumber";
    /// Output: what happened (`Linked`, `Created`, `AlreadyLinked`; `WouldLink`, `WouldCreate`
    /// from `precheck`).
    pub const AUTO_LINK_OUTCOME: &str = "autoLinkOutcome";
    /// Every input claim, in the order the sample policies send them.
    pub const INPUTS: [&str; 8] = [
        EMAIL,
        EMAIL_VERIFIED,
        IDENTITY_PROVIDER,
        OBJECT_ID,
        CLIENT_ID,
        UI_LOCALES,
        GIVEN_NAME,
        SURNAME,
    ];
    /// Every output claim.
    pub const OUTPUTS: [&str; 2] = [CUSTOMER_ACCOUNT_NUMBER, AUTO_LINK_OUTCOME];
}

/// Which technical profile is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Precheck,
    Link,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Precheck => "precheck",
            Profile::Link => "link",
        }
    }
}

/// The input claims of the REST technical profiles (`SendClaimsIn=Body`), as sent: each may be
/// missing, null or empty (then absent); any other key is ignored.
#[derive(Debug, Default, ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct RestRequest {
    /// The user's email.
    email: Option<String>,
    /// Whether the identity provider verified the email: a boolean, or the text `true` or
    /// `false` (any case).
    email_verified: Option<bool>,
    /// `local`, or the social identity provider (`google.com`, ...).
    identity_provider: Option<String>,
    /// The user's object id (`link` only).
    object_id: Option<String>,
    /// The relying party's client id; selects the channel.
    client_id: Option<String>,
    /// The user's language.
    ui_locales: Option<String>,
    /// Given name, for a customer autolink creates.
    given_name: Option<String>,
    /// Surname, for a customer autolink creates.
    surname: Option<String>,
}

impl RestRequest {
    /// Reads the claims. A claim of the wrong JSON type is an error (the policy and the API
    /// disagree), named in the message for DebugMode.
    fn from_claims(body: &Map<String, Value>) -> Result<RestRequest, String> {
        for name in claims::INPUTS {
            match (name, body.get(name)) {
                (_, None | Some(Value::Null | Value::String(_))) => {}
                (claims::EMAIL_VERIFIED, Some(Value::Bool(_))) => {}
                (name, Some(_)) => return Err(format!("claim {name} has the wrong type")),
            }
        }
        let email_verified = match string(body, claims::EMAIL_VERIFIED) {
            None => body.get(claims::EMAIL_VERIFIED).and_then(Value::as_bool),
            Some(text) if text.eq_ignore_ascii_case("true") => Some(true),
            Some(text) if text.eq_ignore_ascii_case("false") => Some(false),
            Some(_) => {
                return Err(format!(
                    "claim {} is not true or false",
                    claims::EMAIL_VERIFIED
                ))
            }
        };
        let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
        Ok(RestRequest {
            email: text(claims::EMAIL),
            email_verified,
            identity_provider: text(claims::IDENTITY_PROVIDER),
            object_id: text(claims::OBJECT_ID),
            client_id: text(claims::CLIENT_ID),
            ui_locales: text(claims::UI_LOCALES),
            given_name: text(claims::GIVEN_NAME),
            surname: text(claims::SURNAME),
        })
    }
}

/// The output claims of the REST technical profiles; an absent claim is left out, never null.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestSuccess<'a> {
    /// `Linked`, `Created`, `AlreadyLinked`; `WouldLink`, `WouldCreate` from `precheck`.
    auto_link_outcome: &'static str,
    /// The customer account number (absent for `WouldCreate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_account_number: Option<&'a str>,
}

/// A refusal in the shape custom policies show (HTTP 409): `userMessage` to the user, the rest
/// in DebugMode.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestRefusal<'a> {
    /// The refusal's code.
    code: &'static str,
    /// What was refused and why, for DebugMode.
    developer_message: &'a str,
    /// The request id.
    request_id: &'a str,
    /// Always 409.
    status: u16,
    /// The message B2C shows.
    user_message: &'a str,
    /// Always `1.0.0`.
    version: &'static str,
}

/// `POST /b2c/rest/precheck`: the sign-up check before the directory write.
#[utoipa::path(
    post, path = "/b2c/rest/precheck", tag = "b2c", description = "The sign-up check before the directory write (validation technical profile)",
    request_body = RestRequest,
    responses(
        (status = 200, description = "The output claims", body = RestSuccess),
        (status = 401, description = "Not the connector's credentials", body = ErrorBody),
        (status = 409, description = "Refused; unreadable input (not JSON, a claim of the wrong type, over the body limit) is refused the same way with code InvalidRequest", body = RestRefusal),
    ),
    security(("connector_basic" = []), ("connector_api_key" = []), ("connector_bearer" = []))
)]
pub async fn precheck(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Profile::Precheck, req, payload, state).await
}

/// `POST /b2c/rest/link`: link (or resolve) once the user exists.
#[utoipa::path(
    post, path = "/b2c/rest/link", tag = "b2c", description = "Link (or resolve) once the user exists",
    request_body = RestRequest,
    responses(
        (status = 200, description = "The output claims", body = RestSuccess),
        (status = 401, description = "Not the connector's credentials", body = ErrorBody),
        (status = 409, description = "Refused; unreadable input (not JSON, a claim of the wrong type, over the body limit) is refused the same way with code InvalidRequest", body = RestRefusal),
    ),
    security(("connector_basic" = []), ("connector_api_key" = []), ("connector_bearer" = []))
)]
pub async fn link(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(Profile::Link, req, payload, state).await
}

async fn handle(
    profile: Profile,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let request_id = request_id(&req);
    let read = read_json(&req, payload, state.max_body_bytes, state.body_timeout).await;
    let body: Map<String, Value> = match read {
        Ok(body) => body,
        Err(Unreadable::TimedOut(limit, unread)) => {
            log::info!(
                "request_id={request_id} rest/{}: the body did not arrive in time",
                profile.name()
            );
            return noted(timed_out(limit, &unread), "body timed out");
        }
        Err(why) => {
            log::info!("request_id={request_id} rest/{}: {why}", profile.name());
            let message = format!("the request could not be read: {why}");
            return noted(
                refusal(&state, &request_id, Refusal::InvalidRequest, "en", &message),
                "unreadable request",
            );
        }
    };
    let claims = match RestRequest::from_claims(&body) {
        Ok(claims) => claims,
        Err(message) => {
            log::info!("request_id={request_id} rest/{}: {message}", profile.name());
            // The language claim may be the one of the wrong type: read it alone.
            let language = state
                .messages
                .language(string(&body, claims::UI_LOCALES).as_deref());
            return noted(
                refusal(
                    &state,
                    &request_id,
                    Refusal::InvalidRequest,
                    &language,
                    &message,
                ),
                "invalid claims",
            );
        }
    };
    let language = state
        .messages
        .language(trimmed(claims.ui_locales.clone()).as_deref());
    let request = link_request(&request_id, profile, claims, &state.tenant_issuer);
    let email = request.email.clone();
    let answer = match profile {
        Profile::Link => link_identity(&state, request, "rest").await,
        Profile::Precheck => check_identity(&state, request, "rest").await,
    };
    let note = decision_note(Some(profile.name()), &answer, email.as_deref());
    noted(
        render(&state, &request_id, profile, &answer, &language),
        &note,
    )
}

/// The link request of the claims; a missing or empty claim is absent.
fn link_request(
    request_id: &str,
    profile: Profile,
    claims: RestRequest,
    tenant_issuer: &str,
) -> LinkRequest {
    let evidence = match trimmed(claims.identity_provider) {
        None => SignInEvidence::Missing,
        Some(idp) if idp.eq_ignore_ascii_case("local") => SignInEvidence::Local,
        Some(idp) => SignInEvidence::Federated {
            provider: idp.to_ascii_lowercase(),
        },
    };
    let identity = match profile {
        Profile::Link => trimmed(claims.object_id).map(|subject| Identity {
            issuer: tenant_issuer.to_string(),
            subject,
        }),
        Profile::Precheck => None,
    };
    LinkRequest {
        request_id: request_id.to_string(),
        source: match profile {
            Profile::Precheck => "rest-precheck",
            Profile::Link => "rest-link",
        },
        step: None,
        client_id: trimmed(claims.client_id),
        // Untrimmed: the email rule refuses invisible and control characters before trimming.
        email: claims.email.filter(|s| !s.trim().is_empty()),
        evidence,
        email_verified: claims.email_verified,
        identity,
        given_name: trimmed(claims.given_name),
        surname: trimmed(claims.surname),
        time_limit: None,
    }
}

/// A claim trimmed, absent when empty.
fn trimmed(claim: Option<String>) -> Option<String> {
    claim
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn string(body: &Map<String, Value>, name: &str) -> Option<String> {
    body.get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn render(
    state: &AppState,
    request_id: &str,
    profile: Profile,
    answer: &Answer,
    language: &str,
) -> HttpResponse {
    match answer {
        Ok(resolution) => HttpResponse::Ok().json(RestSuccess {
            auto_link_outcome: resolution.outcome.as_str(),
            customer_account_number: resolution.account_number.as_deref(),
        }),
        Err(refused) => {
            let message = format!("{} refused: {}", profile.name(), refused.error_name());
            refusal(state, request_id, *refused, language, &message)
        }
    }
}

/// HTTP 409 in the shape custom policies show: `userMessage` to the user, the rest in DebugMode.
fn refusal(
    state: &AppState,
    request_id: &str,
    refusal: Refusal,
    language: &str,
    developer: &str,
) -> HttpResponse {
    HttpResponse::Conflict().json(RestRefusal {
        code: refusal.code(),
        developer_message: developer,
        request_id,
        status: 409,
        user_message: state.messages.message(refusal, language),
        version: super::connector::API_VERSION,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(json: Value) -> Result<RestRequest, String> {
        match json {
            Value::Object(map) => RestRequest::from_claims(&map),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn a_claim_of_the_wrong_type_is_named_and_email_verified_may_be_text() {
        let read = claims(serde_json::json!({"emailVerified": " TRUE ", "clientId": null}));
        let read = read.unwrap();
        assert_eq!(read.email_verified, Some(true));
        assert_eq!(read.client_id, None);
        assert_eq!(
            claims(serde_json::json!({"emailVerified": false}))
                .unwrap()
                .email_verified,
            Some(false)
        );
        assert_eq!(
            claims(serde_json::json!({"surname": 1, "email": true})).unwrap_err(),
            "claim email has the wrong type"
        );
        assert_eq!(
            claims(serde_json::json!({"emailVerified": "yes"})).unwrap_err(),
            "claim emailVerified is not true or false"
        );
    }

    #[test]
    fn answers_keep_their_keys_in_alphabetical_order_and_leave_out_absent_claims() {
        let linked = RestSuccess {
            auto_link_outcome: "Linked",
            customer_account_number: Some("C-1"),
        };
        assert_eq!(
            serde_json::to_string(&linked).unwrap(),
            r#"{"autoLinkOutcome":"Linked","customerAccountNumber":"C-1"}"#
        );
        let would_create = RestSuccess {
            auto_link_outcome: "WouldCreate",
            customer_account_number: None,
        };
        assert_eq!(
            serde_json::to_string(&would_create).unwrap(),
            r#"{"autoLinkOutcome":"WouldCreate"}"#
        );
        let refused = RestRefusal {
            code: "EmailMissing",
            developer_message: "link refused: EmailMissing",
            request_id: "r1",
            status: 409,
            user_message: "Hi.",
            version: "1.0.0",
        };
        assert_eq!(
            serde_json::to_string(&refused).unwrap(),
            r#"{"code":"EmailMissing","developerMessage":"link refused: EmailMissing","requestId":"r1","status":409,"userMessage":"Hi.","version":"1.0.0"}"#
        );
    }
}
