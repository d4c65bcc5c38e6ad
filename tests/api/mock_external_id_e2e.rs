//! The mock's External ID journeys end to end against autolink's real `/entra/...` endpoints:
//! the mock signs the extension tokens, autolink checks them against the mock's discovery
//! document, links through the linking service, and (for the Graph route) reads the user from
//! the mock's Graph.

use autolink::config::{EntraSettings, GraphSettings};
use autolink::mock_b2c::{
    AccountKind, Application, JourneyResult, LocalIdentity, MockB2c, Outcome, PayloadVariant,
};

use crate::helpers::*;
use crate::mock_external_id_support::*;

/// The mock and autolink wired to each other.
struct Pair {
    mock: MockB2c,
    app: TestApp,
}

/// autolink's `[entra]` for the mock's tenant: only the discovery URL (and Graph's URLs) point
/// at the mock; issuers and the identity issuer keep their defaults.
fn entra_for(mock: &MockB2c, graph: bool) -> EntraSettings {
    EntraSettings {
        tenant_id: EXT_TENANT_ID.into(),
        metadata_url: mock.external_id_discovery_url(),
        issuers: None,
        audiences: vec![EXTENSION_APP_ID.into()],
        authorized_party: EVENTS_APP.into(),
        deadline_ms: 800,
        identity_issuer: None,
        graph: graph.then(|| GraphSettings {
            client_id: GRAPH_CLIENT_ID.into(),
            client_secret: GRAPH_CLIENT_SECRET.into(),
            token_url: mock.external_id_token_url(),
            base_url: Some(mock.graph_base_url()),
            scope: None,
        }),
    }
}

async fn start(graph: bool) -> Pair {
    let mock = start_external_id_mock("http://127.0.0.1:9", |m| {
        m.applications.push(Application {
            client_id: B2B_CLIENT.into(),
            redirect_uris: vec![],
            client_secret: None,
            name: Some("Fabrikam business store".into()),
        });
    })
    .await;
    let app = spawn_app_with(|s| s.entra = Some(entra_for(&mock, graph))).await;
    mock.set_service_url(&app.address);
    Pair { mock, app }
}

impl Pair {
    async fn run(&self, request: autolink::mock_b2c::JourneyRequest) -> JourneyResult {
        self.mock.run(request).await.unwrap()
    }

    /// The journey ends with a token whose claims name `account` and `outcome`.
    fn assert_token(&self, result: &JourneyResult, account: &str, outcome: &str) {
        assert_eq!(result.outcome, Outcome::Token, "{result:#?}");
        let claims = result.claims.as_ref().unwrap();
        assert_eq!(claims["customerAccountNumber"], account, "{result:#?}");
        assert_eq!(claims["autoLinkOutcome"], outcome, "{result:#?}");
        // The link is the identity (the tenant's ciamlogin issuer, the user's object id).
        let links = self.app.links_of(account);
        let object_id = result.object_id.as_deref().unwrap();
        assert!(
            links
                .iter()
                .any(|l| l.subject == object_id
                    && l.issuer == self.mock.external_id_issuer().unwrap()),
            "{links:?}"
        );
    }
}

fn with_variant(
    account: AccountKind,
    email: &str,
    variant: PayloadVariant,
) -> autolink::mock_b2c::JourneyRequest {
    let mut request = ext_journey(account, email);
    request.payload = Some(variant);
    request
}

#[tokio::test]
async fn e2e_an_email_code_sign_up_links_the_known_customer_in_every_identity_variant() {
    let pair = start(false).await;
    let variants = [
        (LocalIdentity::Email, false),
        (LocalIdentity::EmailAddress, false),
        (LocalIdentity::FederatedMail, false),
        (LocalIdentity::Email, true),
    ];
    for (i, (local_identity, capital_odata_type)) in variants.into_iter().enumerate() {
        let email = format!("known{i}@example.com");
        pair.app.import_csv(&csv(&[&format!(
            "POS-{i},USRT,person,false,{email},Known,Person"
        )]));
        let variant = PayloadVariant {
            local_identity,
            capital_odata_type,
            ..PayloadVariant::default()
        };
        let result = pair
            .run(with_variant(AccountKind::Local, &email, variant))
            .await;
        pair.assert_token(&result, &format!("POS-{i}"), "Linked");
        assert_eq!(result.calls.len(), 2, "no retry: {result:#?}");
    }
}

