//! End-to-end journeys through the mock B2C (`autolink::mock_b2c`): each test starts the mock
//! and the service, runs sign-ups and sign-ins through the mock's JSON driver API
//! (`POST /mock/journeys`, what QA uses), and reads what the service wrote from its database.
//!
//! Every scenario runs in both ways a tenant reaches the service, as two tests named after the
//! mode (`<scenario>::user_flow`, `<scenario>::custom_policy`):
//! - the user flow `B2C_1_signup_signin`, calling the API connector;
//! - the custom policy `B2C_1A_Autolink_signup_signin`, whose REST technical profiles the mock
//!   reads from the project's `policies/` (rendered for `Test`, Basic authentication).
//!
//! Scenarios: the B2B and B2C rules of DESIGN section 1; one person with a local and a Google
//! account; providers that do not verify email; the five pre-account-hijacking classes of DESIGN
//! section 5, each scripted with the attacker's and the victim's steps; a link call that times out
//! and is sent again; and the relying-party call `POST /v1/link` with an ID token obtained from
//! the mock's token endpoint by an openidconnect client.
//!
//! Where a refusal shows differs by mode: a user flow refuses a local sign-up at
//! `PostAttributeCollection` with a validation error when the user can fix it (another email) and
//! a block page otherwise, and a social sign-up at `PostFederationSignup` with a block page; a
//! custom policy's precheck answers 409, which B2C shows on the sign-up form.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use autolink::config::{RelyingPartySettings, Settings};
use autolink::domain::Refusal;
use autolink::mock_b2c::{
    AccountKind, Application, CallRecord, JourneyKind, JourneyRequest, JourneyResult, MockB2c,
    MockSettings, Outcome,
};
use autolink::storage::links::Link;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// The tenant.

/// Where the web store receives the authorization code (registered for `B2C_CLIENT`).
const REDIRECT_URI: &str = "http://localhost:5000/signin-oidc";
/// The web store's client secret at the mock's token endpoint.
const STORE_CLIENT_SECRET: &str = "store-client-secret-for-tests";
const PASSWORD: &str = "Passw0rd!-for-journeys";

/// The two ways B2C reaches the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    UserFlow,
    CustomPolicy,
}

impl Mode {
    fn policy(self) -> &'static str {
        match self {
            Mode::UserFlow => USER_FLOW,
            Mode::CustomPolicy => CUSTOM_POLICY,
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::UserFlow => write!(f, "user flow {USER_FLOW}"),
            Mode::CustomPolicy => write!(f, "custom policy {CUSTOM_POLICY}"),
        }
    }
}

/// Two tests per scenario, named after the mode: `<scenario>::user_flow` and
/// `<scenario>::custom_policy`.
/// They run on actix's test runtime: `MockB2c::start` spawns its server as a local task.
macro_rules! in_both_modes {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[actix_web::test]
                async fn user_flow() {
                    super::$scenario(super::Mode::UserFlow).await
                }

                #[actix_web::test]
                async fn custom_policy() {
                    super::$scenario(super::Mode::CustomPolicy).await
                }
            }
        )*
    };
}

in_both_modes!(
    b2b_approved_customer_signs_up_and_is_linked,
    b2b_sign_up_without_customer_is_refused_on_the_form,
    b2b_two_customers_with_one_email_are_refused,
    b2c_point_of_sale_customer_signs_up_and_is_linked,
    b2c_new_shopper_gets_a_new_customer,
    b2c_duplicate_customers_are_refused,
    local_then_google_account_gives_two_identities_on_one_customer,
    providers_that_do_not_verify_email_are_refused,
    hijack_classic_federated_merge,
    hijack_classic_federated_merge_when_b2c_does_not_verify,
    hijack_unexpired_session,
    hijack_trojan_identifier,
    hijack_unexpired_email_change,
    hijack_non_verifying_identity_provider,
    a_timed_out_link_call_is_sent_again_and_links_once,
    relying_party_links_with_the_id_token_from_the_code_exchange,
);

/// The mock's settings: the tenant with both policies and the two stores' applications.
fn journey_settings() -> MockSettings {
    let mut settings = mock_settings();
    settings.applications = vec![
        Application {
            client_id: B2C_CLIENT.into(),
            redirect_uris: vec![REDIRECT_URI.into()],
            client_secret: Some(STORE_CLIENT_SECRET.into()),
            name: Some("Fabrikam web store".into()),
        },
        Application {
            client_id: B2B_CLIENT.into(),
            redirect_uris: vec![],
            client_secret: None,
            name: Some("Fabrikam business store".into()),
        },
    ];
    settings
}

/// The mock B2C and the service, wired to each other.
struct Pair {
    mode: Mode,
    mock: MockB2c,
    app: TestApp,
    http: reqwest::Client,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.mock.stop();
    }
}

/// Starts the mock (first, so its issuer is known), then the service with `tenant_issuer` set to
/// the mock's issuer, and points the mock at the service.
async fn start(mode: Mode) -> Pair {
    start_with(mode, |_| {}, |_, _| {}).await
}

async fn start_with(
    mode: Mode,
    change_mock: impl FnOnce(&mut MockSettings),
    change_app: impl FnOnce(&MockB2c, &mut Settings),
) -> Pair {
    let mut settings = journey_settings();
    change_mock(&mut settings);
    let mock = MockB2c::start(settings)
        .await
        .unwrap_or_else(|e| panic!("the mock B2C does not start: {e:#}"));
    let issuer = mock.issuer();
    let app = spawn_app_with(|s| {
        s.tenant_issuer = issuer;
        change_app(&mock, s);
    })
    .await;
    mock.set_service_url(&app.address);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Pair {
        mode,
        mock,
        app,
        http,
    }
}

// ---------------------------------------------------------------------------------------------
// Journeys.

/// A journey on the pair's policy with the defaults a person would leave alone.
fn journey(
    mode: Mode,
    client_id: &str,
    kind: JourneyKind,
    account: AccountKind,
    email: &str,
) -> JourneyRequest {
    JourneyRequest {
        policy: Some(mode.policy().into()),
        client_id: client_id.into(),
        kind,
        account,
        email: email.into(),
        password: (account == AccountKind::Local).then(|| PASSWORD.to_string()),
        provider: None,
        provider_subject: None,
        email_verified: None,
        complete_email_verification: true,
        given_name: Some("Pat".into()),
        surname: Some("Example".into()),
        ui_locales: Some("en-US".into()),
        nonce: None,
        redirect_uri: None,
        state: None,
        single_sign_on: false,
        external_id: false,
        payload: None,
    }
}

