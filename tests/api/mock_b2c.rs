//! The mock B2C itself: it calls the service with each authentication type B2C uses (the custom
//! policy's `AutolinkRestAuth.*.xml` variants, and the user-flow connector's settings), it reads
//! answers as strictly as B2C does (an answer B2C would refuse fails the journey), and its
//! OpenID provider behaves like B2C's (issuer form, registered redirect URIs, PKCE, single-use
//! codes).

use std::collections::BTreeMap;

use actix_web::{web, App, HttpResponse, HttpServer};
use autolink::config::{ApiKeySettings, BearerSettings, ClientCertificateSettings};
use autolink::mock_b2c::{
    AccountKind, Application, CallerAuth, EntraClient, JourneyKind, JourneyRequest, JourneyResult,
    MockB2c, MockSettings, Outcome,
};
use serde_json::{json, Value};

use crate::client_cert::{client, spawn_tls, Pki};
use crate::helpers::*;

/// The Test environment's `AutolinkApiScope` is `api://autolink-test/.default`.
const API_AUDIENCE: &str = "api://autolink-test";
const ENTRA_CLIENT: &str = "b2c-ief-caller";
const ENTRA_SECRET: &str = "entra-client-secret-for-tests";
const API_KEY: &str = "api-key-for-the-mock-tests-0123";
const REDIRECT: &str = "https://shop.example.com/signin-oidc";

fn settings(rest_auth: &str, policy_keys: &[(&str, String)]) -> MockSettings {
    let mut settings = mock_settings();
    if let Some(policy) = settings.custom_policy.as_mut() {
        policy.rest_auth = rest_auth.into();
        policy.policy_keys = policy_keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>();
    }
    settings.timeout_ms = Some(10_000);
    settings.applications = vec![Application {
        client_id: B2C_CLIENT.into(),
        redirect_uris: vec![REDIRECT.into()],
        client_secret: Some("app-secret".into()),
        name: None,
    }];
    settings.entra_clients = vec![EntraClient {
        client_id: ENTRA_CLIENT.into(),
        client_secret: ENTRA_SECRET.into(),
        roles: vec!["Connector.Call".into()],
    }];
    settings
}

fn basic_keys() -> Vec<(&'static str, String)> {
    vec![
        ("B2C_1A_AutolinkRestUsername", CONNECTOR_USER.to_string()),
        (
            "B2C_1A_AutolinkRestPassword",
            CONNECTOR_PASSWORD.to_string(),
        ),
    ]
}

fn sign_up(policy: &str, email: &str) -> JourneyRequest {
    JourneyRequest {
        policy: Some(policy.into()),
        client_id: B2C_CLIENT.into(),
        kind: JourneyKind::SignUp,
        account: AccountKind::Local,
        email: email.into(),
        password: None,
        provider: None,
        provider_subject: None,
        email_verified: None,
        complete_email_verification: true,
        given_name: Some("Ann".into()),
        surname: Some("Lee".into()),
        ui_locales: None,
        nonce: None,
        redirect_uri: None,
        state: None,
        single_sign_on: false,
        external_id: false,
        payload: None,
    }
}

/// Asserts a token with a new customer, and that every call to the service succeeded.
fn assert_created(result: &JourneyResult, what: &str) {
    assert_eq!(result.outcome, Outcome::Token, "{what}: {result:#?}");
    assert!(result.account_number().is_some(), "{what}: {result:#?}");
    assert_eq!(
        result.claims.as_ref().unwrap()["extension_AutoLinkOutcome"],
        "Created",
        "{what}"
    );
    assert!(
        result.calls.iter().all(|c| c.status == Some(200)),
        "{what}: {:#?}",
        result.calls
    );
}

