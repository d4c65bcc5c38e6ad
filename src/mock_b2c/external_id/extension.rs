//! The calls Entra makes to a custom authentication extension: the request bodies of the
//! `attributeCollectionSubmit` and `tokenIssuanceStart` events (in the variant of Microsoft's
//! samples the settings choose), and the authenticated POST with Entra's time limit and single
//! retry (the mock's [`Caller`](crate::mock_b2c::caller::Caller)).

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::settings::{EmailAttribute, LocalIdentity, PayloadVariant};
use super::ExternalId;
use crate::mock_b2c::caller::{Answer, Credentials, NoAnswer, Payload};
use crate::mock_b2c::directory::User;
use crate::mock_b2c::keys::SigningKey;
use crate::mock_b2c::types::CallRecord;

/// The two events, with their type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    AttributeCollectionSubmit,
    TokenIssuanceStart,
}

impl Event {
    /// `type` of the request.
    pub fn type_name(self) -> &'static str {
        match self {
            Event::AttributeCollectionSubmit => {
                "microsoft.graph.authenticationEvent.attributeCollectionSubmit"
            }
            Event::TokenIssuanceStart => "microsoft.graph.authenticationEvent.tokenIssuanceStart",
        }
    }

    /// `data.@odata.type` of the request.
    pub fn callout_data_type(self) -> &'static str {
        match self {
            Event::AttributeCollectionSubmit => {
                "microsoft.graph.onAttributeCollectionSubmitCalloutData"
            }
            Event::TokenIssuanceStart => "microsoft.graph.onTokenIssuanceStartCalloutData",
        }
    }

    /// `data.@odata.type` of the answer.
    pub fn response_data_type(self) -> &'static str {
        match self {
            Event::AttributeCollectionSubmit => {
                "microsoft.graph.onAttributeCollectionSubmitResponseData"
            }
            Event::TokenIssuanceStart => "microsoft.graph.onTokenIssuanceStartResponseData",
        }
    }

    /// The prefix of the answer's action types.
    pub fn action_prefix(self) -> &'static str {
        match self {
            Event::AttributeCollectionSubmit => "microsoft.graph.attributeCollectionSubmit.",
            Event::TokenIssuanceStart => "microsoft.graph.tokenIssuanceStart.",
        }
    }

    /// The name in call records.
    pub fn record_name(self) -> &'static str {
        match self {
            Event::AttributeCollectionSubmit => "attributeCollectionSubmit",
            Event::TokenIssuanceStart => "tokenIssuanceStart",
        }
    }
}

/// Microsoft Graph's application id: the resource of a sign-in that asks only for OpenID scopes
/// (`source` and `resourceServicePrincipal` of the Woodgrove samples).
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// One sign-in session as the events describe it.
#[derive(Debug, Clone)]
pub struct Context {
    pub correlation_id: String,
    /// The application signed in to (`clientServicePrincipal.appId`).
    pub client_id: String,
    pub client_name: String,
    /// The page's language (`client.locale`, `client.market`), lower case as in the samples.
    pub locale: String,
}

/// What the sign-up collected: the submit event's `userSignUpInfo`.
#[derive(Debug, Clone)]
pub struct SignUpInfo {
    pub email: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    /// A social sign-up: the provider (`google.com`) and the person's id there.
    pub federated: Option<(String, String)>,
}