/// A local-account sign-up that completes email verification.
fn local_sign_up(mode: Mode, client_id: &str, email: &str) -> JourneyRequest {
    journey(
        mode,
        client_id,
        JourneyKind::SignUp,
        AccountKind::Local,
        email,
    )
}

/// A sign-up through a simulated social provider.
fn social_sign_up(mode: Mode, client_id: &str, email: &str, provider: &str) -> JourneyRequest {
    let mut request = journey(
        mode,
        client_id,
        JourneyKind::SignUp,
        AccountKind::Social,
        email,
    );
    request.provider = Some(provider.into());
    request
}

impl Pair {
    /// Runs a journey through the driver API, as QA does.
    async fn run(&self, request: &JourneyRequest) -> JourneyResult {
        let response = self
            .http
            .post(format!("{}/mock/journeys", self.mock.base_url()))
            .json(request)
            .send()
            .await
            .unwrap_or_else(|e| panic!("[{}] POST /mock/journeys failed: {e}", self.mode));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        assert_eq!(
            status, 200,
            "[{}] the driver refused the journey {request:?}: {text}",
            self.mode
        );
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "[{}] the driver's answer is not a JourneyResult ({e}): {text}",
                self.mode
            )
        })
    }

    /// Runs a journey that must end with a token, and returns it.
    async fn run_to_token(&self, what: &str, request: &JourneyRequest) -> JourneyResult {
        let result = self.run(request).await;
        assert_eq!(
            result.outcome,
            Outcome::Token,
            "[{}] {what}: expected a token; got {}",
            self.mode,
            shown(&result)
        );
        let object_id = result
            .object_id
            .clone()
            .unwrap_or_else(|| panic!("[{}] {what}: no object id: {}", self.mode, shown(&result)));
        let claims = result.claims.as_ref().unwrap();
        assert_eq!(
            claims.get("sub").and_then(Value::as_str),
            Some(object_id.as_str()),
            "[{}] {what}: the token's sub is the user's object id: {}",
            self.mode,
            shown(&result)
        );
        assert!(
            result.id_token.is_some(),
            "[{}] {what}: no ID token",
            self.mode
        );
        result
    }

    /// Asserts a token carrying this account number and outcome.
    fn assert_token(&self, what: &str, result: &JourneyResult, account: &str, outcome: &str) {
        assert_eq!(
            result.account_number(),
            Some(account),
            "[{}] {what}: account number in the token: {}",
            self.mode,
            shown(result)
        );
        assert_eq!(
            claim(result, "extension_AutoLinkOutcome"),
            Some(outcome),
            "[{}] {what}: outcome in the token: {}",
            self.mode,
            shown(result)
        );
        assert_eq!(
            claim(result, "extension_AutoLinkError"),
            None,
            "[{}] {what}: no error in the token: {}",
            self.mode,
            shown(result)
        );
    }

    /// Asserts that autolink refused the sign-up before any B2C account existed: the outcome the
    /// mode shows for this refusal, its code and message, and nothing created in the directory.
    fn assert_refused_before_account(
        &self,
        what: &str,
        result: &JourneyResult,
        account: AccountKind,
        refusal: Refusal,
    ) {
        let expected = refused_sign_up_outcome(self.mode, account, refusal);
        assert_eq!(
            result.outcome,
            expected,
            "[{}] {what}: expected {expected:?} with {}; got {}",
            self.mode,
            refusal.code(),
            shown(result)
        );
        assert_eq!(
            result.code.as_deref(),
            Some(refusal.code()),
            "[{}] {what}: the refusal's code: {}",
            self.mode,
            shown(result)
        );
        let message = autolink::messages::message(refusal, "en");
        assert!(
            result
                .message
                .as_deref()
                .is_some_and(|m| m.contains(message)),
            "[{}] {what}: the user reads the service's message {message:?}: {}",
            self.mode,
            shown(result)
        );
        assert!(
            !result.account_created && result.object_id.is_none(),
            "[{}] {what}: no B2C account may exist: {}",
            self.mode,
            shown(result)
        );
        assert!(
            result.id_token.is_none() && result.code_grant.is_none(),
            "[{}] {what}: no token: {}",
            self.mode,
            shown(result)
        );
        let link_calls: Vec<&CallRecord> =
            result.calls.iter().filter(|c| is_link_call(c)).collect();
        assert!(
            link_calls.is_empty(),
            "[{}] {what}: the link call must not be made after a refused sign-up: {}",
            self.mode,
            shown(result)
        );
    }

    /// Asserts that the person could not even submit the local sign-up form (the email was not
    /// verified), so the service never heard of it.
    fn assert_stuck_on_verification(&self, what: &str, result: &JourneyResult) {
        assert_eq!(
            result.outcome,
            Outcome::ValidationError,
            "[{}] {what}: the form cannot be submitted without the mailed code: {}",
            self.mode,
            shown(result)
        );
        assert!(
            !result.account_created && result.object_id.is_none() && result.id_token.is_none(),
            "[{}] {what}: no B2C account: {}",
            self.mode,
            shown(result)
        );
        assert!(
            result.calls.is_empty() && result.code.is_none(),
            "[{}] {what}: the service is not called before the email is verified: {}",
            self.mode,
            shown(result)
        );
    }

    /// The active links of a customer, each as (subject, sign-in type, provider).
    fn identities_of(&self, account_number: &str) -> BTreeSet<(String, String, Option<String>)> {
        let links = self.app.links_of(account_number);
        for link in &links {
            assert_eq!(
                link.issuer,
                self.mock.issuer(),
                "[{}] links are keyed by the tenant's issuer: {link:?}",
                self.mode
            );
        }
        links.into_iter().map(identity_of).collect()
    }
}

fn identity_of(link: Link) -> (String, String, Option<String>) {
    (link.subject, link.sign_in_type, link.identity_provider)
}

