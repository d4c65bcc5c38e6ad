//! Bearer access tokens and B2C ID tokens verified against the mock issuer over real HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use autolink::auth::fetch::{FetchError, Fetcher};
use autolink::auth::oidc::{AccessTokenVerifier, B2cIdTokenVerifier, TokenError};
use autolink::config::{BearerSettings, OidcFetchSettings, RelyingPartySettings};
use serde_json::json;

use crate::mock_issuer::*;

/// Fetch limits for tests: short timeout, small documents.
const TIMEOUT_MS: u64 = 700;
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

fn fetch_settings() -> OidcFetchSettings {
    OidcFetchSettings {
        timeout_ms: TIMEOUT_MS,
        max_document_bytes: MAX_DOCUMENT_BYTES,
        min_refetch_interval_s: 30,
        cache_ttl_s: 3600,
    }
}

fn fetcher() -> Arc<Fetcher> {
    Arc::new(Fetcher::new(&fetch_settings()).unwrap())
}

fn bearer_settings(mock: &MockIssuer) -> BearerSettings {
    BearerSettings {
        discovery_url: mock.entra_discovery_url(),
        audiences: vec![API_AUDIENCE.into()],
        required_roles: vec![],
        allowed_client_ids: vec![],
    }
}

fn access_verifier(mock: &MockIssuer) -> AccessTokenVerifier {
    AccessTokenVerifier::new(&bearer_settings(mock), fetcher()).unwrap()
}

fn b2c_verifier(mock: &MockIssuer) -> B2cIdTokenVerifier {
    let settings = RelyingPartySettings {
        metadata_urls: vec![mock.b2c_discovery_url(B2C_POLICY)],
    };
    // Configured upper-case: client ids compare case-insensitively.
    B2cIdTokenVerifier::new(
        &settings,
        vec![B2C_CLIENT_ID.to_uppercase(), "another-client".into()],
        fetcher(),
    )
    .unwrap()
}

fn provider_error(error: TokenError) -> Arc<FetchError> {
    match error {
        TokenError::ProviderUnavailable(inner) => inner,
        other => panic!("expected ProviderUnavailable, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Access tokens.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_access_token_is_accepted() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let token = mock.access_token().signed_by(key(1));
    let info = verifier.verify(&token).await.unwrap();
    assert_eq!(info.subject, "6a0d4b5e-1f2c-4e3d-9c8b-7a6f5e4d3c2b");
    assert_eq!(info.client_id.as_deref(), Some(CALLER_CLIENT_ID));
    assert_eq!(info.roles, vec![CONNECTOR_ROLE.to_string()]);
}

#[tokio::test]
async fn a_v1_access_token_with_scp_and_appid_is_accepted() {
    let mock = MockIssuer::start().await;
    let mut settings = bearer_settings(&mock);
    settings.allowed_client_ids = vec![CALLER_CLIENT_ID.to_uppercase()];
    let verifier = AccessTokenVerifier::new(&settings, fetcher()).unwrap();
    let token = mock
        .access_token()
        .without("roles")
        .without("azp")
        .claim("appid", CALLER_CLIENT_ID)
        .claim("scp", "Connector.Call")
        .claim("aud", json!([API_AUDIENCE]))
        .signed_by(key(1));
    let info = verifier.verify(&token).await.unwrap();
    assert_eq!(info.client_id.as_deref(), Some(CALLER_CLIENT_ID));
    assert!(info.roles.is_empty());
}

#[tokio::test]
async fn verified_tokens_are_served_from_the_cache_without_refetching() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let token = mock.access_token().signed_by(key(1));
    for _ in 0..5 {
        verifier.verify(&token).await.unwrap();
    }
    assert_eq!(mock.discovery_fetches(), 1);
    assert_eq!(mock.key_fetches(), 1);
}

#[tokio::test]
async fn concurrent_first_requests_fetch_the_documents_once() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let token = mock.access_token().signed_by(key(1));
    let results = futures_util::future::join_all((0..20).map(|_| verifier.verify(&token))).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(mock.discovery_fetches(), 1);
    assert_eq!(mock.key_fetches(), 1);
}

#[tokio::test]
async fn a_token_signed_by_another_key_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    // The attacker's key, claiming the id of the published key.
    let token = mock.access_token().kid(&key(1).kid).signed_by(key(3));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::BadSignature), "{error:?}");
}