/// A GUID derived from a seed: stable ids for the tenant's listeners, extensions and service
/// principals.
pub fn derived_guid(seed: &str) -> String {
    let d = Sha256::digest(seed.as_bytes());
    let h: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A string attribute as the events carry it.
fn string_attribute(value: &str, variant: &PayloadVariant) -> Value {
    let type_key = if variant.capital_odata_type {
        "@odata.Type"
    } else {
        "@odata.type"
    };
    let mut attribute = Map::new();
    attribute.insert(
        type_key.into(),
        json!("microsoft.graph.stringDirectoryAttributeValue"),
    );
    attribute.insert("value".into(), json!(value));
    attribute.insert("attributeType".into(), json!("builtIn"));
    Value::Object(attribute)
}

/// The envelope every event shares, with `data`'s common members.
fn envelope(
    ext: &ExternalId,
    event: Event,
    ctx: &Context,
) -> (Map<String, Value>, Map<String, Value>) {
    let tid = &ext.settings.tenant_id;
    let mut body = Map::new();
    body.insert("type".into(), json!(event.type_name()));
    body.insert(
        "source".into(),
        json!(format!("/tenants/{tid}/applications/{GRAPH_APP_ID}")),
    );
    let mut data = Map::new();
    data.insert("@odata.type".into(), json!(event.callout_data_type()));
    data.insert("tenantId".into(), json!(tid));
    data.insert(
        "authenticationEventListenerId".into(),
        json!(derived_guid(&format!(
            "{tid}/listener/{}",
            event.record_name()
        ))),
    );
    data.insert(
        "customAuthenticationExtensionId".into(),
        json!(derived_guid(&format!(
            "{tid}/extension/{}",
            event.record_name()
        ))),
    );
    let service_principal = |app_id: &str, name: &str| {
        json!({
            "id": derived_guid(&format!("{tid}/servicePrincipal/{app_id}")),
            "appId": app_id,
            "appDisplayName": name,
            "displayName": name,
        })
    };
    let mut context = Map::new();
    context.insert("correlationId".into(), json!(ctx.correlation_id));
    context.insert(
        "client".into(),
        json!({ "ip": "127.0.0.1", "locale": ctx.locale, "market": ctx.locale }),
    );
    context.insert("protocol".into(), json!("OAUTH2.0"));
    context.insert(
        "clientServicePrincipal".into(),
        service_principal(&ctx.client_id, &ctx.client_name),
    );
    context.insert(
        "resourceServicePrincipal".into(),
        service_principal(GRAPH_APP_ID, "Microsoft Graph"),
    );
    data.insert("authenticationContext".into(), Value::Object(context));
    (body, data)
}

/// The `attributeCollectionSubmit` request of a sign-up.
pub fn submit_payload(
    ext: &ExternalId,
    variant: &PayloadVariant,
    ctx: &Context,
    info: &SignUpInfo,
) -> Value {
    let (mut body, mut data) = envelope(ext, Event::AttributeCollectionSubmit, ctx);
    let mut attributes = Map::new();
    if let Some(g) = &info.given_name {
        attributes.insert("givenName".into(), string_attribute(g, variant));
    }
    if let Some(s) = &info.surname {
        attributes.insert("surname".into(), string_attribute(s, variant));
    }
    match variant.email_attribute {
        EmailAttribute::Email => {
            attributes.insert("email".into(), string_attribute(&info.email, variant));
        }
        EmailAttribute::EmailAddress => {
            attributes.insert(
                "EmailAddress".into(),
                string_attribute(&info.email, variant),
            );
        }
        EmailAttribute::None => {}
    }
    let mut sign_up = Map::new();
    sign_up.insert("attributes".into(), Value::Object(attributes));
    if variant.identities {
        let identity = match &info.federated {
            Some((provider, subject)) => json!({
                "signInType": "federated",
                "issuer": provider,
                "issuerAssignedId": subject,
            }),
            None => {
                let (sign_in_type, issuer) = match variant.local_identity {
                    LocalIdentity::Email => ("email", ext.settings.domain.as_str()),
                    LocalIdentity::EmailAddress => ("emailAddress", ext.settings.domain.as_str()),
                    LocalIdentity::FederatedMail => ("federated", "mail"),
                };
                json!({
                    "signInType": sign_in_type,
                    "issuer": issuer,
                    "issuerAssignedId": info.email,
                })
            }
        };
        sign_up.insert("identities".into(), json!([identity]));
    }
    data.insert("userSignUpInfo".into(), Value::Object(sign_up));
    body.insert("data".into(), Value::Object(data));
    Value::Object(body)
}

/// The `tokenIssuanceStart` request for a user of the tenant (no `identities`: the event has
/// none).
pub fn token_issuance_payload(ext: &ExternalId, ctx: &Context, user: &User) -> Value {
    let (mut body, mut data) = envelope(ext, Event::TokenIssuanceStart, ctx);
    let mut person = Map::new();
    person.insert("id".into(), json!(user.object_id));
    person.insert("mail".into(), json!(user.email));
    if let Some(name) = user.display_name() {
        person.insert("displayName".into(), json!(name));
    }
    if let Some(g) = &user.given_name {
        person.insert("givenName".into(), json!(g));
    }
    if let Some(s) = &user.surname {
        person.insert("surname".into(), json!(s));
    }
    person.insert(
        "userPrincipalName".into(),
        json!(super::graph::user_principal_name(
            user,
            &ext.settings.domain
        )),
    );
    person.insert("userType".into(), json!("Member"));
    if let Some(context) = data
        .get_mut("authenticationContext")
        .and_then(Value::as_object_mut)
    {
        context.insert("user".into(), Value::Object(person));
    }
    body.insert("data".into(), Value::Object(data));
    Value::Object(body)
}

impl ExternalId {
    /// Sends an event to `url` as Entra does: a fresh bearer token, the configured time limit,
    /// one retry after a time-out or a failed connection. Each attempt is recorded (without the
    /// token).
    pub async fn call(
        &self,
        key: &SigningKey,
        event: Event,
        url: &str,
        payload: Value,
        records: &mut Vec<CallRecord>,
    ) -> Result<Answer, NoAnswer> {
        let credentials = Credentials::Bearer(self.extension_token(key));
        self.caller
            .post(
                event.record_name(),
                None,
                url,
                &Payload::Json(payload),
                &credentials,
                records,
            )
            .await
    }
}