fn local_identity_of(result: &JourneyResult) -> (String, String, Option<String>) {
    (
        result.object_id.clone().unwrap(),
        "emailAddress".into(),
        Some("local".into()),
    )
}

fn social_identity_of(result: &JourneyResult, provider: &str) -> (String, String, Option<String>) {
    (
        result.object_id.clone().unwrap(),
        "federated".into(),
        Some(provider.into()),
    )
}

/// Where the person sees a refusal of a sign-up check (DESIGN section 2): a custom policy shows
/// the precheck's 409 on the sign-up form; a user flow answers a validation error at
/// `PostAttributeCollection` (local sign-up) only when the person can fix it by typing another
/// email, and a block page otherwise (always at `PostFederationSignup`).
fn refused_sign_up_outcome(mode: Mode, account: AccountKind, refusal: Refusal) -> Outcome {
    let user_can_fix = refusal == Refusal::CommerceIdentityNotFound;
    match (mode, account) {
        (Mode::CustomPolicy, _) => Outcome::ValidationError,
        (Mode::UserFlow, AccountKind::Local) if user_can_fix => Outcome::ValidationError,
        (Mode::UserFlow, _) => Outcome::BlockPage,
    }
}

/// Whether a call record is the call that links (`PreTokenIssuance`, or `/b2c/rest/link`).
fn is_link_call(call: &CallRecord) -> bool {
    call.step.as_deref() == Some("PreTokenIssuance")
        || call.step.as_deref() == Some("PreTokenApplicationClaims")
        || call.url.ends_with("/b2c/rest/link")
}

fn claim<'a>(result: &'a JourneyResult, name: &str) -> Option<&'a str> {
    result.claims.as_ref()?.get(name)?.as_str()
}

/// A journey result for a failure message, without the token, the code or the redirect.
fn shown(result: &JourneyResult) -> String {
    let mut value = serde_json::to_value(result).unwrap();
    if let Some(object) = value.as_object_mut() {
        for secret in ["id_token", "code_grant", "redirect"] {
            if object.contains_key(secret) {
                object.insert(secret.into(), json!("<redacted>"));
            }
        }
    }
    serde_json::to_string_pretty(&value).unwrap()
}

// ---------------------------------------------------------------------------------------------
// B2B.

async fn b2b_approved_customer_signs_up_and_is_linked(mode: Mode) {
    let pair = start(mode).await;
    pair.app.import_csv(&csv(&[
        "B2B-1,USRT,person,true,buyer@contoso.com,Bea,Buyer",
        // The same person's consumer record is not a candidate on the business store.
        "POS-9,USRT,person,false,buyer@contoso.com,Bea,Buyer",
    ]));
    let result = pair
        .run_to_token(
            "approved buyer's sign-up",
            &local_sign_up(mode, B2B_CLIENT, "buyer@contoso.com"),
        )
        .await;
    pair.assert_token("approved buyer's sign-up", &result, "B2B-1", "Linked");
    assert!(result.account_created, "[{mode}] {}", shown(&result));
    assert_eq!(
        pair.identities_of("B2B-1"),
        BTreeSet::from([local_identity_of(&result)]),
        "[{mode}]"
    );
    assert_eq!(pair.app.customer_count(), 2, "[{mode}] nothing created");

    // Signing in again resolves the link.
    let mut sign_in = local_sign_up(mode, B2B_CLIENT, "buyer@contoso.com");
    sign_in.kind = JourneyKind::SignIn;
    let again = pair.run_to_token("sign-in", &sign_in).await;
    assert_eq!(again.object_id, result.object_id, "[{mode}]");
    assert!(!again.account_created, "[{mode}]");
    pair.assert_token("sign-in", &again, "B2B-1", "AlreadyLinked");
    assert_eq!(pair.app.active_links(), 1, "[{mode}]");
}

async fn b2b_sign_up_without_customer_is_refused_on_the_form(mode: Mode) {
    let pair = start(mode).await;
    // A consumer record with the email exists, but it is not a business customer.
    pair.app.import_csv(&csv(&[
        "POS-1,USRT,person,false,prospect@contoso.com,Pro,Spect",
    ]));
    let result = pair
        .run(&local_sign_up(mode, B2B_CLIENT, "prospect@contoso.com"))
        .await;
    pair.assert_refused_before_account(
        "unknown business buyer",
        &result,
        AccountKind::Local,
        Refusal::CommerceIdentityNotFound,
    );
    // The refusal came from the sign-up check, before the directory write.
    let last = result
        .calls
        .last()
        .unwrap_or_else(|| panic!("[{mode}] the service was never called: {}", shown(&result)));
    match mode {
        Mode::UserFlow => {
            assert_eq!(
                last.step.as_deref(),
                Some("PostAttributeCollection"),
                "[{mode}]"
            );
            assert_eq!(last.status, Some(400), "[{mode}] {}", shown(&result));
        }
        Mode::CustomPolicy => {
            assert!(
                last.url.ends_with("/b2c/rest/precheck"),
                "[{mode}] {last:?}"
            );
            assert_eq!(last.status, Some(409), "[{mode}] {}", shown(&result));
        }
    }
    assert_eq!(pair.app.active_links(), 0, "[{mode}]");
    assert_eq!(pair.app.customer_count(), 1, "[{mode}]");
}

async fn b2b_two_customers_with_one_email_are_refused(mode: Mode) {
    let pair = start(mode).await;
    pair.app.import_csv(&csv(&[
        "B2B-1,USRT,person,true,shared@contoso.com,A,One",
        "B2B-2,USRT,person,true,shared@contoso.com,A,Two",
    ]));
    let result = pair
        .run(&local_sign_up(mode, B2B_CLIENT, "shared@contoso.com"))
        .await;
    pair.assert_refused_before_account(
        "two business customers",
        &result,
        AccountKind::Local,
        Refusal::MultipleAccounts,
    );
    assert_eq!(pair.app.active_links(), 0, "[{mode}]");
    assert_eq!(pair.app.customer_count(), 2, "[{mode}]");
}

// ---------------------------------------------------------------------------------------------
// B2C.