#[tokio::test]
async fn the_custom_policy_with_basic_authentication_links_and_wrong_keys_fail_the_journey() {
    let app = spawn_app().await;
    let mock = MockB2c::start(settings("Basic", &basic_keys()))
        .await
        .unwrap();
    mock.set_service_url(&app.address);
    let result = mock
        .run(sign_up(CUSTOM_POLICY, "basic@example.com"))
        .await
        .unwrap();
    assert_created(&result, "Basic");
    assert_eq!(
        result
            .calls
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["REST-Autolink-Precheck-Local", "REST-Autolink-Link-Local"]
    );

    // The policy key holds a wrong password: the service answers 401, which B2C shows as its
    // error on the sign-up page; no account is created.
    let mut keys = basic_keys();
    keys[1].1 = "not the password".into();
    let wrong = MockB2c::start(settings("Basic", &keys)).await.unwrap();
    wrong.set_service_url(&app.address);
    let result = wrong
        .run(sign_up(CUSTOM_POLICY, "wrong@example.com"))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::Error, "{result:#?}");
    assert!(!result.account_created);
    assert_eq!(result.calls[0].status, Some(401));
}

#[tokio::test]
async fn the_custom_policy_with_an_api_key_header_links() {
    let app = spawn_app_with(|s| {
        s.auth.api_key = Some(ApiKeySettings {
            header: "x-functions-key".into(),
            key_hashes: Vec::new(),
            keys: vec![API_KEY.into()],
        });
    })
    .await;
    let mock = MockB2c::start(settings(
        "ApiKeyHeader",
        &[("B2C_1A_AutolinkApiKey", API_KEY.to_string())],
    ))
    .await
    .unwrap();
    mock.set_service_url(&app.address);
    let result = mock
        .run(sign_up(CUSTOM_POLICY, "apikey@example.com"))
        .await
        .unwrap();
    assert_created(&result, "ApiKeyHeader");
}

#[tokio::test]
async fn the_custom_policy_with_a_bearer_token_from_entra_id_links() {
    // The mock is also the Entra ID that issues B2C's access token (client credentials), so
    // the service must know the mock's address first.
    let mock = MockB2c::start(settings(
        "Bearer",
        &[
            ("B2C_1A_AutolinkClientId", ENTRA_CLIENT.to_string()),
            ("B2C_1A_AutolinkClientSecret", ENTRA_SECRET.to_string()),
        ],
    ))
    .await
    .unwrap();
    let discovery = mock.entra_discovery_url();
    let app = spawn_app_with(move |s| {
        s.auth.bearer = Some(BearerSettings {
            discovery_url: discovery,
            audiences: vec![API_AUDIENCE.into()],
            required_roles: vec!["Connector.Call".into()],
            allowed_client_ids: vec![ENTRA_CLIENT.into()],
        });
    })
    .await;
    mock.set_service_url(&app.address);
    let result = mock
        .run(sign_up(CUSTOM_POLICY, "bearer@example.com"))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::Token, "{result:#?}");
    assert_eq!(
        result.claims.as_ref().unwrap()["extension_AutoLinkOutcome"],
        "Created"
    );
    // Before each autolink call, Autolink-AcquireCredentials got a token from the token
    // endpoint (form-encoded, Basic client authentication): as the page's first validation
    // profile, and as the journey step before the link.
    let names: Vec<&str> = result.calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Autolink-AcquireCredentials",
            "REST-Autolink-Precheck-Local",
            "Autolink-AcquireCredentials",
            "REST-Autolink-Link-Local"
        ],
        "{:#?}",
        result.calls
    );
    assert_eq!(result.calls[0].request["grant_type"], "client_credentials");
    assert_eq!(
        result.calls[0].request["scope"],
        format!("{API_AUDIENCE}/.default")
    );
    assert!(result.calls.iter().all(|c| c.status == Some(200)));
}

