//! `POST /entra/attribute-collection-submit`: Entra External ID's `attributeCollectionSubmit`
//! event, after the sign-up form, before the user exists.
//!
//! The email and what proves it are read by [`crate::domain::entra_signup::sign_up_email`]; the
//! linking service checks what would happen ([`crate::linking::LinkingService::check`], nothing
//! written but the audit); a verified email that would link or create is remembered for token
//! issuance. Answers: `continueWithDefaultBehavior`, `showValidationError` (a refusal the user can
//! fix, when the email came from a form attribute: the message is on that attribute), or
//! `showBlockPage` (the rest, and every refusal when the email came from `identities`).

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{read_event, AuthenticationContext, Envelope};
use crate::api::errors::ErrorBody;
use crate::api::{check_identity, decision_note, noted, request_id, AppState};
use crate::domain::entra_signup::{sign_up_email, EmailSource, ObjectIdentity};
use crate::domain::EmailAddress;
use crate::linking::LinkRequest;

/// The event type this endpoint handles.
pub const EVENT: &str = "microsoft.graph.authenticationEvent.attributeCollectionSubmit";

/// What Entra posts at `attributeCollectionSubmit` (the members autolink reads).
#[derive(Debug, Deserialize, ToSchema)]
pub struct SubmitEvent {
    /// `microsoft.graph.authenticationEvent.attributeCollectionSubmit`.
    #[serde(rename = "type")]
    event_type: String,
    /// The call.
    data: SubmitData,
}

/// `data` of a submit.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitData {
    /// The tenant: equal to the token's `tid`.
    tenant_id: String,
    /// The sign-up.
    authentication_context: AuthenticationContext,
    /// What the user entered and how they signed up.
    #[serde(default)]
    user_sign_up_info: Option<UserSignUpInfo>,
}

/// `data.userSignUpInfo`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserSignUpInfo {
    /// The form's attributes by name; each an object with a `value` (and `@odata.type`, also
    /// spelt `@odata.Type`, and `attributeType`). The email is `email`, `EmailAddress` or `mail`
    /// (any case), read only when its `value` is a string.
    #[serde(default)]
    #[schema(value_type = Object)]
    attributes: Option<BTreeMap<String, serde_json::Value>>,
    /// How the user signs up; may be absent.
    #[serde(default)]
    identities: Option<Vec<EntraIdentity>>,
}

/// One entry of `identities`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntraIdentity {
    /// `email`, `emailAddress`, `federated`, ...
    #[serde(default)]
    sign_in_type: Option<String>,
    /// The tenant, `mail` (email one-time code), or `google.com`, ...
    #[serde(default)]
    issuer: Option<String>,
    /// The email of a local identity; the provider's user id of a social one.
    #[serde(default)]
    issuer_assigned_id: Option<String>,
}

impl Envelope for SubmitEvent {
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn tenant_id(&self) -> &str {
        &self.data.tenant_id
    }
}

impl From<&EntraIdentity> for ObjectIdentity {
    fn from(wire: &EntraIdentity) -> Self {
        ObjectIdentity {
            sign_in_type: wire.sign_in_type.clone().unwrap_or_default(),
            issuer: wire.issuer.clone().unwrap_or_default(),
            issuer_assigned_id: wire.issuer_assigned_id.clone().unwrap_or_default(),
        }
    }
}

/// The answer to a submit: one action.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitResponse<'a> {
    /// The response data.
    data: SubmitResponseData<'a>,
}

/// `data` of the answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmitResponseData<'a> {
    /// `microsoft.graph.onAttributeCollectionSubmitResponseData`.
    #[serde(rename = "@odata.type")]
    odata_type: &'static str,
    /// Exactly one action.
    actions: [SubmitAction<'a>; 1],
}

/// `continueWithDefaultBehavior`, `showValidationError` or `showBlockPage`. Absent members are
/// left out, never null.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubmitAction<'a> {
    /// `microsoft.graph.attributeCollectionSubmit.<action>`.
    #[serde(rename = "@odata.type")]
    odata_type: &'static str,
    /// The block page's title.
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    /// The page's message (block page, validation error).
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    /// The message on the email attribute (validation error), keyed by the attribute's name as
    /// sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    attribute_errors: Option<BTreeMap<&'a str, &'a str>>,
}

