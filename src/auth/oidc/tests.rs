use base64::Engine as _;

use super::verification::{check_times, parse, Claims};
use super::*;

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
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#);
    assert!(matches!(
        parse(&format!("{header}.{payload}.")),
        Err(TokenError::UnsupportedAlgorithm("none"))
    ));
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"xyz"}"#);
    assert!(matches!(
        parse(&format!("{header}.{payload}.c2ln")),
        Err(TokenError::UnsupportedAlgorithm("unrecognised"))
    ));
}

#[test]
fn refuses_malformed_tokens() {
    for token in ["", "abc", "a.b", "a.b.c.d", "!!.!!.!!"] {
        assert!(
            matches!(parse(token), Err(TokenError::Malformed(_))),
            "{token}"
        );
    }
    let long = "a".repeat(MAX_TOKEN_BYTES + 1);
    assert!(matches!(parse(&long), Err(TokenError::Malformed(_))));
}

#[test]
fn allows_one_minute_of_clock_skew() {
    let claims = |exp: i64, nbf: i64| Claims {
        exp: Some(exp.into()),
        nbf: Some(nbf.into()),
        ..serde_json::from_str::<Claims>("{}").unwrap()
    };
    let now = 1_000_000;
    assert!(check_times(&claims(now - 59, now), now).is_ok());
    assert!(matches!(
        check_times(&claims(now - 60, now), now),
        Err(TokenError::Expired)
    ));
    assert!(check_times(&claims(now + 600, now + 60), now).is_ok());
    assert!(matches!(
        check_times(&claims(now + 600, now + 61), now),
        Err(TokenError::NotYetValid)
    ));
}