async fn b2c_point_of_sale_customer_signs_up_and_is_linked(mode: Mode) {
    let pair = start(mode).await;
    pair.app.import_csv(&csv(&[
        "POS-1,USRT,person,false,alice@example.com,Alice,Smith",
        // Same email in another legal entity: not a candidate on this store.
        "DE-1,DEMF,person,false,alice@example.com,Alice,Smith",
    ]));
    let result = pair
        .run_to_token(
            "point-of-sale customer's sign-up",
            &local_sign_up(mode, B2C_CLIENT, "alice@example.com"),
        )
        .await;
    pair.assert_token(
        "point-of-sale customer's sign-up",
        &result,
        "POS-1",
        "Linked",
    );
    assert_eq!(
        pair.identities_of("POS-1"),
        BTreeSet::from([local_identity_of(&result)]),
        "[{mode}]"
    );
    assert!(pair.identities_of("DE-1").is_empty(), "[{mode}]");
    assert_eq!(pair.app.customer_count(), 2, "[{mode}] nothing created");
}

async fn b2c_new_shopper_gets_a_new_customer(mode: Mode) {
    let pair = start(mode).await;
    let mut request = local_sign_up(mode, B2C_CLIENT, "new.shopper@example.com");
    request.given_name = Some("Nora".into());
    request.surname = Some("Newman".into());
    let result = pair.run_to_token("new shopper's sign-up", &request).await;
    let customers = pair.app.customers_with_email("new.shopper@example.com");
    assert_eq!(
        customers.len(),
        1,
        "[{mode}] one new customer: {customers:?}"
    );
    let customer = &customers[0];
    pair.assert_token(
        "new shopper's sign-up",
        &result,
        &customer.account_number,
        "Created",
    );
    assert_eq!(customer.origin, "autolink", "[{mode}]");
    assert_eq!(customer.legal_entity, "USRT", "[{mode}]");
    assert_eq!(customer.party_type, "person", "[{mode}]");
    assert!(!customer.is_b2b, "[{mode}]");
    assert_eq!(customer.first_name.as_deref(), Some("Nora"), "[{mode}]");
    assert_eq!(customer.last_name.as_deref(), Some("Newman"), "[{mode}]");
    assert_eq!(
        pair.identities_of(&customer.account_number),
        BTreeSet::from([local_identity_of(&result)]),
        "[{mode}]"
    );
}

async fn b2c_duplicate_customers_are_refused(mode: Mode) {
    let pair = start(mode).await;
    pair.app.import_csv(&csv(&[
        "POS-1,USRT,person,false,twins@example.com,Ann,Twin",
        "POS-2,USRT,person,false,Twins@Example.com,Ben,Twin",
    ]));
    let result = pair
        .run(&local_sign_up(mode, B2C_CLIENT, "twins@example.com"))
        .await;
    pair.assert_refused_before_account(
        "two customers with the email",
        &result,
        AccountKind::Local,
        Refusal::MultipleAccounts,
    );
    assert_eq!(pair.app.customer_count(), 2, "[{mode}] nothing created");
    assert_eq!(pair.app.active_links(), 0, "[{mode}]");
}

// ---------------------------------------------------------------------------------------------
// Several identities, and providers that do not verify email.

async fn local_then_google_account_gives_two_identities_on_one_customer(mode: Mode) {
    let pair = start(mode).await;
    let local = pair
        .run_to_token(
            "local sign-up",
            &local_sign_up(mode, B2C_CLIENT, "sam@example.com"),
        )
        .await;
    let customers = pair.app.customers_with_email("sam@example.com");
    assert_eq!(customers.len(), 1, "[{mode}]");
    let account = customers[0].account_number.clone();
    pair.assert_token("local sign-up", &local, &account, "Created");

    let google = pair
        .run_to_token(
            "Google sign-up",
            &social_sign_up(mode, B2C_CLIENT, "sam@example.com", "google.com"),
        )
        .await;
    assert_ne!(google.object_id, local.object_id, "[{mode}] two B2C users");
    pair.assert_token("Google sign-up", &google, &account, "Linked");

    assert_eq!(
        pair.identities_of(&account),
        BTreeSet::from([
            local_identity_of(&local),
            social_identity_of(&google, "google.com"),
        ]),
        "[{mode}] both identities on one customer"
    );
    assert_eq!(pair.app.customer_count(), 1, "[{mode}]");

    // Each identity resolves to the customer on sign-in.
    let mut sign_in = local_sign_up(mode, B2C_CLIENT, "sam@example.com");
    sign_in.kind = JourneyKind::SignIn;
    let again = pair.run_to_token("local sign-in", &sign_in).await;
    assert_eq!(again.object_id, local.object_id, "[{mode}]");
    pair.assert_token("local sign-in", &again, &account, "AlreadyLinked");
    let mut sign_in = social_sign_up(mode, B2C_CLIENT, "sam@example.com", "google.com");
    sign_in.kind = JourneyKind::SignIn;
    let again = pair.run_to_token("Google sign-in", &sign_in).await;
    assert_eq!(again.object_id, google.object_id, "[{mode}]");
    pair.assert_token("Google sign-in", &again, &account, "AlreadyLinked");
    assert_eq!(pair.app.active_links(), 2, "[{mode}]");
}

/// The requests of a provider asserting `email` without verifying it. A user flow's API connector
/// carries no `email_verified`: there the service decides by the provider alone, so Google's
/// unverified claim is only distinguishable in the custom policy (which maps `email_verified`).
fn unverified_social_sign_ups(mode: Mode, client_id: &str, email: &str) -> Vec<JourneyRequest> {
    let mut requests = vec![social_sign_up(mode, client_id, email, "facebook.com")];
    if mode == Mode::CustomPolicy {
        let mut google = social_sign_up(mode, client_id, email, "google.com");
        google.email_verified = Some(false);
        google.provider_subject = Some("google-unverified".into());
        requests.push(google);
    }
    requests
}

