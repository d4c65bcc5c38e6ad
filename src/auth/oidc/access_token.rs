//! Bearer access tokens from Microsoft Entra ID (the connector's OAuth2 client credentials).

use std::sync::{Arc, RwLock};

use crate::auth::fetch::Fetcher;
use crate::config::{BearerSettings, ConfigError};

use super::discovery::{OidcProvider, Snapshot};
use super::verification::{accepted_audience, check_not_before, non_empty, now, read};
use super::TokenError;

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
        let (header, token) = read(token)?;
        let (snapshot, claims) = self.provider.verify(&header, &token).await?;
        accepted_audience(claims, &self.audiences)?;
        check_not_before(claims, now())?;
        let extra = claims.additional_claims();
        let roles = match &extra.roles {
            None => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(TokenError::Malformed("roles is not an array of strings"))?,
            Some(_) => return Err(TokenError::Malformed("roles is not an array of strings")),
        };
        let has_scope = non_empty(extra.scp.as_deref()).is_some();
        if roles.is_empty() && !has_scope {
            return Err(TokenError::NotAnAccessToken);
        }
        if !self.required_roles.is_empty()
            && !roles.iter().any(|role| self.required_roles.contains(role))
        {
            return Err(TokenError::MissingRole);
        }
        let client_id = non_empty(claims.authorized_party().map(|azp| azp.as_str()))
            .or_else(|| non_empty(extra.appid.as_deref()))
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
        let subject = non_empty(Some(claims.subject().as_str()))
            .ok_or(TokenError::Malformed("missing sub"))?
            .to_string();
        Ok((
            claims.expiration().timestamp(),
            snapshot,
            AccessTokenInfo {
                subject,
                client_id,
                roles,
            },
        ))
    }
}
