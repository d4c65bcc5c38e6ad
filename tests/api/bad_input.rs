//! What bad input gets: always a well-formed B2C answer or a 401, never a 500.

use serde_json::json;

use crate::helpers::*;

async fn post_raw(
    app: &TestApp,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut request = app
        .client
        .post(format!("{}/b2c/api-connector", app.address))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")),
    )
}

#[tokio::test]
async fn malformed_json_gets_a_block_page() {
    let app = spawn_app().await;
    for body in [
        &b"{\"email\": "[..],
        b"not json",
        b"",
        b"[1,2,3]",
        b"{\"email\": 5, \"step\": \"PostAttributeCollection\"}",
    ] {
        let (status, answer) = post_raw(&app, Some("application/json"), body.to_vec()).await;
        assert_block(status, &answer, "InvalidRequest");
    }
}

#[tokio::test]
async fn a_wrong_content_type_gets_a_block_page() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&attribute_collection("a@example.com", B2C_CLIENT)).unwrap();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let (status, answer) = post_raw(&app, content_type, body.clone()).await;
        assert_block(status, &answer, "InvalidRequest");
    }
    // A charset parameter is fine.
    let (status, answer) = post_raw(&app, Some("application/json; charset=utf-8"), body).await;
    assert_continue(status, &answer);
}

#[tokio::test]
async fn an_oversized_body_gets_a_block_page() {
    let app = spawn_app().await;
    let mut request = attribute_collection("a@example.com", B2C_CLIENT);
    request["padding"] = json!("x".repeat(70 * 1024));
    let (status, answer) = post_raw(
        &app,
        Some("application/json"),
        serde_json::to_vec(&request).unwrap(),
    )
    .await;
    assert_block(status, &answer, "InvalidRequest");
    // Just under the default 64 KiB limit is accepted.
    request["padding"] = json!("x".repeat(60 * 1024));
    let (status, answer) = post_raw(
        &app,
        Some("application/json"),
        serde_json::to_vec(&request).unwrap(),
    )
    .await;
    assert_continue(status, &answer);
}

#[tokio::test]
async fn a_missing_or_unknown_step_gets_a_block_page() {
    let app = spawn_app().await;
    let mut request = attribute_collection("a@example.com", B2C_CLIENT);
    request.as_object_mut().unwrap().remove("step");
    let (status, answer) = app.connector(&request).await;
    assert_block(status, &answer, "InvalidRequest");
    request["step"] = json!("PreSignIn");
    let (status, answer) = app.connector(&request).await;
    assert_block(status, &answer, "InvalidRequest");
    assert_eq!(app.customer_count(), 0);
}

#[tokio::test]
async fn an_address_that_is_not_an_email_is_a_validation_error_on_the_form() {
    let app = spawn_app().await;
    let (status, answer) = app
        .connector(&attribute_collection("not-an-email", B2C_CLIENT))
        .await;
    assert_validation_error(status, &answer, "InvalidEmail");
    let mut missing = attribute_collection("x", B2C_CLIENT);
    missing.as_object_mut().unwrap().remove("email");
    let (status, answer) = app.connector(&missing).await;
    assert_validation_error(status, &answer, "EmailMissing");
    // PostFederationSignup has no validation error: it blocks.
    let (status, answer) = app
        .connector(&federation_signup(
            "a b@example.com",
            "google.com",
            B2C_CLIENT,
        ))
        .await;
    assert_block(status, &answer, "InvalidEmail");
    // The token step continues with the code.
    let (status, answer) = app
        .connector(&token_step("john@", "oid-x", local_identity(), B2C_CLIENT))
        .await;
    assert_continue(status, &answer);
    assert_eq!(answer["extension_AutoLinkError"], "InvalidEmail");
    assert_eq!(app.customer_count(), 0);
}

#[tokio::test]
async fn missing_or_wrong_credentials_get_401_before_the_body_is_read() {
    let app = spawn_app().await;
    let url = format!("{}/b2c/api-connector", app.address);
    type Case<'a> = (Option<(&'a str, &'a str)>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (None, None),
        (Some((CONNECTOR_USER, "wrong")), None),
        (Some(("someone-else", CONNECTOR_PASSWORD)), None),
        (None, Some("Bearer abc")),
        (None, Some("Basic !!!not-base64")),
    ];
    for (basic, raw) in cases {
        // A body that would be refused if it were parsed: the 401 comes first.
        let mut request = app
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body("{oops");
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(raw) = raw {
            request = request.header("authorization", raw);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert!(response.headers().contains_key("www-authenticate"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(body["message"].as_str().is_some());
    }
}

#[tokio::test]
async fn only_health_endpoints_answer_without_credentials() {
    let app = spawn_app().await;
    assert_eq!(
        app.client
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(format!("{}/readyz", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = app
        .client
        .get(format!("{}/b2c/api-connector", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .client
        .get(format!("{}/nothing-here", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(format!("{}/b2c/api-connector", app.address))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(&attribute_collection("a@example.com", B2C_CLIENT))
        .send()
        .await
        .unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32);
}