async fn providers_that_do_not_verify_email_are_refused(mode: Mode) {
    let pair = start(mode).await;
    // A customer with the email exists: a refusal must not be a "nothing to link to".
    pair.app
        .import_csv(&csv(&["POS-1,USRT,person,false,fay@example.com,Fay,Book"]));
    for request in unverified_social_sign_ups(mode, B2C_CLIENT, "fay@example.com") {
        let what = format!(
            "{} sign-up (email_verified {:?})",
            request.provider.as_deref().unwrap(),
            request.email_verified
        );
        let result = pair.run(&request).await;
        pair.assert_refused_before_account(
            &what,
            &result,
            AccountKind::Social,
            Refusal::EmailNotVerified,
        );
    }
    // Nor does a new email create anything.
    let result = pair
        .run(&social_sign_up(
            mode,
            B2C_CLIENT,
            "nobody@example.com",
            "facebook.com",
        ))
        .await;
    pair.assert_refused_before_account(
        "Facebook sign-up with a new email",
        &result,
        AccountKind::Social,
        Refusal::EmailNotVerified,
    );
    assert!(pair.identities_of("POS-1").is_empty(), "[{mode}]");
    assert_eq!(pair.app.customer_count(), 1, "[{mode}] nothing created");
    assert_eq!(pair.app.active_links(), 0, "[{mode}] nothing linked");
}

// ---------------------------------------------------------------------------------------------
// Pre-account hijacking (DESIGN section 5). Each test scripts the attacker's steps, then the
// victim's, and checks what the attacker saw and that the victim's customer holds only the
// victim's identities.

const VICTIM: &str = "victim@example.com";
const ATTACKER: &str = "mallory@example.net";

/// The attacker registers the victim's email first, without being able to read the victim's
/// mailbox; the victim later signs up with Google. Nothing was created for the attacker, so
/// there is nothing to merge into.
async fn hijack_classic_federated_merge(mode: Mode) {
    let pair = start(mode).await;
    // Attacker: a local sign-up with the victim's email; the mailed code goes to the victim.
    let mut attacker = local_sign_up(mode, B2C_CLIENT, VICTIM);
    attacker.complete_email_verification = false;
    let result = pair.run(&attacker).await;
    pair.assert_stuck_on_verification("attacker's local sign-up", &result);
    assert!(pair.app.customers_with_email(VICTIM).is_empty(), "[{mode}]");

    // Victim: signs up with Google.
    let victim = pair
        .run_to_token(
            "victim's Google sign-up",
            &social_sign_up(mode, B2C_CLIENT, VICTIM, "google.com"),
        )
        .await;
    let customers = pair.app.customers_with_email(VICTIM);
    assert_eq!(customers.len(), 1, "[{mode}]");
    pair.assert_token(
        "victim's Google sign-up",
        &victim,
        &customers[0].account_number,
        "Created",
    );
    assert_eq!(
        pair.identities_of(&customers[0].account_number),
        BTreeSet::from([social_identity_of(&victim, "google.com")]),
        "[{mode}] the victim's customer holds only the victim's identity"
    );
    assert_eq!(pair.app.active_links(), 1, "[{mode}]");
}

/// The same attack on a tenant that turned email verification off for local accounts, with the
/// service configured to know it (`linking.local_accounts_verify_email = false`): B2C lets the
/// attacker through, the service refuses.
async fn hijack_classic_federated_merge_when_b2c_does_not_verify(mode: Mode) {
    let pair = start_with(
        mode,
        |m| m.local_email_verification = false,
        |_, s| s.linking.local_accounts_verify_email = false,
    )
    .await;
    let mut attacker = local_sign_up(mode, B2C_CLIENT, VICTIM);
    attacker.complete_email_verification = false;
    let result = pair.run(&attacker).await;
    assert!(
        !result.calls.is_empty(),
        "[{mode}] without verification in B2C the service decides: {}",
        shown(&result)
    );
    pair.assert_refused_before_account(
        "attacker's unverified local sign-up",
        &result,
        AccountKind::Local,
        Refusal::EmailNotVerified,
    );
    assert!(pair.app.customers_with_email(VICTIM).is_empty(), "[{mode}]");

    let victim = pair
        .run_to_token(
            "victim's Google sign-up",
            &social_sign_up(mode, B2C_CLIENT, VICTIM, "google.com"),
        )
        .await;
    let customers = pair.app.customers_with_email(VICTIM);
    assert_eq!(customers.len(), 1, "[{mode}]");
    pair.assert_token(
        "victim's Google sign-up",
        &victim,
        &customers[0].account_number,
        "Created",
    );
    assert_eq!(
        pair.identities_of(&customers[0].account_number),
        BTreeSet::from([social_identity_of(&victim, "google.com")]),
        "[{mode}] the victim's customer holds only the victim's identity"
    );
    assert_eq!(pair.app.active_links(), 1, "[{mode}]");
}

/// The attacker tries to pre-create the victim's customer record (through every way that does
/// not prove the email) and to keep access to it; the victim's sign-up finds no attacker record
/// and gets a new customer of its own, and the attacker's return changes nothing.
async fn hijack_unexpired_session(mode: Mode) {
    let pair = start(mode).await;
    // Attacker: pre-create the record.
    let mut local = local_sign_up(mode, B2C_CLIENT, VICTIM);
    local.complete_email_verification = false;
    let result = pair.run(&local).await;
    pair.assert_stuck_on_verification("attacker's local sign-up", &result);
    for request in unverified_social_sign_ups(mode, B2C_CLIENT, VICTIM) {
        let result = pair.run(&request).await;
        pair.assert_refused_before_account(
            "attacker's unverified social sign-up",
            &result,
            AccountKind::Social,
            Refusal::EmailNotVerified,
        );
    }
    assert_eq!(
        pair.app.customer_count(),
        0,
        "[{mode}] no record pre-created"
    );

    // Victim: a local sign-up, verified.
    let victim = pair
        .run_to_token(
            "victim's local sign-up",
            &local_sign_up(mode, B2C_CLIENT, VICTIM),
        )
        .await;
    let customers = pair.app.customers_with_email(VICTIM);
    assert_eq!(customers.len(), 1, "[{mode}]");
    let account = customers[0].account_number.clone();
    pair.assert_token("victim's local sign-up", &victim, &account, "Created");

    // Attacker comes back with the same unverified identity.
    let result = pair
        .run(&social_sign_up(mode, B2C_CLIENT, VICTIM, "facebook.com"))
        .await;
    assert_ne!(
        result.outcome,
        Outcome::Token,
        "[{mode}] {}",
        shown(&result)
    );
    assert_eq!(
        result.code.as_deref(),
        Some(Refusal::EmailNotVerified.code()),
        "[{mode}] {}",
        shown(&result)
    );
    assert_eq!(
        pair.identities_of(&account),
        BTreeSet::from([local_identity_of(&victim)]),
        "[{mode}] the victim's customer holds only the victim's identity"
    );
    assert_eq!(pair.app.active_links(), 1, "[{mode}]");
}

