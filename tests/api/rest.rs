//! Custom-policy REST technical profiles, the API key header, and replaceable messages.

use serde_json::{json, Value};

use crate::helpers::*;

async fn post(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}{path}", app.address))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn assert_conflict(status: u16, body: &Value, code: &str) {
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["version"], "1.0.0");
    assert_eq!(body["status"], 409);
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["requestId"].as_str().is_some_and(|r| r.len() == 32),
        "{body}"
    );
    assert!(
        body["userMessage"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["developerMessage"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn assert_no_nulls(body: &Value) {
    for (key, value) in body.as_object().unwrap() {
        assert!(!value.is_null(), "{key} is null in {body}");
    }
}

#[tokio::test]
async fn precheck_and_link_use_the_same_rules_as_the_connector() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["B2B-1,USRT,person,true,buyer@contoso.com,B,Uyer"]));
    let claims = json!({"email": "buyer@contoso.com", "identityProvider": "local", "clientId": B2B_CLIENT, "uiLocales": "en"});
    let (status, body) = app.rest_precheck(&claims).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["autoLinkOutcome"], "WouldLink");
    assert_no_nulls(&body);

    let mut claims = claims;
    claims["objectId"] = json!("oid-rest");
    let (status, body) = app.rest_link(&claims).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"customerAccountNumber": "B2B-1", "autoLinkOutcome": "Linked"})
    );

    // The same call again (a B2C retry) changes nothing.
    let (status, body) = post(&app, "/b2c/rest/link", &claims).await;
    assert_eq!(status, 200);
    assert_eq!(body["customerAccountNumber"], "B2B-1");
    assert_eq!(body["autoLinkOutcome"], "AlreadyLinked");
    assert_eq!(app.active_links(), 1);

    // The connector keys the identity the same way: (tenant issuer, objectId).
    let (_, body) = app
        .connector(&token_step(
            "buyer@contoso.com",
            "oid-rest",
            local_identity(),
            B2B_CLIENT,
        ))
        .await;
    assert_eq!(body["extension_AutoLinkOutcome"], "AlreadyLinked");
}

#[tokio::test]
async fn precheck_for_a_new_consumer_says_would_create_without_an_account_number() {
    let app = spawn_app().await;
    let (status, body) = post(
        &app,
        "/b2c/rest/precheck",
        &json!({"email": "new@example.com", "clientId": B2C_CLIENT}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"autoLinkOutcome": "WouldCreate"}));
    assert_eq!(app.customer_count(), 0);
}

#[tokio::test]
async fn refusals_are_409_with_the_commerce_code() {
    let app = spawn_app().await;
    let (status, body) = post(
        &app,
        "/b2c/rest/precheck",
        &json!({"email": "nobody@contoso.com", "clientId": B2B_CLIENT, "uiLocales": "es-ES"}),
    )
    .await;
    assert_conflict(status, &body, "Microsoft_Dynamics_CommerceIdentityNotFound");
    assert!(
        body["userMessage"]
            .as_str()
            .unwrap()
            .contains("cuenta de empresa"),
        "{body}"
    );
    assert!(body["developerMessage"]
        .as_str()
        .unwrap()
        .contains("CommerceIdentityNotFound"));
}

#[tokio::test]
async fn the_policys_email_verified_flag_decides_for_social_providers() {
    let app = spawn_app().await;
    let unverified = json!({"email": "fb@example.com", "identityProvider": "facebook.com", "emailVerified": false, "clientId": B2C_CLIENT, "objectId": "oid-fb"});
    let (status, body) = post(&app, "/b2c/rest/link", &unverified).await;
    assert_conflict(status, &body, "EmailNotVerified");
    // Without a flag an untrusted provider is unverified.
    let mut no_flag = unverified.clone();
    no_flag.as_object_mut().unwrap().remove("emailVerified");
    let (status, body) = post(&app, "/b2c/rest/precheck", &no_flag).await;
    assert_conflict(status, &body, "EmailNotVerified");
    // An explicit false wins even for a trusted provider.
    let google_false = json!({"email": "g@example.com", "identityProvider": "google.com", "emailVerified": "false", "clientId": B2C_CLIENT});
    let (status, body) = post(&app, "/b2c/rest/precheck", &google_false).await;
    assert_conflict(status, &body, "EmailNotVerified");
    // The provider says it verified the address (string form, as some policies send it).
    let mut verified = unverified.clone();
    verified["emailVerified"] = json!("true");
    let (status, body) = post(&app, "/b2c/rest/link", &verified).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["autoLinkOutcome"], "Created");
}