#[tokio::test]
async fn an_unsigned_token_with_alg_none_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = mock.access_token().kid(&key(1).kid).unsigned(alg);
        let error = verifier.verify(&token).await.unwrap_err();
        assert!(
            matches!(error, TokenError::UnsupportedAlgorithm(_)),
            "{alg}: {error:?}"
        );
    }
    let token = mock.access_token().unsigned("none");
    assert!(matches!(
        verifier.verify(&token).await,
        Err(TokenError::UnsupportedAlgorithm("none"))
    ));
    // Refused before any key was needed.
    assert_eq!(mock.key_fetches(), 0);
}

#[tokio::test]
async fn an_hs256_token_with_the_public_key_as_secret_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    for (form, secret) in key(1).public_key_secrets() {
        let token = mock.access_token().hs256(&secret);
        let error = verifier.verify(&token).await.unwrap_err();
        assert!(
            matches!(error, TokenError::UnsupportedAlgorithm("HS256")),
            "{form}: {error:?}"
        );
    }
}

#[tokio::test]
async fn other_rsa_algorithms_are_refused() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    for alg in ["RS384", "RS512", "PS256", "ES256", "EdDSA"] {
        // An RS256-signed token whose header is then rewritten to name another algorithm.
        let token = mock.access_token().signed_by(key(1));
        let (_, rest) = token.split_once('.').unwrap();
        let header = json!({"alg": alg, "kid": key(1).kid, "typ": "JWT"}).to_string();
        let token = format!("{}.{rest}", b64(header.as_bytes()));
        let error = verifier.verify(&token).await.unwrap_err();
        assert!(
            matches!(error, TokenError::UnsupportedAlgorithm(_)),
            "{alg}: {error:?}"
        );
    }
}

#[tokio::test]
async fn a_token_with_an_unknown_key_id_is_refused_after_one_refetch() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap();
    assert_eq!(mock.key_fetches(), 1);
    // Key 3 is never published.
    let error = verifier
        .verify(&mock.access_token().signed_by(key(3)))
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::UnknownKey), "{error:?}");
    assert_eq!(mock.key_fetches(), 2);
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_with_exactly_one_refetch() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let old_token = mock.access_token().signed_by(key(1));
    verifier.verify(&old_token).await.unwrap();
    assert_eq!(mock.key_fetches(), 1);

    // The issuer rotates: key 2 replaces key 1.
    mock.publish_keys(&[key(2)]);
    let new_token = mock.access_token().signed_by(key(2));
    verifier.verify(&new_token).await.unwrap();
    assert_eq!(mock.key_fetches(), 2, "exactly one refetch");
    verifier.verify(&new_token).await.unwrap();
    assert_eq!(mock.key_fetches(), 2);

    // Key 1 is no longer published: its tokens now name an unknown key, and the refetch they
    // would cause falls within the interval.
    let error = verifier.verify(&old_token).await.unwrap_err();
    assert!(matches!(error, TokenError::UnknownKey), "{error:?}");
    assert_eq!(mock.key_fetches(), 2);
}

#[tokio::test]
async fn an_old_key_still_verifies_while_it_is_published() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    mock.publish_keys(&[key(1), key(2)]);
    verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap();
    verifier
        .verify(&mock.access_token().signed_by(key(2)))
        .await
        .unwrap();
    assert_eq!(mock.key_fetches(), 1);
}

