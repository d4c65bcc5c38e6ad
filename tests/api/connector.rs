//! The user-flow connector: every cell of the rules table and the rules around it, over HTTP.

use serde_json::{json, Value};

use crate::helpers::*;

const B2B_CODE_NOT_FOUND: &str = "Microsoft_Dynamics_CommerceIdentityNotFound";
const CODE_MULTIPLE: &str =
    "Microsoft_Dynamics_Commerce_Runtime_MultipleCustomerAccountsFoundWithSameEmailAddress";

fn account(body: &Value) -> String {
    body["extension_CustomerAccountNumber"]
        .as_str()
        .unwrap_or_else(|| panic!("no account number in {body}"))
        .to_string()
}

#[tokio::test]
async fn b2b_sign_up_with_one_business_customer_links_to_it() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "B2B-001,USRT,person,true,Buyer@Contoso.com,Ana,Buyer",
    ]));

    let (status, body) = app
        .connector(&attribute_collection("buyer@contoso.com", B2B_CLIENT))
        .await;
    assert_continue(status, &body);
    assert!(
        body.get("extension_CustomerAccountNumber").is_none(),
        "checks return no claims: {body}"
    );

    let (status, body) = app
        .connector(&token_step(
            "buyer@contoso.com",
            "oid-1",
            local_identity(),
            B2B_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(account(&body), "B2B-001");
    assert_eq!(body["extension_AutoLinkOutcome"], "Linked");
    let links = app.links_of("B2B-001");
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].issuer, TENANT_ISSUER);
    assert_eq!(links[0].subject, "oid-1");
    assert_eq!(links[0].sign_in_type, "emailAddress");
}

