//! Entra External ID: `POST /entra/attribute-collection-submit` with every payload variant of
//! `entra-external-id.md` section 1.3, every answer shape, localized messages, and what a body of
//! the wrong shape gets.

use autolink::domain::Refusal;
use autolink::messages;
use serde_json::{json, Value};

use crate::entra_support::*;
use crate::helpers::*;

fn string_attribute(value: &str) -> Value {
    json!({ "@odata.type": "microsoft.graph.stringDirectoryAttributeValue", "value": value, "attributeType": "builtIn" })
}

/// The same, with the type key spelt `@odata.Type` as one of Microsoft's samples does.
fn capital_type_attribute(value: &str) -> Value {
    json!({ "@odata.Type": "microsoft.graph.stringDirectoryAttributeValue", "value": value, "attributeType": "builtIn" })
}

fn social(provider: &str) -> Value {
    json!([{ "signInType": "federated", "issuer": provider, "issuerAssignedId": "0000000000" }])
}

async fn app_with_customers() -> EntraApp {
    let entra = spawn_entra(|_, _| {}).await;
    entra.app.import_csv(&csv(&[
        "C-1,USRT,person,false,casey@example.com,Casey,Jensen",
        "B-1,USRT,person,true,buyer@fabrikam.example,Bea,Buyer",
        "D-1,USRT,person,false,twice@example.com,Dee,One",
        "D-2,USRT,person,false,twice@example.com,Dee,Two",
    ]));
    entra
}

fn on_channel(mut body: Value, client_id: &str) -> Value {
    body["data"]["authenticationContext"]["clientServicePrincipal"]["appId"] = json!(client_id);
    body
}

#[tokio::test]
async fn each_local_identity_form_proves_the_email_and_continues() {
    let entra = app_with_customers().await;
    for identity in [
        json!({"signInType": "email", "issuer": "contoso.onmicrosoft.com", "issuerAssignedId": "casey@example.com"}),
        json!({"signInType": "emailAddress", "issuer": "contoso.onmicrosoft.com", "issuerAssignedId": "casey@example.com"}),
        json!({"signInType": "federated", "issuer": "mail", "issuerAssignedId": "casey@example.com"}),
    ] {
        // The attribute says something else: the identity wins.
        let info = json!({
            "attributes": { "email": string_attribute("someone.else@example.com") },
            "identities": [identity, {"signInType": "userPrincipalName", "issuer": "contoso.onmicrosoft.com", "issuerAssignedId": "x@contoso.onmicrosoft.com"}],
        });
        let answer = entra
            .submit(&submit_body(&correlation(), info, "en-us"))
            .await;
        assert_continues(&answer);
    }
    // The identity's email decides: on the B2B channel, a buyer's address continues.
    let info = json!({"identities": [{"signInType": "email", "issuer": "t", "issuerAssignedId": "buyer@fabrikam.example"}]});
    let answer = entra
        .submit(&on_channel(
            submit_body(&correlation(), info, "en-us"),
            B2B_CLIENT,
        ))
        .await;
    assert_continues(&answer);
    assert_eq!(entra.app.active_links(), 0, "a submit never links");
}

#[tokio::test]
async fn attribute_emails_of_an_allow_listed_social_identity_continue_whatever_their_key() {
    let entra = app_with_customers().await;
    for (key, attribute) in [
        ("email", string_attribute("casey@example.com")),
        ("EmailAddress", string_attribute("casey@example.com")),
        ("mail", capital_type_attribute("casey@example.com")),
        ("Email", capital_type_attribute("casey@example.com")),
    ] {
        let info = json!({
            "attributes": { key: attribute, "givenName": string_attribute("Casey") },
            "identities": social("google.com"),
        });
        let answer = entra
            .submit(&submit_body(&correlation(), info, "en-us"))
            .await;
        assert_continues(&answer);
    }
}

#[tokio::test]
async fn an_attribute_email_without_a_trusted_identity_is_not_verified() {
    let entra = app_with_customers().await;
    let english = messages::message(Refusal::EmailNotVerified, "en");
    for info in [
        // No identities at all (Microsoft's own Submit samples).
        json!({ "attributes": { "email": string_attribute("casey@example.com") } }),
        // A social provider that is not on email_verifying_idps.
        json!({ "attributes": { "email": string_attribute("casey@example.com") }, "identities": social("facebook.com") }),
        // A user-name identity proves nothing about an email.
        json!({ "attributes": { "EmailAddress": capital_type_attribute("casey@example.com") },
                "identities": [{"signInType": "userName", "issuer": "t", "issuerAssignedId": "casey"}] }),
    ] {
        let answer = entra
            .submit(&submit_body(&correlation(), info.clone(), "en-us"))
            .await;
        assert_eq!(assert_block_page(&answer), english, "{info}");
    }
}