/// The victim's customer record exists (point of sale). The attacker tries to attach identities
/// of their own to it before the victim signs up; only the victim's identity ends up on it.
async fn hijack_trojan_identifier(mode: Mode) {
    let pair = start(mode).await;
    pair.app.import_csv(&csv(&[&format!(
        "POS-V,USRT,person,false,{VICTIM},Vic,Tim"
    )]));
    // Attacker: their own verified Google account gets their own customer, not the victim's.
    let own = pair
        .run_to_token(
            "attacker's own Google sign-up",
            &social_sign_up(mode, B2C_CLIENT, ATTACKER, "google.com"),
        )
        .await;
    let attacker_customers = pair.app.customers_with_email(ATTACKER);
    assert_eq!(attacker_customers.len(), 1, "[{mode}]");
    let attacker_account = attacker_customers[0].account_number.clone();
    assert_ne!(attacker_account, "POS-V", "[{mode}]");
    pair.assert_token(
        "attacker's own Google sign-up",
        &own,
        &attacker_account,
        "Created",
    );
    // Attacker: identities asserting the victim's email.
    for request in unverified_social_sign_ups(mode, B2C_CLIENT, VICTIM) {
        let result = pair.run(&request).await;
        pair.assert_refused_before_account(
            "attacker's identity asserting the victim's email",
            &result,
            AccountKind::Social,
            Refusal::EmailNotVerified,
        );
    }
    let mut local = local_sign_up(mode, B2C_CLIENT, VICTIM);
    local.complete_email_verification = false;
    let result = pair.run(&local).await;
    pair.assert_stuck_on_verification("attacker's local sign-up", &result);
    assert!(pair.identities_of("POS-V").is_empty(), "[{mode}]");

    // Victim.
    let victim = pair
        .run_to_token(
            "victim's local sign-up",
            &local_sign_up(mode, B2C_CLIENT, VICTIM),
        )
        .await;
    pair.assert_token("victim's local sign-up", &victim, "POS-V", "Linked");
    assert_eq!(
        pair.identities_of("POS-V"),
        BTreeSet::from([local_identity_of(&victim)]),
        "[{mode}] the victim's customer holds only the victim's identity"
    );
    assert_eq!(
        pair.identities_of(&attacker_account),
        BTreeSet::from([social_identity_of(&own, "google.com")]),
        "[{mode}]"
    );
    assert_eq!(pair.app.customer_count(), 2, "[{mode}]");
}

/// The attacker holds an identity on a customer whose primary email is then changed to the
/// victim's address (by the back office, on the attacker's request). The victim's sign-up would
/// join the attacker's customer: it is refused for review instead.
async fn hijack_unexpired_email_change(mode: Mode) {
    let pair = start(mode).await;
    let attacker = pair
        .run_to_token(
            "attacker's sign-up",
            &local_sign_up(mode, B2C_CLIENT, ATTACKER),
        )
        .await;
    let customers = pair.app.customers_with_email(ATTACKER);
    assert_eq!(customers.len(), 1, "[{mode}]");
    let account = customers[0].account_number.clone();
    pair.assert_token("attacker's sign-up", &attacker, &account, "Created");

    let response = pair
        .app
        .client
        .patch(format!("{}/admin/v1/customers/{account}", pair.app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "primaryEmail": VICTIM }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "[{mode}] email change: {body}");
    assert_eq!(body["primaryEmail"], VICTIM, "[{mode}] {body}");

    // Victim.
    let result = pair.run(&local_sign_up(mode, B2C_CLIENT, VICTIM)).await;
    pair.assert_refused_before_account(
        "victim's sign-up",
        &result,
        AccountKind::Local,
        Refusal::LinkRequiresReview,
    );
    assert_eq!(
        pair.identities_of(&account),
        BTreeSet::from([local_identity_of(&attacker)]),
        "[{mode}] the victim's identity is not on the attacker's customer"
    );
    assert_eq!(pair.app.customer_count(), 1, "[{mode}] nothing created");
    assert_eq!(pair.app.active_links(), 1, "[{mode}]");
}

/// The victim has a customer with a Google identity. The attacker signs in through providers
/// that do not verify email, asserting the victim's address; the victim's customer keeps only
/// the victim's identities (and the victim can still add a local account).
async fn hijack_non_verifying_identity_provider(mode: Mode) {
    let pair = start(mode).await;
    let victim_google = pair
        .run_to_token(
            "victim's Google sign-up",
            &social_sign_up(mode, B2C_CLIENT, VICTIM, "google.com"),
        )
        .await;
    let customers = pair.app.customers_with_email(VICTIM);
    assert_eq!(customers.len(), 1, "[{mode}]");
    let account = customers[0].account_number.clone();
    pair.assert_token(
        "victim's Google sign-up",
        &victim_google,
        &account,
        "Created",
    );

    for request in unverified_social_sign_ups(mode, B2C_CLIENT, VICTIM) {
        let what = format!(
            "attacker's {} sign-up (email_verified {:?})",
            request.provider.as_deref().unwrap(),
            request.email_verified
        );
        let result = pair.run(&request).await;
        pair.assert_refused_before_account(
            &what,
            &result,
            AccountKind::Social,
            Refusal::EmailNotVerified,
        );
    }
    assert_eq!(
        pair.identities_of(&account),
        BTreeSet::from([social_identity_of(&victim_google, "google.com")]),
        "[{mode}] the attacker's identities are not on the victim's customer"
    );

    let victim_local = pair
        .run_to_token(
            "victim's local sign-up",
            &local_sign_up(mode, B2C_CLIENT, VICTIM),
        )
        .await;
    pair.assert_token("victim's local sign-up", &victim_local, &account, "Linked");
    assert_eq!(
        pair.identities_of(&account),
        BTreeSet::from([
            social_identity_of(&victim_google, "google.com"),
            local_identity_of(&victim_local),
        ]),
        "[{mode}] the victim's customer holds only the victim's identities"
    );
    assert_eq!(pair.app.customer_count(), 1, "[{mode}]");
}

