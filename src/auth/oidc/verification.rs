//! The one path both kinds of token take: the header checked first, then `openidconnect`'s
//! [`IdToken`] parse and [`IdTokenVerifier`](openidconnect::IdTokenVerifier) (header again,
//! issuer, RS256 signature with the key named by `kid`, expiry), then the checks the verifier has
//! no hook for (audience among several, `nbf`). See the parent module for the order and the why.

use std::sync::LazyLock;

use base64::Engine as _;
use chrono::{DateTime, TimeDelta, Utc};
use openidconnect::core::{
    CoreGenderClaim, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
};
use openidconnect::{
    AdditionalClaims, ClaimsVerificationError, ClientId, IdToken, IdTokenClaims, IssuerUrl,
    JsonWebTokenType, Nonce, SignatureVerificationError,
};
use serde::{Deserialize, Serialize};

use super::{TokenError, CLOCK_SKEW_S, MAX_TOKEN_BYTES};

/// A token as `openidconnect` parses it, with the claims the verifier does not know.
pub(super) type Token = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// The claims of a [`Token`].
pub(super) type Claims = IdTokenClaims<ExtraClaims, CoreGenderClaim>;

/// `aud`-like claims (B2C's `emails`) may be one string or an array.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The claims `openidconnect`'s [`IdTokenClaims`] does not have: `nbf`, the access-token claims
/// (`roles`, `scp`, `appid`), B2C's (`tfp`, `emails`, `idp`) and Entra's (`tid`, `oid`, `ver`). `iss`, `aud`, `exp`, `iat`,
/// `sub`, `acr`, `azp`, `email` and `email_verified` are the crate's own. Unknown claims are
/// ignored.
#[derive(Debug, Deserialize, Serialize)]
pub(super) struct ExtraClaims {
    #[serde(default)]
    pub(super) nbf: Option<serde_json::Number>,
    /// An array of strings when present (Entra always sends one); anything else is refused.
    #[serde(default)]
    pub(super) roles: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) scp: Option<String>,
    #[serde(default)]
    pub(super) appid: Option<String>,
    #[serde(default)]
    pub(super) tfp: Option<String>,
    #[serde(default)]
    pub(super) emails: Option<OneOrMany>,
    #[serde(default)]
    pub(super) idp: Option<String>,
    /// The tenant (Entra).
    #[serde(default)]
    pub(super) tid: Option<String>,
    /// The user's object id (Entra; External ID's `sub` is pairwise per application).
    #[serde(default)]
    pub(super) oid: Option<String>,
    /// The token version (`"1.0"` or `"2.0"`, Entra); read loosely, since other issuers are not
    /// bound to its type.
    #[serde(default)]
    pub(super) ver: Option<serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

/// What the header says, checked before anything else is parsed.
pub(super) struct Header {
    /// `kid`: decides whether an unknown key is worth a refetch ([`IdToken`] does not expose it).
    pub(super) kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    cty: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
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

/// Steps 1 and 2 of the parent module: the size, the three parts, and the header alone (`alg`
/// exactly `RS256`, no `crit`, `typ` absent or `JWT`, no `cty`), each with its own refusal.
pub(super) fn check_header(token: &str) -> Result<Header, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Malformed("empty token"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header_part), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "not a compact JWS (three dot-separated parts)",
        ));
    };
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header_part)
        .map_err(|_| TokenError::Malformed("header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header)
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
    Ok(Header { kid: header.kid })
}

/// [`check_header`], then `openidconnect`'s parse of the whole token (claims not yet trusted).
pub(super) fn read(token: &str) -> Result<(Header, Token), TokenError> {
    let token = token.trim();
    let header = check_header(token)?;
    let parsed = token.parse::<Token>().map_err(|_| {
        TokenError::Malformed("not a compact JWS whose payload holds the expected claims")
    })?;
    Ok((header, parsed))
}

/// Now minus [`CLOCK_SKEW_S`]: as the verifier's clock, `exp` gets that much leeway.
fn skewed(now: DateTime<Utc>) -> DateTime<Utc> {
    now - TimeDelta::seconds(CLOCK_SKEW_S)
}

/// The verifier for one issuer and key set: RS256 only, `typ` `JWT` (or none), `iss` exactly
/// `issuer`, `exp` with [`CLOCK_SKEW_S`] of leeway against `clock`. The audience is checked by
/// [`accepted_audience`] instead (the crate compares one client id, exactly).
pub(super) fn claims_verifier(
    issuer: IssuerUrl,
    keys: CoreJsonWebKeySet,
    clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
) -> CoreIdTokenVerifier<'static> {
    // `JWT` normalizes to `application/jwt` (this cannot fail); an absent `typ` always passes.
    let jwt_type = JsonWebTokenType::new("JWT".into()).normalize().ok();
    // The client id is only used by the audience check (off here) and, as the shared secret, for
    // HS256, which a public client never accepts.
    CoreIdTokenVerifier::new_public_client(ClientId::new(String::new()), issuer, keys)
        .set_allowed_algs([CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256])
        .set_allowed_jose_types(jwt_type)
        .require_audience_match(false)
        .set_time_fn(move || skewed(clock()))
}

