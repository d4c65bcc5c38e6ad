//! The mock's External ID tenant on its own: discovery, keys, token endpoint, Graph, and the
//! extension calls as a receiver on a local port sees them (token, time limit and single retry,
//! payload variants, answers Entra refuses). The journeys against autolink's real endpoints are
//! in `mock_external_id_e2e.rs`.

use std::time::{Duration, Instant};

use autolink::mock_b2c::directory::User;
use autolink::mock_b2c::{AccountKind, MockB2c, Outcome};
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::B2C_CLIENT;
use crate::mock_external_id_support::*;
use crate::mock_setup::{jwt_payload, MOCK_TENANT_ID};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get_json(url: &str, bearer: Option<&str>) -> (u16, Value) {
    let mut request = http().get(url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Verifies an RS256 JWT against the JWK set at `jwks_url`; its claims.
async fn verify(jwks_url: &str, token: &str) -> Value {
    use rsa::signature::Verifier;
    let (_, jwks) = get_json(jwks_url, None).await;
    let b64 = |s: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap()
    };
    let header: Value = serde_json::from_slice(&b64(token.split('.').next().unwrap())).unwrap();
    assert_eq!(header["alg"], "RS256");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the token's key is published");
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&b64(jwk["n"].as_str().unwrap())),
        rsa::BigUint::from_bytes_be(&b64(jwk["e"].as_str().unwrap())),
    )
    .unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = rsa::pkcs1v15::Signature::try_from(b64(signature).as_slice()).unwrap();
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
        .verify(input.as_bytes(), &signature)
        .expect("the signature verifies with the published key");
    jwt_payload(token)
}

async fn graph_token(mock: &MockB2c, secret: &str, scope: &str) -> (u16, Value) {
    let response = http()
        .post(mock.external_id_token_url().unwrap())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", GRAPH_CLIENT_ID),
            ("client_secret", secret),
            ("scope", scope),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

#[tokio::test]
async fn external_id_discovery_names_the_ciamlogin_issuer_and_the_tenant_s_endpoints() {
    let mock = start_external_id_mock("http://127.0.0.1:9", |_| {}).await;
    let base = mock.base_url();
    let (status, doc) = get_json(&mock.external_id_discovery_url().unwrap(), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        doc["issuer"],
        format!("https://{EXT_TENANT_ID}.ciamlogin.com/{EXT_TENANT_ID}/v2.0")
    );
    assert_eq!(
        doc["jwks_uri"],
        format!("{base}/ciam/{EXT_TENANT_ID}/discovery/v2.0/keys")
    );
    assert_eq!(
        doc["token_endpoint"],
        format!("{base}/ciam/{EXT_TENANT_ID}/oauth2/v2.0/token")
    );
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{base}/ciam/{EXT_TENANT_ID}/oauth2/v2.0/authorize")
    );
    let (status, keys) = get_json(doc["jwks_uri"].as_str().unwrap(), None).await;
    assert_eq!(status, 200);
    assert_eq!(keys["keys"][0]["kty"], "RSA");
    // Another tenant id is not this tenant; the B2C tenant's Entra ID discovery is unchanged.
    let other = format!("{base}/ciam/{MOCK_TENANT_ID}/v2.0/.well-known/openid-configuration");
    assert_eq!(get_json(&other, None).await.0, 404);
    let b2c_entra = format!("{base}/{MOCK_TENANT_ID}/v2.0/.well-known/openid-configuration");
    let (status, doc) = get_json(&b2c_entra, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["issuer"], format!("{base}/{MOCK_TENANT_ID}/v2.0"));
}