#[tokio::test]
async fn refusals_the_user_can_fix_are_validation_errors_on_the_email_attribute_they_came_from() {
    let entra = app_with_customers().await;
    // CommerceIdentityNotFound on the B2B channel, the email from `EmailAddress`.
    let info = json!({ "attributes": { "EmailAddress": string_attribute("nobody@example.com") }, "identities": social("google.com") });
    let answer = entra
        .submit(&on_channel(
            submit_body(&correlation(), info, "en-us"),
            B2B_CLIENT,
        ))
        .await;
    let message = assert_validation_error_on(&answer, "EmailAddress");
    assert_eq!(
        message,
        messages::message(Refusal::CommerceIdentityNotFound, "en")
    );
    // InvalidEmail, from `email`.
    let info = json!({ "attributes": { "email": string_attribute("not an address") }, "identities": social("google.com") });
    let answer = entra
        .submit(&submit_body(&correlation(), info, "en-us"))
        .await;
    let message = assert_validation_error_on(&answer, "email");
    assert_eq!(message, messages::message(Refusal::InvalidEmail, "en"));
    // EmailMissing: the field is there and empty.
    let info = json!({ "attributes": { "mail": capital_type_attribute("") }, "identities": social("google.com") });
    let answer = entra
        .submit(&submit_body(&correlation(), info, "en-us"))
        .await;
    let message = assert_validation_error_on(&answer, "mail");
    assert_eq!(message, messages::message(Refusal::EmailMissing, "en"));
}

#[tokio::test]
async fn refusals_are_block_pages_when_the_email_came_from_identities_or_cannot_be_fixed() {
    let entra = app_with_customers().await;
    // CommerceIdentityNotFound with the email from the one-time-code identity: no field to fix.
    let answer = entra
        .submit(&on_channel(
            submit_body(&correlation(), local_sign_up("nobody@example.com"), "en-us"),
            B2B_CLIENT,
        ))
        .await;
    assert_eq!(
        assert_block_page(&answer),
        messages::message(Refusal::CommerceIdentityNotFound, "en")
    );
    // No email at all.
    let info = json!({ "identities": [{"signInType": "userName", "issuer": "t", "issuerAssignedId": "casey"}] });
    let answer = entra
        .submit(&submit_body(&correlation(), info, "en-us"))
        .await;
    assert_eq!(
        assert_block_page(&answer),
        messages::message(Refusal::EmailMissing, "en")
    );
    // Several customers share the address: nothing the user can fix.
    let info = json!({ "attributes": { "email": string_attribute("twice@example.com") }, "identities": social("google.com") });
    let answer = entra
        .submit(&submit_body(&correlation(), info, "en-us"))
        .await;
    assert_eq!(
        assert_block_page(&answer),
        messages::message(Refusal::MultipleAccounts, "en")
    );
    // An application that maps to no channel.
    let answer = entra
        .submit(&on_channel(
            submit_body(&correlation(), local_sign_up("casey@example.com"), "en-us"),
            "6e2f0a4b-0000-4000-8000-0000000000ff",
        ))
        .await;
    assert_eq!(
        assert_block_page(&answer),
        messages::message(Refusal::UnknownChannel, "en")
    );
}

#[tokio::test]
async fn messages_follow_the_client_locale() {
    let entra = app_with_customers().await;
    let info = json!({ "attributes": { "email": string_attribute("casey@example.com") } });
    let answer = entra
        .submit(&submit_body(&correlation(), info, "fr-fr"))
        .await;
    assert_eq!(
        assert_block_page(&answer),
        messages::message(Refusal::EmailNotVerified, "fr")
    );
    assert_eq!(
        submit_action(&answer)["title"],
        messages::block_page_title("fr")
    );
    let info = json!({ "attributes": { "email": string_attribute("x") }, "identities": social("google.com") });
    let answer = entra
        .submit(&submit_body(&correlation(), info, "de-DE"))
        .await;
    let message = assert_validation_error_on(&answer, "email");
    assert_eq!(message, messages::message(Refusal::InvalidEmail, "de"));
}

#[tokio::test]
async fn bodies_of_another_shape_or_event_are_400_and_change_nothing() {
    let entra = app_with_customers().await;
    let valid = submit_body(&correlation(), local_sign_up("new@example.com"), "en-us");
    let mut no_tenant = valid.clone();
    no_tenant["data"]
        .as_object_mut()
        .unwrap()
        .remove("tenantId");
    let mut no_correlation = valid.clone();
    no_correlation["data"]["authenticationContext"]
        .as_object_mut()
        .unwrap()
        .remove("correlationId");
    let mut wrong_identities = valid.clone();
    wrong_identities["data"]["userSignUpInfo"]["identities"] = json!("email");
    let mut no_type = valid.clone();
    no_type.as_object_mut().unwrap().remove("type");
    for (row, text) in [
        ("not JSON", "{\"type\": ".to_string()),
        ("an array", "[]".to_string()),
        (
            "no data",
            json!({"type": "microsoft.graph.authenticationEvent.attributeCollectionSubmit"})
                .to_string(),
        ),
        ("no tenantId", no_tenant.to_string()),
        ("no correlationId", no_correlation.to_string()),
        ("identities not an array", wrong_identities.to_string()),
        ("no type", no_type.to_string()),
    ] {
        let answer = post_raw(&entra.app, SUBMIT, Some(&entra.token()), text).await;
        assert_eq!(answer.status, 400, "{row}: {}", answer.body);
        assert_eq!(answer.body["error"], "invalid_request", "{row}");
    }
    for event in [
        "microsoft.graph.authenticationEvent.tokenIssuanceStart",
        "microsoft.graph.authenticationEvent.attributeCollectionStart",
        "microsoft.graph.authenticationEvent.emailOtpSend",
    ] {
        let mut body = valid.clone();
        body["type"] = json!(event);
        let answer = entra.submit(&body).await;
        assert_eq!(answer.status, 400, "{event}: {}", answer.body);
        assert_eq!(answer.body["error"], "unknown_event_type", "{event}");
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("attributeCollectionSubmit")),
            "{}",
            answer.body
        );
    }
    assert_eq!(entra.app.active_links(), 0);
    assert_eq!(entra.app.customer_count(), 4);
}
