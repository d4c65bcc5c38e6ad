//! Verifying JWTs from OpenID providers: bearer access tokens (OAuth2 client credentials from
//! Microsoft Entra ID, DESIGN section 3) and Azure AD B2C ID tokens (the relying-party call
//! `POST /v1/link`).
//!
//! # Discovery
//!
//! `openidconnect`'s own discovery insists that the document's `issuer` equals the URL it was
//! fetched from, which never holds for B2C (discovery under `/{tenant}.onmicrosoft.com/{policy}/`,
//! issuer `/{tenant-guid}/v2.0/`). [`OidcProvider`] therefore fetches the document itself with
//! the [`Fetcher`](crate::auth::fetch::Fetcher) (https only, no redirects, time and size
//! limits), deserializes it into
//! [`CoreProviderMetadata`](openidconnect::core::CoreProviderMetadata), fetches the key set from
//! its `jwks_uri`, and tokens are checked against the document's `issuer`.
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

use std::sync::Arc;

use super::fetch::FetchError;

mod access_token;
mod discovery;
mod id_token;
mod verification;

pub use self::access_token::{AccessTokenInfo, AccessTokenVerifier};
pub use self::discovery::OidcProvider;
pub use self::id_token::{policy_of_metadata_url, B2cIdTokenVerifier, B2cIdentity};

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

#[cfg(test)]
mod tests;
