//! Entra External ID: `POST /entra/token-issuance-start`. A remembered verified submit of the
//! same correlation id and email links; a retry answers the same customer with `AlreadyLinked`;
//! without proof nothing is linked (`autoLinkError` `EmailNotVerified`) unless Microsoft Graph
//! shows a local email identity or an allow-listed social identity with that address.

use std::time::Duration;

use autolink::config::GraphSettings;
use serde_json::{json, Value};

use crate::entra_graph_stub::*;
use crate::entra_support::*;
use crate::helpers::*;

const USER: &str = "90847c2a-e29d-4d2f-9f54-c5b4d3f26471";

fn identity_issuer() -> String {
    format!("https://{TENANT}.ciamlogin.com/{TENANT}/v2.0")
}

async fn app() -> EntraApp {
    let entra = spawn_entra(|_, _| {}).await;
    entra.app.import_csv(&csv(&[
        "C-1,USRT,person,false,casey@example.com,Casey,Jensen",
        "B-1,USRT,person,true,buyer@fabrikam.example,Bea,Buyer",
    ]));
    entra
}

/// A verified submit of `correlation_id` for `email`, answered continue.
async fn signed_up(entra: &EntraApp, correlation_id: &str, email: &str) {
    let answer = entra
        .submit(&submit_body(correlation_id, local_sign_up(email), "en-us"))
        .await;
    assert_continues(&answer);
}

#[tokio::test]
async fn a_remembered_submit_links_the_new_user_and_a_retry_answers_the_same_customer() {
    let entra = app().await;
    let correlation = correlation();
    signed_up(&entra, &correlation, "casey@example.com").await;
    // Entra sends the address in another case: the email key is the same.
    let body = token_body(&correlation, USER, "Casey@Example.com", B2C_CLIENT);
    let claims = token_claims(&entra.token_issuance(&body).await).clone();
    assert_eq!(
        claims,
        json!({"customerAccountNumber": "C-1", "autoLinkOutcome": "Linked"})
    );
    let links = entra.app.links_of("C-1");
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].issuer, identity_issuer());
    assert_eq!(links[0].subject, USER);
    // Entra's retry of the same call, and a later sign-in with another correlation id.
    for body in [
        body.clone(),
        token_body(
            &crate::entra_support::correlation(),
            USER,
            "casey@example.com",
            B2C_CLIENT,
        ),
    ] {
        let claims = token_claims(&entra.token_issuance(&body).await).clone();
        assert_eq!(
            claims,
            json!({"customerAccountNumber": "C-1", "autoLinkOutcome": "AlreadyLinked"})
        );
    }
    // A linked identity resolves whatever its email says now.
    let moved = token_body(
        &crate::entra_support::correlation(),
        USER,
        "casey.new@example.com",
        B2C_CLIENT,
    );
    assert_eq!(
        token_claims(&entra.token_issuance(&moved).await)["customerAccountNumber"],
        "C-1"
    );
    assert_eq!(entra.app.active_links(), 1);
}

#[tokio::test]
async fn a_new_email_creates_one_customer_and_its_retry_answers_it_again() {
    let entra = app().await;
    let correlation = correlation();
    signed_up(&entra, &correlation, "new.shopper@example.com").await;
    let body = token_body(&correlation, USER, "new.shopper@example.com", B2C_CLIENT);
    let first = token_claims(&entra.token_issuance(&body).await).clone();
    assert_eq!(first["autoLinkOutcome"], "Created", "{first}");
    let number = first["customerAccountNumber"].as_str().unwrap().to_string();
    let retry = token_claims(&entra.token_issuance(&body).await).clone();
    assert_eq!(
        retry,
        json!({"customerAccountNumber": number, "autoLinkOutcome": "AlreadyLinked"})
    );
    assert_eq!(
        entra
            .app
            .customers_with_email("new.shopper@example.com")
            .len(),
        1
    );
    assert_eq!(entra.app.active_links(), 1);
}

#[tokio::test]
async fn without_proof_of_the_email_nothing_is_linked() {
    let entra = app().await;
    let correlation = correlation();
    signed_up(&entra, &correlation, "casey@example.com").await;
    for (row, body) in [
        (
            "another correlation id",
            token_body(
                &crate::entra_support::correlation(),
                USER,
                "casey@example.com",
                B2C_CLIENT,
            ),
        ),
        (
            "another email",
            token_body(&correlation, USER, "someone@example.com", B2C_CLIENT),
        ),
    ] {
        let claims = token_claims(&entra.token_issuance(&body).await).clone();
        assert_eq!(
            claims,
            json!({"autoLinkError": "EmailNotVerified"}),
            "{row}"
        );
    }
    // A submit that was refused is not remembered.
    let refused = crate::entra_support::correlation();
    let info = json!({"attributes": {"email": {"@odata.type": "microsoft.graph.stringDirectoryAttributeValue", "value": "casey@example.com"}}});
    assert_block_page(&entra.submit(&submit_body(&refused, info, "en-us")).await);
    let body = token_body(&refused, USER, "casey@example.com", B2C_CLIENT);
    assert_eq!(
        token_claims(&entra.token_issuance(&body).await).clone(),
        json!({"autoLinkError": "EmailNotVerified"})
    );
    assert_eq!(entra.app.active_links(), 0);
}

