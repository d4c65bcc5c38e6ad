//! The exact keys of every kind of answer, through the real server: the wire formats are the
//! structs the handlers serialize and the OpenAPI document describes, and a key that appears,
//! disappears or is renamed breaks a caller (B2C reads the connector's and the REST profiles'
//! answers by name, and shows an error page for anything it does not expect).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::mock_issuer::*;
use crate::relying_party::with_relying_party;

/// The keys of a JSON object answer.
fn keys(body: &Value) -> BTreeSet<&str> {
    body.as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

#[tokio::test]
async fn connector_answers_carry_exactly_the_keys_of_their_kind() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["C-1,USRT,person,false,ana@example.com,Ana,One"]));

    let (status, body) = app
        .connector(&attribute_collection("ana@example.com", B2C_CLIENT))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), set(&["action", "version"]), "{body}");

    let (status, body) = app
        .connector(&token_step(
            "ana@example.com",
            "oid-ana",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let linked = [
        "action",
        "extension_AutoLinkOutcome",
        "extension_CustomerAccountNumber",
        "version",
    ];
    assert_eq!(keys(&body), set(&linked), "{body}");

    let (status, body) = app
        .connector(&token_step(
            "ana@example.com",
            "",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let refused_at_the_token = ["action", "extension_AutoLinkError", "version"];
    assert_eq!(keys(&body), set(&refused_at_the_token), "{body}");

    let (status, body) = app.connector(&json!({"step": "Unknown"})).await;
    assert_eq!(status, 200, "{body}");
    let block = ["action", "code", "userMessage", "version"];
    assert_eq!(keys(&body), set(&block), "{body}");

    let (status, body) = app
        .connector(&attribute_collection("not an email", B2C_CLIENT))
        .await;
    assert_eq!(status, 400, "{body}");
    let validation = ["action", "code", "status", "userMessage", "version"];
    assert_eq!(keys(&body), set(&validation), "{body}");
}

#[tokio::test]
async fn rest_answers_carry_exactly_their_output_claims_or_the_refusal_shape() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["C-1,USRT,person,false,ana@example.com,Ana,One"]));
    let claims = json!({"email": "ana@example.com", "identityProvider": "local",
                        "clientId": B2C_CLIENT, "objectId": "oid-ana"});

    let (status, body) = app.rest_precheck(&claims).await;
    assert_eq!(status, 200, "{body}");
    let with_number = ["autoLinkOutcome", "customerAccountNumber"];
    assert_eq!(keys(&body), set(&with_number), "{body}");

    let (status, body) = app.rest_link(&claims).await;
    assert_eq!((status, &body["autoLinkOutcome"]), (200, &json!("Linked")));
    assert_eq!(keys(&body), set(&with_number), "{body}");

    let nobody = json!({"email": "nobody@example.com", "identityProvider": "local",
                        "clientId": B2C_CLIENT});
    let (status, body) = app.rest_precheck(&nobody).await;
    assert_eq!(
        (status, &body["autoLinkOutcome"]),
        (200, &json!("WouldCreate"))
    );
    assert_eq!(keys(&body), set(&["autoLinkOutcome"]), "{body}");

    let (status, body) = app.rest_link(&json!({"email": 5})).await;
    assert_eq!(status, 409, "{body}");
    let refusal = [
        "code",
        "developerMessage",
        "requestId",
        "status",
        "userMessage",
        "version",
    ];
    assert_eq!(keys(&body), set(&refusal), "{body}");
}

#[tokio::test]
async fn operations_and_errors_carry_exactly_their_keys() {
    let app = spawn_app().await;
    let (status, body) = app.healthz().await;
    assert_eq!((status, keys(&body)), (200, set(&["status"])), "{body}");
    let (status, body) = app.readyz().await;
    let ready = set(&["database", "status"]);
    assert_eq!((status, keys(&body)), (200, ready), "{body}");

    let plain_error = set(&["error", "message"]);
    for (method, path, expected) in [
        (Method::GET, "/no/such/endpoint", 404),
        (Method::DELETE, "/healthz", 405),
        (Method::POST, "/b2c/rest/link", 401),
        (Method::GET, "/admin/v1/customers", 401),
    ] {
        let (status, body) = app.anonymous(method.clone(), path).await;
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_eq!(keys(&body), plain_error, "{method} {path}: {body}");
    }
    let with_field = set(&["error", "field", "message"]);
    let (status, body) = app.admin_get("/admin/v1/customers/NOPE").await;
    assert_eq!((status, keys(&body)), (404, with_field.clone()), "{body}");
    let incomplete = json!({"legalEntity": "USRT"});
    let (status, body) = app.admin_post("/admin/v1/customers", &incomplete).await;
    assert_eq!((status, keys(&body)), (400, with_field.clone()), "{body}");
    let change = json!({"firstName": "Ana"});
    let (status, body) = app.admin_patch("/admin/v1/customers/NOPE", &change).await;
    assert_eq!((status, keys(&body)), (404, with_field), "{body}");

    // Not configured: the refusal shape of /v1/link.
    let (status, body) = app.v1_link(Some("x.y.z")).await;
    assert_eq!(status, 404, "{body}");
    let refusal = set(&["code", "error", "message", "requestId"]);
    assert_eq!(keys(&body), refusal, "{body}");
}

#[tokio::test]
async fn v1_link_answers_carry_exactly_their_keys() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(with_relying_party(&issuer)).await;
    app.import_csv(&csv(&[&format!(
        "POS-1,USRT,person,false,{ALICE_EMAIL},Alice,Smith"
    )]));
    // The business channel refuses the identity before anything is linked.
    let b2b = issuer
        .b2c_id_token(B2C_POLICY, B2B_CLIENT)
        .signed_by(key(1));
    let (status, body) = app.v1_link(Some(&b2b)).await;
    assert_eq!(status, 404, "{body}");
    let refusal = ["code", "error", "message", "requestId"];
    assert_eq!(keys(&body), set(&refusal), "{body}");

    let token = issuer
        .b2c_id_token(B2C_POLICY, B2C_CLIENT)
        .signed_by(key(1));
    let (status, body) = app.v1_link(Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let linked = ["channel", "customerAccountNumber", "outcome", "requestId"];
    assert_eq!(keys(&body), set(&linked), "{body}");

    let (status, body) = app.v1_link(None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(keys(&body), set(&["error", "message"]), "{body}");
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_keys_the_answers_carry() {
    let app = spawn_app().await;
    let (status, document) = app.openapi().await;
    assert_eq!(status, 200);
    let schemas = &document["components"]["schemas"];
    for (schema, expected) in [
        (
            "ConnectorResponse",
            &[
                "action",
                "code",
                "extension_AutoLinkError",
                "extension_AutoLinkOutcome",
                "extension_CustomerAccountNumber",
                "status",
                "userMessage",
                "version",
            ][..],
        ),
        ("RestSuccess", &["autoLinkOutcome", "customerAccountNumber"]),
        (
            "RestRefusal",
            &[
                "code",
                "developerMessage",
                "requestId",
                "status",
                "userMessage",
                "version",
            ],
        ),
        (
            "RelyingPartySuccess",
            &["channel", "customerAccountNumber", "outcome", "requestId"],
        ),
        (
            "RelyingPartyRefusal",
            &["code", "error", "message", "requestId"],
        ),
        ("Health", &["database", "status"]),
        ("ErrorBody", &["error", "field", "message"]),
    ] {
        assert_eq!(
            keys(&schemas[schema]["properties"]),
            set(expected),
            "{schema}"
        );
    }
}
