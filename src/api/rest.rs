//! Custom-policy RESTful technical profiles (DESIGN 2.2): `POST /b2c/rest/precheck` and
//! `POST /b2c/rest/link`.
//!
//! Flat JSON in (`SendClaimsIn=Body`), flat JSON out. Success is HTTP 200 with the output claims
//! and never a null value; a refusal is HTTP 409 in the shape B2C shows to the user. The claim
//! names are the ones the sample policies send, all in [`claims`].

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::body::{read_json, timed_out, Unreadable};
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

/// `POST /b2c/rest/precheck`: the sign-up check before the directory write.
#[utoipa::path(
    post, path = "/b2c/rest/precheck", tag = "b2c", description = "The sign-up check before the directory write (validation technical profile)",
    request_body = crate::api::openapi::RestRequest,
    responses(
        (status = 200, description = "The output claims", body = crate::api::openapi::RestSuccess),
        (status = 401, description = "Not the connector's credentials", body = crate::api::openapi::Unauthorized),
        (status = 409, description = "Refused; unreadable input (not JSON, a claim of the wrong type, over the body limit) is refused the same way with code InvalidRequest", body = crate::api::openapi::RestRefusal),
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
    request_body = crate::api::openapi::RestRequest,
    responses(
        (status = 200, description = "The output claims", body = crate::api::openapi::RestSuccess),
        (status = 401, description = "Not the connector's credentials", body = crate::api::openapi::Unauthorized),
        (status = 409, description = "Refused; unreadable input (not JSON, a claim of the wrong type, over the body limit) is refused the same way with code InvalidRequest", body = crate::api::openapi::RestRefusal),
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
    let language = state
        .messages
        .language(string(&body, claims::UI_LOCALES).as_deref());
    let request = match link_request(&request_id, profile, &body, &state.tenant_issuer) {
        Ok(request) => request,
        Err(message) => {
            log::info!("request_id={request_id} rest/{}: {message}", profile.name());
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

/// Reads the claims. A claim of the wrong JSON type is an error (the policy and the API
/// disagree); a missing or empty claim is absent.
fn link_request(
    request_id: &str,
    profile: Profile,
    body: &Map<String, Value>,
    tenant_issuer: &str,
) -> Result<LinkRequest, String> {
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
    let evidence = match string(body, claims::IDENTITY_PROVIDER) {
        None => SignInEvidence::Missing,
        Some(idp) if idp.eq_ignore_ascii_case("local") => SignInEvidence::Local,
        Some(idp) => SignInEvidence::Federated {
            provider: idp.to_ascii_lowercase(),
        },
    };
    let identity = match profile {
        Profile::Link => string(body, claims::OBJECT_ID).map(|subject| Identity {
            issuer: tenant_issuer.to_string(),
            subject,
        }),
        Profile::Precheck => None,
    };
    Ok(LinkRequest {
        request_id: request_id.to_string(),
        source: match profile {
            Profile::Precheck => "rest-precheck",
            Profile::Link => "rest-link",
        },
        step: None,
        client_id: string(body, claims::CLIENT_ID),
        // Untrimmed: the email rule refuses invisible and control characters before trimming.
        email: body
            .get(claims::EMAIL)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string),
        evidence,
        email_verified,
        identity,
        given_name: string(body, claims::GIVEN_NAME),
        surname: string(body, claims::SURNAME),
    })
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
        Ok(resolution) => {
            let mut out = Map::new();
            if let Some(number) = &resolution.account_number {
                out.insert(
                    claims::CUSTOMER_ACCOUNT_NUMBER.into(),
                    Value::String(number.clone()),
                );
            }
            out.insert(
                claims::AUTO_LINK_OUTCOME.into(),
                Value::String(resolution.outcome.as_str().into()),
            );
            HttpResponse::Ok().json(Value::Object(out))
        }
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
    HttpResponse::Conflict().json(json!({
        "version": super::connector::API_VERSION,
        "status": 409,
        "code": refusal.code(),
        "requestId": request_id,
        "userMessage": state.messages.message(refusal, language),
        "developerMessage": developer,
    }))
}
