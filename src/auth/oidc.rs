//! Verifying JWTs from OpenID providers: bearer access tokens (OAuth2 client credentials from
//! Microsoft Entra ID, DESIGN section 3) and Azure AD B2C ID tokens (the relying-party call
//! `POST /v1/link`).
//!
//! # Discovery
//!
//! `openidconnect`'s own discovery insists that the document's `issuer` equals the URL it was
//! fetched from, which never holds for B2C (discovery under `/{tenant}.onmicrosoft.com/{policy}/`,
//! issuer `/{tenant-guid}/v2.0/`). [`OidcProvider`] therefore fetches the document itself with
//! the [`Fetcher`] (https only, no redirects, time and size limits), deserializes it into
//! [`CoreProviderMetadata`], fetches the key set from its `jwks_uri`, and tokens are checked
//! against the document's `issuer`.
//!
//! # Checks, in order
//!
//! 1. The token is a compact JWS of at most [`MAX_TOKEN_BYTES`] bytes (three base64url parts,
//!    JSON header and payload). Critical headers (`crit`) and nested tokens are refused.
//! 2. The header's `alg` is exactly `RS256`. Everything else is refused before any key is looked
//!    at: `none`, `HS256` (whatever the secret, the public key included), `RS384`, `PS256`,
//!    `ES256`... Keys named by the header (`jku`, `x5u`, `jwk`) are ignored; only the issuer's published keys
//!    are used.
//! 3. The key named by `kid` is taken from the provider's key set, and the RS256 signature is
//!    checked with it (a key published for another algorithm or for encryption is not used). A
//!    token without `kid` is tried against every RS256 key of the set.
//! 4. Only then are the claims trusted: `iss` equals the document's `issuer` exactly; `aud`
//!    contains an accepted audience (ASCII case-insensitive, since client ids are GUIDs); `exp`
//!    and `nbf` hold.
//! 5. Access tokens: the token carries `roles` or `scp` (ID tokens carry neither); when
//!    `required_roles` is set, one of them is in `roles` (exact, case-sensitive); when
//!    `allowed_client_ids` is set, `azp` (v2 tokens) or `appid` (v1 tokens) is one of them
//!    (case-insensitive).
//! 6. B2C ID tokens: `tfp` (or `acr`, for custom policies that emit it) names a configured
//!    policy (case-insensitive); the token is checked against that policy's document and keys; a
//!    token carrying `scp` or `roles` (an access token) is refused. The nonce is not checked: the
//!    relying party checked it when it received the token.
//!
//! # Clock skew
//!
//! [`CLOCK_SKEW_S`] = 60 seconds of leeway on `exp` and `nbf`: a token is accepted until 60 s
//! after its `exp`, and from 60 s before its `nbf`. Entra ID and B2C sign `nbf` with their own
//! clock, so a strict check refuses fresh tokens whenever this host runs a little behind.
//! `iat` is not checked.
//!
//! # Caching
//!
//! Each provider keeps one snapshot (discovery document and key set) behind a
//! `std::sync::RwLock` that is only held to clone an `Arc`, never across an `await`: the hot path
//! is one uncontended read lock, no fetch. All fetching goes through one `tokio::sync::Mutex` per
//! provider, so concurrent requests never stampede the issuer: waiters re-check the snapshot after
//! the lock is theirs.
//!
//! - The snapshot is refreshed after `[oidc] cache_ttl_s`. While one request refreshes, the
//!   others keep using the stale snapshot. When a refresh fails, the stale snapshot stays in use
//!   (up to twice the TTL in all), and no new attempt is made for `min_refetch_interval_s`.
//! - A token whose `kid` is not in the set causes one refetch of the key set (not the document),
//!   at most once per `[oidc] min_refetch_interval_s`: a flood of unknown key ids costs at most
//!   one fetch per interval. Keys that were just rotated in are therefore picked up at once.
//! - When no snapshot was ever fetched and the fetch fails, verification fails with
//!   [`TokenError::ProviderUnavailable`], and the next attempt waits `min_refetch_interval_s`.
//!
//! # Entra ID token versions
//!
//! The v2.0 discovery document (`.../{tenant}/v2.0/.well-known/openid-configuration`) names the
//! issuer `https://login.microsoftonline.com/{tenant}/v2.0`, which only v2 access tokens carry:
//! set `accessTokenAcceptedVersion: 2` in the API's app manifest. For v1 tokens (issuer
//! `https://sts.windows.net/{tenant}/`), configure the v1 document
//! (`.../{tenant}/.well-known/openid-configuration`) instead. Multi-tenant documents whose issuer
//! contains `{tenantid}` are not supported.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreProviderMetadata};
use openidconnect::{JsonWebKey, SignatureVerificationError};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::fetch::{FetchError, Fetcher};
use crate::config::{BearerSettings, ConfigError, RelyingPartySettings};

