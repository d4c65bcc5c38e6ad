//! `GET /openapi.json`: the OpenAPI 3.1 description of every endpoint, generated from the
//! handlers' `#[utoipa::path]` annotations and the types the handlers really read and answer
//! (each next to its handler: [`super::connector::ConnectorResponse`],
//! [`super::rest::RestRefusal`], [`super::errors::ErrorBody`], ...). `refine` adds what the
//! types cannot say: the rules the parsers apply to the values the admin API reads.
//!
//! A test compares the paths here with the route table ([`super::routes::ROUTES`]), so an
//! endpoint cannot be served without being described, or described without being served.

use std::sync::OnceLock;

use actix_web::HttpResponse;
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::admin;
use super::errors::ErrorBody;
use super::{connector, entra, health, metrics, relying_party, rest};
use crate::admin::audit::OUTCOMES;
use crate::admin::prospects::STATUSES;
use crate::admin::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MAX_REASON_CHARS};
use crate::domain::customer::MAX_NAME_CHARS;
use crate::storage::webhooks::{DELIVERED, FAILED, PENDING};

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
        entra::submit::attribute_collection_submit,
        entra::token::token_issuance_start,
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
        admin::list_webhook_deliveries,
        admin::retry_webhook_delivery,
        admin::list_events,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "b2c", description = "Called by Azure AD B2C (user-flow API connector, custom-policy REST technical profiles)"),
        (name = "entra", description = "Called by Microsoft Entra External ID (custom authentication extensions)"),
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
            "entra_bearer",
            http(
                HttpAuthScheme::Bearer,
                "The access token Microsoft Entra External ID sends to custom authentication extensions ([entra])",
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
    JSON.get_or_init(|| {
        let json = serde_json::to_value(ApiDoc::openapi()).and_then(|mut doc| {
            refine(&mut doc);
            serde_json::to_string_pretty(&doc)
        });
        match json {
            Ok(json) => json,
            Err(e) => {
                log::error!("the OpenAPI document cannot be serialized: {e}");
                String::from("{}")
            }
        }
    })
}

/// A schema with an example value (the demo channel's, see the README).
fn with_example(mut schema: Value, example: &str) -> Value {
    schema["examples"] = json!([example]);
    schema
}

/// Characters a code (account number, legal entity) may not hold: Unicode white space and
/// control characters, as `char::is_whitespace` and `char::is_control` see them.
const NOT_IN_CODE: &str =
    "\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// The rules the parsers apply to the values the admin API reads, as JSON Schema. utoipa
