use std::path::Path;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::Mac as _;
use openidconnect::core::CoreJsonWebKeySet;
use openidconnect::IssuerUrl;
use serde_json::{json, Map, Value};

use super::verification::{
    check_header, check_not_before, claims_verifier, read, unverified_claims, verify,
};
use super::*;
use crate::mock_b2c::keys::SigningKey;

const ISSUER: &str = "https://fabrikam.b2clogin.com/775527ff-9a37-4307-8b3d-cc311f58d925/v2.0/";
const NOW: i64 = 1_000_000_000;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn fixture_key(n: usize) -> SigningKey {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/oidc-test-key-{n}.pem"));
    SigningKey::from_file(&path).unwrap()
}

fn claims(exp: i64, nbf: i64) -> Map<String, Value> {
    match json!({
        "iss": ISSUER, "aud": "93fd07aa-333c-409d-955d-96008fd08dd9", "sub": "alice",
        "iat": NOW, "exp": exp, "nbf": nbf, "tfp": "B2C_1_signin",
    }) {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, 0).unwrap()
}

/// The verifier of key 1's key set, for [`ISSUER`], at [`NOW`].
fn verifier_at_now() -> openidconnect::core::CoreIdTokenVerifier<'static> {
    let keys: CoreJsonWebKeySet = serde_json::from_value(fixture_key(1).jwks()).unwrap();
    claims_verifier(IssuerUrl::new(ISSUER.into()).unwrap(), keys, || at(NOW))
}

/// `openidconnect`'s verdict alone, without [`check_header`] in front of it.
fn crate_verdict(token: &str) -> Result<(), TokenError> {
    let parsed = token
        .parse::<verification::Token>()
        .map_err(|_| TokenError::Malformed("parse"))?;
    verify(&verifier_at_now(), &parsed).map(|_| ())
}

#[test]
fn reads_the_policy_from_b2c_metadata_urls() {
    assert_eq!(
        policy_of_metadata_url(
            "https://fabrikam.b2clogin.com/fabrikam.onmicrosoft.com/B2C_1A_signup_signin/v2.0/.well-known/openid-configuration"
        )
        .as_deref(),
        Some("B2C_1A_signup_signin")
    );
    assert_eq!(
        policy_of_metadata_url(
            "https://fabrikam.b2clogin.com/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration?p=B2C_1_signin"
        )
        .as_deref(),
        Some("B2C_1_signin")
    );
    assert_eq!(
        policy_of_metadata_url(
            "https://fabrikam.b2clogin.com/fabrikam.onmicrosoft.com/v2.0/.well-known/openid-configuration"
        ),
        None
    );
    assert_eq!(
        policy_of_metadata_url(
            "http://fabrikam.b2clogin.com/t/p/v2.0/.well-known/openid-configuration"
        ),
        None
    );
}