/// Leeway on `exp` and `nbf`, in seconds.
pub const CLOCK_SKEW_S: i64 = 60;

/// Longest token accepted, in bytes (Entra tokens with many roles stay far below).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Why a token was refused. Messages never contain the token or any part of it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS with a JSON header and payload, or a required claim is missing or of the
    /// wrong type.
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    /// The header's `typ` is neither absent nor `JWT` (an RFC 9068 access token is `at+jwt`).
    #[error("the token's type (typ) is not JWT")]
    UnexpectedType,
    /// The header's `alg` is not `RS256`. Carries the algorithm's registered name (or
    /// `unrecognised`).
    #[error("the token's signing algorithm {0} is not accepted (RS256 only)")]
    UnsupportedAlgorithm(&'static str),
    /// The issuer publishes no RS256 key with the token's `kid`, even after a refetch.
    #[error("the token names a signing key the issuer does not publish")]
    UnknownKey,
    /// The signature does not verify with the issuer's key.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// `iss` is not the issuer of the discovery document.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// No `aud` is an accepted audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// `exp` has passed (beyond the clock skew).
    #[error("the token has expired")]
    Expired,
    /// `nbf` has not come yet (beyond the clock skew).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// An access token is required, and the token carries neither `roles` nor `scp` (for
    /// example an ID token).
    #[error("the token is not an access token (it carries neither roles nor scp)")]
    NotAnAccessToken,
    /// An ID token is required, and the token carries `scp` or `roles` (an access token).
    #[error("the token is not an ID token")]
    NotAnIdToken,
    /// None of the required application roles is in `roles`.
    #[error("the token does not carry a required role")]
    MissingRole,
    /// The calling application (`azp` or `appid`) is not an allowed client.
    #[error("the calling application is not allowed")]
    ClientNotAllowed,
    /// `tfp`/`acr` names no configured B2C policy.
    #[error("the token's B2C policy is not accepted")]
    PolicyNotAllowed,
    /// The discovery document or the key set could not be fetched.
    #[error("the issuer's discovery document or keys cannot be fetched: {0}")]
    ProviderUnavailable(#[source] Arc<FetchError>),
}

impl TokenError {
    /// A stable, short code for a 401 JSON body (`malformed_token`, `expired`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed_token",
            TokenError::UnexpectedType => "unexpected_type",
            TokenError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            TokenError::UnknownKey => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::NotAnAccessToken => "not_an_access_token",
            TokenError::NotAnIdToken => "not_an_id_token",
            TokenError::MissingRole => "missing_role",
            TokenError::ClientNotAllowed => "client_not_allowed",
            TokenError::PolicyNotAllowed => "policy_not_allowed",
            TokenError::ProviderUnavailable(_) => "provider_unavailable",
        }
    }

    /// Whether the failure is on the issuer's side (its documents could not be fetched) rather
    /// than the token's; a caller may answer 503 instead of 401.
    pub fn is_provider_unavailable(&self) -> bool {
        matches!(self, TokenError::ProviderUnavailable(_))
    }
}

// ---------------------------------------------------------------------------------------------
// Provider: discovery document and keys, cached.
// ---------------------------------------------------------------------------------------------

/// One discovery document, its key set, and when they were fetched.
#[derive(Debug)]
struct Snapshot {
    metadata: CoreProviderMetadata,
    keys: CoreJsonWebKeySet,
    fetched_at: Instant,
}

impl Snapshot {
    fn issuer(&self) -> &str {
        self.metadata.issuer().as_str()
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.keys
            .keys()
            .iter()
            .any(|key| key.key_id().is_some_and(|id| id.as_str() == kid))
    }
}

/// Bookkeeping of fetches; only touched with the fetch mutex held.
#[derive(Default)]
struct FetchBook {
    /// The last failed fetch of the document and keys, and why.
    last_failure: Option<(Instant, Arc<FetchError>)>,
    /// The last key-set refetch caused by an unknown `kid`.
    last_unknown_kid_refetch: Option<Instant>,
}