/// derives the shapes from the Rust types (`Option<String>` for a field that a parser then
/// requires and checks); this states what the parsers accept, so that the description and the
/// server agree for a client that generates requests from it (tests/conformance/run.sh).
/// What JSON Schema cannot say (an address under the comparison rule, a configured channel or
/// legal entity, one of two query parameters) is documented as the operation's 400.
fn refine(doc: &mut Value) {
    let code = || json!({"type": "string", "pattern": format!("^[^{NOT_IN_CODE}]{{1,64}}$")});
    let name = || {
        json!({"type": ["string", "null"], "maxLength": MAX_NAME_CHARS,
               "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"})
    };
    let reason = |required: bool| {
        let mut schema = json!({"type": ["string", "null"], "maxLength": MAX_REASON_CHARS,
            "pattern": "^[^\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f]*$"});
        if required {
            schema = json!({"type": "string", "maxLength": MAX_REASON_CHARS,
                "pattern": "^[^\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u0009\\u000b-\\u001f\\u007f-\\u009f]*$"});
        }
        schema
    };
    let nullable = |mut schema: Value| {
        schema["type"] = json!([schema["type"].clone(), "null"]);
        schema
    };
    let text = || json!({"type": "string", "minLength": 1, "pattern": "\\S"});
    // An address the comparison rule accepts is also an `email` in JSON Schema's sense; the rule
    // is stricter (IDNA, no invisible characters), which the 400 documents.
    let email = || {
        with_example(
            json!({"type": "string", "format": "email"}),
            "ana@example.com",
        )
    };
    let email_or_empty = || {
        with_example(
            json!({"type": "string", "anyOf": [{"format": "email"}, {"maxLength": 0}]}),
            "ana@example.com",
        )
    };

    // Parameters, by where they are and their name.
    // An empty query value reads as absent, except for numbers.
    let code_or_empty =
        || json!({"type": "string", "pattern": format!("^[^{NOT_IN_CODE}]{{0,64}}$")});
    let parameter = |path: &str, location: &str, name: &str| -> Option<Value> {
        Some(match (location, name) {
            ("query", "legalEntity") if path == "/admin/v1/duplicates" => {
                with_example(code(), "USRT")
            }
            ("query", "legalEntity") => with_example(code_or_empty(), "USRT"),
            ("query", "accountNumber") => code_or_empty(),
            ("query", "email") => email_or_empty(),
            ("header", "X-Autolink-Actor") => json!({
                "type": "string", "pattern": "^[A-Za-z0-9._@+-]{1,64}$",
                "not": {"pattern": "^[Bb]2[Cc]$"},
            }),
            ("query", "limit") => json!({
                "type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": DEFAULT_PAGE_SIZE,
            }),
            ("query", "cursor") | ("path", "id") => json!({
                "type": "integer", "format": "int64", "minimum": 1, "maximum": i64::MAX,
            }),
            ("path", "accountNumber") => code(),
            ("query", "status") if path == "/admin/v1/webhook-deliveries" => json!({
                "type": "string", "enum": [PENDING, DELIVERED, FAILED], "default": PENDING,
            }),
            ("query", "after") => json!({
                "type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX,
            }),
            ("query", "status") => {
                json!({"type": "string", "enum": STATUSES, "default": "pending"})
            }
            ("query", "outcome") => json!({"type": "string", "enum": OUTCOMES}),
            ("query", "from") | ("query", "to") => json!({
                "type": "string",
                "anyOf": [{"format": "date-time"}, {"format": "date"}, {"maxLength": 0}],
            }),
            ("query", "channel") => with_example(json!({"type": "string"}), "web"),
            ("query", "issuer") | ("query", "subject") if path == "/admin/v1/audit" => {
                json!({"type": "string", "maxLength": 1024})
            }
            ("query", "issuer") | ("query", "subject") => json!({
                "type": "string", "maxLength": 1024,
                "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$",
            }),
            _ => return None,
        })
    };
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if let Some(parameters) = operation
                    .get_mut("parameters")
                    .and_then(Value::as_array_mut)
                {
                    for p in parameters.iter_mut() {
                        let location = p["in"].as_str().unwrap_or_default().to_string();
                        let name = p["name"].as_str().unwrap_or_default().to_string();
                        if let Some(schema) = parameter(path, &location, &name) {
                            p["schema"] = schema;
                        }
                    }
                }
                // Every operation behind a secret may be throttled (auth::gate).
                let secured = operation["security"].as_array().is_some_and(|schemes| {
                    schemes.iter().any(|scheme| {
                        scheme.as_object().is_some_and(|s| {
                            s.keys()
                                .any(|k| k.starts_with("connector_") || k == "admin_token")
                        })
                    })
                });
                if secured {
                    operation["responses"]["429"] = json!({
                        "description": "Too many failed credential checks from this client, or \
                                        too many checks at once: retry after Retry-After seconds",
                        "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                    });
                }
                // Every body has `[limits] body_timeout_ms` to arrive (api::body).
                if operation.get("requestBody").is_some() {
                    operation["responses"]["408"] = json!({
                        "description": "The body did not arrive in time; the connection is closed",
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                    });
                }
                // These bodies are optional: an empty body reads as `{}`.
                let optional_body = method == "post"
                    && (path.ends_with("/unlink")
                        || path.ends_with("/approve")
                        || path.ends_with("/reject"));
                if optional_body {
                    operation["requestBody"]["required"] = json!(false);
                }
            }
        }
    }

    // Request bodies, by schema and property.
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let mut set = |schema: &str, property: &str, value: Value| {
        if let Some(props) = schemas
            .get_mut(schema)
            .and_then(|s| s.get_mut("properties"))
            .and_then(Value::as_object_mut)
        {
            if let Some(old) = props.get_mut(property) {
                let description = old.get("description").cloned();
                *old = value;
                if let Some(description) = description {
                    old["description"] = description;
                }
            }
        }
    };
    set("NewCustomerRequest", "accountNumber", nullable(code()));
    set(
        "NewCustomerRequest",
        "legalEntity",
        with_example(code(), "USRT"),
    );
    set(
        "NewCustomerRequest",
        "primaryEmail",
        nullable(email_or_empty()),
    );
    set("CustomerUpdate", "primaryEmail", nullable(email_or_empty()));
    set(
        "NewCustomerRequest",
        "partyType",
        json!({"type": "string", "enum": ["person", "organization"]}),
    );
    set("NewCustomerRequest", "firstName", name());
    set("NewCustomerRequest", "lastName", name());
    set("CustomerUpdate", "isB2b", json!({"type": "boolean"}));
    set("CustomerUpdate", "firstName", name());
    set("CustomerUpdate", "lastName", name());
    set("PreviewRequest", "channel", with_example(text(), "web"));
    set("PreviewRequest", "email", email());
    set("MoveLinkRequest", "accountNumber", code());
    set("MoveLinkRequest", "reason", reason(true));
    set("UnlinkRequest", "reason", reason(false));
    set("RejectProspectRequest", "reason", reason(false));
    set("NewProspectRequest", "email", email());
    let mut company = name();
    company["type"] = json!("string");
    company["pattern"] = json!("^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$");
    set("NewProspectRequest", "companyName", company);
    set(
        "NewProspectRequest",
        "legalEntity",
        with_example(code(), "USRT"),
    );
    set("NewProspectRequest", "firstName", name());
    set("NewProspectRequest", "lastName", name());
    set(
        "ApproveProspectRequest",
        "organizationAccountNumber",
        nullable(code()),
    );
    set(
        "ApproveProspectRequest",
        "personAccountNumber",
        nullable(code()),
    );
    // A change names at least one field.
    if let Some(update) = schemas.get_mut("CustomerUpdate") {
        update["minProperties"] = json!(1);
    }
}