#[test]
fn refuses_other_algorithms_before_looking_at_keys() {
    let header = b64(br#"{"alg":"none"}"#);
    let payload = b64(br#"{"sub":"x"}"#);
    assert!(matches!(
        check_header(&format!("{header}.{payload}.")),
        Err(TokenError::UnsupportedAlgorithm("none"))
    ));
    let header = b64(br#"{"alg":"xyz"}"#);
    assert!(matches!(
        check_header(&format!("{header}.{payload}.c2ln")),
        Err(TokenError::UnsupportedAlgorithm("unrecognised"))
    ));
}

#[test]
fn refuses_critical_headers_nested_tokens_and_other_types() {
    let payload = b64(br#"{"sub":"x"}"#);
    let token = |header: &str| format!("{}.{payload}.c2ln", b64(header.as_bytes()));
    assert!(matches!(
        check_header(&token(r#"{"alg":"RS256","crit":["exp"],"exp":1}"#)),
        Err(TokenError::Malformed(_))
    ));
    assert!(matches!(
        check_header(&token(r#"{"alg":"RS256","cty":"JWT"}"#)),
        Err(TokenError::Malformed(_))
    ));
    assert!(matches!(
        check_header(&token(r#"{"alg":"RS256","typ":"at+jwt"}"#)),
        Err(TokenError::UnexpectedType)
    ));
    assert!(check_header(&token(r#"{"alg":"RS256","typ":"jwt","kid":"k"}"#)).is_ok());
}

#[test]
fn refuses_malformed_tokens() {
    for token in ["", "abc", "a.b", "a.b.c.d", "!!.!!.!!"] {
        assert!(
            matches!(read(token), Err(TokenError::Malformed(_))),
            "{token}"
        );
    }
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(read(&long), Err(TokenError::Malformed(_))));
}

#[test]
fn a_token_without_iat_or_with_a_non_url_issuer_does_not_parse() {
    let key = fixture_key(1);
    let mut without_iat = claims(NOW + 600, NOW);
    without_iat.remove("iat");
    assert!(matches!(
        read(&key.sign(&without_iat)),
        Err(TokenError::Malformed(_))
    ));
    let mut not_a_url = claims(NOW + 600, NOW);
    not_a_url.insert("iss".into(), json!("fabrikam"));
    assert!(matches!(
        read(&key.sign(&not_a_url)),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn allows_one_minute_of_clock_skew() {
    let key = fixture_key(1);
    let verifier = verifier_at_now();
    let verdict = |exp: i64, nbf: i64| {
        let (_, token) = read(&key.sign(&claims(exp, nbf))).unwrap();
        verify(&verifier, &token).and_then(|claims| check_not_before(claims, NOW))
    };
    assert!(verdict(NOW - 59, NOW).is_ok());
    assert!(matches!(verdict(NOW - 60, NOW), Err(TokenError::Expired)));
    assert!(verdict(NOW + 600, NOW + 60).is_ok());
    assert!(matches!(
        verdict(NOW + 600, NOW + 61),
        Err(TokenError::NotYetValid)
    ));
}

#[test]
fn the_crate_verifier_alone_refuses_forged_tokens() {
    let key = fixture_key(1);
    let good = claims(NOW + 600, NOW);
    assert!(crate_verdict(&key.sign(&good)).is_ok());
    let payload = b64(Value::Object(good.clone()).to_string().as_bytes());

    // alg none, with and without a signature part.
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    assert!(matches!(
        crate_verdict(&format!("{header}.{payload}.")),
        Err(TokenError::UnsupportedAlgorithm("none"))
    ));
    // HS256 keyed with the public key (its JWK JSON and its modulus).
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let jwk = key.jwks()["keys"][0].clone();
    let modulus = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwk["n"].as_str().unwrap())
        .unwrap();
    for secret in [jwk.to_string().into_bytes(), modulus] {
        let input = format!("{header}.{payload}");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&secret).unwrap();
        mac.update(input.as_bytes());
        let token = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
        assert!(matches!(
            crate_verdict(&token),
            Err(TokenError::UnsupportedAlgorithm(_))
        ));
    }
    // RS384 is not RS256.
    let header = b64(br#"{"alg":"RS384","typ":"JWT"}"#);
    assert!(matches!(
        crate_verdict(&format!("{header}.{payload}.c2ln")),
        Err(TokenError::UnsupportedAlgorithm(_))
    ));
    // Another key under no kid or under key 1's kid; a kid nobody publishes.
    let attacker = fixture_key(3);
    assert!(matches!(
        crate_verdict(&attacker.sign(&good)),
        Err(TokenError::UnknownKey)
    ));
    let signed = key.sign(&good);
    let (input, _) = signed.rsplit_once('.').unwrap();
    let by_attacker = attacker.sign(&good);
    let (_, forged_signature) = by_attacker.rsplit_once('.').unwrap();
    assert!(matches!(
        crate_verdict(&format!("{input}.{forged_signature}")),
        Err(TokenError::BadSignature)
    ));
    // Another issuer, expired.
    let mut other_issuer = good.clone();
    other_issuer.insert("iss".into(), json!("https://evil.example/v2.0/"));
    assert!(matches!(
        crate_verdict(&key.sign(&other_issuer)),
        Err(TokenError::WrongIssuer)
    ));
    assert!(matches!(
        crate_verdict(&key.sign(&claims(NOW - 3600, NOW - 7200))),
        Err(TokenError::Expired)
    ));
    // A `typ` other than JWT, even without check_header.
    let (_, rest) = signed.split_once('.').unwrap();
    let at_jwt = format!("{}.{rest}", b64(br#"{"alg":"RS256","typ":"at+jwt"}"#));
    assert!(matches!(
        crate_verdict(&at_jwt),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn unverified_claims_check_expiry_but_not_the_signature() {
    let attacker = fixture_key(3);
    let fresh = claims(Utc::now().timestamp() + 600, 0);
    let (_, token) = read(&attacker.sign(&fresh)).unwrap();
    let unverified = unverified_claims(&token).unwrap();
    assert_eq!(
        unverified.additional_claims().tfp.as_deref(),
        Some("B2C_1_signin")
    );
    let (_, expired) = read(&attacker.sign(&claims(NOW, 0))).unwrap();
    assert!(matches!(
        unverified_claims(&expired),
        Err(TokenError::Expired)
    ));
}

#[test]
fn a_token_without_kid_verifies_only_when_the_set_holds_one_signing_key() {
    let key = fixture_key(1);
    let payload = b64(Value::Object(claims(NOW + 600, NOW)).to_string().as_bytes());
    let input = format!("{}.{payload}", b64(br#"{"alg":"RS256","typ":"JWT"}"#));
    let signature = {
        use rsa::pkcs8::DecodePrivateKey as _;
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc-test-key-1.pem");
        let private =
            rsa::RsaPrivateKey::from_pkcs8_pem(&std::fs::read_to_string(path).unwrap()).unwrap();
        rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(private)
            .sign(input.as_bytes())
            .to_vec()
    };
    let token = format!("{input}.{}", b64(&signature));
    assert!(crate_verdict(&token).is_ok());
    let (header, _) = read(&token).unwrap();
    assert!(header.kid.is_none());

    // With a second signing key published, the key is ambiguous: refused, not tried in turn.
    let mut jwks = key.jwks();
    let second = fixture_key(2).jwks()["keys"][0].clone();
    jwks["keys"].as_array_mut().unwrap().push(second);
    let keys: CoreJsonWebKeySet = serde_json::from_value(jwks).unwrap();
    let verifier = claims_verifier(IssuerUrl::new(ISSUER.into()).unwrap(), keys, || at(NOW));
    let (_, parsed) = read(&token).unwrap();
    assert!(matches!(
        verify(&verifier, &parsed),
        Err(TokenError::UnknownKey)
    ));
}
