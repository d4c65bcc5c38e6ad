//! `GET /openapi.json`: the OpenAPI 3.1 description of every endpoint, generated from the
//! handlers' `#[utoipa::path]` annotations and the request and answer types. The B2C wire
//! formats are described by the documentation types below (the handlers read them as flat JSON
//! objects); the admin API's types are the ones its handlers use.
//!
//! A test compares the paths here with the route table ([`super::routes::ROUTES`]), so an
//! endpoint cannot be served without being described, or described without being served.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::admin;
use super::{connector, health, metrics, relying_party, rest};

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "autolink",
        description = "Links Azure AD B2C identities to the customer accounts a store already holds, \
                       by matching a verified email address. B2C calls /b2c/*; sites call /v1/link; \
                       the store's back office calls /admin/v1/*."
    ),
    paths(
        health::healthz,
        health::readyz,
        metrics::metrics,
        openapi_json,
        connector::api_connector,
        rest::precheck,
        rest::link,
        relying_party::link,
        admin::create_customer,
        admin::search_customers,
        admin::get_customer,
        admin::update_customer,
        admin::deactivate_customer,
        admin::list_links,
        admin::unlink,
        admin::move_link,
        admin::query_audit,
        admin::preview,
        admin::record_prospect,
        admin::list_prospects,
        admin::get_prospect,
        admin::approve_prospect,
        admin::reject_prospect,
        admin::duplicates,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "b2c", description = "Called by Azure AD B2C (user-flow API connector, custom-policy REST technical profiles)"),
        (name = "relying party", description = "Called by a site with the user's B2C ID token"),
    )
)]
pub struct ApiDoc;

/// Declares the security schemes the annotations name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let http = |scheme: HttpAuthScheme, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(scheme)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "connector_basic",
            http(
                HttpAuthScheme::Basic,
                "The connector's HTTP Basic credentials ([auth.basic])",
            ),
        );
        components.add_security_scheme(
            "connector_bearer",
            http(
                HttpAuthScheme::Bearer,
                "An OAuth2 access token from the configured issuer ([auth.bearer])",
            ),
        );
        components.add_security_scheme(
            "connector_api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-functions-key",
                "The API key header ([auth.api_key]; the header name is configurable)",
            ))),
        );
        components.add_security_scheme(
            "id_token",
            http(
                HttpAuthScheme::Bearer,
                "The user's B2C ID token ([relying_party])",
            ),
        );
        components.add_security_scheme(
            "admin_token",
            http(
                HttpAuthScheme::Bearer,
                "The admin token ([admin]); never the connector's credentials",
            ),
        );
    }
}

/// The document, serialized once.
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| match ApiDoc::openapi().to_pretty_json() {
        Ok(json) => json,
        Err(e) => {
            log::error!("the OpenAPI document cannot be serialized: {e}");
            String::from("{}")
        }
    })
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json"),
        (status = 401, description = "Not the admin token", body = Unauthorized),
    ),
    security(("admin_token" = []))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}

/// One entry of the `identities` claim.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ConnectorIdentity {
    /// `emailAddress` (local account), `federated` (social), `userName`, ...
    #[serde(rename = "signInType")]
    sign_in_type: Option<String>,
    /// The tenant, or the social provider (`google.com`).
    issuer: Option<String>,
    /// The user's id at the issuer.
    #[serde(rename = "issuerAssignedId")]
    issuer_assigned_id: Option<String>,
}

/// What B2C posts to the user-flow API connector (any field may be missing; other collected and
/// custom attributes are accepted and ignored).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ConnectorRequest {
    /// The user's email.
    email: Option<String>,
    /// The user's identities.
    identities: Option<Vec<ConnectorIdentity>>,
    /// Display name.
    #[serde(rename = "displayName")]
    display_name: Option<String>,
    /// Given name.
    #[serde(rename = "givenName")]
    given_name: Option<String>,
    /// Surname.
    surname: Option<String>,
    /// The user's object id (at `PreTokenIssuance`).
    #[serde(rename = "objectId")]
    object_id: Option<String>,
    /// `PostFederationSignup`, `PostAttributeCollection`, `PreTokenIssuance` (or
    /// `PreTokenApplicationClaims`).
    step: Option<String>,
    /// The relying party's client id; selects the channel (`clientId` is also read).
    client_id: Option<String>,
    /// The user's language.
    ui_locales: Option<String>,
}