#[tokio::test]
async fn graph_tokens_come_only_from_the_configured_client_with_the_graph_scope() {
    let mock = start_external_id_mock("http://127.0.0.1:9", |_| {}).await;
    let (status, body) = graph_token(&mock, GRAPH_CLIENT_SECRET, GRAPH_SCOPE).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    let jwks = format!(
        "{}/ciam/{EXT_TENANT_ID}/discovery/v2.0/keys",
        mock.base_url()
    );
    let claims = verify(&jwks, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["iss"], mock.external_id_issuer().unwrap());
    assert_eq!(claims["aud"], "https://graph.microsoft.com");
    assert_eq!(claims["tid"], EXT_TENANT_ID);
    assert_eq!(claims["appid"], GRAPH_CLIENT_ID);

    let (status, body) = graph_token(&mock, "wrong secret", GRAPH_SCOPE).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = graph_token(&mock, GRAPH_CLIENT_SECRET, "api://other/.default").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let response = http()
        .post(mock.external_id_token_url().unwrap())
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

fn directory_user(object_id: &str, tenant: Option<&str>, google: Option<&str>) -> User {
    User {
        object_id: object_id.into(),
        sign_in_email: google.is_none().then(|| "grace@example.com".into()),
        password_hash: None,
        provider: google.map(|_| "google.com".into()),
        provider_subject: google.map(str::to_string),
        email: "grace@example.com".into(),
        email_verified: None,
        given_name: Some("Grace".into()),
        surname: Some("Hopper".into()),
        external_tenant: tenant.map(str::to_string),
    }
}

#[tokio::test]
async fn graph_shows_the_tenant_s_users_only_to_its_own_bearer_tokens() {
    let mock = start_external_id_mock("http://127.0.0.1:9", |_| {}).await;
    let otp = "5d0c1f7e-93a4-4e62-8b1d-0f2e7c6a9b31";
    let google = "8e4a2b1c-6d3f-4a7e-9c05-1b2d3e4f5a6b";
    let b2c = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
    let directory = &mock.tenant().directory;
    directory
        .create(directory_user(otp, Some(EXT_TENANT_ID), None))
        .unwrap()
        .unwrap();
    directory
        .create(directory_user(
            google,
            Some(EXT_TENANT_ID),
            Some("109876543210"),
        ))
        .unwrap()
        .unwrap();
    directory
        .create(directory_user(b2c, None, None))
        .unwrap()
        .unwrap();
    let url = |id: &str| {
        format!(
            "{}/v1.0/users/{id}?$select=identities,mail",
            mock.graph_base_url()
        )
    };

    // No token, a token that is not Graph's (the extension token's audience), a forged one.
    let (status, body) = get_json(&url(otp), None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("InvalidAuthenticationToken"))
    );
    let (_, token) = graph_token(&mock, GRAPH_CLIENT_SECRET, GRAPH_SCOPE).await;
    let token = token["access_token"].as_str().unwrap().to_string();
    let mut forged = token.clone();
    forged.push('A');
    assert_eq!(get_json(&url(otp), Some(&forged)).await.0, 401);
    let (last, _) = token.rsplit_once('.').unwrap();
    let (header, _) = last.split_once('.').unwrap();
    let other_claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"aud": "https://graph.microsoft.com", "tid": EXT_TENANT_ID}).to_string());
    let swapped = format!(
        "{header}.{other_claims}.{}",
        token.rsplit_once('.').unwrap().1
    );
    assert_eq!(get_json(&url(otp), Some(&swapped)).await.0, 401);

    let (status, body) = get_json(&url(otp), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], otp);
    assert_eq!(body["mail"], "grace@example.com");
    assert_eq!(
        body["identities"],
        json!([
            {"signInType": "federated", "issuer": "mail", "issuerAssignedId": "grace@example.com"},
            {"signInType": "userPrincipalName", "issuer": EXT_DOMAIN,
             "issuerAssignedId": format!("{otp}@{EXT_DOMAIN}")}
        ])
    );
    assert!(
        body.get("givenName").is_none(),
        "only the selection: {body}"
    );
    let (status, body) = get_json(&url(google), Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["identities"],
        json!([{"signInType": "federated", "issuer": "google.com", "issuerAssignedId": "109876543210"}])
    );
    assert_eq!(body["mail"], "grace@example.com");
    // Unknown users, and the B2C tenant's users, are not in this tenant.
    for id in ["00000000-0000-0000-0000-000000000000", b2c] {
        let (status, body) = get_json(&url(id), Some(&token)).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "Request_ResourceNotFound");
    }
}

#[tokio::test]
async fn extension_calls_carry_an_entra_token_for_the_extension_s_app() {
    let receiver = Receiver::start().await;
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let result = mock
        .run(ext_journey(AccountKind::Local, "token@example.com"))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::Token, "{result:?}");
    let received = receiver.received();
    assert_eq!(
        received.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        [SUBMIT_PATH, TOKEN_PATH]
    );
    let jwks = format!(
        "{}/ciam/{EXT_TENANT_ID}/discovery/v2.0/keys",
        mock.base_url()
    );
    for call in received {
        let bearer = call
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "));
        let claims = verify(&jwks, bearer.expect("a bearer token")).await;
        assert_eq!(claims["iss"], mock.external_id_issuer().unwrap());
        assert_eq!(claims["tid"], EXT_TENANT_ID);
        assert_eq!(claims["aud"], EXTENSION_APP_ID);
        assert_eq!(claims["azp"], EVENTS_APP);
        assert_eq!(claims["ver"], "2.0");
        let now = chrono::Utc::now().timestamp();
        assert!(claims["exp"].as_i64().unwrap() > now);
        assert!(claims["nbf"].as_i64().unwrap() <= now);
        assert!(claims["oid"].is_string() && claims["sub"] == claims["oid"]);
        assert_eq!(call.body["data"]["tenantId"], EXT_TENANT_ID);
        assert_eq!(
            call.body["data"]["authenticationContext"]["clientServicePrincipal"]["appId"],
            B2C_CLIENT
        );
    }
}

