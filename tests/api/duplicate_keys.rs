//! A key given twice in one JSON object, at any depth, is refused by every endpoint that reads a
//! body, in that endpoint's format, and nothing is written.

use serde_json::{json, Value};

use crate::helpers::*;

/// Who sends a body.
#[derive(Clone, Copy)]
enum Caller {
    Connector,
    Admin,
}

/// Posts (or patches) a raw JSON text.
async fn send_raw(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    caller: Caller,
    body: &str,
) -> (u16, Value) {
    let request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .header("content-type", "application/json")
        .body(body.to_string());
    let request = match caller {
        Caller::Connector => request.basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD)),
        Caller::Admin => request.bearer_auth(ADMIN_TOKEN),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer is not JSON ({status}): {text}"));
    (status, value)
}

async fn post_raw(app: &TestApp, path: &str, caller: Caller, body: &str) -> (u16, Value) {
    send_raw(app, reqwest::Method::POST, path, caller, body).await
}

/// A JSON object text from members, in order, duplicates allowed.
fn object(members: &[(&str, String)]) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|(key, value)| format!("{}: {value}", json!(key)))
        .collect();
    format!("{{{}}}", members.join(", "))
}

fn text(value: &str) -> String {
    json!(value).to_string()
}

/// The connector's token step for a new email, with `extra` members added after the others.
fn token_step_with(email: &str, identities: &str, extra: &[(&str, String)]) -> String {
    let mut members = vec![
        ("email", text(email)),
        ("identities", identities.to_string()),
        ("objectId", text("3c0ff9a4-7a43-4a8e-9c1e-5a1b0cde0001")),
        ("step", text("PreTokenIssuance")),
        ("client_id", text(B2C_CLIENT)),
    ];
    members.extend(extra.iter().cloned());
    object(&members)
}

fn assert_rest_invalid_request(case: &str, status: u16, body: &Value) {
    assert_eq!(status, 409, "{case}: {body}");
    assert_eq!(body["status"], 409, "{case}: {body}");
    assert_eq!(body["code"], "InvalidRequest", "{case}: {body}");
    assert!(
        body["developerMessage"]
            .as_str()
            .is_some_and(|m| m.contains("more than once")),
        "{case}: {body}"
    );
}