/// An OpenID provider known by its discovery URL: the cached discovery document and key set.
pub struct OidcProvider {
    discovery_url: String,
    fetcher: Arc<Fetcher>,
    ttl: Duration,
    min_refetch_interval: Duration,
    current: RwLock<Option<Arc<Snapshot>>>,
    fetching: Mutex<FetchBook>,
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider")
            .field("discovery_url", &self.discovery_url)
            .finish_non_exhaustive()
    }
}

impl OidcProvider {
    /// A provider for `discovery_url`; nothing is fetched yet. Fails when the URL may not be
    /// fetched (not https, and not loopback http). The cache times come from the fetcher's
    /// `[oidc]` settings.
    pub fn new(discovery_url: &str, fetcher: Arc<Fetcher>) -> Result<OidcProvider, FetchError> {
        Fetcher::check_url(discovery_url)?;
        Ok(OidcProvider {
            discovery_url: discovery_url.to_string(),
            ttl: fetcher.cache_ttl(),
            min_refetch_interval: fetcher.min_refetch_interval(),
            fetcher,
            current: RwLock::new(None),
            fetching: Mutex::new(FetchBook::default()),
        })
    }

    /// The discovery URL.
    pub fn discovery_url(&self) -> &str {
        &self.discovery_url
    }

    /// The issuer named by the discovery document (fetching it when needed).
    pub async fn issuer(&self) -> Result<String, TokenError> {
        Ok(self.snapshot().await?.issuer().to_string())
    }

    /// Fetches the document and keys now unless a fresh copy is cached (for start-up or
    /// readiness checks).
    pub async fn prefetch(&self) -> Result<(), TokenError> {
        self.snapshot().await.map(|_| ())
    }

    fn cached(&self) -> Option<Arc<Snapshot>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn store(&self, snapshot: Arc<Snapshot>) {
        match self.current.write() {
            Ok(mut guard) => *guard = Some(snapshot),
            Err(poisoned) => *poisoned.into_inner() = Some(snapshot),
        }
    }

    fn is_fresh(&self, snapshot: &Snapshot) -> bool {
        snapshot.fetched_at.elapsed() < self.ttl
    }

    /// A stale snapshot may stand in for a failed refresh up to twice the TTL.
    fn usable_stale(&self) -> Option<Arc<Snapshot>> {
        self.cached()
            .filter(|s| s.fetched_at.elapsed() < self.ttl.saturating_mul(2))
    }

    /// The current snapshot: cached when fresh, refreshed otherwise.
    async fn snapshot(&self) -> Result<Arc<Snapshot>, TokenError> {
        let cached = self.cached();
        if let Some(snapshot) = &cached {
            if self.is_fresh(snapshot) {
                return Ok(snapshot.clone());
            }
        }
        let mut book = match self.fetching.try_lock() {
            Ok(book) => book,
            Err(_) => {
                // Someone is fetching: use the stale copy if there is one, else wait for them.
                if let Some(stale) = self.usable_stale() {
                    return Ok(stale);
                }
                self.fetching.lock().await
            }
        };
        if let Some(snapshot) = self.cached() {
            if self.is_fresh(&snapshot) {
                return Ok(snapshot);
            }
        }
        if let Some((at, error)) = &book.last_failure {
            if at.elapsed() < self.min_refetch_interval {
                return match self.usable_stale() {
                    Some(stale) => Ok(stale),
                    None => Err(TokenError::ProviderUnavailable(error.clone())),
                };
            }
        }
        match self.fetch_snapshot().await {
            Ok(snapshot) => {
                book.last_failure = None;
                let snapshot = Arc::new(snapshot);
                self.store(snapshot.clone());
                Ok(snapshot)
            }
            Err(error) => {
                log::warn!(
                    "OpenID provider {}: refresh failed: {error}",
                    self.discovery_url
                );
                let error = Arc::new(error);
                book.last_failure = Some((Instant::now(), error.clone()));
                match self.usable_stale() {
                    Some(stale) => Ok(stale),
                    None => Err(TokenError::ProviderUnavailable(error)),
                }
            }
        }
    }

