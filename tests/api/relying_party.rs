//! Bearer access tokens on the B2C endpoints, and the relying-party call `POST /v1/link`, over
//! HTTP against the mock OpenID issuer (whose issuer differs from its discovery URL, as B2C's).

use serde_json::{json, Value};

use crate::helpers::*;
use crate::mock_issuer::*;

fn with_bearer(issuer: &MockIssuer) -> impl FnOnce(&mut autolink::config::Settings) {
    let discovery_url = issuer.entra_discovery_url();
    move |s| {
        s.auth.bearer = Some(autolink::config::BearerSettings {
            discovery_url,
            audiences: vec![API_AUDIENCE.into()],
            required_roles: vec![CONNECTOR_ROLE.into()],
            allowed_client_ids: vec![],
        });
    }
}

async fn precheck_with(app: &TestApp, authorization: &str) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/b2c/rest/precheck", app.address))
        .header("authorization", authorization)
        .json(&json!({"email": "b@example.com", "clientId": B2C_CLIENT}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn an_entra_access_token_authenticates_b2c_beside_basic() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(with_bearer(&issuer)).await;
    let token = issuer.access_token().signed_by(key(1));
    let (status, body) = precheck_with(&app, &format!("Bearer {token}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["autoLinkOutcome"], "WouldCreate");
    // Basic still works on the same deployment.
    let (status, _) = app
        .connector(&attribute_collection("b@example.com", B2C_CLIENT))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn bad_bearer_tokens_get_401_with_a_reason() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(with_bearer(&issuer)).await;
    let valid = issuer.access_token();
    let cases: Vec<(&str, String)> = vec![
        ("signed by another key", valid.clone().signed_by(key(3))),
        ("alg none", valid.unsigned("none")),
        ("an ID token", issuer.entra_id_token().signed_by(key(1))),
        ("expired", valid.clone().expires_in(-600).signed_by(key(1))),
        (
            "not yet valid",
            valid.clone().not_before_in(600).signed_by(key(1)),
        ),
        (
            "wrong audience",
            valid
                .clone()
                .claim("aud", "api://someone-else")
                .signed_by(key(1)),
        ),
        (
            "wrong issuer",
            valid
                .clone()
                .claim("iss", "https://evil.example/v2.0/")
                .signed_by(key(1)),
        ),
        (
            "missing role",
            valid
                .clone()
                .claim("roles", json!(["Other.Role"]))
                .signed_by(key(1)),
        ),
        (
            "tampered",
            tamper_payload(&valid.clone().signed_by(key(1)), |c| {
                c.insert("roles".into(), json!([CONNECTOR_ROLE, "Admin"]));
            }),
        ),
    ];
    for (case, token) in cases {
        let (status, body) = precheck_with(&app, &format!("Bearer {token}")).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["error"], "unauthorized", "{case}");
        let message = body["message"].as_str().unwrap();
        assert!(
            !message.is_empty() && !message.contains(&token),
            "{case}: {message}"
        );
    }
    for (secret_kind, secret) in key(1).public_key_secrets() {
        let (status, _) = precheck_with(&app, &format!("Bearer {}", valid.hs256(&secret))).await;
        assert_eq!(
            status, 401,
            "HS256 with the public key ({secret_kind}) as secret"
        );
    }
    let (status, _) = precheck_with(&app, "Bearer").await;
    assert_eq!(status, 401);
}

pub(crate) fn with_relying_party(
    issuer: &MockIssuer,
) -> impl FnOnce(&mut autolink::config::Settings) {
    let url = issuer.b2c_discovery_url(B2C_POLICY);
    let tenant_issuer = issuer.b2c_issuer();
    move |s| {
        s.tenant_issuer = tenant_issuer;
        s.relying_party = Some(autolink::config::RelyingPartySettings {
            metadata_urls: vec![url],
        });
    }
}

async fn v1_link(app: &TestApp, token: Option<&str>, language: Option<&str>) -> (u16, Value) {
    let mut request = app.client.post(format!("{}/v1/link", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(language) = language {
        request = request.header("accept-language", language);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn v1_link_links_the_signed_in_user_from_the_id_token() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(with_relying_party(&issuer)).await;
    app.import_csv(&csv(&[&format!(
        "POS-1,USRT,person,false,{ALICE_EMAIL},Alice,Smith"
    )]));
    let token = issuer
        .b2c_id_token(B2C_POLICY, B2C_CLIENT)
        .signed_by(key(1));
    let (status, body) = v1_link(&app, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["customerAccountNumber"], "POS-1");
    assert_eq!(body["outcome"], "Linked");
    let (status, body) = v1_link(&app, Some(&token), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["outcome"], "AlreadyLinked");
    // The connector names the same identity by objectId under the tenant issuer.
    let (_, body) = app
        .connector(&token_step(
            ALICE_EMAIL,
            ALICE_OID,
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_eq!(body["extension_AutoLinkOutcome"], "AlreadyLinked");
    assert_eq!(app.active_links(), 1);
}

#[tokio::test]
async fn v1_link_reads_email_from_the_custom_policy_claim_and_refuses_unverified_providers() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(with_relying_party(&issuer)).await;
    let token = issuer
        .b2c_id_token(B2C_POLICY, B2C_CLIENT)
        .without("emails")
        .claim("email", "carol@example.com")
        .claim("idp", "facebook.com")
        .signed_by(key(1));
    let (status, body) = v1_link(&app, Some(&token), Some("de-DE,de;q=0.9")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "EmailNotVerified");
    assert!(
        body["message"].as_str().unwrap().contains("E-Mail"),
        "{body}"
    );
    let token = issuer
        .b2c_id_token(B2C_POLICY, B2C_CLIENT)
        .without("emails")
        .claim("email", "carol@example.com")
        .claim("idp", "google.com")
        .signed_by(key(1));
    let (status, body) = v1_link(&app, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "Created");
}

#[tokio::test]
async fn v1_link_refusals_carry_the_commerce_error_with_a_4xx_status() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(with_relying_party(&issuer)).await;
    let token = issuer
        .b2c_id_token(B2C_POLICY, B2B_CLIENT)
        .signed_by(key(1));
    let (status, body) = v1_link(&app, Some(&token), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "Microsoft_Dynamics_CommerceIdentityNotFound");
    assert_eq!(body["error"], "CommerceIdentityNotFound");
    app.import_csv(&csv(&[
        &format!("B2B-1,USRT,person,true,{ALICE_EMAIL},A,One"),
        &format!("B2B-2,USRT,person,true,{ALICE_EMAIL},A,Two"),
    ]));
    let (status, body) = v1_link(&app, Some(&token), None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body["error"],
        "CustomerServiceMultipleCustomerAccountsFoundErrorOccurredWhenAutoLinking"
    );
}

#[tokio::test]
async fn v1_link_refuses_bad_tokens_with_401() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(with_relying_party(&issuer)).await;
    let valid = issuer.b2c_id_token(B2C_POLICY, B2C_CLIENT);
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("another key", Some(valid.clone().signed_by(key(3)))),
        (
            "unknown audience",
            Some(
                issuer
                    .b2c_id_token(B2C_POLICY, "00000000-0000-0000-0000-000000000000")
                    .signed_by(key(1)),
            ),
        ),
        (
            "other policy",
            Some(
                issuer
                    .b2c_id_token(B2C_OTHER_POLICY, B2C_CLIENT)
                    .signed_by(key(1)),
            ),
        ),
        (
            "expired",
            Some(valid.clone().expires_in(-600).signed_by(key(1))),
        ),
        ("alg none", Some(valid.unsigned("none"))),
    ];
    for (case, token) in cases {
        let (status, body) = v1_link(&app, token.as_deref(), None).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["error"], "unauthorized", "{case}");
    }
    assert_eq!(app.active_links(), 0);
}

#[tokio::test]
async fn v1_link_is_off_unless_configured() {
    let app = spawn_app().await;
    let (status, body) = app.v1_link(Some("x.y.z")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_configured");
}

#[tokio::test]
async fn v1_link_accepts_a_token_of_a_rotated_key_at_once() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(with_relying_party(&issuer)).await;
    let token = issuer
        .b2c_id_token(B2C_POLICY, B2C_CLIENT)
        .signed_by(key(1));
    let (status, body) = v1_link(&app, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    let fetches = issuer.key_fetches();

    // B2C rotates its signing key within seconds of the keys being fetched: the first token
    // naming the new key causes one refetch, not a wait for the refetch interval.
    issuer.publish_keys(&[key(2)]);
    let token = issuer
        .b2c_id_token(B2C_POLICY, B2C_CLIENT)
        .signed_by(key(2));
    let (status, body) = v1_link(&app, Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(issuer.key_fetches(), fetches + 1);
}

#[tokio::test]
async fn v1_link_refuses_an_access_token_by_its_typ_and_links_nothing() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(with_relying_party(&issuer)).await;
    for typ in ["at+jwt", "application/at+jwt", "JWS", "id+jwt", ""] {
        let token = issuer
            .b2c_id_token(B2C_POLICY, B2C_CLIENT)
            .header("typ", typ)
            .signed_by(key(1));
        let (status, body) = v1_link(&app, Some(&token), None).await;
        assert_eq!(status, 401, "typ {typ:?}: {body}");
        assert_eq!(body["error"], "unauthorized", "{body}");
    }
    assert_eq!(app.active_links(), 0);
    assert_eq!(app.customer_count(), 0);
    // `JWT` in any case, and no typ at all, are ID tokens as B2C issues them.
    for typ in [Some("JWT"), Some("jwt"), None] {
        let mut token = issuer.b2c_id_token(B2C_POLICY, B2C_CLIENT);
        token = match typ {
            Some(typ) => token.header("typ", typ),
            None => {
                token.header.remove("typ");
                token
            }
        };
        let (status, body) = v1_link(&app, Some(&token.signed_by(key(1))), None).await;
        assert_eq!(status, 200, "typ {typ:?}: {body}");
    }
}

#[tokio::test]
async fn a_bearer_token_whose_roles_claim_is_a_string_is_refused() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(with_bearer(&issuer)).await;
    let token = issuer
        .access_token()
        .claim("roles", CONNECTOR_ROLE)
        .signed_by(key(1));
    let (status, body) = precheck_with(&app, &format!("Bearer {token}")).await;
    assert_eq!(status, 401, "{body}");
    let token = issuer
        .access_token()
        .claim("roles", json!([CONNECTOR_ROLE]))
        .signed_by(key(1));
    let (status, body) = precheck_with(&app, &format!("Bearer {token}")).await;
    assert_eq!(status, 200, "{body}");
}