// ---------------------------------------------------------------------------------------------
// A time-out and B2C's retry.

async fn a_timed_out_link_call_is_sent_again_and_links_once(mode: Mode) {
    let pair = start_with(mode, |m| m.timeout_ms = Some(1000), |_, _| {}).await;
    // The call that links: the service writes, and B2C never sees the answer.
    let marker: &[u8] = match mode {
        Mode::UserFlow => b"PreTokenIssuance",
        Mode::CustomPolicy => b"/b2c/rest/link",
    };
    let proxy = HoldBackProxy::start(&pair.app.address, marker).await;
    pair.mock.set_service_url(&proxy.url);

    let result = pair
        .run_to_token(
            "sign-up with a slow link call",
            &local_sign_up(mode, B2C_CLIENT, "patient@example.com"),
        )
        .await;
    assert!(
        proxy.service_answered_held_call(),
        "[{mode}] the service answered the call B2C gave up on"
    );
    let link_calls: Vec<&CallRecord> = result.calls.iter().filter(|c| is_link_call(c)).collect();
    assert_eq!(
        link_calls.len(),
        2,
        "[{mode}] the link call and one retry: {}",
        shown(&result)
    );
    let (first, second) = (link_calls[0], link_calls[1]);
    assert_eq!(first.attempt, 1, "[{mode}] {first:?}");
    assert_eq!(
        first.status, None,
        "[{mode}] attempt 1 got no answer: {first:?}"
    );
    let error = first.error.as_deref().unwrap_or_default().to_lowercase();
    assert!(
        error.contains("no answer") || error.contains("time"),
        "[{mode}] attempt 1 timed out: {first:?}"
    );
    assert_eq!(second.attempt, 2, "[{mode}] {second:?}");
    assert_eq!(
        second.status,
        Some(200),
        "[{mode}] attempt 2 answered: {second:?}"
    );
    assert_eq!(second.name, first.name, "[{mode}]");
    assert_eq!(
        second.request, first.request,
        "[{mode}] the same request again"
    );

    // One customer, one link; the retry resolved what the first attempt wrote.
    let customers = pair.app.customers_with_email("patient@example.com");
    assert_eq!(customers.len(), 1, "[{mode}] {customers:?}");
    let account = customers[0].account_number.clone();
    pair.assert_token(
        "sign-up after the retry",
        &result,
        &account,
        "AlreadyLinked",
    );
    assert_eq!(
        pair.identities_of(&account),
        BTreeSet::from([local_identity_of(&result)]),
        "[{mode}]"
    );
    assert_eq!(pair.app.customer_count(), 1, "[{mode}]");
    assert_eq!(pair.app.active_links(), 1, "[{mode}]");
}

/// A TCP proxy between B2C and the service. It forwards everything, except the service's answer
/// to the first request that contains `marker`: that answer is held back until B2C gives up on
/// the connection. A request on another connection that arrives while the held call is still
/// being processed waits until the service has answered it, so the retry always finds what the
/// first attempt wrote.
pub(crate) struct HoldBackProxy {
    pub(crate) url: String,
    state: Arc<ProxyState>,
}

struct ProxyState {
    target: SocketAddr,
    marker: Vec<u8>,
    /// Whether a connection has taken the hold.
    taken: AtomicBool,
    /// Whether the service answered the held request.
    answered: watch::Sender<bool>,
}

/// The longest the proxy waits for anything (a stuck test fails rather than hangs).
const PROXY_PATIENCE: Duration = Duration::from_secs(30);

impl HoldBackProxy {
    pub(crate) async fn start(service_url: &str, marker: &[u8]) -> HoldBackProxy {
        let target: SocketAddr = service_url
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|e| panic!("service address {service_url}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ProxyState {
            target,
            marker: marker.to_vec(),
            taken: AtomicBool::new(false),
            answered: watch::channel(false).0,
        });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(forward(inbound, shared.clone()));
            }
        });
        HoldBackProxy { url, state }
    }

    pub(crate) fn service_answered_held_call(&self) -> bool {
        *self.state.answered.borrow()
    }
}