    async fn fetch_snapshot(&self) -> Result<Snapshot, FetchError> {
        let metadata: CoreProviderMetadata = self.fetcher.get_json(&self.discovery_url).await?;
        let keys: CoreJsonWebKeySet = self.fetcher.get_json(metadata.jwks_uri().as_str()).await?;
        log::info!(
            "OpenID provider {}: issuer {}, {} keys",
            self.discovery_url,
            metadata.issuer().as_str(),
            keys.keys().len()
        );
        Ok(Snapshot {
            metadata,
            keys,
            fetched_at: Instant::now(),
        })
    }

    /// Refetches the key set because a token named `kid`, which the cached set does not hold.
    /// Returns the snapshot to retry with, or `None` when no refetch is allowed yet.
    async fn refetch_for_unknown_kid(
        &self,
        kid: &str,
    ) -> Result<Option<Arc<Snapshot>>, TokenError> {
        let mut book = self.fetching.lock().await;
        // Another request may have fetched a set with this key while we waited.
        let Some(current) = self.cached() else {
            return Ok(None);
        };
        if current.has_kid(kid) {
            return Ok(Some(current));
        }
        if let Some(at) = book.last_unknown_kid_refetch {
            if at.elapsed() < self.min_refetch_interval {
                return Ok(None);
            }
        }
        book.last_unknown_kid_refetch = Some(Instant::now());
        let keys: CoreJsonWebKeySet = match self
            .fetcher
            .get_json(current.metadata.jwks_uri().as_str())
            .await
        {
            Ok(keys) => keys,
            Err(error) => {
                log::warn!(
                    "OpenID provider {}: key refetch failed: {error}",
                    self.discovery_url
                );
                return Err(TokenError::ProviderUnavailable(Arc::new(error)));
            }
        };
        log::info!(
            "OpenID provider {}: key set refetched for an unknown key id ({} keys)",
            self.discovery_url,
            keys.keys().len()
        );
        let snapshot = Arc::new(Snapshot {
            metadata: current.metadata.clone(),
            keys,
            fetched_at: current.fetched_at,
        });
        self.store(snapshot.clone());
        Ok(Some(snapshot))
    }

    /// Checks the token's signature with this provider's keys (refetching them once, rate
    /// limited, for an unknown `kid`) and returns the snapshot it was checked against.
    async fn verify_signature(&self, jwt: &UnverifiedJwt<'_>) -> Result<Arc<Snapshot>, TokenError> {
        let snapshot = self.snapshot().await?;
        match check_signature(&snapshot, jwt) {
            Err(TokenError::UnknownKey) => {}
            Ok(()) => return Ok(snapshot),
            Err(other) => return Err(other),
        }
        let Some(kid) = jwt.kid.as_deref() else {
            return Err(TokenError::UnknownKey);
        };
        match self.refetch_for_unknown_kid(kid).await? {
            Some(snapshot) => check_signature(&snapshot, jwt).map(|()| snapshot),
            None => Err(TokenError::UnknownKey),
        }
    }
}

