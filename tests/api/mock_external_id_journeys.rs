//! The External ID sign-up flow of the mock against a receiver: each payload variant as sent,
//! the submit actions, the new user, token issuance and the ID token, the code exchange.

use autolink::mock_b2c::{AccountKind, EmailAttribute, LocalIdentity, Outcome, PayloadVariant};
use serde_json::{json, Value};

use crate::helpers::B2C_CLIENT;
use crate::mock_external_id_support::*;
use crate::mock_setup::jwt_payload;

/// The submit event's `userSignUpInfo` of a journey with `variant`.
async fn sign_up_info(account: AccountKind, variant: PayloadVariant, email: &str) -> Value {
    let receiver = Receiver::start().await;
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let mut request = ext_journey(account, email);
    request.provider_subject = Some("109876543210".into());
    request.payload = Some(variant);
    let result = mock.run(request).await.unwrap();
    assert_eq!(result.outcome, Outcome::Token, "{result:?}");
    let submits = receiver.received_on(SUBMIT_PATH);
    assert_eq!(submits.len(), 1);
    let body = &submits[0].body;
    assert_eq!(
        body["type"],
        "microsoft.graph.authenticationEvent.attributeCollectionSubmit"
    );
    assert_eq!(
        body["data"]["@odata.type"],
        "microsoft.graph.onAttributeCollectionSubmitCalloutData"
    );
    assert!(
        body["data"].get("user").is_none()
            && body["data"]["authenticationContext"].get("user").is_none()
    );
    body["data"]["userSignUpInfo"].clone()
}

fn string_attribute(value: &str) -> Value {
    json!({"@odata.type": "microsoft.graph.stringDirectoryAttributeValue", "value": value, "attributeType": "builtIn"})
}

#[tokio::test]
async fn each_local_identity_variant_is_sent_as_microsoft_s_samples_show_it() {
    let cases = [
        (
            LocalIdentity::Email,
            json!({"signInType": "email", "issuer": EXT_DOMAIN, "issuerAssignedId": "v@example.com"}),
        ),
        (
            LocalIdentity::EmailAddress,
            json!({"signInType": "emailAddress", "issuer": EXT_DOMAIN, "issuerAssignedId": "v@example.com"}),
        ),
        (
            LocalIdentity::FederatedMail,
            json!({"signInType": "federated", "issuer": "mail", "issuerAssignedId": "v@example.com"}),
        ),
    ];
    for (local_identity, expected) in cases {
        let variant = PayloadVariant {
            local_identity,
            email_attribute: EmailAttribute::None,
            ..PayloadVariant::default()
        };
        let info = sign_up_info(AccountKind::Local, variant, "v@example.com").await;
        assert_eq!(info["identities"], json!([expected]), "{local_identity:?}");
        assert_eq!(
            info["attributes"],
            json!({"givenName": string_attribute("Ada"), "surname": string_attribute("Lovelace")}),
            "the reference form: no email attribute"
        );
    }
}

#[tokio::test]
async fn the_email_attribute_key_and_the_capital_t_type_key_are_sent_as_set() {
    let email = PayloadVariant::default();
    let info = sign_up_info(AccountKind::Local, email, "a@example.com").await;
    assert_eq!(
        info["attributes"]["email"],
        string_attribute("a@example.com")
    );
    assert!(info["attributes"].get("EmailAddress").is_none());

    let key = PayloadVariant {
        email_attribute: EmailAttribute::EmailAddress,
        ..PayloadVariant::default()
    };
    let info = sign_up_info(AccountKind::Local, key, "b@example.com").await;
    assert_eq!(
        info["attributes"]["EmailAddress"],
        string_attribute("b@example.com")
    );
    assert!(info["attributes"].get("email").is_none());

    let capital = PayloadVariant {
        capital_odata_type: true,
        ..PayloadVariant::default()
    };
    let info = sign_up_info(AccountKind::Local, capital, "c@example.com").await;
    for (name, attribute) in info["attributes"].as_object().unwrap() {
        assert_eq!(
            attribute["@odata.Type"], "microsoft.graph.stringDirectoryAttributeValue",
            "{name}"
        );
        assert!(attribute.get("@odata.type").is_none(), "{name}");
    }
}