/// This document.
#[utoipa::path(
    get, path = "/openapi.json", tag = "operations",
    responses(
        (status = 200, description = "The OpenAPI document", content_type = "application/json"),
        (status = 401, description = "Not the admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
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
    fn the_document_states_what_the_parsers_accept() {
        let json: Value = serde_json::from_str(document()).unwrap();
        let links = &json["paths"]["/admin/v1/links"]["get"]["parameters"];
        let limit = links
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap();
        assert_eq!(limit["schema"]["type"], "integer");
        assert_eq!(limit["schema"]["maximum"], MAX_PAGE_SIZE);
        let schemas = &json["components"]["schemas"];
        assert_eq!(
            schemas["MoveLinkRequest"]["properties"]["reason"]["type"],
            "string"
        );
        assert_eq!(schemas["CustomerUpdate"]["minProperties"], 1);
        assert_eq!(
            json["paths"]["/admin/v1/links/{id}/unlink"]["post"]["requestBody"]["required"],
            false
        );
        let code = schemas["NewCustomerRequest"]["properties"]["legalEntity"]["pattern"]
            .as_str()
            .unwrap();
        assert!(code.starts_with("^[^\\u0000-\\u0020"), "{code}");
    }

    #[test]
    fn the_document_serializes() {
        let json: serde_json::Value = serde_json::from_str(document()).unwrap();
        assert!(json["openapi"].as_str().unwrap().starts_with("3."));
        assert!(json["components"]["securitySchemes"]["admin_token"].is_object());
    }

    #[test]
    fn operations_behind_a_secret_document_the_throttle_and_open_ones_do_not() {
        let json: serde_json::Value = serde_json::from_str(document()).unwrap();
        for (path, method) in [
            ("/b2c/api-connector", "post"),
            ("/b2c/rest/link", "post"),
            ("/admin/v1/customers", "get"),
        ] {
            let throttled = &json["paths"][path][method]["responses"]["429"];
            assert!(throttled["headers"]["Retry-After"].is_object(), "{path}");
        }
        assert!(json["paths"]["/healthz"]["get"]["responses"]["429"].is_null());
        assert!(json["paths"]["/b2c/rest/link"]["post"]["responses"]["408"].is_object());
        assert!(json["paths"]["/admin/v1/customers"]["post"]["responses"]["408"].is_object());
        assert!(json["paths"]["/v1/link"]["post"]["responses"]["429"].is_null());
    }
}