#[tokio::test]
async fn the_b2c_endpoints_refuse_a_key_given_twice_at_any_depth_and_write_nothing() {
    let app = spawn_app().await;
    let social =
        r#"[{"signInType": "federated", "issuer": "facebook.com", "issuerAssignedId": "1"}]"#;

    // The user-flow connector, at the step that creates a customer.
    let connector_cases: Vec<(&str, String)> = vec![
        (
            "an unknown top-level key twice",
            token_step_with(
                "new@example.com",
                r#"[{"signInType": "emailAddress", "issuer": "t", "issuerAssignedId": "a"}]"#,
                &[("displayName", text("A")), ("displayName", text("B"))],
            ),
        ),
        (
            "a known top-level key twice",
            token_step_with(
                "new@example.com",
                r#"[{"signInType": "emailAddress"}]"#,
                &[("email", text("other@example.com"))],
            ),
        ),
        (
            "an unknown key twice in identities",
            token_step_with(
                "new@example.com",
                r#"[{"signInType": "emailAddress", "issuerAssignedId": "a", "issuerAssignedId": "b"}]"#,
                &[],
            ),
        ),
        (
            "a known key twice in identities",
            token_step_with(
                "new@example.com",
                r#"[{"signInType": "federated", "issuer": "facebook.com", "issuer": "google.com"}]"#,
                &[],
            ),
        ),
        (
            "a key twice in a custom attribute's object",
            token_step_with(
                "new@example.com",
                r#"[{"signInType": "emailAddress"}]"#,
                &[(
                    "extension_0123_Preferences",
                    r#"{"news": {"mail": false, "mail": true}}"#.to_string(),
                )],
            ),
        ),
    ];
    for (case, body) in &connector_cases {
        let (status, answer) = post_raw(&app, "/b2c/api-connector", Caller::Connector, body).await;
        assert_eq!(status, 200, "{case}: {answer}");
        assert_eq!(answer["action"], "ShowBlockPage", "{case}: {answer}");
        assert_eq!(answer["code"], "InvalidRequest", "{case}: {answer}");
        assert!(
            answer.get("extension_CustomerAccountNumber").is_none(),
            "{case}"
        );
    }

    // The custom-policy profiles. `emailVerified` false then true must not make a provider that
    // does not verify email count as verified.
    let claims = |extra: &[(&str, String)]| {
        let mut members = vec![
            ("email", text("eve@example.com")),
            ("emailVerified", "false".to_string()),
            ("identityProvider", text("facebook.com")),
            ("objectId", text("3c0ff9a4-7a43-4a8e-9c1e-5a1b0cde0002")),
            ("clientId", text(B2C_CLIENT)),
        ];
        members.extend(extra.iter().cloned());
        object(&members)
    };
    let rest_cases: Vec<(&str, String)> = vec![
        (
            "emailVerified false then true",
            claims(&[("emailVerified", "true".to_string())]),
        ),
        (
            "an unknown claim twice",
            claims(&[("tenant", text("a")), ("tenant", text("b"))]),
        ),
        (
            "a key twice in a nested object",
            claims(&[("extra", r#"{"a": [{"b": 1, "b": 2}]}"#.to_string())]),
        ),
        (
            "an identities claim with a key twice",
            claims(&[(
                "identities",
                r#"[{"signInType": "federated", "issuer": "x", "issuer": "google.com"}]"#
                    .to_string(),
            )]),
        ),
    ];
    for path in ["/b2c/rest/precheck", "/b2c/rest/link"] {
        for (case, body) in &rest_cases {
            let (status, answer) = post_raw(&app, path, Caller::Connector, body).await;
            assert_rest_invalid_request(&format!("{path}, {case}"), status, &answer);
        }
    }
    assert_eq!(app.customer_count(), 0, "nothing is created");
    assert_eq!(app.active_links(), 0, "nothing is linked");

    // The same bodies without the duplicate are served: the refusals above are the duplicate's.
    let (status, answer) = post_raw(
        &app,
        "/b2c/api-connector",
        Caller::Connector,
        &token_step_with("new@example.com", social, &[("displayName", text("A"))]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["action"], "Continue", "{answer}");
    assert_eq!(
        answer["extension_AutoLinkError"], "EmailNotVerified",
        "{answer}"
    );
    let (status, answer) = post_raw(
        &app,
        "/b2c/rest/link",
        Caller::Connector,
        &claims(&[("emailVerified2", "true".to_string())]),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["code"], "EmailNotVerified", "{answer}");
    let (status, answer) = post_raw(
        &app,
        "/b2c/rest/link",
        Caller::Connector,
        &object(&[
            ("email", text("eve@example.com")),
            ("emailVerified", "true".to_string()),
            ("identityProvider", text("facebook.com")),
            ("objectId", text("3c0ff9a4-7a43-4a8e-9c1e-5a1b0cde0002")),
            ("clientId", text(B2C_CLIENT)),
            ("extra", r#"{"a": [{"b": 1}, {"b": 2}]}"#.to_string()),
        ]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["autoLinkOutcome"], "Created", "{answer}");
}

#[tokio::test]
async fn the_admin_api_refuses_a_key_given_twice_naming_it_and_writes_nothing() {
    let app = spawn_app().await;
    let (link, prospect) = seed_customers_link_and_prospect(&app).await;

    let cases: Vec<(reqwest::Method, String, &str, &str)> = vec![
        (
            reqwest::Method::POST,
            "/admin/v1/customers".into(),
            r#"{"legalEntity": "USRT", "partyType": "person", "primaryEmail": "a@example.com", "primaryEmail": "carol@example.com"}"#,
            "primaryEmail",
        ),
        (
            reqwest::Method::POST,
            "/admin/v1/customers".into(),
            r#"{"legalEntity": {"code": "USRT", "code": "DEMF"}, "partyType": "person"}"#,
            "legalEntity.code",
        ),
        (
            reqwest::Method::PATCH,
            "/admin/v1/customers/C-2".into(),
            r#"{"primaryEmail": "carol@example.com", "primaryEmail": "c2@example.com"}"#,
            "primaryEmail",
        ),
        (
            reqwest::Method::POST,
            "/admin/v1/preview".into(),
            r#"{"channel": "fabrikam-web", "email": "a@example.com", "email": "carol@example.com"}"#,
            "email",
        ),
        (
            reqwest::Method::POST,
            "/admin/v1/prospects".into(),
            r#"{"email": "lee@example.com", "companyName": "Contoso", "legalEntity": "USRT", "companyName": "Other"}"#,
            "companyName",
        ),
        (
            reqwest::Method::POST,
            format!("/admin/v1/links/{link}/unlink"),
            r#"{"reason": "a", "reason": "b"}"#,
            "reason",
        ),
        (
            reqwest::Method::POST,
            format!("/admin/v1/links/{link}/move"),
            r#"{"accountNumber": "C-2", "reason": "merge", "accountNumber": "C-1"}"#,
            "accountNumber",
        ),
        (
            reqwest::Method::POST,
            format!("/admin/v1/prospects/{prospect}/approve"),
            r#"{"personAccountNumber": "P-1", "personAccountNumber": "P-2"}"#,
            "personAccountNumber",
        ),
        (
            reqwest::Method::POST,
            format!("/admin/v1/prospects/{prospect}/reject"),
            r#"{"reason": "no", "reason": "yes"}"#,
            "reason",
        ),
    ];
    for (method, path, body, field) in &cases {
        let case = format!("{method} {path} {body}");
        let (status, answer) = send_raw(&app, method.clone(), path, Caller::Admin, body).await;
        assert_eq!(status, 400, "{case}: {answer}");
        assert_eq!(answer["error"], "invalid_field", "{case}: {answer}");
        assert_eq!(answer["field"], *field, "{case}: {answer}");
        assert!(
            answer["message"]
                .as_str()
                .is_some_and(|m| m.contains("more than once")),
            "{case}: {answer}"
        );
    }

    // Nothing changed: the two customers with their emails, the one link, the pending prospect.
    assert_eq!(app.customer_count(), 2);
    assert_eq!(app.customers_with_email("carol@example.com").len(), 1);
    assert_eq!(app.customers_with_email("other@example.com").len(), 1);
    assert_eq!(app.links_of("C-1").len(), 1);
    assert_eq!(app.active_links(), 1);
    let (status, answer) = send_raw(
        &app,
        reqwest::Method::GET,
        &format!("/admin/v1/prospects/{prospect}"),
        Caller::Admin,
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "pending", "{answer}");
    assert_eq!(answer["companyName"], "Fabrikam", "{answer}");
}