#[tokio::test]
async fn a_flood_of_unknown_key_ids_causes_at_most_one_refetch() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap();
    assert_eq!(mock.key_fetches(), 1);
    let claims = mock.access_token();
    let tokens: Vec<String> = (0..50)
        .map(|i| claims.with_random_signature(&format!("forged-{i}")))
        .collect();
    let results = futures_util::future::join_all(tokens.iter().map(|t| verifier.verify(t))).await;
    for result in results {
        assert!(matches!(result, Err(TokenError::UnknownKey)), "{result:?}");
    }
    assert!(
        mock.key_fetches() <= 2,
        "{} key fetches",
        mock.key_fetches()
    );
    // Even a genuinely new key waits for the interval now.
    mock.publish_keys(&[key(1), key(2)]);
    let error = verifier
        .verify(&mock.access_token().signed_by(key(2)))
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::UnknownKey), "{error:?}");
    assert!(
        mock.key_fetches() <= 2,
        "{} key fetches",
        mock.key_fetches()
    );
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let token = mock
        .access_token()
        .without("roles")
        .claim("scp", "read")
        .signed_by(key(1));
    let tampered = tamper_payload(&token, |claims| {
        claims.insert("roles".into(), json!([CONNECTOR_ROLE, "Admin"]));
    });
    let error = verifier.verify(&tampered).await.unwrap_err();
    assert!(matches!(error, TokenError::BadSignature), "{error:?}");
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let token = mock
        .access_token()
        .claim(
            "iss",
            format!(
                "{}/00000000-0000-0000-0000-000000000000/v2.0",
                mock.base_url
            ),
        )
        .signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::WrongIssuer), "{error:?}");
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_makes_tokens_fail() {
    let mock = MockIssuer::start().await;
    mock.set_document_issuer(Some("https://login.example.com/evil/v2.0".into()));
    let verifier = access_verifier(&mock);
    let error = verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::WrongIssuer), "{error:?}");
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    for aud in [
        json!("api://another-api"),
        json!(["api://another-api", "x"]),
        json!([]),
    ] {
        let token = mock
            .access_token()
            .claim("aud", aud.clone())
            .signed_by(key(1));
        let error = verifier.verify(&token).await.unwrap_err();
        assert!(
            matches!(error, TokenError::WrongAudience),
            "{aud}: {error:?}"
        );
    }
    let token = mock.access_token().without("aud").signed_by(key(1));
    assert!(matches!(
        verifier.verify(&token).await,
        Err(TokenError::WrongAudience)
    ));
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let token = mock.access_token().expires_in(-120).signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::Expired), "{error:?}");
    // Within the minute of clock skew it is still accepted.
    let token = mock.access_token().expires_in(-30).signed_by(key(1));
    verifier.verify(&token).await.unwrap();
}

#[tokio::test]
async fn a_token_that_is_not_valid_yet_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let token = mock.access_token().not_before_in(600).signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::NotYetValid), "{error:?}");
    let token = mock.access_token().not_before_in(30).signed_by(key(1));
    verifier.verify(&token).await.unwrap();
}

#[tokio::test]
async fn an_id_token_is_refused_where_an_access_token_is_required() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let token = mock.entra_id_token().signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::NotAnAccessToken), "{error:?}");
}

#[tokio::test]
async fn a_token_without_the_required_role_is_refused() {
    let mock = MockIssuer::start().await;
    let mut settings = bearer_settings(&mock);
    settings.required_roles = vec![CONNECTOR_ROLE.into()];
    let verifier = AccessTokenVerifier::new(&settings, fetcher()).unwrap();
    verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap();
    let token = mock
        .access_token()
        .claim("roles", json!(["Reader"]))
        .signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::MissingRole), "{error:?}");
    // A delegated token with a scope but no role does not satisfy a role requirement either.
    let token = mock
        .access_token()
        .without("roles")
        .claim("scp", CONNECTOR_ROLE)
        .signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::MissingRole), "{error:?}");
}

#[tokio::test]
async fn a_token_from_a_client_that_is_not_allowed_is_refused() {
    let mock = MockIssuer::start().await;
    let mut settings = bearer_settings(&mock);
    settings.allowed_client_ids = vec![CALLER_CLIENT_ID.into()];
    let verifier = AccessTokenVerifier::new(&settings, fetcher()).unwrap();
    verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap();
    let token = mock
        .access_token()
        .claim("azp", "11111111-2222-3333-4444-555555555555")
        .signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::ClientNotAllowed), "{error:?}");
    let token = mock.access_token().without("azp").signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::ClientNotAllowed), "{error:?}");
}

#[tokio::test]
async fn malformed_tokens_are_refused() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let valid = mock.access_token().signed_by(key(1));
    let five_parts = format!("{valid}.x.y");
    let padded = {
        let (rest, signature) = valid.rsplit_once('.').unwrap();
        format!("{rest}.{signature}==")
    };
    for token in [
        "",
        "Bearer",
        "a.b",
        "a.b.c",
        five_parts.as_str(),
        padded.as_str(),
    ] {
        let error = verifier.verify(token).await.unwrap_err();
        assert!(matches!(error, TokenError::Malformed(_)), "{error:?}");
    }
}