#[tokio::test]
async fn refusals_travel_as_the_auto_link_error_claim() {
    let entra = app().await;
    let correlation = correlation();
    let info = json!({"identities": [{"signInType": "email", "issuer": "t", "issuerAssignedId": "nobody@fabrikam.example"}]});
    let mut submit = submit_body(&correlation, info, "en-us");
    submit["data"]["authenticationContext"]["clientServicePrincipal"]["appId"] = json!(B2B_CLIENT);
    assert_block_page(&entra.submit(&submit).await);
    let body = token_body(&correlation, USER, "nobody@fabrikam.example", B2B_CLIENT);
    let claims = token_claims(&entra.token_issuance(&body).await).clone();
    assert_eq!(claims, json!({"autoLinkError": "EmailNotVerified"}));
    // Unknown application.
    let body = token_body(
        &correlation,
        USER,
        "casey@example.com",
        "6e2f0a4b-0000-4000-8000-0000000000ff",
    );
    let claims = token_claims(&entra.token_issuance(&body).await).clone();
    assert_eq!(claims, json!({"autoLinkError": "UnknownChannel"}));
}

#[tokio::test]
async fn token_issuance_bodies_of_another_shape_or_event_are_400() {
    let entra = app().await;
    let valid = token_body(&correlation(), USER, "casey@example.com", B2C_CLIENT);
    let mut no_user = valid.clone();
    no_user["data"]["authenticationContext"]
        .as_object_mut()
        .unwrap()
        .remove("user");
    let mut no_id = valid.clone();
    no_id["data"]["authenticationContext"]["user"]
        .as_object_mut()
        .unwrap()
        .remove("id");
    let mut blank_id = valid.clone();
    blank_id["data"]["authenticationContext"]["user"]["id"] = json!(" ");
    for (row, body) in [
        ("no user", no_user),
        ("no user id", no_id),
        ("blank user id", blank_id),
    ] {
        let answer = entra.token_issuance(&body).await;
        assert_eq!(answer.status, 400, "{row}: {}", answer.body);
        assert_eq!(answer.body["error"], "invalid_request", "{row}");
    }
    let mut other = valid.clone();
    other["type"] = json!("microsoft.graph.authenticationEvent.attributeCollectionSubmit");
    let answer = entra.token_issuance(&other).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.body["error"], "unknown_event_type");
    assert_eq!(entra.app.active_links(), 0);
}

// ---------------------------------------------------------------------------------------------
// The Graph route.
// ---------------------------------------------------------------------------------------------

async fn app_with_graph() -> (EntraApp, GraphStub) {
    app_with_graph_within(None).await
}

/// As [`app_with_graph`], with this `[entra] deadline_ms` when given.
async fn app_with_graph_within(deadline_ms: Option<u64>) -> (EntraApp, GraphStub) {
    let graph = GraphStub::start().await;
    let entra = spawn_entra(|settings, _| {
        let entra = settings.entra.as_mut().unwrap();
        if let Some(deadline_ms) = deadline_ms {
            entra.deadline_ms = deadline_ms;
        }
        entra.graph = Some(GraphSettings {
            client_id: GRAPH_CLIENT_ID.into(),
            client_secret: GRAPH_CLIENT_SECRET.into(),
            token_url: Some(graph.token_url()),
            base_url: Some(graph.graph_url()),
            scope: None,
        });
    })
    .await;
    entra.app.import_csv(&csv(&[
        "C-1,USRT,person,false,casey@example.com,Casey,Jensen",
        "G-1,USRT,person,false,gina@gmail.example,Gina,Google",
        "F-1,USRT,person,false,fred@facebook.example,Fred,Facebook",
    ]));
    (entra, graph)
}

fn identities(entries: &[(&str, &str, &str)]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|(kind, issuer, id)| json!({"signInType": kind, "issuer": issuer, "issuerAssignedId": id}))
            .collect(),
    )
}