#[tokio::test]
async fn a_late_extension_is_called_once_more_after_the_one_second_limit() {
    let receiver = Receiver::start().await;
    receiver.script(
        SUBMIT_PATH,
        vec![Reply::json(submit_continue()).late(Duration::from_millis(1500))],
    );
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let started = Instant::now();
    let result = mock
        .run(ext_journey(AccountKind::Local, "late@example.com"))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::Token, "{result:?}");
    let submits = receiver.received_on(SUBMIT_PATH);
    assert_eq!(submits.len(), 2, "one retry");
    assert_eq!(
        submits[0].body, submits[1].body,
        "the retry sends the same event"
    );
    // The mock's clock starts before the request reaches the receiver, so the gap the receiver
    // sees is somewhat under the limit; the journey as a whole waited the full limit once.
    let gap = submits[1].at - submits[0].at;
    assert!(
        gap >= Duration::from_millis(800) && gap < Duration::from_millis(1400),
        "the retry follows the 1 s limit: {gap:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1000) && elapsed < Duration::from_millis(1500 + 1000),
        "{elapsed:?}"
    );
    let attempts: Vec<_> = result
        .calls
        .iter()
        .filter(|c| c.name == "attributeCollectionSubmit")
        .collect();
    assert_eq!(attempts[0].attempt, 1);
    assert!(
        attempts[0].error.as_deref().unwrap().contains("1000 ms"),
        "{attempts:?}"
    );
    assert_eq!((attempts[1].attempt, attempts[1].status), (2, Some(200)));
}

#[tokio::test]
async fn an_extension_late_twice_fails_the_sign_up_with_1003005_and_creates_nobody() {
    let receiver = Receiver::start().await;
    let late = Reply::json(submit_continue()).late(Duration::from_millis(1300));
    receiver.script(SUBMIT_PATH, vec![late.clone(), late.clone(), late]);
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let result = mock
        .run(ext_journey(AccountKind::Local, "later@example.com"))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::Error);
    assert_eq!(result.extension_error.as_ref().unwrap().code, 1003005);
    assert!(!result.account_created && result.object_id.is_none());
    assert_eq!(
        receiver.received_on(SUBMIT_PATH).len(),
        2,
        "one retry, not two"
    );
    assert!(receiver.received_on(TOKEN_PATH).is_empty());
    assert!(mock.tenant().directory.all().is_empty());
}

#[tokio::test]
async fn without_retries_a_late_extension_is_called_once() {
    let receiver = Receiver::start().await;
    receiver.script(
        SUBMIT_PATH,
        vec![Reply::json(submit_continue()).late(Duration::from_millis(600))],
    );
    let mock = start_external_id_mock(&receiver.url, |m| {
        let ext = m.external_id.as_mut().unwrap();
        ext.retries = 0;
        ext.timeout_ms = 300;
    })
    .await;
    let result = mock
        .run(ext_journey(AccountKind::Local, "once@example.com"))
        .await
        .unwrap();
    assert_eq!(result.extension_error.as_ref().unwrap().code, 1003005);
    assert_eq!(receiver.received_on(SUBMIT_PATH).len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_tried_twice_then_fails_with_1003027() {
    let mock = start_external_id_mock(&closed_port_url(), |_| {}).await;
    let result = mock
        .run(ext_journey(AccountKind::Local, "nobody-home@example.com"))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::Error);
    assert_eq!(result.extension_error.as_ref().unwrap().code, 1003027);
    assert_eq!(result.calls.len(), 2);
    assert!(result.calls.iter().all(|c| c.status.is_none()));
}

#[tokio::test]
async fn answers_entra_does_not_accept_fail_the_sign_up_with_their_codes_without_a_retry() {
    let validation_400 = Reply {
        status: 400,
        ..Reply::json(submit_answer(json!({
            "@odata.type": "microsoft.graph.attributeCollectionSubmit.showValidationError",
            "message": "B2C-style", "attributeErrors": {"email": "no"}
        })))
    };
    let plain = Reply {
        content_type: "text/plain",
        ..Reply::json(submit_continue())
    };
    let two_actions = Reply::json(json!({"data": {
        "@odata.type": "microsoft.graph.onAttributeCollectionSubmitResponseData",
        "actions": [
            {"@odata.type": "microsoft.graph.attributeCollectionSubmit.continueWithDefaultBehavior"},
            {"@odata.type": "microsoft.graph.attributeCollectionSubmit.showBlockPage"}
        ]
    }}));
    let cases = [
        (validation_400, 1003002),
        (plain, 1003006),
        (two_actions, 1003010),
    ];
    for (i, (reply, code)) in cases.into_iter().enumerate() {
        let receiver = Receiver::start().await;
        receiver.script(SUBMIT_PATH, vec![reply]);
        let mock = start_external_id_mock(&receiver.url, |_| {}).await;
        let result = mock
            .run(ext_journey(
                AccountKind::Local,
                &format!("refused{i}@example.com"),
            ))
            .await
            .unwrap();
        assert_eq!(result.outcome, Outcome::Error, "{result:?}");
        assert_eq!(result.extension_error.as_ref().unwrap().code, code);
        assert_eq!(receiver.received().len(), 1, "an answer is not retried");
        assert!(mock.tenant().directory.all().is_empty());
    }
}