#[tokio::test]
async fn the_woodgrove_form_has_no_identities_for_local_and_google_sign_ups() {
    let woodgrove = PayloadVariant {
        identities: false,
        ..PayloadVariant::default()
    };
    for account in [AccountKind::Local, AccountKind::Social] {
        let info = sign_up_info(account, woodgrove, "w@example.com").await;
        assert!(info.get("identities").is_none(), "{account:?}: {info}");
        assert_eq!(
            info["attributes"]["email"],
            string_attribute("w@example.com")
        );
    }
}

#[tokio::test]
async fn a_google_sign_up_sends_the_federated_identity_and_the_address_as_an_attribute() {
    let info = sign_up_info(
        AccountKind::Social,
        PayloadVariant::default(),
        "g@gmail.com",
    )
    .await;
    assert_eq!(
        info["identities"],
        json!([{"signInType": "federated", "issuer": "google.com", "issuerAssignedId": "109876543210"}])
    );
    assert_eq!(info["attributes"]["email"], string_attribute("g@gmail.com"));
}

#[tokio::test]
async fn token_issuance_shares_the_submit_correlation_id_only_when_set() {
    for shared in [true, false] {
        let receiver = Receiver::start().await;
        let mock = start_external_id_mock(&receiver.url, |_| {}).await;
        let mut request = ext_journey(AccountKind::Local, "corr@example.com");
        request.payload = Some(PayloadVariant {
            share_correlation_id: shared,
            ..PayloadVariant::default()
        });
        let result = mock.run(request).await.unwrap();
        assert_eq!(result.outcome, Outcome::Token);
        let id = |path: &str| {
            receiver.received_on(path)[0].body["data"]["authenticationContext"]["correlationId"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(id(SUBMIT_PATH) == id(TOKEN_PATH), shared);
    }
}

#[tokio::test]
async fn a_sign_up_creates_the_user_and_the_id_token_carries_the_mapped_claims_only() {
    let receiver = Receiver::start().await;
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let mut request = ext_journey(AccountKind::Local, "new@example.com");
    request.redirect_uri = Some(EXT_REDIRECT.into());
    request.nonce = Some("n-0S6".into());
    let result = mock.run(request).await.unwrap();
    assert_eq!(result.outcome, Outcome::Token, "{result:?}");
    assert!(result.account_created);
    let object_id = result.object_id.clone().unwrap();
    let user = mock.tenant().directory.by_object_id(&object_id).unwrap();
    assert_eq!(user.external_tenant.as_deref(), Some(EXT_TENANT_ID));
    assert_eq!(user.sign_in_email.as_deref(), Some("new@example.com"));

    let token_call = &receiver.received_on(TOKEN_PATH)[0].body;
    assert_eq!(
        token_call["type"],
        "microsoft.graph.authenticationEvent.tokenIssuanceStart"
    );
    let person = &token_call["data"]["authenticationContext"]["user"];
    assert_eq!(person["id"], object_id.as_str());
    assert_eq!(person["mail"], "new@example.com");

    let claims = jwt_payload(result.id_token.as_deref().unwrap());
    assert_eq!(claims["iss"], mock.external_id_issuer().unwrap());
    assert_eq!(claims["aud"], B2C_CLIENT);
    assert_eq!(claims["oid"], object_id.as_str());
    assert_eq!(claims["tid"], EXT_TENANT_ID);
    assert_eq!(claims["nonce"], "n-0S6");
    assert_ne!(claims["sub"], claims["oid"], "sub is pairwise");
    assert_eq!(claims["customerAccountNumber"], "C-RECEIVER");
    assert_eq!(claims["autoLinkOutcome"], "Linked");
    assert!(claims.get("unmapped").is_none(), "no mapping names it");

    // The store redeems the code at the tenant's token endpoint.
    let response = reqwest::Client::new()
        .post(mock.external_id_token_url().unwrap())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", result.code_grant.as_deref().unwrap()),
            ("client_id", B2C_CLIENT),
            ("redirect_uri", EXT_REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id_token"], result.id_token.unwrap());
}

#[tokio::test]
async fn an_auto_link_error_leaves_the_token_without_autolink_s_claims() {
    let receiver = Receiver::start().await;
    receiver.script(
        TOKEN_PATH,
        vec![Reply::json(token_claims(
            json!({"autoLinkError": "EmailNotVerified"}),
        ))],
    );
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let result = mock
        .run(ext_journey(AccountKind::Local, "unproven@example.com"))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::Token);
    assert_eq!(result.code.as_deref(), Some("EmailNotVerified"));
    let claims = result.claims.unwrap();
    for name in ["customerAccountNumber", "autoLinkOutcome", "autoLinkError"] {
        assert!(claims.get(name).is_none(), "{name} in {claims:?}");
    }
}

#[tokio::test]
async fn a_validation_error_keeps_the_person_on_the_form_and_creates_nobody() {
    let receiver = Receiver::start().await;
    receiver.script(
        SUBMIT_PATH,
        vec![Reply::json(submit_answer(json!({
            "@odata.type": "microsoft.graph.attributeCollectionSubmit.showValidationError",
            "message": "Please fix the below errors to proceed.",
            "attributeErrors": {"email": "We do not know this address."}
        })))],
    );
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let result = mock
        .run(ext_journey(AccountKind::Local, "typo@example.com"))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::ValidationError);
    assert_eq!(
        result.message.as_deref(),
        Some("Please fix the below errors to proceed.")
    );
    assert_eq!(
        result.attribute_errors.unwrap()["email"],
        "We do not know this address."
    );
    assert!(!result.account_created);
    assert!(receiver.received_on(TOKEN_PATH).is_empty());
    assert!(mock.tenant().directory.all().is_empty());
}

#[tokio::test]
async fn a_block_page_ends_the_sign_up_with_its_title_and_message() {
    let receiver = Receiver::start().await;
    receiver.script(
        SUBMIT_PATH,
        vec![Reply::json(submit_answer(json!({
            "@odata.type": "microsoft.graph.attributeCollectionSubmit.showBlockPage",
            "title": "Sign-up is not possible",
            "message": "Several customer accounts use this address."
        })))],
    );
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let result = mock
        .run(ext_journey(AccountKind::Social, "twice@gmail.com"))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::BlockPage);
    assert_eq!(result.title.as_deref(), Some("Sign-up is not possible"));
    assert_eq!(
        result.message.as_deref(),
        Some("Several customer accounts use this address.")
    );
    assert!(mock.tenant().directory.all().is_empty());
}

