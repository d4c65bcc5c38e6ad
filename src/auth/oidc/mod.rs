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
//! Both kinds of token take one path (`verification.rs`): the header checked first, then
//! `openidconnect`'s [`IdToken`](openidconnect::IdToken) parse and
//! [`IdTokenVerifier`](openidconnect::IdTokenVerifier), then what the verifier has no hook for.
//!
//! 1. The token is a compact JWS of at most [`MAX_TOKEN_BYTES`] bytes (three base64url parts).
//!    Its header alone is decoded (nothing else is parsed yet): critical headers (`crit`) and
//!    nested tokens (`cty`) are refused, and so is a `typ` other than `JWT` (an RFC 9068 `at+jwt`
//!    access token is another kind of token).
//! 2. The header's `alg` is exactly `RS256`. Everything else is refused before the payload is
//!    parsed or any key is looked at: `none`, `HS256` (whatever the secret, the public key
//!    included), `RS384`, `PS256`, `ES256`... Keys named by the header (`jku`, `x5u`, `jwk`) are
//!    ignored; only the issuer's published keys are used.
//! 3. `openidconnect` parses the token: base64url parts, a JSON payload whose `iss` is a URL,
//!    `aud` a string or an array, `exp` and `iat` numbers, `sub` a string, `email_verified` a
//!    boolean or the string `true`/`false`. A token lacking one of them, or holding a claim of
//!    the wrong type, is malformed.
//! 4. B2C ID tokens: `tfp` (or `acr`, for custom policies that emit it) names a configured
//!    policy (case-insensitive); that policy's document and keys verify the token. The name is
//!    read before verification (only `exp` is checked then), to choose the keys: a token of a
//!    policy that is not configured is refused without any fetch.
//! 5. The provider's `IdTokenVerifier`, built once per fetched key set: `typ` `JWT` or none, no
//!    `cty` or `crit` (again); `iss` equals the document's `issuer` exactly; the algorithm is
//!    RS256 (a public client: `HS256` is never keyed with anything); the key is the one RS256
//!    signing key named by `kid` (a key published for encryption, for another algorithm or of
//!    another type is not a candidate; a token without `kid` only verifies when the set holds
//!    exactly one such key, as OpenID Connect Core 10.1 requires); the signature; `exp`. Issuer
//!    and expiry are compared before the signature is checked, which only ever refuses: no claim
//!    is used before the signature has verified.
//! 6. Then, on the verified claims: `aud` contains an accepted audience (ASCII case-insensitive,
//!    since client ids are GUIDs; the verifier's own audience check compares one client id
//!    exactly, so it is turned off); `nbf` holds (the verifier does not read `nbf`).
//! 7. Access tokens: the token carries `roles` or `scp` (ID tokens carry neither); when
//!    `required_roles` is set, one of them is in `roles` (exact, case-sensitive); when
//!    `allowed_client_ids` is set, `azp` (v2 tokens) or `appid` (v1 tokens) is one of them
//!    (case-insensitive); `sub` is not blank.
//! 8. B2C ID tokens: a token carrying `scp` or `roles` (an access token) is refused; `sub` is not
//!    blank. The nonce is not checked: the relying party checked it when it received the token,
//!    and autolink never sent one.
//!
//! # What `openidconnect` does here, and what it does not
//!
//! `openidconnect` 4.1 verifies ID tokens only: its JWT type and generic claims verifier are
//! private to the crate, and it has no access-token verifier. Its `IdTokenVerifier` nonetheless
//! fits Entra ID access tokens: the checks it makes (header, issuer, algorithm, key, signature,
//! expiry) are the ones they need, its ID-token-only checks are hooks that accept by default
//! (`iat`, `acr`, `auth_time`) or that are given an accepting one (the nonce), and what it
//! demands (`iss` a URL, `iat` and `sub` present) every Entra v1 and v2 access token carries. So
//! both kinds of token are parsed as an [`IdToken`](openidconnect::IdToken) with the claims it
//! lacks (`nbf`, `roles`, `scp`, `appid`, `tfp`, `emails`, `idp`) as additional claims, and
//! verified by the same verifier. What stays in this module, and why:
//!
//! - the header checks of steps 1 and 2, before the crate's parse: the crate parses the whole
//!   token before looking at its header, cannot name an algorithm it does not know (the parse
//!   fails), reports `typ`, `cty` and `crit` as one undistinguished error, and does not expose
//!   `kid`, which decides whether an unknown key is worth a refetch;
//! - the audience (several accepted audiences, case-insensitive) and `nbf` (step 6);
//! - the rules of steps 7 and 8, which are not about JWTs at all;
//! - the refetch of the key set on an unknown `kid` (the crate only reports "no matching key").
//!
//! The verifier's errors map onto [`TokenError`]: an issuer mismatch is `WrongIssuer`, an
//! expiry `Expired`, no (single) usable key `UnknownKey`, a signature that does not verify
//! `BadSignature`; anything else it refuses is `Malformed`.
//!
//! # Clock skew
//!
//! [`CLOCK_SKEW_S`] = 60 seconds of leeway on `exp` and `nbf`: a token is accepted until 60 s
//! after its `exp`, and from 60 s before its `nbf`. Entra ID and B2C sign `nbf` with their own
//! clock, so a strict check refuses fresh tokens whenever this host runs a little behind.
//! `openidconnect`'s verifier has no leeway setting: its clock (`set_time_fn`) runs 60 s behind
//! instead, which is the same check for `exp`. `iat` must be present but its time is not
//! checked.
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
mod entra_token;
mod id_token;
mod verification;

pub use self::access_token::{AccessTokenInfo, AccessTokenVerifier};
pub use self::discovery::OidcProvider;
pub use self::entra_token::{EntraCaller, EntraTokenVerifier};
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
    /// `tid` is not the configured tenant (Entra External ID).
    #[error("the token was issued for another tenant")]
    WrongTenant,
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
            TokenError::WrongTenant => "wrong_tenant",
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