#[tokio::test]
async fn graph_links_a_user_whose_directory_identities_prove_the_email() {
    let (entra, graph) = app_with_graph().await;
    let otp_user = "11111111-0000-4000-8000-000000000001";
    let google_user = "11111111-0000-4000-8000-000000000002";
    let facebook_user = "11111111-0000-4000-8000-000000000003";
    graph.add_user(
        otp_user,
        Some("casey@example.com"),
        identities(&[
            ("federated", "mail", "casey@example.com"),
            (
                "userPrincipalName",
                "contoso.onmicrosoft.com",
                "x@contoso.onmicrosoft.com",
            ),
        ]),
    );
    graph.add_user(
        google_user,
        Some("gina@gmail.example"),
        identities(&[("federated", "google.com", "1234")]),
    );
    graph.add_user(
        facebook_user,
        Some("fred@facebook.example"),
        identities(&[("federated", "facebook.com", "5678")]),
    );

    // No submit was remembered (another instance, or Entra sent another correlation id).
    let call = |user: &str, mail: &str| token_body(&correlation(), user, mail, B2C_CLIENT);
    let claims = token_claims(
        &entra
            .token_issuance(&call(otp_user, "casey@example.com"))
            .await,
    )
    .clone();
    assert_eq!(
        claims,
        json!({"customerAccountNumber": "C-1", "autoLinkOutcome": "Linked"})
    );
    let claims = token_claims(
        &entra
            .token_issuance(&call(google_user, "gina@gmail.example"))
            .await,
    )
    .clone();
    assert_eq!(
        claims,
        json!({"customerAccountNumber": "G-1", "autoLinkOutcome": "Linked"})
    );
    // facebook.com is not on email_verifying_idps; an unknown user proves nothing either.
    let claims = token_claims(
        &entra
            .token_issuance(&call(facebook_user, "fred@facebook.example"))
            .await,
    )
    .clone();
    assert_eq!(claims, json!({"autoLinkError": "EmailNotVerified"}));
    let claims = token_claims(
        &entra
            .token_issuance(&call(
                "11111111-0000-4000-8000-0000000000ff",
                "fred@facebook.example",
            ))
            .await,
    )
    .clone();
    assert_eq!(claims, json!({"autoLinkError": "EmailNotVerified"}));
    // A directory identity of another address does not prove this one.
    let claims = token_claims(
        &entra
            .token_issuance(&call(otp_user, "fred@facebook.example"))
            .await,
    )
    .clone();
    assert_eq!(
        claims["customerAccountNumber"], "C-1",
        "linked already: resolves"
    );
    assert_eq!(entra.app.active_links(), 2);

    // One client-credentials token served every read; a linked user is not read again.
    assert_eq!(graph.token_requests(), 1);
    let reads = graph.user_reads();
    let claims = token_claims(
        &entra
            .token_issuance(&call(google_user, "gina@gmail.example"))
            .await,
    )
    .clone();
    assert_eq!(claims["autoLinkOutcome"], "AlreadyLinked");
    assert_eq!(graph.user_reads(), reads);
}

#[tokio::test]
async fn a_remembered_submit_links_without_reading_graph() {
    let (entra, graph) = app_with_graph().await;
    let correlation = correlation();
    signed_up(&entra, &correlation, "casey@example.com").await;
    let body = token_body(&correlation, USER, "casey@example.com", B2C_CLIENT);
    assert_eq!(
        token_claims(&entra.token_issuance(&body).await)["autoLinkOutcome"],
        "Linked"
    );
    assert_eq!(graph.user_reads(), 0);
    assert_eq!(graph.token_requests(), 0);
}

#[tokio::test]
async fn a_slow_graph_fails_closed_within_the_deadline() {
    let (entra, graph) = app_with_graph_within(Some(800)).await;
    let user = "11111111-0000-4000-8000-000000000001";
    graph.add_user(
        user,
        Some("casey@example.com"),
        identities(&[("emailAddress", "t", "casey@example.com")]),
    );
    graph.set_delay(Duration::from_secs(5));
    let body = token_body(&correlation(), user, "casey@example.com", B2C_CLIENT);
    let answer = entra.token_issuance(&body).await;
    assert!(
        answer.elapsed < Duration::from_millis(800),
        "{:?}",
        answer.elapsed
    );
    assert_eq!(
        token_claims(&answer).clone(),
        json!({"autoLinkError": "ServiceUnavailable"})
    );
    assert_eq!(entra.app.active_links(), 0);
    // Graph answers again: Entra's retry links.
    graph.set_delay(Duration::ZERO);
    let claims = token_claims(&entra.token_issuance(&body).await).clone();
    assert_eq!(
        claims,
        json!({"customerAccountNumber": "C-1", "autoLinkOutcome": "Linked"})
    );
}