#[tokio::test]
async fn both_modes_call_over_https_with_a_client_certificate() {
    let pki = Pki::new();
    let issued = client("b2c", Some(&pki.client_ca), 2020, 2090);
    let cert_file = pki.dir.path().join("b2c.pem");
    let key_file = pki.dir.path().join("b2c.key");
    std::fs::write(&cert_file, issued.cert.pem()).unwrap();
    std::fs::write(&key_file, issued.key.serialize_pem()).unwrap();
    let ca_file = pki.ca_file("client-ca.pem", &pki.client_ca);
    let server_ca = pki.ca_file("server-ca.pem", &pki.server_ca);
    let (_app, https) = spawn_tls(
        &pki,
        ClientCertificateSettings {
            ca_files: vec![ca_file],
            thumbprints: Vec::new(),
            trust_arr_header: false,
        },
    )
    .await;
    let pair = format!("{}|{}", cert_file.display(), key_file.display());
    let mut mock_settings = settings(
        "ClientCertificate",
        &[("B2C_1A_AutolinkClientCertificate", pair)],
    );
    mock_settings.connector_auth = CallerAuth::ClientCertificate {
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
    };
    mock_settings.service_ca_file = Some(server_ca);
    let mock = MockB2c::start(mock_settings).await.unwrap();
    mock.set_service_url(&https);
    for (policy, email) in [
        (CUSTOM_POLICY, "cert-policy@example.com"),
        (USER_FLOW, "cert-flow@example.com"),
    ] {
        let result = mock.run(sign_up(policy, email)).await.unwrap();
        assert_created(&result, policy);
        assert!(result.calls.iter().all(|c| c.url.starts_with("https://")));
    }
}