#[tokio::test]
async fn e2e_a_new_address_on_the_consumer_store_creates_a_customer() {
    let pair = start(false).await;
    let before = pair.app.customer_count();
    let result = pair
        .run(ext_journey(AccountKind::Local, "brand-new@example.com"))
        .await;
    assert_eq!(result.outcome, Outcome::Token, "{result:#?}");
    let claims = result.claims.as_ref().unwrap();
    assert_eq!(claims["autoLinkOutcome"], "Created");
    let account = claims["customerAccountNumber"]
        .as_str()
        .unwrap()
        .to_string();
    pair.assert_token(&result, &account, "Created");
    assert_eq!(pair.app.customer_count(), before + 1);
}

#[tokio::test]
async fn e2e_a_google_sign_up_links_through_the_allow_listed_provider() {
    let pair = start(false).await;
    pair.app
        .import_csv(&csv(&["POS-G,USRT,person,false,gina@gmail.com,Gina,G"]));
    let result = pair
        .run(ext_journey(AccountKind::Social, "gina@gmail.com"))
        .await;
    pair.assert_token(&result, "POS-G", "Linked");
}

#[tokio::test]
async fn e2e_the_woodgrove_local_form_is_blocked_as_email_not_verified_and_creates_nothing() {
    let pair = start(false).await;
    let before = pair.app.customer_count();
    let woodgrove = PayloadVariant {
        identities: false,
        ..PayloadVariant::default()
    };
    let result = pair
        .run(with_variant(
            AccountKind::Local,
            "unproven@example.com",
            woodgrove,
        ))
        .await;
    assert_eq!(result.outcome, Outcome::BlockPage, "{result:#?}");
    assert!(!result.account_created);
    assert!(pair.mock.tenant().directory.all().is_empty());
    assert_eq!(pair.app.customer_count(), before);
    assert_eq!(pair.app.active_links(), 0);
}

#[tokio::test]
async fn e2e_an_unknown_address_on_the_business_store_is_a_validation_error_from_the_form_and_a_block_from_identities(
) {
    let pair = start(false).await;
    // Google: the address is a form attribute the person can change.
    let mut google = ext_journey(AccountKind::Social, "stranger@gmail.com");
    google.client_id = B2B_CLIENT.into();
    let result = pair.run(google).await;
    assert_eq!(result.outcome, Outcome::ValidationError, "{result:#?}");
    let errors = result.attribute_errors.as_ref().unwrap();
    assert!(errors.contains_key("email"), "{errors:?}");
    // Email with a code: the address is the identity, not on the form.
    let mut local = ext_journey(AccountKind::Local, "stranger@example.com");
    local.client_id = B2B_CLIENT.into();
    let result = pair.run(local).await;
    assert_eq!(result.outcome, Outcome::BlockPage, "{result:#?}");
    assert!(pair.mock.tenant().directory.all().is_empty());
    assert_eq!(pair.app.active_links(), 0);
}

#[tokio::test]
async fn e2e_without_a_shared_correlation_id_the_graph_route_links() {
    let pair = start(true).await;
    pair.app
        .import_csv(&csv(&["POS-7,USRT,person,false,graph@example.com,Gra,Ph"]));
    let unshared = PayloadVariant {
        share_correlation_id: false,
        ..PayloadVariant::default()
    };
    let result = pair
        .run(with_variant(
            AccountKind::Local,
            "graph@example.com",
            unshared,
        ))
        .await;
    pair.assert_token(&result, "POS-7", "Linked");
}

