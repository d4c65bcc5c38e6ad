//! Reading a compact JWS and checking it: the signature against the provider's keys, then the
//! times and the audience.

use base64::Engine as _;
use openidconnect::core::CoreJwsSigningAlgorithm;
use openidconnect::{JsonWebKey, SignatureVerificationError};
use serde::Deserialize;

use super::discovery::Snapshot;
use super::{TokenError, CLOCK_SKEW_S, MAX_TOKEN_BYTES};

/// Checks the RS256 signature with the keys of `snapshot` that match the token's `kid`.
pub(super) fn check_signature(
    snapshot: &Snapshot,
    jwt: &UnverifiedJwt<'_>,
) -> Result<(), TokenError> {
    let mut usable_key = false;
    for key in snapshot.keys.keys() {
        if let Some(kid) = jwt.kid.as_deref() {
            if key.key_id().map(|id| id.as_str()) != Some(kid) {
                continue;
            }
        }
        match key.verify_signature(
            &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            jwt.signing_input.as_bytes(),
            &jwt.signature,
        ) {
            Ok(()) => return Ok(()),
            // Not an RS256 signing key (another type, algorithm or use): not a candidate.
            Err(SignatureVerificationError::InvalidKey(_)) => {}
            Err(_) => usable_key = true,
        }
    }
    if usable_key {
        Err(TokenError::BadSignature)
    } else {
        Err(TokenError::UnknownKey)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    pub(super) kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    cty: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// `aud` (and B2C's `emails`) may be one string or an array.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The claims read from either kind of token. Unknown claims are ignored.
#[derive(Deserialize)]
pub(super) struct Claims {
    #[serde(default)]
    pub(super) iss: Option<String>,
    #[serde(default)]
    pub(super) sub: Option<String>,
    #[serde(default)]
    pub(super) aud: Option<OneOrMany>,
    #[serde(default)]
    pub(super) exp: Option<serde_json::Number>,
    #[serde(default)]
    pub(super) nbf: Option<serde_json::Number>,
    /// An array of strings when present (Entra always sends one); anything else is refused.
    #[serde(default)]
    pub(super) roles: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) scp: Option<String>,
    #[serde(default)]
    pub(super) azp: Option<String>,
    #[serde(default)]
    pub(super) appid: Option<String>,
    #[serde(default)]
    pub(super) tfp: Option<String>,
    #[serde(default)]
    pub(super) acr: Option<String>,
    #[serde(default)]
    pub(super) emails: Option<OneOrMany>,
    #[serde(default)]
    pub(super) email: Option<String>,
    #[serde(default)]
    pub(super) idp: Option<String>,
    #[serde(default)]
    pub(super) email_verified: Option<serde_json::Value>,
}

/// A parsed but not yet verified token.
pub(super) struct UnverifiedJwt<'a> {
    /// `header.payload`, as signed.
    signing_input: &'a str,
    signature: Vec<u8>,
    pub(super) kid: Option<String>,
    pub(super) claims: Claims,
}

fn b64(part: &str) -> Result<Vec<u8>, ()> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ())
}

/// The registered name of a JWS algorithm, for messages; anything else is `unrecognised`.
fn algorithm_name(alg: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
        "ES256", "ES256K", "ES384", "ES512", "EdDSA", "Ed25519", "Ed448",
    ];
    KNOWN
        .iter()
        .find(|known| **known == alg)
        .copied()
        .unwrap_or("unrecognised")
}

pub(super) fn parse(token: &str) -> Result<UnverifiedJwt<'_>, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Malformed("empty token"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_part), Some(payload_part), Some(signature_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "not a compact JWS (three dot-separated parts)",
        ));
    };
    let header = b64(header_part).map_err(|()| TokenError::Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header)
        .map_err(|_| TokenError::Malformed("header is not a JSON object with alg"))?;
    if header.alg != "RS256" {
        return Err(TokenError::UnsupportedAlgorithm(algorithm_name(
            &header.alg,
        )));
    }
    if header.crit.is_some() {
        return Err(TokenError::Malformed(
            "critical header parameters are not supported",
        ));
    }
    // Entra ID and B2C type their ID and access tokens `JWT` (or not at all). Anything else, such
    // as an RFC 9068 access token (`at+jwt`), is another kind of token: never read it as these.
    if let Some(typ) = &header.typ {
        if !typ.eq_ignore_ascii_case("JWT") {
            return Err(TokenError::UnexpectedType);
        }
    }
    if header.cty.is_some() {
        return Err(TokenError::Malformed(
            "nested or typed content is not supported",
        ));
    }
    let payload =
        b64(payload_part).map_err(|()| TokenError::Malformed("payload is not base64url"))?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| {
        TokenError::Malformed("payload is not a JSON object of the expected claims")
    })?;
    let signature =
        b64(signature_part).map_err(|()| TokenError::Malformed("signature is not base64url"))?;
    if signature.is_empty() {
        return Err(TokenError::BadSignature);
    }
    let signing_input = &token[..header_part.len() + 1 + payload_part.len()];
    Ok(UnverifiedJwt {
        signing_input,
        signature,
        kid: header.kid,
        claims,
    })
}

pub(super) fn numeric_date(value: &serde_json::Number) -> Option<i64> {
    if let Some(seconds) = value.as_i64() {
        return Some(seconds);
    }
    value
        .as_f64()
        .filter(|f| f.is_finite())
        .map(|f| f.floor() as i64)
}

pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `exp` (required) and `nbf` (when present), with [`CLOCK_SKEW_S`] of leeway.
pub(super) fn check_times(claims: &Claims, now: i64) -> Result<(), TokenError> {
    let exp = claims
        .exp
        .as_ref()
        .ok_or(TokenError::Malformed("missing exp"))?;
    let exp = numeric_date(exp).ok_or(TokenError::Malformed("exp is not a number"))?;
    if now >= exp.saturating_add(CLOCK_SKEW_S) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = &claims.nbf {
        let nbf = numeric_date(nbf).ok_or(TokenError::Malformed("nbf is not a number"))?;
        if now.saturating_add(CLOCK_SKEW_S) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok(())
}

/// The first of the token's audiences that is accepted.
pub(super) fn accepted_audience(
    claims: &Claims,
    accepted: &[String],
) -> Result<String, TokenError> {
    let audiences = match &claims.aud {
        Some(OneOrMany::One(one)) => std::slice::from_ref(one),
        Some(OneOrMany::Many(many)) => many.as_slice(),
        None => &[],
    };
    audiences
        .iter()
        .find(|aud| accepted.iter().any(|a| a.eq_ignore_ascii_case(aud)))
        .cloned()
        .ok_or(TokenError::WrongAudience)
}

/// The value when it is not blank (kept as the token spells it).
pub(super) fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}