/// A stand-in for the service that answers every call with `status` and `body`.
async fn fake_service(status: u16, body: Value) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        let body = body.clone();
        App::new().default_service(web::to(move || {
            let body = body.clone();
            async move {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                    .json(body)
            }
        }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn answers_that_b2c_would_not_accept_fail_the_journey() {
    let mock = MockB2c::start(settings("Basic", &basic_keys()))
        .await
        .unwrap();
    // User flows: a continue without version, a block page at attribute collection without
    // userMessage, a validation error with HTTP 200, and a 500.
    for (status, body) in [
        (200, json!({"action": "Continue"})),
        (200, json!({"version": "1.0.0", "action": "ShowBlockPage"})),
        (
            200,
            json!({"version": "1.0.0", "status": 400, "action": "ValidationError", "userMessage": "x"}),
        ),
        (500, json!({"version": "1.0.0", "action": "Continue"})),
    ] {
        mock.set_service_url(&fake_service(status, body.clone()).await);
        let result = mock
            .run(sign_up(USER_FLOW, "strict@example.com"))
            .await
            .unwrap();
        assert_eq!(
            result.outcome,
            Outcome::Error,
            "{status} {body}: {result:#?}"
        );
        assert!(!result.account_created, "{status} {body}");
    }
    // Custom policy: a 409 without userMessage, a 400 without version, a 500, a null output
    // claim.
    for (status, body) in [
        (409, json!({"version": "1.0.0", "status": 409, "code": "X"})),
        (400, json!({"status": 400, "userMessage": "no"})),
        (
            500,
            json!({"version": "1.0.0", "status": 500, "userMessage": "no"}),
        ),
        (200, json!({"autoLinkOutcome": null})),
    ] {
        mock.set_service_url(&fake_service(status, body.clone()).await);
        let result = mock
            .run(sign_up(CUSTOM_POLICY, "strict@example.com"))
            .await
            .unwrap();
        assert_eq!(
            result.outcome,
            Outcome::Error,
            "{status} {body}: {result:#?}"
        );
        assert!(!result.account_created, "{status} {body}");
    }
    // And what B2C accepts passes: a valid 409, or 400 (the RESTful technical profile
    // reference names both), stays on the form; any version string will do.
    for (status, version) in [(409, "1.0.0"), (400, "1.0.1")] {
        mock.set_service_url(
            &fake_service(
                status,
                json!({"version": version, "status": status, "code": "X", "userMessage": "Not here."}),
            )
            .await,
        );
        let result = mock
            .run(sign_up(CUSTOM_POLICY, "strict@example.com"))
            .await
            .unwrap();
        assert_eq!(
            result.outcome,
            Outcome::ValidationError,
            "{status}: {result:#?}"
        );
        assert_eq!(result.message.as_deref(), Some("Not here."));
        assert_eq!(result.code.as_deref(), Some("X"));
    }
}

/// A user flow's token carries only the claims selected under its "Application claims": a
/// claim the connector returns that is not selected is dropped.
#[tokio::test]
async fn only_the_selected_application_claims_reach_a_user_flow_token() {
    let mut s = settings("Basic", &basic_keys());
    s.application_claims = vec!["extension_CustomerAccountNumber".into()];
    let mock = MockB2c::start(s).await.unwrap();
    mock.set_service_url(
        &fake_service(
            200,
            json!({"version": "1.0.0", "action": "Continue",
                   "extension_CustomerAccountNumber": "C-1", "extension_Other": "x",
                   "extension_AutoLinkOutcome": "Linked"}),
        )
        .await,
    );
    let result = mock
        .run(sign_up(USER_FLOW, "selected@example.com"))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::Token, "{result:#?}");
    let claims = result.claims.unwrap();
    assert_eq!(claims["extension_CustomerAccountNumber"], "C-1");
    assert!(claims.get("extension_Other").is_none(), "{claims:?}");
    assert!(
        claims.get("extension_AutoLinkOutcome").is_none(),
        "{claims:?}"
    );
}

#[tokio::test]
async fn an_unreachable_service_is_called_again_then_shows_an_error() {
    let mut s = settings("Basic", &basic_keys());
    s.timeout_ms = Some(500);
    let mock = MockB2c::start(s).await.unwrap();
    // Nothing listens on the discard port.
    mock.set_service_url("http://127.0.0.1:9");
    let flow = mock
        .run(sign_up(USER_FLOW, "down@example.com"))
        .await
        .unwrap();
    assert_eq!(flow.outcome, Outcome::Error);
    assert_eq!(
        flow.calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [1, 2],
        "user flows retry once"
    );
    let policy = mock
        .run(sign_up(CUSTOM_POLICY, "down@example.com"))
        .await
        .unwrap();
    assert_eq!(policy.outcome, Outcome::Error);
    assert_eq!(
        policy.calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
        [1, 2, 3],
        "custom policies retry twice"
    );
    assert!(!flow.account_created && !policy.account_created);
}

#[tokio::test]
async fn the_openid_provider_behaves_like_b2c() {
    let app = spawn_app().await;
    let mock = MockB2c::start(settings("Basic", &basic_keys()))
        .await
        .unwrap();
    mock.set_service_url(&app.address);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Discovery: the issuer is B2C's default form, not the discovery URL.
    let doc: Value = http
        .get(mock.discovery_url(USER_FLOW))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], mock.issuer());
    assert!(!mock
        .discovery_url(USER_FLOW)
        .starts_with(doc["issuer"].as_str().unwrap()));
    assert_eq!(
        http.get(mock.discovery_url("B2C_1_unknown"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // An unregistered redirect URI gets an error page, never a redirect.
    let response = http
        .get(mock.authorize_url(USER_FLOW))
        .query(&[
            ("client_id", B2C_CLIENT),
            ("redirect_uri", "https://attacker.example.com/cb"),
            ("response_type", "code"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    assert!(response.text().await.unwrap().contains("error-message"));

    // A code from a driver journey: redeemed once, with the client secret and redirect URI.
    let mut request = sign_up(USER_FLOW, "codes@example.com");
    request.redirect_uri = Some(REDIRECT.into());
    request.state = Some("s1".into());
    request.nonce = Some("n1".into());
    let result = mock.run(request).await.unwrap();
    let code = result.code_grant.clone().expect("a code");
    assert_eq!(
        result.redirect.as_deref(),
        Some(format!("{REDIRECT}?code={code}&state=s1").as_str())
    );
    let redeem = |secret: &'static str, code: String| {
        http.post(mock.token_url(USER_FLOW))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("client_id", B2C_CLIENT),
                ("client_secret", secret),
            ])
            .send()
    };
    assert_eq!(redeem("wrong", code.clone()).await.unwrap().status(), 401);
    // A failed attempt used the code up.
    assert_eq!(redeem("app-secret", code).await.unwrap().status(), 400);

    let mut request = sign_up(USER_FLOW, "codes2@example.com");
    request.redirect_uri = Some(REDIRECT.into());
    request.nonce = Some("n2".into());
    let result = mock.run(request).await.unwrap();
    let code = result.code_grant.clone().unwrap();
    let response = redeem("app-secret", code.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["id_token"], result.id_token.clone().unwrap());
    assert_eq!(tokens["token_type"], "Bearer");
    assert!(tokens["access_token"].is_string());
    assert_eq!(result.claims.as_ref().unwrap()["nonce"], "n2");
    assert_eq!(redeem("app-secret", code).await.unwrap().status(), 400);
}
