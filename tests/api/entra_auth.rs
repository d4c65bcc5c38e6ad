//! Entra External ID: who may call `/entra/*`. Every token defect is 401 and links nothing; a v1
//! token (`appid`, sts.windows.net issuer) is accepted; the body's `data.tenantId` must be the
//! token's `tid`.

use serde_json::json;

use crate::entra_support::*;
use crate::helpers::*;
use crate::mock_issuer::{key, tamper_payload};

const EMAIL: &str = "casey@example.com";
const USER: &str = "90847c2a-e29d-4d2f-9f54-c5b4d3f26471";

/// A server where customer C-1 has `EMAIL` and a verified submit of `correlation` is
/// remembered: a token issuance with a valid token links.
async fn ready_to_link() -> (EntraApp, String) {
    let entra = spawn_entra(|_, _| {}).await;
    entra.app.import_csv(&csv(&[
        "C-1,USRT,person,false,casey@example.com,Casey,Jensen",
    ]));
    let correlation = correlation();
    let answer = entra
        .submit(&submit_body(&correlation, local_sign_up(EMAIL), "en-us"))
        .await;
    assert_continues(&answer);
    (entra, correlation)
}

fn assert_unauthorized(answer: &Answer, row: &str) {
    assert_eq!(answer.status, 401, "{row}: {}", answer.body);
    assert_eq!(
        answer.body["error"], "unauthorized",
        "{row}: {}",
        answer.body
    );
}

#[tokio::test]
async fn every_token_defect_is_refused_with_401_and_links_nothing() {
    let (entra, correlation) = ready_to_link().await;
    let issuer = &entra.issuer;
    let body = token_body(&correlation, USER, EMAIL, B2C_CLIENT);
    let valid = || entra_token(issuer);
    let rows: Vec<(&str, String)> = vec![
        (
            "wrong azp",
            valid()
                .claim("azp", "4b9c6f0e-2f4c-4d1e-8b1a-3c2d1e0f9a8b")
                .signed_by(key(1)),
        ),
        (
            "no azp on a v2 token (appid instead)",
            valid()
                .without("azp")
                .claim("appid", EVENTS_APP)
                .signed_by(key(1)),
        ),
        (
            "wrong aud",
            valid()
                .claim("aud", "6e2f0a4b-0000-4000-8000-000000000001")
                .signed_by(key(1)),
        ),
        (
            "wrong tid",
            valid()
                .claim("tid", "11111111-2222-3333-4444-555555555555")
                .signed_by(key(1)),
        ),
        ("no tid", valid().without("tid").signed_by(key(1))),
        (
            "wrong iss",
            valid()
                .claim("iss", "https://evil.ciamlogin.com/evil/v2.0")
                .signed_by(key(1)),
        ),
        (
            "signature of another key",
            valid().kid(&key(1).kid).signed_by(key(2)),
        ),
        (
            "payload changed after signing",
            tamper_payload(&valid().signed_by(key(1)), |c| {
                c.insert("tid".into(), json!(TENANT.to_uppercase()));
                c.insert("aud".into(), json!(EXTENSION_URI));
            }),
        ),
        ("alg none", valid().unsigned("none")),
        (
            "alg HS256 keyed with the public key",
            valid().hs256(key(1).jwk().to_string().as_bytes()),
        ),
        (
            "expired beyond the skew",
            valid().expires_in(-90).signed_by(key(1)),
        ),
        (
            "not yet valid beyond the skew",
            valid().not_before_in(600).signed_by(key(1)),
        ),
        (
            "v1 token with a wrong appid",
            entra_v1_token()
                .claim("appid", "4b9c6f0e-2f4c-4d1e-8b1a-3c2d1e0f9a8b")
                .signed_by(key(1)),
        ),
        ("not a JWT", "not-a-token".into()),
    ];
    for (row, token) in &rows {
        let answer = entra.post(TOKEN, token, &body).await;
        assert_unauthorized(&answer, row);
        let answer = entra
            .post(
                SUBMIT,
                token,
                &submit_body(
                    &crate::entra_support::correlation(),
                    local_sign_up(EMAIL),
                    "en-us",
                ),
            )
            .await;
        assert_unauthorized(&answer, row);
    }
    // Without a token, or with Basic credentials.
    let answer = post_raw(&entra.app, TOKEN, None, body.to_string()).await;
    assert_unauthorized(&answer, "no token");
    let response = entra
        .app
        .client
        .post(format!("{}{TOKEN}", entra.app.address))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(entra.app.active_links(), 0);
    assert_eq!(entra.app.customer_count(), 1);

    // The same call with a valid token links: the refusals above were the token's.
    let claims = token_claims(&entra.token_issuance(&body).await).clone();
    assert_eq!(
        claims,
        json!({"customerAccountNumber": "C-1", "autoLinkOutcome": "Linked"})
    );
    assert_eq!(entra.app.active_links(), 1);
}