/// Checks the RS256 signature with the keys of `snapshot` that match the token's `kid`.
fn check_signature(snapshot: &Snapshot, jwt: &UnverifiedJwt<'_>) -> Result<(), TokenError> {
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

// ---------------------------------------------------------------------------------------------
// Parsing.
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Header {
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

/// `aud` (and B2C's `emails`) may be one string or an array.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The claims read from either kind of token. Unknown claims are ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<OneOrMany>,
    #[serde(default)]
    exp: Option<serde_json::Number>,
    #[serde(default)]
    nbf: Option<serde_json::Number>,
    /// An array of strings when present (Entra always sends one); anything else is refused.
    #[serde(default)]
    roles: Option<serde_json::Value>,
    #[serde(default)]
    scp: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    appid: Option<String>,
    #[serde(default)]
    tfp: Option<String>,
    #[serde(default)]
    acr: Option<String>,
    #[serde(default)]
    emails: Option<OneOrMany>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    idp: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
}

/// A parsed but not yet verified token.
struct UnverifiedJwt<'a> {
    /// `header.payload`, as signed.
    signing_input: &'a str,
    signature: Vec<u8>,
    kid: Option<String>,
    claims: Claims,
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

fn parse(token: &str) -> Result<UnverifiedJwt<'_>, TokenError> {
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

fn numeric_date(value: &serde_json::Number) -> Option<i64> {
    if let Some(seconds) = value.as_i64() {
        return Some(seconds);
    }
    value
        .as_f64()
        .filter(|f| f.is_finite())
        .map(|f| f.floor() as i64)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `exp` (required) and `nbf` (when present), with [`CLOCK_SKEW_S`] of leeway.
fn check_times(claims: &Claims, now: i64) -> Result<(), TokenError> {
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
fn accepted_audience(claims: &Claims, accepted: &[String]) -> Result<String, TokenError> {
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
fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}

// ---------------------------------------------------------------------------------------------
// Access tokens.
// ---------------------------------------------------------------------------------------------

/// What a verified access token says about the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessTokenInfo {
    /// `sub`: for client credentials, the calling application's service principal.
    pub subject: String,
    /// The calling application: `azp` (v2 tokens) or `appid` (v1 tokens).
    pub client_id: Option<String>,
    /// Application roles (`roles`).
    pub roles: Vec<String>,
}

/// Accepted tokens remembered, at most.
const VERIFIED_CACHE_SIZE: usize = 1024;

/// Accepted tokens by SHA-256: `exp`, the key set that verified them, what they say.
type VerifiedTokens = std::collections::HashMap<[u8; 32], (i64, Arc<Snapshot>, AccessTokenInfo)>;

/// Verifies bearer access tokens against `[auth.bearer]`.
///
/// B2C requests a client-credentials token once and sends it on every call until it expires, so
/// an accepted token is remembered (by its SHA-256, with its `exp` and the key set that verified
/// it) and the RSA check is not repeated on every request. A remembered token is accepted until
/// its own `exp` (without the clock skew) and only while that key set is the provider's current,
/// fresh one: when the keys are fetched again (rotation, an unknown `kid`, the TTL), every token is
/// checked again in full. A rejected token is never remembered.
#[derive(Debug)]
pub struct AccessTokenVerifier {
    provider: OidcProvider,
    audiences: Vec<String>,
    required_roles: Vec<String>,
    allowed_client_ids: Vec<String>,
    verified: RwLock<VerifiedTokens>,
}

impl AccessTokenVerifier {
    /// A verifier for the configured issuer; nothing is fetched yet. Fails when the discovery
    /// URL may not be fetched (not https, and not loopback http) or no audience is configured.
    pub fn new(
        settings: &BearerSettings,
        fetcher: Arc<Fetcher>,
    ) -> Result<AccessTokenVerifier, ConfigError> {
        let provider = OidcProvider::new(&settings.discovery_url, fetcher)
            .map_err(|e| ConfigError::Invalid(format!("[auth.bearer] discovery_url: {e}")))?;
        let audiences: Vec<String> = settings
            .audiences
            .iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            return Err(ConfigError::Invalid(
                "[auth.bearer] audiences: name at least one accepted audience".into(),
            ));
        }
        Ok(AccessTokenVerifier {
            provider,
            audiences,
            required_roles: settings
                .required_roles
                .iter()
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect(),
            allowed_client_ids: settings
                .allowed_client_ids
                .iter()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
            verified: RwLock::default(),
        })
    }

    /// The issuer's provider (discovery document and keys).
    pub fn provider(&self) -> &OidcProvider {
        &self.provider
    }

    /// Verifies a bearer access token (the value after `Bearer `).
    pub async fn verify(&self, token: &str) -> Result<AccessTokenInfo, TokenError> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = now();
        if let Some(current) = self.provider.cached().filter(|c| self.provider.is_fresh(c)) {
            let cache = self.verified.read().unwrap_or_else(|p| p.into_inner());
            if let Some((exp, keys, info)) = cache.get(&digest) {
                if now < *exp && Arc::ptr_eq(keys, &current) {
                    return Ok(info.clone());
                }
            }
        }
        let (exp, keys, info) = self.verify_fully(token).await?;
        let mut cache = self.verified.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= VERIFIED_CACHE_SIZE {
            cache.retain(|_, (exp, _, _)| now < *exp);
            if cache.len() >= VERIFIED_CACHE_SIZE {
                cache.clear();
            }
        }
        cache.insert(digest, (exp, keys, info.clone()));
        Ok(info)
    }

    /// The full check; returns the token's `exp` and the key set that verified it with what the
    /// token says.
    async fn verify_fully(
        &self,
        token: &str,
    ) -> Result<(i64, Arc<Snapshot>, AccessTokenInfo), TokenError> {
        let jwt = parse(token)?;
        let snapshot = self.provider.verify_signature(&jwt).await?;
        let claims = &jwt.claims;
        if claims.iss.as_deref() != Some(snapshot.issuer()) {
            return Err(TokenError::WrongIssuer);
        }
        accepted_audience(claims, &self.audiences)?;
        check_times(claims, now())?;
        let roles = match &claims.roles {
            None => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(TokenError::Malformed("roles is not an array of strings"))?,
            Some(_) => return Err(TokenError::Malformed("roles is not an array of strings")),
        };
        let has_scope = non_empty(claims.scp.as_deref()).is_some();
        if roles.is_empty() && !has_scope {
            return Err(TokenError::NotAnAccessToken);
        }
        if !self.required_roles.is_empty()
            && !roles.iter().any(|role| self.required_roles.contains(role))
        {
            return Err(TokenError::MissingRole);
        }
        let client_id = non_empty(claims.azp.as_deref())
            .or_else(|| non_empty(claims.appid.as_deref()))
            .map(str::to_string);
        if !self.allowed_client_ids.is_empty() {
            let allowed = client_id.as_deref().is_some_and(|client| {
                self.allowed_client_ids
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(client))
            });
            if !allowed {
                return Err(TokenError::ClientNotAllowed);
            }
        }
        let subject = non_empty(claims.sub.as_deref())
            .ok_or(TokenError::Malformed("missing sub"))?
            .to_string();
        let exp = claims
            .exp
            .as_ref()
            .and_then(numeric_date)
            .ok_or(TokenError::Malformed("exp is not a number"))?;
        Ok((
            exp,
            snapshot.clone(),
            AccessTokenInfo {
                subject,
                client_id,
                roles,
            },
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// B2C ID tokens.
// ---------------------------------------------------------------------------------------------

/// The identity a verified B2C ID token describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct B2cIdentity {
    /// `iss`, equal to the policy's discovery document's `issuer`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// The accepted audience (`aud`): a channel's client id, as the token spells it.
    pub audience: String,
    /// `emails[0]` (user flows), else `email` (custom policies).
    pub email: Option<String>,
    /// `idp`: the social identity provider, absent for local accounts.
    pub identity_provider: Option<String>,
    /// `email_verified`, when the token carries it (a boolean, or the string `true`/`false`).
    pub email_verified: Option<bool>,
    /// The policy, spelled as in the configured metadata URL.
    pub policy: String,
}

/// The policy named by a B2C metadata URL: the path segment before
/// `/v2.0/.well-known/openid-configuration`, or the `p` query parameter
/// (`.../v2.0/.well-known/openid-configuration?p=B2C_1_signin`).
pub fn policy_of_metadata_url(url: &str) -> Option<String> {
    let (parsed, _) = Fetcher::check_url(url).ok()?;
    if let Some((_, policy)) = parsed
        .query_pairs()
        .find(|(name, _)| name.eq_ignore_ascii_case("p"))
    {
        let policy = policy.trim();
        return (!policy.is_empty()).then(|| policy.to_string());
    }
    let path = parsed.path().trim_end_matches('/');
    let lower = path.to_ascii_lowercase();
    let suffix = "/v2.0/.well-known/openid-configuration";
    if !lower.ends_with(suffix) {
        return None;
    }
    let before = &path[..path.len() - suffix.len()];
    let (tenant_part, policy) = before.rsplit_once('/')?;
    // `/{tenant}/{policy}`: the tenant segment must be there, so `/{tenant}/v2.0/...` (no
    // policy) is not mistaken for a policy named after the tenant.
    if tenant_part.trim_matches('/').is_empty() || policy.is_empty() {
        return None;
    }
    Some(policy.to_string())
}

struct PolicyProvider {
    policy: String,
    provider: OidcProvider,
}

/// Verifies Azure AD B2C ID tokens for `POST /v1/link`, against one provider per configured
/// policy metadata URL.
pub struct B2cIdTokenVerifier {
    policies: Vec<PolicyProvider>,
    audiences: Vec<String>,
}

impl std::fmt::Debug for B2cIdTokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("B2cIdTokenVerifier")
            .field(
                "policies",
                &self.policies.iter().map(|p| &p.policy).collect::<Vec<_>>(),
            )
            .field("audiences", &self.audiences)
            .finish()
    }
}

