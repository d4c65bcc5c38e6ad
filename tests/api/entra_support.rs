//! What the Entra External ID tests share: a server with `[entra]` pointing at the mock issuer,
//! the bearer tokens Entra's authentication events service sends, the two events' bodies, and
//! the checks every answer must pass (HTTP 200, `application/json`, one action, no nulls).

use std::time::{Duration, Instant};

use autolink::config::{EntraSettings, Settings};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::mock_issuer::{key, now, MockIssuer, TokenBuilder, ENTRA_TENANT_ID};

/// The extension's application id: the `aud` of the tokens.
pub const EXTENSION_APP: &str = "a13d0fc1-04ab-4ede-b215-63de0174cbb4";
/// The extension's application id URI, the other accepted audience.
pub const EXTENSION_URI: &str = "api://autolink.example.com/a13d0fc1-04ab-4ede-b215-63de0174cbb4";
/// Entra's authentication events service: `azp` / `appid` of the tokens.
pub const EVENTS_APP: &str = "99045fe1-7639-4a75-9d4a-577b6ca3810f";
/// The External ID tenant.
pub const TENANT: &str = ENTRA_TENANT_ID;
/// The v1 issuer of the tenant.
pub fn v1_issuer() -> String {
    format!("https://sts.windows.net/{TENANT}/")
}

/// The submit endpoint.
pub const SUBMIT: &str = "/entra/attribute-collection-submit";
/// The token issuance endpoint.
pub const TOKEN: &str = "/entra/token-issuance-start";

/// A server with `[entra]` and the mock issuer it trusts.
pub struct EntraApp {
    pub app: TestApp,
    pub issuer: MockIssuer,
}

/// The `[entra]` settings for `issuer`: its discovery document, its issuer and the v1 form.
pub fn entra_settings(issuer: &MockIssuer) -> EntraSettings {
    EntraSettings {
        tenant_id: TENANT.into(),
        metadata_url: Some(issuer.entra_discovery_url()),
        issuers: Some(vec![issuer.entra_issuer(), v1_issuer()]),
        audiences: vec![EXTENSION_APP.into(), EXTENSION_URI.into()],
        authorized_party: EVENTS_APP.into(),
        // The longest allowed: a debug build on a loaded machine must not fail a test that is
        // not about time. The deadline's own tests set the default (800 ms).
        deadline_ms: 2_000,
        identity_issuer: None,
        graph: None,
    }
}

/// Starts the mock issuer and a server trusting it, with `change` applied last.
pub async fn spawn_entra(change: impl FnOnce(&mut Settings, &MockIssuer)) -> EntraApp {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(|settings| {
        settings.entra = Some(entra_settings(&issuer));
        change(settings, &issuer);
    })
    .await;
    EntraApp { app, issuer }
}

/// A valid v2 bearer token as Entra sends it to the extension (sign with `.signed_by(key(1))`).
pub fn entra_token(issuer: &MockIssuer) -> TokenBuilder {
    let now = now();
    TokenBuilder::new(json!({
        "aud": EXTENSION_APP,
        "iss": issuer.entra_issuer(),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "azp": EVENTS_APP,
        "azpacr": "2",
        "oid": "1b8a4c7e-0f5d-4f6a-9e3b-2c1d0e9f8a7b",
        "sub": "1b8a4c7e-0f5d-4f6a-9e3b-2c1d0e9f8a7b",
        "tid": TENANT,
        "ver": "2.0"
    }))
}

/// A valid v1 bearer token: `appid` instead of `azp`, the sts.windows.net issuer, the URI
/// audience.
pub fn entra_v1_token() -> TokenBuilder {
    let now = now();
    TokenBuilder::new(json!({
        "aud": EXTENSION_URI,
        "iss": v1_issuer(),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "appid": EVENTS_APP,
        "appidacr": "2",
        "oid": "1b8a4c7e-0f5d-4f6a-9e3b-2c1d0e9f8a7b",
        "sub": "1b8a4c7e-0f5d-4f6a-9e3b-2c1d0e9f8a7b",
        "tid": TENANT,
        "ver": "1.0"
    }))
}