#[tokio::test]
async fn bad_rest_input_gets_a_409_and_never_a_500() {
    let app = spawn_app().await;
    let url = format!("{}/b2c/rest/link", app.address);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{not json".to_vec()),
        ("text/plain", b"{}".to_vec()),
        (
            "application/json",
            serde_json::to_vec(&json!({"email": 42})).unwrap(),
        ),
        (
            "application/json",
            serde_json::to_vec(&json!({"email": "a@example.com", "emailVerified": "perhaps"}))
                .unwrap(),
        ),
        (
            "application/json",
            serde_json::to_vec(&json!({"padding": "x".repeat(70_000)})).unwrap(),
        ),
    ];
    for (content_type, body) in cases {
        let response = app
            .client
            .post(&url)
            .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_conflict(status, &body, "InvalidRequest");
    }
    let (status, body) = post(
        &app,
        "/b2c/rest/link",
        &json!({"email": "a@example.com", "clientId": B2C_CLIENT}),
    )
    .await;
    assert_conflict(status, &body, "ObjectIdMissing");
    let (status, body) = post(
        &app,
        "/b2c/rest/precheck",
        &json!({"email": "not-an-email", "clientId": B2C_CLIENT}),
    )
    .await;
    assert_conflict(status, &body, "InvalidEmail");
    // Credentials are checked first.
    let response = app.client.post(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn an_api_key_header_authenticates_and_a_wrong_key_is_refused() {
    let app = spawn_app_with(|s| {
        s.auth.basic = None;
        s.auth.api_key = Some(autolink::config::ApiKeySettings {
            header: "x-functions-key".into(),
            key_hashes: vec![password_hash().to_string()],
            keys: vec!["second-key-during-rotation".into()],
        });
    })
    .await;
    let url = format!("{}/b2c/rest/precheck", app.address);
    let body = json!({"email": "k@example.com", "clientId": B2C_CLIENT});
    for key in [CONNECTOR_PASSWORD, "second-key-during-rotation"] {
        let response = app
            .client
            .post(&url)
            .header("x-functions-key", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "key {key:?}");
    }
    for (header, value) in [
        ("x-functions-key", "wrong"),
        ("x-other-key", CONNECTOR_PASSWORD),
    ] {
        let response = app
            .client
            .post(&url)
            .header(header, value)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"], "unauthorized");
    }
    // Basic is not configured on this deployment: the connector's password is refused as Basic.
    let response = app
        .client
        .post(&url)
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["message"].as_str().unwrap().contains("Basic"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_deployment_can_replace_refusal_messages_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("messages.toml");
    std::fs::write(
        &file,
        "[en]\nMicrosoft_Dynamics_CommerceIdentityNotFound = \"Ask your company's buyer admin for access.\"\n[nl]\nMicrosoft_Dynamics_CommerceIdentityNotFound = \"Vraag toegang aan uw inkoopbeheerder.\"\n",
    )
    .unwrap();
    let app = spawn_app_with(|s| s.messages.file = Some(file.clone())).await;
    let (status, body) = app
        .connector(&attribute_collection("nobody@contoso.com", B2B_CLIENT))
        .await;
    assert_validation_error(status, &body, "Microsoft_Dynamics_CommerceIdentityNotFound");
    assert_eq!(
        body["userMessage"],
        "Ask your company's buyer admin for access."
    );
    let mut request = attribute_collection("nobody@contoso.com", B2B_CLIENT);
    request["ui_locales"] = json!("nl-NL");
    let (_, body) = app.connector(&request).await;
    assert_eq!(body["userMessage"], "Vraag toegang aan uw inkoopbeheerder.");
}