#[tokio::test]
async fn a_v1_token_with_appid_and_a_token_within_the_clock_skew_are_accepted() {
    let (entra, correlation) = ready_to_link().await;
    let body = token_body(&correlation, USER, EMAIL, B2C_CLIENT);
    let v1 = entra_v1_token().signed_by(key(1));
    let claims = token_claims(&entra.post(TOKEN, &v1, &body).await).clone();
    assert_eq!(claims["customerAccountNumber"], "C-1", "{claims}");
    let late = entra_token(&entra.issuer).expires_in(-30).signed_by(key(1));
    let claims = token_claims(&entra.post(TOKEN, &late, &body).await).clone();
    assert_eq!(claims["autoLinkOutcome"], "AlreadyLinked", "{claims}");
    // The application id URI is an accepted audience too.
    let uri = entra_token(&entra.issuer)
        .claim("aud", EXTENSION_URI)
        .signed_by(key(1));
    assert_eq!(entra.post(TOKEN, &uri, &body).await.status, 200);
}

#[tokio::test]
async fn an_unknown_key_is_refetched_once_then_refused_and_a_rotated_key_is_picked_up() {
    let (entra, correlation) = ready_to_link().await;
    let body = token_body(&correlation, USER, EMAIL, B2C_CLIENT);
    let fetched = entra.issuer.key_fetches();
    assert!(fetched >= 1);
    // Key 2 is not published: one refetch, then 401.
    let unknown = entra_token(&entra.issuer).signed_by(key(2));
    assert_unauthorized(&entra.post(TOKEN, &unknown, &body).await, "unknown kid");
    assert_eq!(entra.issuer.key_fetches(), fetched + 1);
    // Again at once: no second refetch (rate limited), still 401.
    assert_unauthorized(
        &entra.post(TOKEN, &unknown, &body).await,
        "unknown kid again",
    );
    assert_eq!(entra.issuer.key_fetches(), fetched + 1);
    assert_eq!(entra.app.active_links(), 0);

    // A tenant that rotated its keys: the first token of the new key is accepted after one
    // refetch (on a server that has not refetched for this key yet).
    let rotated = spawn_entra(|_, _| {}).await;
    rotated.app.import_csv(&csv(&[
        "C-1,USRT,person,false,casey@example.com,Casey,Jensen",
    ]));
    let correlation = crate::entra_support::correlation();
    assert_continues(
        &rotated
            .submit(&submit_body(&correlation, local_sign_up(EMAIL), "en-us"))
            .await,
    );
    rotated.issuer.publish_keys(&[key(1), key(2)]);
    let before = rotated.issuer.key_fetches();
    let token = entra_token(&rotated.issuer).signed_by(key(2));
    let answer = rotated
        .post(
            TOKEN,
            &token,
            &token_body(&correlation, USER, EMAIL, B2C_CLIENT),
        )
        .await;
    assert_eq!(token_claims(&answer)["autoLinkOutcome"], "Linked");
    assert_eq!(rotated.issuer.key_fetches(), before + 1);
}

#[tokio::test]
async fn a_body_of_another_tenant_is_refused_with_401_and_links_nothing() {
    let (entra, correlation) = ready_to_link().await;
    let mut body = token_body(&correlation, USER, EMAIL, B2C_CLIENT);
    body["data"]["tenantId"] = json!("11111111-2222-3333-4444-555555555555");
    assert_unauthorized(&entra.token_issuance(&body).await, "tenantId mismatch");
    let mut submit = submit_body(&correlation, local_sign_up(EMAIL), "en-us");
    submit["data"]["tenantId"] = json!("11111111-2222-3333-4444-555555555555");
    assert_unauthorized(&entra.submit(&submit).await, "tenantId mismatch at submit");
    assert_eq!(entra.app.active_links(), 0);
}

#[tokio::test]
async fn without_entra_settings_the_endpoints_are_not_served() {
    let app = spawn_app().await;
    let answer = post_raw(&app, SUBMIT, Some("x.y.z"), "{}".into()).await;
    assert_eq!(answer.status, 404, "{}", answer.body);
}