/// A fresh correlation id.
pub fn correlation() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An `attributeCollectionSubmit` call with this `userSignUpInfo`, for the B2C channel.
pub fn submit_body(correlation_id: &str, user_sign_up_info: Value, locale: &str) -> Value {
    json!({
        "type": "microsoft.graph.authenticationEvent.attributeCollectionSubmit",
        "source": format!("/tenants/{TENANT}/applications/{B2C_CLIENT}"),
        "data": {
            "userSignUpInfo": user_sign_up_info,
            "@odata.type": "microsoft.graph.onAttributeCollectionSubmitCalloutData",
            "tenantId": TENANT,
            "authenticationEventListenerId": "00001111-aaaa-2222-bbbb-3333cccc4444",
            "customAuthenticationExtensionId": "11112222-bbbb-3333-cccc-4444dddd5555",
            "authenticationContext": context(correlation_id, B2C_CLIENT, locale),
        }
    })
}

/// `authenticationContext` of a call from the store application `client_id`.
pub fn context(correlation_id: &str, client_id: &str, locale: &str) -> Value {
    json!({
        "correlationId": correlation_id,
        "client": { "ip": "30.51.176.110", "locale": locale, "market": locale },
        "protocol": "OAUTH2.0",
        "clientServicePrincipal": {
            "id": "3c4d5e6f-0000-4000-8000-000000000001", "appId": client_id,
            "appDisplayName": "Fabrikam web", "displayName": "Fabrikam web"
        },
        "resourceServicePrincipal": {
            "id": "3c4d5e6f-0000-4000-8000-000000000001", "appId": client_id,
            "appDisplayName": "Fabrikam web", "displayName": "Fabrikam web"
        }
    })
}

/// `userSignUpInfo` of an email one-time-code sign-up (`identities` `email`).
pub fn local_sign_up(email: &str) -> Value {
    json!({
        "attributes": {
            "givenName": { "@odata.type": "microsoft.graph.stringDirectoryAttributeValue", "value": "Larissa", "attributeType": "builtIn" },
            "surname": { "@odata.type": "microsoft.graph.stringDirectoryAttributeValue", "value": "Price", "attributeType": "builtIn" }
        },
        "identities": [{ "signInType": "email", "issuer": "contoso.onmicrosoft.com", "issuerAssignedId": email }]
    })
}

/// A `tokenIssuanceStart` call for the user `user_id` with `mail`, for `client_id`.
pub fn token_body(correlation_id: &str, user_id: &str, mail: &str, client_id: &str) -> Value {
    let mut context = context(correlation_id, client_id, "en-us");
    context["user"] = json!({
        "displayName": "Casey Jensen",
        "givenName": "Casey",
        "id": user_id,
        "mail": mail,
        "surname": "Jensen",
        "userPrincipalName": mail,
        "userType": "Member"
    });
    json!({
        "type": "microsoft.graph.authenticationEvent.tokenIssuanceStart",
        "source": format!("/tenants/{TENANT}/applications/{client_id}"),
        "data": {
            "@odata.type": "microsoft.graph.onTokenIssuanceStartCalloutData",
            "tenantId": TENANT,
            "authenticationEventListenerId": "00001111-aaaa-2222-bbbb-3333cccc4444",
            "customAuthenticationExtensionId": "11112222-bbbb-3333-cccc-4444dddd5555",
            "authenticationContext": context,
        }
    })
}

/// An answer: status, content type, body (JSON or the text as a string) and time taken.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Value,
    pub elapsed: Duration,
}

impl EntraApp {
    /// A valid v2 token signed with the published key.
    pub fn token(&self) -> String {
        entra_token(&self.issuer).signed_by(key(1))
    }