#[tokio::test]
async fn b2b_sign_up_without_customer_is_refused_on_the_form_before_the_account_exists() {
    let app = spawn_app().await;
    // A consumer record with the email is not a candidate on a B2B channel.
    app.import_csv(&csv(&[
        "C-001,USRT,person,false,nobody@contoso.com,No,Body",
    ]));
    let (status, body) = app
        .connector(&attribute_collection("nobody@contoso.com", B2B_CLIENT))
        .await;
    assert_validation_error(status, &body, B2B_CODE_NOT_FOUND);
    assert!(body["userMessage"]
        .as_str()
        .unwrap()
        .contains("business account"));

    // A social sign-up is blocked already after the identity provider returns.
    let (status, body) = app
        .connector(&federation_signup(
            "nobody@contoso.com",
            "google.com",
            B2B_CLIENT,
        ))
        .await;
    assert_block(status, &body, B2B_CODE_NOT_FOUND);

    // The token step cannot block: it continues with the error code and no account number.
    let (status, body) = app
        .connector(&token_step(
            "nobody@contoso.com",
            "oid-2",
            local_identity(),
            B2B_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkError"], B2B_CODE_NOT_FOUND);
    assert!(body.get("extension_CustomerAccountNumber").is_none());
    assert_eq!(app.active_links(), 0);
    assert_eq!(app.customer_count(), 1, "B2B never creates customers");
}

#[tokio::test]
async fn b2b_sign_up_with_two_business_customers_is_refused_with_the_multiple_accounts_error() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "B2B-001,USRT,person,true,twice@contoso.com,A,One",
        "B2B-002,USRT,person,true,TWICE@contoso.com,A,Two",
    ]));
    let (status, body) = app
        .connector(&attribute_collection("twice@contoso.com", B2B_CLIENT))
        .await;
    assert_block(status, &body, CODE_MULTIPLE);
    let (status, body) = app
        .connector(&token_step(
            "twice@contoso.com",
            "oid-3",
            local_identity(),
            B2B_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkError"], CODE_MULTIPLE);
    assert_eq!(app.active_links(), 0);
}

#[tokio::test]
async fn b2c_sign_up_with_one_customer_links_to_it() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "POS-001,USRT,person,false,shopper@example.com,Sam,Shopper",
    ]));
    let (status, body) = app
        .connector(&attribute_collection("Shopper@Example.com", B2C_CLIENT))
        .await;
    assert_continue(status, &body);
    let (status, body) = app
        .connector(&token_step(
            "Shopper@Example.com",
            "oid-4",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(account(&body), "POS-001");
    assert_eq!(body["extension_AutoLinkOutcome"], "Linked");
    assert_eq!(app.customer_count(), 1);
}

#[tokio::test]
async fn b2c_sign_up_without_customer_creates_one_and_links_to_it() {
    let app = spawn_app().await;
    let (status, body) = app
        .connector(&attribute_collection("new@example.com", B2C_CLIENT))
        .await;
    assert_continue(status, &body);
    let (status, body) = app
        .connector(&token_step(
            "New@Example.com",
            "oid-5",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkOutcome"], "Created");
    let number = account(&body);
    assert!(number.starts_with("AL"), "{number}");
    let created = app.customers_with_email("new@example.com");
    assert_eq!(created.len(), 1);
    let customer = &created[0];
    assert_eq!(customer.account_number, number);
    assert_eq!(customer.origin, "autolink");
    assert_eq!(customer.party_type, "person");
    assert!(!customer.is_b2b);
    assert_eq!(customer.legal_entity, "USRT");
    assert_eq!(customer.primary_email.as_deref(), Some("New@Example.com"));
    assert_eq!(customer.first_name.as_deref(), Some("Test"));
}

#[tokio::test]
async fn b2c_sign_up_with_two_customers_is_refused_with_the_multiple_accounts_error() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "POS-001,USRT,person,false,dup@example.com,A,One",
        "POS-002,USRT,person,true,dup@example.com,A,Two",
    ]));
    let (status, body) = app
        .connector(&attribute_collection("dup@example.com", B2C_CLIENT))
        .await;
    assert_block(status, &body, CODE_MULTIPLE);
    let (status, body) = app
        .connector(&token_step(
            "dup@example.com",
            "oid-6",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkError"], CODE_MULTIPLE);
    assert_eq!(app.customer_count(), 2, "nothing was created");
    assert_eq!(app.active_links(), 0);
}

#[tokio::test]
async fn only_persons_of_the_channels_legal_entity_are_candidates() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "ORG-001,USRT,organization,false,office@example.com,,",
        "DE-001,DEMF,person,false,office@example.com,Other,Entity",
    ]));
    // The organization and the other legal entity's person are not candidates: a new customer.
    let (status, body) = app
        .connector(&token_step(
            "office@example.com",
            "oid-7",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkOutcome"], "Created");
    // On the other legal entity's channel the person there is the one candidate.
    let (status, body) = app
        .connector(&token_step(
            "office@example.com",
            "oid-8",
            local_identity(),
            OTHER_ENTITY_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(account(&body), "DE-001");
}

#[tokio::test]
async fn a_local_and_a_google_identity_of_one_person_end_on_one_customer() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["POS-010,USRT,person,false,jo@example.com,Jo,Doe"]));
    let (status, body) = app
        .connector(&token_step(
            "jo@example.com",
            "oid-local",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(account(&body), "POS-010");

    let (status, body) = app
        .connector(&federation_signup(
            "jo@example.com",
            "google.com",
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    let (status, body) = app
        .connector(&token_step(
            "jo@example.com",
            "oid-google",
            social_identity("google.com"),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(account(&body), "POS-010");
    assert_eq!(body["extension_AutoLinkOutcome"], "Linked");

    let links = app.links_of("POS-010");
    assert_eq!(links.len(), 2);
    let providers: Vec<_> = links.iter().map(|l| l.identity_provider.clone()).collect();
    assert!(providers.contains(&Some("local".into())));
    assert!(providers.contains(&Some("google.com".into())));
}

#[tokio::test]
async fn a_new_local_and_google_identity_create_one_customer_between_them() {
    let app = spawn_app().await;
    let (_, first) = app
        .connector(&token_step(
            "fresh@example.com",
            "oid-a",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_eq!(first["extension_AutoLinkOutcome"], "Created");
    let (_, second) = app
        .connector(&token_step(
            "fresh@example.com",
            "oid-b",
            social_identity("google.com"),
            B2C_CLIENT,
        ))
        .await;
    assert_eq!(second["extension_AutoLinkOutcome"], "Linked");
    assert_eq!(account(&first), account(&second));
    assert_eq!(app.customers_with_email("fresh@example.com").len(), 1);
}

#[tokio::test]
async fn the_same_request_twice_gives_the_same_account_and_changes_nothing() {
    let app = spawn_app().await;
    let request = token_step(
        "twice@example.com",
        "oid-retry",
        local_identity(),
        B2C_CLIENT,
    );
    let (status, first) = app.connector(&request).await;
    assert_continue(status, &first);
    assert_eq!(first["extension_AutoLinkOutcome"], "Created");
    let customers = app.customer_count();
    let links = app.active_links();

    let (status, second) = app.connector(&request).await;
    assert_continue(status, &second);
    assert_eq!(account(&first), account(&second));
    assert_eq!(second["extension_AutoLinkOutcome"], "AlreadyLinked");
    assert_eq!(app.customer_count(), customers);
    assert_eq!(app.active_links(), links);

    // The sign-up checks are read-only: repeating them changes nothing either.
    let check = attribute_collection("other@example.com", B2C_CLIENT);
    assert_continue(
        app.connector(&check).await.0,
        &app.connector(&check).await.1,
    );
    assert_eq!(app.customer_count(), customers);
}

#[tokio::test]
async fn a_linked_identity_resolves_to_its_customer_whatever_the_email_says_now() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "POS-020,USRT,person,false,before@example.com,Be,Fore",
    ]));
    let (_, body) = app
        .connector(&token_step(
            "before@example.com",
            "oid-9",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_eq!(account(&body), "POS-020");
    // The user changed their email in B2C, and even sends it from an untrusted provider now.
    let (status, body) = app
        .connector(&token_step(
            "after@example.com",
            "oid-9",
            social_identity("facebook.com"),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(account(&body), "POS-020");
    assert_eq!(body["extension_AutoLinkOutcome"], "AlreadyLinked");
}

#[tokio::test]
async fn with_the_switch_off_b2c_creates_b2b_refuses_and_links_still_resolve() {
    {
        let app = spawn_app().await;
        app.import_csv(&csv(&[
            "POS-030,USRT,person,false,known@example.com,K,Nown",
            "B2B-030,USRT,person,true,buyer@example.com,B,Uyer",
        ]));
        let (_, body) = app
            .connector(&token_step(
                "known@example.com",
                "oid-linked",
                local_identity(),
                B2C_CLIENT,
            ))
            .await;
        assert_eq!(account(&body), "POS-030");
        let app_off = app.restart(|s| s.linking.enabled = false).await;

        let (status, body) = app_off
            .connector(&token_step(
                "known@example.com",
                "oid-new",
                local_identity(),
                B2C_CLIENT,
            ))
            .await;
        assert_continue(status, &body);
        assert_eq!(body["extension_AutoLinkOutcome"], "Created");
        assert_ne!(account(&body), "POS-030");

        let (status, body) = app_off
            .connector(&attribute_collection("buyer@example.com", B2B_CLIENT))
            .await;
        assert_validation_error(status, &body, B2B_CODE_NOT_FOUND);

        let (_, body) = app_off
            .connector(&token_step(
                "known@example.com",
                "oid-linked",
                local_identity(),
                B2C_CLIENT,
            ))
            .await;
        assert_eq!(account(&body), "POS-030");
        assert_eq!(body["extension_AutoLinkOutcome"], "AlreadyLinked");
    }
}

#[tokio::test]
async fn a_channel_override_turns_linking_off_for_that_channel_only() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["POS-040,USRT,person,false,chan@example.com,C,Han"]));
    let (_, body) = app
        .connector(&token_step(
            "chan@example.com",
            "oid-c1",
            local_identity(),
            NOLINK_CLIENT,
        ))
        .await;
    assert_eq!(body["extension_AutoLinkOutcome"], "Created");
    assert_ne!(account(&body), "POS-040");
    let (_, body) = app
        .connector(&token_step(
            "chan@example.com",
            "oid-c2",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    // The customer linking-off created is a second match on the normal channel.
    assert_eq!(body["extension_AutoLinkError"], CODE_MULTIPLE);
}

#[tokio::test]
async fn an_unverified_social_email_never_links_and_never_creates() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "POS-050,USRT,person,false,victim@example.com,Vic,Tim",
    ]));
    let (status, body) = app
        .connector(&federation_signup(
            "victim@example.com",
            "facebook.com",
            B2C_CLIENT,
        ))
        .await;
    assert_block(status, &body, "EmailNotVerified");
    let (status, body) = app
        .connector(&token_step(
            "victim@example.com",
            "oid-fb",
            social_identity("facebook.com"),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkError"], "EmailNotVerified");
    let (_, body) = app
        .connector(&token_step(
            "nobody-else@example.com",
            "oid-fb2",
            social_identity("facebook.com"),
            B2C_CLIENT,
        ))
        .await;
    assert_eq!(body["extension_AutoLinkError"], "EmailNotVerified");
    assert_eq!(app.active_links(), 0);
    assert_eq!(app.customer_count(), 1);
}

#[tokio::test]
async fn a_configured_provider_counts_as_verifying_email() {
    let app = spawn_app_with(|s| s.linking.email_verifying_idps.push("facebook.com".into())).await;
    let (status, body) = app
        .connector(&token_step(
            "fb@example.com",
            "oid-fb",
            social_identity("facebook.com"),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkOutcome"], "Created");
}

#[tokio::test]
async fn local_accounts_do_not_link_when_the_tenant_does_not_verify_email() {
    let app = spawn_app_with(|s| s.linking.local_accounts_verify_email = false).await;
    let (status, body) = app
        .connector(&attribute_collection("l@example.com", B2C_CLIENT))
        .await;
    assert_block(status, &body, "EmailNotVerified");
}

#[tokio::test]
async fn missing_identities_are_unverified_when_not_treated_as_local() {
    let app = spawn_app_with(|s| s.linking.treat_missing_identities_as_local = false).await;
    let (status, body) = app
        .connector(&attribute_collection("m@example.com", B2C_CLIENT))
        .await;
    assert_block(status, &body, "EmailNotVerified");
    // With identities present, the local account is verified as usual.
    let (status, body) = app
        .connector(&token_step(
            "m@example.com",
            "oid-m",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkOutcome"], "Created");
}

#[tokio::test]
async fn an_unknown_client_id_is_refused_unless_a_default_channel_is_configured() {
    let app = spawn_app().await;
    let (status, body) = app
        .connector(&attribute_collection("u@example.com", "not-a-client"))
        .await;
    assert_block(status, &body, "UnknownChannel");
    let (status, body) = app
        .connector(&token_step(
            "u@example.com",
            "oid-u",
            local_identity(),
            "not-a-client",
        ))
        .await;
    assert_continue(status, &body);
    assert_eq!(body["extension_AutoLinkError"], "UnknownChannel");

    let app = spawn_app_with(|s| s.default_channel = Some("fabrikam-b2b".into())).await;
    app.import_csv(&csv(&["B2B-060,USRT,person,true,u@example.com,U,Ser"]));
    let (_, body) = app
        .connector(&token_step(
            "u@example.com",
            "oid-u",
            local_identity(),
            "not-a-client",
        ))
        .await;
    assert_eq!(account(&body), "B2B-060");
}

#[tokio::test]
async fn the_other_spellings_of_the_token_step_and_the_client_id_are_accepted() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["B2B-070,USRT,person,true,spell@example.com,S,Pell"]));
    let mut request = token_step("spell@example.com", "oid-s", local_identity(), B2B_CLIENT);
    let object = request.as_object_mut().unwrap();
    object.remove("client_id");
    object.insert("clientId".into(), json!(B2B_CLIENT));
    object.insert("step".into(), json!("PreTokenApplicationClaims"));
    let (status, body) = app.connector(&request).await;
    assert_continue(status, &body);
    assert_eq!(account(&body), "B2B-070");
}

/// Both shapes of the token step that Microsoft's documentation shows: with `objectId` (S-TE,
/// `PreTokenIssuance`) and without it (S-AC, `PreTokenApplicationClaims`). Without it nothing is
/// linked under another key (not the email, not `identities`): the token carries the error, and
/// the refusal is counted (README, "The token step without objectId").
#[tokio::test]
async fn the_token_step_without_an_object_id_continues_with_an_error_in_both_shapes() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "POS-090,USRT,person,false,shape@example.com,S,Hape",
    ]));
    let with_id = token_step(
        "shape@example.com",
        "oid-shape",
        local_identity(),
        B2C_CLIENT,
    );
    let mut without_id = with_id.clone();
    let object = without_id.as_object_mut().unwrap();
    object.remove("objectId");
    object.insert("step".into(), json!("PreTokenApplicationClaims"));
    let mut bare = without_id.clone();
    bare.as_object_mut().unwrap().remove("identities");
    for request in [&without_id, &bare] {
        let (status, body) = app.connector(request).await;
        assert_continue(status, &body);
        assert_eq!(body["extension_AutoLinkError"], "ObjectIdMissing", "{body}");
        assert!(
            body.get("extension_CustomerAccountNumber").is_none(),
            "{body}"
        );
    }
    assert_eq!(app.active_links(), 0);
    assert_eq!(app.customer_count(), 1);
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"autolink_refusals_total{code="ObjectIdMissing"} 2"#),
        "{metrics}"
    );

    let (status, body) = app.connector(&with_id).await;
    assert_continue(status, &body);
    assert_eq!(account(&body), "POS-090");
    assert_eq!(body["extension_AutoLinkOutcome"], "Linked");
}

#[tokio::test]
async fn a_customer_whose_email_changed_after_linking_requires_review() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "POS-080,USRT,person,false,attacker@example.com,A,Ttacker",
    ]));
    let (_, body) = app
        .connector(&token_step(
            "attacker@example.com",
            "oid-attacker",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_eq!(account(&body), "POS-080");
    // The record's email is changed to the victim's address (re-import with a new email).
    app.import_csv(&csv(&[
        "POS-080,USRT,person,false,victim@example.com,A,Ttacker",
    ]));
    let (status, body) = app
        .connector(&attribute_collection("victim@example.com", B2C_CLIENT))
        .await;
    assert_block(status, &body, "LinkRequiresReview");
    let (_, body) = app
        .connector(&token_step(
            "victim@example.com",
            "oid-victim",
            local_identity(),
            B2C_CLIENT,
        ))
        .await;
    assert_eq!(body["extension_AutoLinkError"], "LinkRequiresReview");
    assert_eq!(app.links_of("POS-080").len(), 1);
}

#[tokio::test]
async fn refusals_are_localised_from_ui_locales() {
    let app = spawn_app().await;
    let mut request = attribute_collection("nobody@contoso.com", B2B_CLIENT);
    request["ui_locales"] = json!("fr-FR");
    let (status, body) = app.connector(&request).await;
    assert_validation_error(status, &body, B2B_CODE_NOT_FOUND);
    assert!(
        body["userMessage"]
            .as_str()
            .unwrap()
            .contains("Aucun compte professionnel"),
        "{body}"
    );
    request["ui_locales"] = json!("de");
    let (_, body) = app.connector(&request).await;
    assert!(
        body["userMessage"]
            .as_str()
            .unwrap()
            .contains("Geschäftskonto"),
        "{body}"
    );
}

#[tokio::test]
async fn microsofts_documented_example_requests_are_accepted() {
    let Some(dir) = shared_b2c_dir() else {
        cannot_run(
            "microsofts_documented_example_requests_are_accepted",
            "../shared/b2c is missing",
        );
        return;
    };
    let examples: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("api-connector-examples.json")).unwrap(),
    )
    .unwrap();
    let app = spawn_app_with(|s| {
        // The examples use two client ids and a facebook.com identity.
        s.channels[1].client_ids = vec!["231c70e8-8424-48ac-9b5d-5623b9e4ccf3".into()];
        s.channels[1].customer_type = autolink::domain::CustomerType::B2C;
        s.linking.email_verifying_idps.push("facebook.com".into());
    })
    .await;
    let requests = examples["requests"].as_object().unwrap();
    assert_eq!(requests.len(), 3);
    for step in [
        "PostFederationSignup",
        "PostAttributeCollection",
        "PreTokenIssuance",
    ] {
        let (status, body) = app.connector(&requests[step]).await;
        assert_continue(status, &body);
        if step == "PreTokenIssuance" {
            assert_eq!(body["extension_AutoLinkOutcome"], "Created", "{body}");
        }
    }
}
