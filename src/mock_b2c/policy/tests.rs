use std::path::Path;

use super::*;

fn load(rest_auth: &str) -> PolicySet {
    let settings = CustomPolicySettings {
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        environment: "Test".into(),
        rest_auth: rest_auth.into(),
        policy_keys: Default::default(),
    };
    PolicySet::load(
        &settings,
        "http://127.0.0.1:1234/",
        "http://127.0.0.1:1/token",
    )
    .unwrap()
}

#[test]
fn the_sign_up_pages_acquire_credentials_then_precheck() {
    let set = load("Basic");
    assert_eq!(
        set.validations(LOCAL_SIGN_UP_PAGE),
        [
            "Autolink-AcquireCredentials",
            "REST-Autolink-Precheck-Local"
        ]
    );
    assert_eq!(
        set.validations(SOCIAL_SIGN_UP_PAGE),
        [
            "Autolink-AcquireCredentials",
            "REST-Autolink-Precheck-Social"
        ]
    );
    let link = &set.profiles["REST-Autolink-Link-Local"];
    assert_eq!(
        link.metadata("ServiceUrl"),
        Some("http://127.0.0.1:1234/b2c/rest/link")
    );
    assert_eq!(link.metadata("AuthenticationType"), Some("Basic"));
}

#[test]
fn google_maps_email_verified_and_facebook_does_not() {
    let set = load("Basic");
    let google: BTreeMap<String, Value> = set
        .provider_claims("google.com", "g-1", "a@x.com", Some(false), Some("A"), None)
        .into_iter()
        .collect();
    assert_eq!(google["emailVerified"], json!(false));
    assert_eq!(google["identityProvider"], json!("google.com"));
    assert_eq!(google["issuerUserId"], json!("g-1"));
    assert_eq!(google["givenName"], json!("A"));
    let facebook: BTreeMap<String, Value> = set
        .provider_claims("facebook.com", "f-1", "a@x.com", Some(true), None, None)
        .into_iter()
        .collect();
    assert!(!facebook.contains_key("emailVerified"));
    assert_eq!(facebook["identityProvider"], json!("facebook.com"));
}

#[test]
fn the_token_carries_the_relying_partys_output_claims() {
    let set = load("Bearer");
    let bag: BTreeMap<String, Value> = [
        ("objectId", json!("oid-1")),
        ("email", json!("a@x.com")),
        ("customerAccountNumber", json!("C-1")),
        ("autoLinkOutcome", json!("Linked")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let claims = set.token_claims(&bag, "tenant-1");
    assert_eq!(claims["sub"], "oid-1");
    assert_eq!(claims["email"], "a@x.com");
    assert_eq!(claims["tid"], "tenant-1");
    assert_eq!(claims["extension_CustomerAccountNumber"], "C-1");
    assert_eq!(claims["extension_AutoLinkOutcome"], "Linked");
    assert!(
        !claims.contains_key("idp"),
        "no provider for a local account"
    );
}

#[test]
fn inputs_follow_data_types_defaults_and_resolvers() {
    let set = load("Basic");
    let tp = &set.profiles["REST-Autolink-Precheck-Social"];
    let bag: BTreeMap<String, Value> = [
        ("email", json!("a@x.com")),
        ("emailVerified", json!("true")),
        ("identityProvider", json!("google.com")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let resolve = |t: &str| {
        t.replace("{OIDC:ClientId}", "client-1")
            .replace("{Culture:RFC5646}", "fr-FR")
    };
    let inputs = set.inputs(&tp.input_claims, &bag, &resolve);
    assert_eq!(
        inputs["emailVerified"],
        json!(true),
        "a boolean claim is sent as one"
    );
    assert_eq!(inputs["clientId"], "client-1");
    assert_eq!(inputs["uiLocales"], "fr-FR");
    assert!(
        !inputs.contains_key("givenName"),
        "claims without a value are left out"
    );
}