    /// Posts `body` to `path` with `Authorization: Bearer {token}`.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        post_raw(&self.app, path, Some(token), body.to_string()).await
    }

    /// Posts a submit with a valid token.
    pub async fn submit(&self, body: &Value) -> Answer {
        self.post(SUBMIT, &self.token(), body).await
    }

    /// Posts a token issuance with a valid token.
    pub async fn token_issuance(&self, body: &Value) -> Answer {
        self.post(TOKEN, &self.token(), body).await
    }
}

/// Posts JSON text to the server, with a bearer token when given.
pub async fn post_raw(app: &TestApp, path: &str, token: Option<&str>, body: String) -> Answer {
    let started = Instant::now();
    let mut request = app
        .client
        .post(format!("{}{path}", app.address))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap();
    let elapsed = started.elapsed();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        content_type,
        body,
        elapsed,
    }
}

fn assert_no_nulls(value: &Value, whole: &Value) {
    match value {
        Value::Null => panic!("a null in the answer: {whole}"),
        Value::Array(items) => items.iter().for_each(|v| assert_no_nulls(v, whole)),
        Value::Object(map) => map.values().for_each(|v| assert_no_nulls(v, whole)),
        _ => {}
    }
}

/// Asserts what every answer Entra reads must be, and returns its one action.
pub fn the_action<'a>(answer: &'a Answer, response_type: &str) -> &'a Value {
    let body = &answer.body;
    assert_eq!(answer.status, 200, "{body}");
    assert!(
        answer.content_type.starts_with("application/json"),
        "{}",
        answer.content_type
    );
    assert_no_nulls(body, body);
    assert_eq!(body["data"]["@odata.type"], response_type, "{body}");
    let actions = body["data"]["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 1, "{body}");
    &actions[0]
}

/// The one action of a submit answer, checked.
pub fn submit_action(answer: &Answer) -> &Value {
    the_action(
        answer,
        "microsoft.graph.onAttributeCollectionSubmitResponseData",
    )
}

/// The claims of a token issuance answer, checked: one `provideClaimsForToken`, string claims,
/// at most 3 KB in all.
pub fn token_claims(answer: &Answer) -> &Value {
    let action = the_action(answer, "microsoft.graph.onTokenIssuanceStartResponseData");
    assert_eq!(
        action["@odata.type"], "microsoft.graph.tokenIssuanceStart.provideClaimsForToken",
        "{action}"
    );
    let claims = action["claims"].as_object().expect("claims");
    let size: usize = claims
        .iter()
        .map(|(k, v)| k.len() + v.as_str().expect("string claims only").len())
        .sum();
    assert!(size <= 3 * 1024, "{size}");
    &action["claims"]
}

/// Asserts a `continueWithDefaultBehavior`.
pub fn assert_continues(answer: &Answer) {
    let action = submit_action(answer);
    assert_eq!(
        action,
        &json!({"@odata.type": "microsoft.graph.attributeCollectionSubmit.continueWithDefaultBehavior"})
    );
}

/// Asserts a `showBlockPage` with a title and `message`, and returns the message.
pub fn assert_block_page(answer: &Answer) -> String {
    let action = submit_action(answer);
    assert_eq!(
        action["@odata.type"], "microsoft.graph.attributeCollectionSubmit.showBlockPage",
        "{action}"
    );
    assert!(
        action["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{action}"
    );
    assert!(action.get("attributeErrors").is_none(), "{action}");
    action["message"].as_str().expect("message").to_string()
}

/// Asserts a `showValidationError` whose only attribute error is on `attribute`; returns the
/// message.
pub fn assert_validation_error_on(answer: &Answer, attribute: &str) -> String {
    let action = submit_action(answer);
    assert_eq!(
        action["@odata.type"], "microsoft.graph.attributeCollectionSubmit.showValidationError",
        "{action}"
    );
    let errors = action["attributeErrors"]
        .as_object()
        .expect("attributeErrors");
    assert_eq!(errors.len(), 1, "{action}");
    let message = errors[attribute]
        .as_str()
        .expect("message on the attribute");
    assert!(!message.is_empty());
    assert!(
        action["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{action}"
    );
    message.to_string()
}