/// The nonce is not checked: it protects the relying party's own sign-in (it compared the nonce
/// when B2C handed it the token), and autolink never sent one. Access tokens carry none.
fn any_nonce(_: Option<&Nonce>) -> Result<(), String> {
    Ok(())
}

/// The verifier's refusal as ours.
fn refusal(error: ClaimsVerificationError) -> TokenError {
    use ClaimsVerificationError as Claim;
    use SignatureVerificationError as Signature;
    match error {
        Claim::InvalidIssuer(_) => TokenError::WrongIssuer,
        Claim::InvalidAudience(_) => TokenError::WrongAudience,
        Claim::Expired(_) => TokenError::Expired,
        // No RS256 signing key with that `kid` (or, without a `kid`, not exactly one), or the
        // published key is unusable.
        Claim::SignatureVerification(
            Signature::NoMatchingKey | Signature::AmbiguousKeyId(_) | Signature::InvalidKey(_),
        ) => TokenError::UnknownKey,
        Claim::SignatureVerification(Signature::CryptoError(_)) => TokenError::BadSignature,
        // Not reached after check_header, which lets only RS256 through.
        Claim::SignatureVerification(Signature::NoSignature) => {
            TokenError::UnsupportedAlgorithm("none")
        }
        Claim::SignatureVerification(
            Signature::DisallowedAlg(_) | Signature::UnsupportedAlg(_),
        ) => TokenError::UnsupportedAlgorithm("unrecognised"),
        // Not reached either (`typ`, `cty`, `crit`): check_header refused them first.
        Claim::Unsupported(_) => TokenError::Malformed("unsupported header parameters"),
        _ => TokenError::Malformed("the claims cannot be verified"),
    }
}

/// `verifier`'s verdict on `token`: the claims, now trusted, or the refusal.
pub(super) fn verify<'t>(
    verifier: &CoreIdTokenVerifier<'_>,
    token: &'t Token,
) -> Result<&'t Claims, TokenError> {
    token.claims(verifier, any_nonce).map_err(refusal)
}

/// The claims of a token that was not verified, with only `exp` (and the header) checked: for
/// choosing which B2C policy's keys verify it, never for anything else.
pub(super) fn unverified_claims(token: &Token) -> Result<&Claims, TokenError> {
    static READER: LazyLock<CoreIdTokenVerifier<'static>> = LazyLock::new(|| {
        CoreIdTokenVerifier::new_insecure_without_verification().set_time_fn(|| skewed(Utc::now()))
    });
    verify(&READER, token)
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
    Utc::now().timestamp()
}

/// `nbf` (when present), with [`CLOCK_SKEW_S`] of leeway: `openidconnect` does not read it.
pub(super) fn check_not_before(claims: &Claims, now: i64) -> Result<(), TokenError> {
    if let Some(nbf) = &claims.additional_claims().nbf {
        let nbf = numeric_date(nbf).ok_or(TokenError::Malformed("nbf is not a number"))?;
        if now.saturating_add(CLOCK_SKEW_S) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    Ok(())
}

/// The first of the token's audiences that is accepted (ASCII case-insensitive), as the token
/// spells it.
pub(super) fn accepted_audience<'c>(
    claims: &'c Claims,
    accepted: &[String],
) -> Result<&'c str, TokenError> {
    claims
        .audiences()
        .iter()
        .map(|aud| aud.as_str())
        .find(|aud| accepted.iter().any(|a| a.eq_ignore_ascii_case(aud)))
        .ok_or(TokenError::WrongAudience)
}

/// The value when it is not blank (kept as the token spells it).
pub(super) fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}