/// What the API connector answers (always HTTP 200, except a validation error: 400).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ConnectorResponse {
    /// Always `1.0.0`.
    version: String,
    /// `Continue`, `ShowBlockPage` or `ValidationError`.
    action: String,
    /// The message B2C shows (block page, validation error).
    #[serde(rename = "userMessage")]
    user_message: Option<String>,
    /// The refusal's code (block page, validation error).
    code: Option<String>,
    /// 400 on a validation error.
    status: Option<u16>,
    /// The customer account number (`PreTokenIssuance`, continue).
    #[serde(rename = "extension_CustomerAccountNumber")]
    customer_account_number: Option<String>,
    /// `Linked`, `Created` or `AlreadyLinked` (`PreTokenIssuance`, continue).
    #[serde(rename = "extension_AutoLinkOutcome")]
    auto_link_outcome: Option<String>,
    /// The refusal's code at `PreTokenIssuance`, which cannot block.
    #[serde(rename = "extension_AutoLinkError")]
    auto_link_error: Option<String>,
}

/// The input claims of the custom-policy REST technical profiles (`SendClaimsIn=Body`).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RestRequest {
    /// The user's email.
    email: Option<String>,
    /// Whether the identity provider verified the email (`true`/`false`, boolean or text).
    #[serde(rename = "emailVerified")]
    email_verified: Option<bool>,
    /// `local`, or the social identity provider.
    #[serde(rename = "identityProvider")]
    identity_provider: Option<String>,
    /// The user's object id (`link` only).
    #[serde(rename = "objectId")]
    object_id: Option<String>,
    /// The relying party's client id; selects the channel.
    #[serde(rename = "clientId")]
    client_id: Option<String>,
    /// The user's language.
    #[serde(rename = "uiLocales")]
    ui_locales: Option<String>,
    /// Given name.
    #[serde(rename = "givenName")]
    given_name: Option<String>,
    /// Surname.
    surname: Option<String>,
}

/// The output claims of the REST technical profiles (no key is ever null).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RestSuccess {
    /// The customer account number (absent for `WouldCreate`).
    #[serde(rename = "customerAccountNumber")]
    customer_account_number: Option<String>,
    /// `Linked`, `Created`, `AlreadyLinked`; `WouldLink`, `WouldCreate` from `precheck`.
    #[serde(rename = "autoLinkOutcome")]
    auto_link_outcome: String,
}

/// A refusal in the shape custom policies show.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RestRefusal {
    /// Always `1.0.0`.
    version: String,
    /// 409.
    status: u16,
    /// The refusal's code.
    code: String,
    /// The request id.
    #[serde(rename = "requestId")]
    request_id: String,
    /// The message B2C shows.
    #[serde(rename = "userMessage")]
    user_message: String,
    /// For DebugMode.
    #[serde(rename = "developerMessage")]
    developer_message: String,
}

/// A successful relying-party call.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RelyingPartySuccess {
    /// The customer account number.
    #[serde(rename = "customerAccountNumber")]
    customer_account_number: Option<String>,
    /// `Linked`, `Created` or `AlreadyLinked`.
    outcome: String,
    /// The channel id.
    channel: String,
    /// The request id.
    #[serde(rename = "requestId")]
    request_id: String,
}

/// A refused relying-party call.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct RelyingPartyRefusal {
    /// The refusal's code.
    code: String,
    /// The error name (Commerce's for the Commerce refusals).
    error: String,
    /// The message for the user.
    message: String,
    /// The request id.
    #[serde(rename = "requestId")]
    request_id: String,
}

/// A 401 (or another error of the B2C and operations endpoints).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Unauthorized {
    /// `unauthorized`.
    error: String,
    /// Why.
    message: String,
}

/// Liveness and readiness.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Health {
    /// `ok`, `ready` or `not ready`.
    status: String,
    /// `ok` or `unavailable` (readiness only).
    database: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_document_describes_exactly_the_routes_served() {
        let doc = ApiDoc::openapi();
        let mut described = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            let item = serde_json::to_value(item).unwrap();
            for method in ["get", "post", "patch", "put", "delete"] {
                if item.get(method).is_some() {
                    described.insert((method.to_string(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = super::super::routes::served()
            .into_iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(described, served);
    }

    #[test]
    fn the_document_serializes() {
        let json: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3."));
        assert!(json["components"]["securitySchemes"]["admin_token"].is_object());
    }
}
