//! The mock B2C as the tests start it: its tenant, its settings, the stores' applications.

use std::path::PathBuf;

use autolink::mock_b2c::{Application, MockB2c, MockSettings};

use crate::helpers::{B2B_CLIENT, B2C_CLIENT, CONNECTOR_PASSWORD, CONNECTOR_USER};

/// The mock B2C's tenant in the tests.
pub const MOCK_TENANT: &str = "fabrikamtest.onmicrosoft.com";
pub const MOCK_TENANT_ID: &str = "775527ff-9a37-4307-8b3d-cc311f58d925";
/// The mock's user flow (API connector) and the project's custom policy.
pub const USER_FLOW: &str = "B2C_1_signup_signin";
pub const CUSTOM_POLICY: &str = "B2C_1A_Autolink_signup_signin";

/// The project's `policies/` folder.
pub fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// The mock B2C's settings every test starts from: the user flow and the custom policy (Basic,
/// with the connector's credentials as policy keys), the connector's Basic credentials, a
/// free port, no application yet, and a test key (generating one per test is slow in a debug
/// build). `service_url` is replaced by `set_service_url` once the service runs.
pub fn mock_settings() -> MockSettings {
    use autolink::mock_b2c::{CallerAuth, CustomPolicySettings};
    MockSettings {
        bind: "127.0.0.1:0".into(),
        tenant: MOCK_TENANT.into(),
        tenant_id: MOCK_TENANT_ID.into(),
        user_flows: vec![USER_FLOW.into()],
        application_claims: autolink::mock_b2c::autolink_application_claims(),
        custom_policy_id: Some(CUSTOM_POLICY.into()),
        custom_policy: Some(CustomPolicySettings {
            dir: policies_dir(),
            environment: "Test".into(),
            rest_auth: "Basic".into(),
            policy_keys: [
                ("B2C_1A_AutolinkRestUsername", CONNECTOR_USER),
                ("B2C_1A_AutolinkRestPassword", CONNECTOR_PASSWORD),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }),
        service_url: "http://127.0.0.1:9".into(),
        connector_auth: CallerAuth::Basic {
            username: CONNECTOR_USER.into(),
            password: CONNECTOR_PASSWORD.into(),
        },
        service_ca_file: None,
        timeout_ms: None,
        retries: None,
        local_email_verification: true,
        applications: Vec::new(),
        providers: autolink::mock_b2c::default_providers(),
        entra_clients: Vec::new(),
        signing_key_file: Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc-test-key-2.pem"),
        ),
        directory_file: None,
        verification_code_lifetime_s: None,
        external_id: None,
    }
}

/// The web store's application (the consumer channel's client id) with these redirect URIs.
pub fn web_store(redirect_uris: Vec<String>) -> Application {
    Application {
        client_id: B2C_CLIENT.into(),
        redirect_uris,
        client_secret: None,
        name: Some("Fabrikam web store".into()),
    }
}

/// Both demo stores of a mock at `base` (`http://host:port`): the web store at `/demo`, the
/// business store at `/demo-business`, each registered with its callback.
pub fn demo_stores(base: &str) -> Vec<Application> {
    vec![
        web_store(vec![format!("{base}/demo/callback")]),
        Application {
            client_id: B2B_CLIENT.into(),
            redirect_uris: vec![format!("{base}/demo-business/callback")],
            client_secret: None,
            name: Some("Fabrikam business store".into()),
        },
    ]
}

/// Starts the mock with `settings`, pointed at the service at `service`.
pub async fn start_mock(settings: MockSettings, service: &str) -> MockB2c {
    let mock = MockB2c::start(settings)
        .await
        .unwrap_or_else(|e| panic!("the mock B2C does not start: {e:#}"));
    mock.set_service_url(service);
    mock
}

/// The claims of a JWT, unverified (the tests that verify use the crate's verifier first).
pub fn jwt_payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("the payload is base64url");
    serde_json::from_slice(&bytes).expect("the payload is JSON")
}