#[tokio::test]
async fn a_known_user_signs_in_with_token_issuance_only() {
    let receiver = Receiver::start().await;
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let first = mock
        .run(ext_journey(AccountKind::Social, "again@gmail.com"))
        .await
        .unwrap();
    let mut again = ext_journey(AccountKind::Social, "again@gmail.com");
    again.kind = autolink::mock_b2c::JourneyKind::SignIn;
    let second = mock.run(again).await.unwrap();
    assert_eq!(second.outcome, Outcome::Token, "{second:?}");
    assert!(!second.account_created);
    assert_eq!(second.object_id, first.object_id);
    assert_eq!(
        receiver.received_on(SUBMIT_PATH).len(),
        1,
        "no second submit"
    );
    assert_eq!(receiver.received_on(TOKEN_PATH).len(), 2);
}

#[tokio::test]
async fn the_driver_runs_external_id_journeys_over_http() {
    let receiver = Receiver::start().await;
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let response = reqwest::Client::new()
        .post(format!("{}/mock/journeys", mock.base_url()))
        .json(&json!({
            "external_id": true, "client_id": B2C_CLIENT, "kind": "sign_up",
            "account": "local", "email": "driver@example.com", "given_name": "Dee",
            "payload": {"local_identity": "federatedMail", "email_attribute": "EmailAddress"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["outcome"], "token", "{body}");
    assert_eq!(body["calls"][0]["name"], "attributeCollectionSubmit");
    let info = &body["calls"][0]["request"]["data"]["userSignUpInfo"];
    assert_eq!(info["identities"][0]["issuer"], "mail");
    assert!(info["attributes"]["EmailAddress"].is_object());
    // A payload variant is refused on a B2C journey.
    let response = reqwest::Client::new()
        .post(format!("{}/mock/journeys", mock.base_url()))
        .json(&json!({
            "client_id": B2C_CLIENT, "kind": "sign_up", "account": "local",
            "email": "b2c@example.com", "payload": {}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}