#[tokio::test]
async fn refusals_never_repeat_the_token() {
    let mock = MockIssuer::start().await;
    let verifier = access_verifier(&mock);
    let token = mock.access_token().expires_in(-3600).signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    let shown = format!("{error} {error:?}");
    for part in token.split('.') {
        assert!(!shown.contains(part), "{shown}");
    }
    assert_eq!(error.reason(), "expired");
}

// ---------------------------------------------------------------------------------------------
// Fetching discovery documents and keys.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_slow_discovery_endpoint_fails_within_the_timeout() {
    let mock = MockIssuer::start().await;
    mock.set_discovery_behavior(Behavior::Slow(Duration::from_secs(10)));
    let verifier = access_verifier(&mock);
    let started = Instant::now();
    let error = verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(*provider_error(error), FetchError::Timeout { .. }),
        "timeout expected"
    );
    assert!(
        elapsed >= Duration::from_millis(TIMEOUT_MS - 50),
        "{elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(TIMEOUT_MS + 1500),
        "{elapsed:?}"
    );
    // The failure is remembered: the next request does not wait again.
    let started = Instant::now();
    let error = verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap_err();
    assert!(error.is_provider_unavailable());
    assert!(started.elapsed() < Duration::from_millis(TIMEOUT_MS / 2));
    assert_eq!(mock.discovery_fetches(), 1);
}

#[tokio::test]
async fn a_slow_key_endpoint_fails_within_the_timeout() {
    let mock = MockIssuer::start().await;
    mock.set_keys_behavior(Behavior::Slow(Duration::from_secs(10)));
    let verifier = access_verifier(&mock);
    let started = Instant::now();
    let error = verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap_err();
    assert!(matches!(*provider_error(error), FetchError::Timeout { .. }));
    assert!(started.elapsed() < Duration::from_millis(TIMEOUT_MS + 1500));
}

#[tokio::test]
async fn a_redirecting_discovery_endpoint_is_refused_without_following() {
    let mock = MockIssuer::start().await;
    mock.set_discovery_behavior(Behavior::Redirect);
    let verifier = access_verifier(&mock);
    let error = verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap_err();
    assert!(matches!(
        *provider_error(error),
        FetchError::Redirect { status: 302, .. }
    ));
    assert_eq!(mock.discovery_fetches(), 1);
    assert_eq!(mock.redirect_target_hits(), 0);
}

#[tokio::test]
async fn a_redirecting_key_endpoint_is_refused_without_following() {
    let mock = MockIssuer::start().await;
    mock.set_keys_behavior(Behavior::Redirect);
    let verifier = b2c_verifier(&mock);
    let token = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(
        *provider_error(error),
        FetchError::Redirect { status: 302, .. }
    ));
    assert_eq!(mock.redirect_target_hits(), 0);
}

#[tokio::test]
async fn a_discovery_endpoint_answering_gigabytes_is_refused_quickly() {
    for behavior in [Behavior::Huge, Behavior::HugeDeclared] {
        let mock = MockIssuer::start().await;
        mock.set_discovery_behavior(behavior);
        let verifier = access_verifier(&mock);
        let started = Instant::now();
        let error = verifier
            .verify(&mock.access_token().signed_by(key(1)))
            .await
            .unwrap_err();
        match &*provider_error(error) {
            FetchError::TooLarge { limit, .. } => assert_eq!(*limit, MAX_DOCUMENT_BYTES),
            other => panic!("{behavior:?}: expected TooLarge, got {other:?}"),
        }
        // Reading a gigabyte would take far longer than this.
        assert!(started.elapsed() < Duration::from_secs(2), "{behavior:?}");
    }
}

#[tokio::test]
async fn the_fetcher_stops_reading_at_the_size_limit() {
    let mock = MockIssuer::start().await;
    mock.set_keys_behavior(Behavior::Huge);
    let fetcher = fetcher();
    let url = format!("{}/{ENTRA_TENANT_ID}/discovery/v2.0/keys", mock.base_url);
    let error = fetcher
        .get_json::<serde_json::Value>(&url)
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::TooLarge { .. }), "{error:?}");
    // The message names the URL and the limit, not the body.
    let message = error.to_string();
    assert!(message.contains("65536"), "{message}");
    assert!(!message.contains("issuer"), "{message}");
}