const CONTINUE: &str = "microsoft.graph.attributeCollectionSubmit.continueWithDefaultBehavior";
const VALIDATION_ERROR: &str = "microsoft.graph.attributeCollectionSubmit.showValidationError";
const BLOCK_PAGE: &str = "microsoft.graph.attributeCollectionSubmit.showBlockPage";

fn respond(action: SubmitAction<'_>) -> HttpResponse {
    HttpResponse::Ok().json(SubmitResponse {
        data: SubmitResponseData {
            odata_type: "microsoft.graph.onAttributeCollectionSubmitResponseData",
            actions: [action],
        },
    })
}

/// `POST /entra/attribute-collection-submit`.
#[utoipa::path(
    post, path = "/entra/attribute-collection-submit", tag = "entra",
    request_body = SubmitEvent,
    responses(
        (status = 200, description = "One action: continueWithDefaultBehavior, showValidationError (attributeErrors on the email attribute) or showBlockPage", body = SubmitResponse),
        (status = 400, description = "Not an attributeCollectionSubmit event of the documented shape (unknown_event_type for another event type)", body = ErrorBody),
        (status = 401, description = "No valid Entra bearer token, or data.tenantId is not its tid", body = ErrorBody),
        (status = 404, description = "[entra] is not configured", body = ErrorBody),
    ),
    security(("entra_bearer" = []))
)]
pub async fn attribute_collection_submit(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let event = match read_event::<SubmitEvent>(&req, payload, &state, EVENT).await {
        Ok(event) => event,
        Err(answer) => return answer,
    };
    let Some(entra) = state.entra.as_ref() else {
        return HttpResponse::NotFound()
            .json(ErrorBody::new("not_found", "[entra] is not configured"));
    };
    let request_id = request_id(&req);
    let data = event.body.data;
    let context = data.authentication_context;
    let language = state.messages.language(context.locale());
    let info = data.user_sign_up_info;
    let identities: Option<Vec<ObjectIdentity>> = info
        .as_ref()
        .and_then(|i| i.identities.as_ref())
        .map(|list| list.iter().map(ObjectIdentity::from).collect());
    let attributes: Vec<(String, Option<String>)> = info
        .as_ref()
        .and_then(|i| i.attributes.as_ref())
        .map(|map| {
            map.iter()
                .map(|(key, attribute)| {
                    let value = attribute.get("value").and_then(|v| v.as_str());
                    (key.clone(), value.map(str::to_string))
                })
                .collect()
        })
        .unwrap_or_default();
    let attribute = |name: &str| {
        attributes
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| value.clone())
    };
    let found = sign_up_email(identities.as_deref(), &attributes);
    let request = LinkRequest {
        request_id: request_id.clone(),
        source: "entra-submit",
        step: Some("attributeCollectionSubmit"),
        client_id: context.client_id(),
        email: found.email.clone(),
        evidence: found.evidence.clone(),
        email_verified: None,
        identity: None,
        given_name: attribute("givenName"),
        surname: attribute("surname"),
        time_limit: Some(event.budget.left()),
    };
    let answer = check_identity(&state, request, "entra-submit").await;
    let note = decision_note(
        Some("attributeCollectionSubmit"),
        &answer,
        found.email.as_deref(),
    );
    let response = match answer {
        Ok(_) => {
            if let Some(email) = found
                .email
                .as_deref()
                .and_then(|e| EmailAddress::parse(e).ok())
            {
                entra.signups.remember(
                    &event.tenant_id,
                    &context.correlation_id,
                    email.key(),
                    found.evidence,
                );
            }
            respond(SubmitAction {
                odata_type: CONTINUE,
                title: None,
                message: None,
                attribute_errors: None,
            })
        }
        Err(refusal) => {
            let message = state.messages.message(refusal, &language);
            match &found.source {
                EmailSource::Attribute(key) if refusal.user_can_fix() => respond(SubmitAction {
                    odata_type: VALIDATION_ERROR,
                    title: None,
                    message: Some(message),
                    attribute_errors: Some(BTreeMap::from([(key.as_str(), message)])),
                }),
                _ => respond(SubmitAction {
                    odata_type: BLOCK_PAGE,
                    title: Some(crate::messages::block_page_title(&language)),
                    message: Some(message),
                    attribute_errors: None,
                }),
            }
        }
    };
    noted(response, &note)
}