#[tokio::test]
async fn e2e_without_a_shared_correlation_id_or_graph_nothing_links_and_the_token_has_no_account() {
    let pair = start(false).await;
    pair.app
        .import_csv(&csv(&["POS-8,USRT,person,false,alone@example.com,A,Lone"]));
    let unshared = PayloadVariant {
        share_correlation_id: false,
        ..PayloadVariant::default()
    };
    let result = pair
        .run(with_variant(
            AccountKind::Local,
            "alone@example.com",
            unshared,
        ))
        .await;
    assert_eq!(result.outcome, Outcome::Token, "{result:#?}");
    assert_eq!(result.code.as_deref(), Some("EmailNotVerified"));
    let claims = result.claims.unwrap();
    assert!(
        claims.get("customerAccountNumber").is_none() && claims.get("autoLinkOutcome").is_none()
    );
    assert_eq!(pair.app.active_links(), 0);
}

#[tokio::test]
async fn e2e_a_returning_user_resolves_the_same_customer() {
    let pair = start(false).await;
    pair.app
        .import_csv(&csv(&["POS-R,USRT,person,false,back@example.com,Ba,Ck"]));
    let first = pair
        .run(ext_journey(AccountKind::Local, "back@example.com"))
        .await;
    pair.assert_token(&first, "POS-R", "Linked");
    let again = pair
        .run(ext_journey(AccountKind::Local, "back@example.com"))
        .await;
    assert!(!again.account_created);
    assert_eq!(again.object_id, first.object_id);
    pair.assert_token(&again, "POS-R", "AlreadyLinked");
    assert_eq!(pair.app.links_of("POS-R").len(), 1);
}

#[tokio::test]
async fn e2e_a_timed_out_token_issuance_is_sent_again_and_links_once() {
    let pair = start(false).await;
    pair.app.import_csv(&csv(&[
        "POS-T,USRT,person,false,patient@example.com,Pa,Tient",
    ]));
    // autolink's answer to the first token-issuance call is held back past the mock's 1 s.
    let proxy =
        crate::journeys::HoldBackProxy::start(&pair.app.address, b"/entra/token-issuance-start")
            .await;
    pair.mock.set_service_url(&proxy.url);
    let result = pair
        .run(ext_journey(AccountKind::Local, "patient@example.com"))
        .await;
    assert!(
        proxy.service_answered_held_call(),
        "autolink answered the call the mock gave up on"
    );
    let calls: Vec<_> = result
        .calls
        .iter()
        .filter(|c| c.name == "tokenIssuanceStart")
        .collect();
    assert_eq!(calls.len(), 2, "{result:#?}");
    assert_eq!((calls[0].attempt, calls[0].status), (1, None));
    assert_eq!((calls[1].attempt, calls[1].status), (2, Some(200)));
    assert_eq!(calls[0].request, calls[1].request, "the same event again");
    // The retry found what the first attempt wrote.
    pair.assert_token(&result, "POS-T", "AlreadyLinked");
    assert_eq!(pair.app.links_of("POS-T").len(), 1);
    assert_eq!(pair.app.active_links(), 1);
}

/// `POST /v1/link` with the ID token the store got at the end of the journey: answered by
/// status and body.
async fn v1_link(pair: &Pair, id_token: &str) -> (u16, serde_json::Value) {
    let response = pair
        .app
        .client
        .post(format!("{}/v1/link", pair.app.address))
        .bearer_auth(id_token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn e2e_v1_link_with_the_external_id_token_resolves_the_identity_token_issuance_linked() {
    // No [relying_party]: the External ID tenant of [entra] verifies its own ID tokens.
    let pair = start(false).await;
    pair.app
        .import_csv(&csv(&["POS-V,USRT,person,false,vera@example.com,Vera,V"]));
    let result = pair
        .run(ext_journey(AccountKind::Local, "vera@example.com"))
        .await;
    pair.assert_token(&result, "POS-V", "Linked");
    let id_token = result.id_token.as_deref().unwrap();

    // The token's `sub` is pairwise, its `oid` the object id token issuance linked: resolved,
    // not linked a second time.
    let (status, body) = v1_link(&pair, id_token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "AlreadyLinked", "{body}");
    assert_eq!(body["customerAccountNumber"], "POS-V", "{body}");
    assert_eq!(pair.app.links_of("POS-V").len(), 1);

    // The same token with its signature broken is refused, and nothing changes.
    let (head, _) = id_token.rsplit_once('.').unwrap();
    let (status, body) = v1_link(&pair, &format!("{head}.AAAA")).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(pair.app.links_of("POS-V").len(), 1);
}