#[tokio::test]
async fn an_http_discovery_url_that_is_not_loopback_is_refused_without_fetching() {
    let mock = MockIssuer::start().await;
    let mut settings = bearer_settings(&mock);
    settings.discovery_url =
        "http://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration".into();
    assert!(AccessTokenVerifier::new(&settings, fetcher()).is_err());
    let relying_party = RelyingPartySettings {
        metadata_urls: vec![format!(
            "http://fabrikam.b2clogin.com/{B2C_TENANT}/{B2C_POLICY}/v2.0/.well-known/openid-configuration"
        )],
    };
    assert!(
        B2cIdTokenVerifier::new(&relying_party, vec![B2C_CLIENT_ID.into()], fetcher()).is_err()
    );
    // The fetcher refuses it too, before any connection.
    let error = fetcher()
        .get_json::<serde_json::Value>("http://192.0.2.1/.well-known/openid-configuration")
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::InsecureUrl { .. }), "{error:?}");
}

#[tokio::test]
async fn an_http_jwks_uri_that_is_not_loopback_is_refused_without_fetching() {
    let mock = MockIssuer::start().await;
    mock.set_jwks_uri(Some("http://192.0.2.1/discovery/v2.0/keys".into()));
    let verifier = access_verifier(&mock);
    let started = Instant::now();
    let error = verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap_err();
    assert!(matches!(
        *provider_error(error),
        FetchError::InsecureUrl { .. }
    ));
    // 192.0.2.1 (TEST-NET-1) was not contacted: no connection timeout was waited for.
    assert!(started.elapsed() < Duration::from_millis(TIMEOUT_MS));
}

// ---------------------------------------------------------------------------------------------
// B2C ID tokens.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_valid_b2c_id_token_is_accepted_although_its_issuer_is_not_the_discovery_url() {
    let mock = MockIssuer::start().await;
    let verifier = b2c_verifier(&mock);
    let token = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .claim("emails", json!([ALICE_EMAIL, "alice.other@example.com"]))
        .signed_by(key(1));
    let identity = verifier.verify(&token).await.unwrap();
    assert_eq!(identity.issuer, mock.b2c_issuer());
    assert!(!mock
        .b2c_discovery_url(B2C_POLICY)
        .starts_with(&identity.issuer));
    assert_eq!(identity.subject, ALICE_OID);
    assert_eq!(identity.audience, B2C_CLIENT_ID);
    assert_eq!(identity.email.as_deref(), Some(ALICE_EMAIL));
    assert_eq!(identity.identity_provider, None);
    assert_eq!(identity.email_verified, None);
    assert_eq!(identity.policy, B2C_POLICY);
}

#[tokio::test]
async fn a_b2c_id_token_with_email_instead_of_emails_is_read() {
    let mock = MockIssuer::start().await;
    let verifier = b2c_verifier(&mock);
    let token = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .without("emails")
        .claim("email", "bob@example.com")
        .claim("email_verified", "true")
        .signed_by(key(1));
    let identity = verifier.verify(&token).await.unwrap();
    assert_eq!(identity.email.as_deref(), Some("bob@example.com"));
    assert_eq!(identity.email_verified, Some(true));
    let token = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .claim("email_verified", false)
        .signed_by(key(1));
    assert_eq!(
        verifier.verify(&token).await.unwrap().email_verified,
        Some(false)
    );
}

#[tokio::test]
async fn a_b2c_id_token_names_its_social_identity_provider() {
    let mock = MockIssuer::start().await;
    let verifier = b2c_verifier(&mock);
    let token = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .claim("idp", "google.com")
        .signed_by(key(1));
    let identity = verifier.verify(&token).await.unwrap();
    assert_eq!(identity.identity_provider.as_deref(), Some("google.com"));
}

#[tokio::test]
async fn a_b2c_id_token_naming_its_policy_in_acr_or_in_another_case_is_accepted() {
    let mock = MockIssuer::start().await;
    let verifier = b2c_verifier(&mock);
    let token = mock
        .b2c_id_token(&B2C_POLICY.to_lowercase(), B2C_CLIENT_ID)
        .signed_by(key(1));
    assert_eq!(verifier.verify(&token).await.unwrap().policy, B2C_POLICY);
    let token = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .without("tfp")
        .claim("acr", B2C_POLICY.to_lowercase())
        .signed_by(key(1));
    assert_eq!(verifier.verify(&token).await.unwrap().policy, B2C_POLICY);
}