async fn forward(inbound: TcpStream, state: Arc<ProxyState>) {
    let Ok(outbound) = TcpStream::connect(state.target).await else {
        return;
    };
    let (mut from_b2c, mut to_b2c) = inbound.into_split();
    let (mut from_service, mut to_service) = outbound.into_split();
    let holding = Arc::new(AtomicBool::new(false));
    let b2c_gone = Arc::new(Notify::new());

    let upstream = {
        let state = state.clone();
        let holding = holding.clone();
        let b2c_gone = b2c_gone.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            // The end of what came before, so a marker split across reads is still found.
            let mut tail: Vec<u8> = Vec::new();
            loop {
                let n = match from_b2c.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                tail.extend_from_slice(&buf[..n]);
                let found = contains(&tail, &state.marker);
                let keep = tail.len().saturating_sub(state.marker.len());
                tail.drain(..keep);
                if found
                    && !holding.load(Ordering::SeqCst)
                    && state
                        .taken
                        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    holding.store(true, Ordering::SeqCst);
                } else if state.taken.load(Ordering::SeqCst) && !holding.load(Ordering::SeqCst) {
                    // Another connection's request while the held one may still be running.
                    let mut answered = state.answered.subscribe();
                    let _ = tokio::time::timeout(PROXY_PATIENCE, answered.wait_for(|a| *a)).await;
                }
                if to_service.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            b2c_gone.notify_one();
            // Keep the service's side open while its answer is held back: a closed client might
            // make it abandon the request.
            to_service
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from_service.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if holding.load(Ordering::SeqCst) {
                state.answered.send_replace(true);
                // Swallow the answer; wait until B2C gives up and closes the connection.
                let _ = tokio::time::timeout(PROXY_PATIENCE, b2c_gone.notified()).await;
                break;
            }
            if to_b2c.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_b2c.shutdown().await;
    };
    let (to_service, ()) = tokio::join!(upstream, downstream);
    drop(to_service);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The relying-party call.

/// The store's own HTTP client for openidconnect: no redirects, plain reqwest.
async fn oidc_http(
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut builder = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await?.to_vec();
    Ok(builder.body(body).unwrap())
}

async fn relying_party_links_with_the_id_token_from_the_code_exchange(mode: Mode) {
    use openidconnect::core::{CoreClient, CoreProviderMetadata};
    use openidconnect::{
        AuthorizationCode, ClientId, ClientSecret, JsonWebKeySet, Nonce, OAuth2TokenResponse,
        RedirectUrl, TokenResponse,
    };

    let pair = start_with(
        mode,
        |_| {},
        |mock, s| {
            s.relying_party = Some(RelyingPartySettings {
                metadata_urls: vec![
                    mock.discovery_url(USER_FLOW),
                    mock.discovery_url(CUSTOM_POLICY),
                ],
            });
        },
    )
    .await;
    pair.app.import_csv(&csv(&[
        "POS-1,USRT,person,false,rita@example.com,Rita,Party",
    ]));

    // The person signs in to the store: B2C redirects back with a code.
    let nonce = format!("nonce-{}", uuid::Uuid::new_v4().simple());
    let mut request = local_sign_up(mode, B2C_CLIENT, "rita@example.com");
    request.redirect_uri = Some(REDIRECT_URI.into());
    request.state = Some("state-123".into());
    request.nonce = Some(nonce.clone());
    let result = pair.run_to_token("sign-up", &request).await;
    pair.assert_token("sign-up", &result, "POS-1", "Linked");
    let code = result
        .code_grant
        .clone()
        .unwrap_or_else(|| panic!("[{mode}] no authorization code: {}", shown(&result)));
    let redirect = result.redirect.as_deref().unwrap_or_default();
    assert!(
        redirect.starts_with(REDIRECT_URI) && redirect.contains("state=state-123"),
        "[{mode}] the redirect goes to the store with its state"
    );

    // The store: discovery (fetched by hand: B2C's issuer is not the discovery URL's prefix),
    // keys, the code exchange, and the ID token's verification.
    let discovery_url = pair.mock.discovery_url(mode.policy());
    let document: Value = pair
        .http
        .get(&discovery_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let metadata: CoreProviderMetadata = serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("[{mode}] discovery document: {e}: {document}"));
    assert_eq!(metadata.issuer().as_str(), pair.mock.issuer(), "[{mode}]");
    assert!(
        !discovery_url.starts_with(metadata.issuer().as_str()),
        "[{mode}] like B2C, the issuer is not where discovery lives"
    );
    let keys = JsonWebKeySet::fetch_async(metadata.jwks_uri(), &oidc_http)
        .await
        .unwrap_or_else(|e| panic!("[{mode}] key set: {e:?}"));
    let metadata = metadata.set_jwks(keys);
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(B2C_CLIENT.into()),
        Some(ClientSecret::new(STORE_CLIENT_SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).unwrap());
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .unwrap_or_else(|e| panic!("[{mode}] no token endpoint: {e}"))
        .add_extra_param("scope", format!("openid {B2C_CLIENT}"))
        .request_async(&oidc_http)
        .await
        .unwrap_or_else(|e| panic!("[{mode}] code exchange: {e:?}"));
    assert!(!tokens.access_token().secret().is_empty(), "[{mode}]");
    let id_token = tokens
        .id_token()
        .unwrap_or_else(|| panic!("[{mode}] the token response has no id_token"));
    let claims = id_token
        .claims(&client.id_token_verifier(), &Nonce::new(nonce))
        .unwrap_or_else(|e| panic!("[{mode}] the ID token does not verify: {e}"));
    assert_eq!(
        Some(claims.subject().as_str()),
        result.object_id.as_deref(),
        "[{mode}]"
    );
    assert_eq!(claims.issuer().as_str(), pair.mock.issuer(), "[{mode}]");
    // The claim naming the policy, as B2C issues it: `tfp` from a user flow, `acr` (lower case)
    // from a custom policy; `/v1/link` below accepts either.
    let payload = jwt_payload(&id_token.to_string());
    let (named, other, policy) = match mode {
        Mode::UserFlow => ("tfp", "acr", USER_FLOW.to_string()),
        Mode::CustomPolicy => ("acr", "tfp", CUSTOM_POLICY.to_lowercase()),
    };
    assert_eq!(payload[named], policy.as_str(), "[{mode}] {payload}");
    assert!(payload.get(other).is_none(), "[{mode}] {payload}");

    // A code is good once.
    let replay = client
        .exchange_code(AuthorizationCode::new(code))
        .unwrap()
        .add_extra_param("scope", format!("openid {B2C_CLIENT}"))
        .request_async(&oidc_http)
        .await;
    assert!(
        replay.is_err(),
        "[{mode}] an authorization code is redeemed once"
    );

    // The store's return call.
    let v1_link = |token: String| {
        let request = pair
            .app
            .client
            .post(format!("{}/v1/link", pair.app.address))
            .bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    };
    let (status, body) = v1_link(id_token.to_string()).await;
    assert_eq!(status, 200, "[{mode}] /v1/link: {body}");
    assert_eq!(body["customerAccountNumber"], "POS-1", "[{mode}] {body}");
    // The connector linked the identity during the journey; the token names the same identity.
    assert_eq!(body["outcome"], "AlreadyLinked", "[{mode}] {body}");
    assert_eq!(
        pair.identities_of("POS-1"),
        BTreeSet::from([local_identity_of(&result)]),
        "[{mode}]"
    );
    assert_eq!(pair.app.active_links(), 1, "[{mode}]");

    // A token that was tampered with is refused.
    let raw = id_token.to_string();
    let mut parts: Vec<String> = raw.split('.').map(str::to_string).collect();
    parts[2] = parts[2].chars().rev().collect();
    let (status, body) = v1_link(parts.join(".")).await;
    assert_eq!(status, 401, "[{mode}] a bad signature: {body}");
}