impl B2cIdTokenVerifier {
    /// A verifier for the configured policies, accepting tokens for `audiences` (the channels'
    /// client ids); nothing is fetched yet. Fails when a metadata URL may not be fetched or
    /// names no policy, when two URLs name the same policy, or when no URL or no audience is
    /// given.
    pub fn new(
        settings: &RelyingPartySettings,
        audiences: Vec<String>,
        fetcher: Arc<Fetcher>,
    ) -> Result<B2cIdTokenVerifier, ConfigError> {
        if settings.metadata_urls.is_empty() {
            return Err(ConfigError::Invalid(
                "[relying_party] metadata_urls: name at least one policy's metadata URL".into(),
            ));
        }
        let mut seen = HashSet::new();
        let mut policies = Vec::with_capacity(settings.metadata_urls.len());
        for url in &settings.metadata_urls {
            let provider = OidcProvider::new(url, fetcher.clone())
                .map_err(|e| ConfigError::Invalid(format!("[relying_party] metadata_urls: {e}")))?;
            let policy = policy_of_metadata_url(url).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "[relying_party] metadata_urls: no policy in {url} (expected \
                     .../{{tenant}}/{{policy}}/v2.0/.well-known/openid-configuration)"
                ))
            })?;
            if !seen.insert(policy.to_ascii_lowercase()) {
                return Err(ConfigError::Invalid(format!(
                    "[relying_party] metadata_urls: policy {policy} is configured twice"
                )));
            }
            policies.push(PolicyProvider { policy, provider });
        }
        let audiences: Vec<String> = audiences
            .into_iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if audiences.is_empty() {
            return Err(ConfigError::Invalid(
                "[relying_party]: no channel has client_ids, so no ID token could be accepted"
                    .into(),
            ));
        }
        Ok(B2cIdTokenVerifier {
            policies,
            audiences,
        })
    }

    /// The configured policies, as spelled in their metadata URLs.
    pub fn policies(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.policy.as_str())
    }

    /// Fetches every policy's document and keys now (for start-up or readiness checks).
    pub async fn prefetch(&self) -> Result<(), TokenError> {
        for policy in &self.policies {
            policy.provider.prefetch().await?;
        }
        Ok(())
    }

    /// Verifies a B2C ID token and returns the identity it describes.
    pub async fn verify(&self, token: &str) -> Result<B2cIdentity, TokenError> {
        let jwt = parse(token)?;
        let claims = &jwt.claims;
        let named = non_empty(claims.tfp.as_deref())
            .or_else(|| non_empty(claims.acr.as_deref()))
            .ok_or(TokenError::PolicyNotAllowed)?;
        let policy = self
            .policies
            .iter()
            .find(|p| p.policy.eq_ignore_ascii_case(named))
            .ok_or(TokenError::PolicyNotAllowed)?;
        let snapshot = policy.provider.verify_signature(&jwt).await?;
        if non_empty(claims.scp.as_deref()).is_some() || claims.roles.is_some() {
            return Err(TokenError::NotAnIdToken);
        }
        let issuer = match claims.iss.as_deref() {
            Some(iss) if iss == snapshot.issuer() => iss.to_string(),
            _ => return Err(TokenError::WrongIssuer),
        };
        let audience = accepted_audience(claims, &self.audiences)?;
        check_times(claims, now())?;
        let subject = non_empty(claims.sub.as_deref())
            .ok_or(TokenError::Malformed("missing sub"))?
            .to_string();
        let email = claims
            .emails
            .as_ref()
            .and_then(|emails| match emails {
                OneOrMany::One(one) => non_empty(Some(one)).map(str::to_string),
                OneOrMany::Many(many) => many
                    .first()
                    .and_then(|first| non_empty(Some(first)))
                    .map(str::to_string),
            })
            .or_else(|| non_empty(claims.email.as_deref()).map(str::to_string));
        let email_verified = match &claims.email_verified {
            Some(serde_json::Value::Bool(b)) => Some(*b),
            Some(serde_json::Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => {
                Some(true)
            }
            Some(serde_json::Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => {
                Some(false)
            }
            _ => None,
        };
        Ok(B2cIdentity {
            issuer,
            subject,
            audience,
            email,
            identity_provider: non_empty(claims.idp.as_deref()).map(str::to_string),
            email_verified,
            policy: policy.policy.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
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
}