#[tokio::test]
async fn a_b2c_id_token_of_another_policy_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = b2c_verifier(&mock);
    let token = mock
        .b2c_id_token(B2C_OTHER_POLICY, B2C_CLIENT_ID)
        .signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::PolicyNotAllowed), "{error:?}");
    let token = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .without("tfp")
        .signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::PolicyNotAllowed), "{error:?}");
    // Nothing was fetched for a policy that is not configured.
    assert_eq!(mock.discovery_fetches(), 0);
}

#[tokio::test]
async fn a_b2c_id_token_for_another_audience_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = b2c_verifier(&mock);
    let token = mock
        .b2c_id_token(B2C_POLICY, "0badc0de-0000-4000-8000-000000000000")
        .signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::WrongAudience), "{error:?}");
}

#[tokio::test]
async fn a_b2c_id_token_with_another_issuer_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = b2c_verifier(&mock);
    // The discovery URL itself, which a naive check would expect.
    let token = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .claim(
            "iss",
            format!("{}/{B2C_TENANT}/{B2C_POLICY}/v2.0/", mock.base_url),
        )
        .signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::WrongIssuer), "{error:?}");
}

#[tokio::test]
async fn a_b2c_access_token_is_refused_where_an_id_token_is_required() {
    let mock = MockIssuer::start().await;
    let verifier = b2c_verifier(&mock);
    let token = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .claim("scp", "user_impersonation")
        .signed_by(key(1));
    let error = verifier.verify(&token).await.unwrap_err();
    assert!(matches!(error, TokenError::NotAnIdToken), "{error:?}");
}

#[tokio::test]
async fn an_expired_or_forged_b2c_id_token_is_refused() {
    let mock = MockIssuer::start().await;
    let verifier = b2c_verifier(&mock);
    let expired = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .expires_in(-3600)
        .signed_by(key(1));
    assert!(matches!(
        verifier.verify(&expired).await,
        Err(TokenError::Expired)
    ));
    let not_yet = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .not_before_in(3600)
        .signed_by(key(1));
    assert!(matches!(
        verifier.verify(&not_yet).await,
        Err(TokenError::NotYetValid)
    ));
    let valid = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .signed_by(key(1));
    let tampered = tamper_payload(&valid, |claims| {
        claims.insert("emails".into(), json!(["mallory@example.com"]));
    });
    assert!(matches!(
        verifier.verify(&tampered).await,
        Err(TokenError::BadSignature)
    ));
    let forged = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .kid(&key(1).kid)
        .signed_by(key(3));
    assert!(matches!(
        verifier.verify(&forged).await,
        Err(TokenError::BadSignature)
    ));
    let none = mock
        .b2c_id_token(B2C_POLICY, B2C_CLIENT_ID)
        .unsigned("none");
    assert!(matches!(
        verifier.verify(&none).await,
        Err(TokenError::UnsupportedAlgorithm(_))
    ));
}

#[tokio::test]
async fn keys_published_for_encryption_or_another_algorithm_are_not_used() {
    let mock = MockIssuer::start().await;
    let mut for_encryption = key(1).jwk();
    for_encryption["use"] = json!("enc");
    let mut for_rs384 = key(1).jwk();
    for_rs384["alg"] = json!("RS384");
    let symmetric = json!({"kty": "oct", "kid": key(1).kid, "k": b64(b"secret")});
    mock.publish_jwks(vec![for_encryption, for_rs384, symmetric]);
    let verifier = access_verifier(&mock);
    let error = verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap_err();
    assert!(matches!(error, TokenError::UnknownKey), "{error:?}");
}

#[tokio::test]
async fn a_document_of_the_wrong_shape_is_refused_without_repeating_it() {
    let mock = MockIssuer::start().await;
    // The key set's address serves the discovery document: JSON, but no `keys`.
    mock.set_jwks_uri(Some(mock.entra_discovery_url()));
    let verifier = access_verifier(&mock);
    let error = verifier
        .verify(&mock.access_token().signed_by(key(1)))
        .await
        .unwrap_err();
    let error = provider_error(error);
    assert!(
        matches!(*error, FetchError::Parse { kind: "data", .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(!message.contains("authorization_endpoint"), "{message}");
}
