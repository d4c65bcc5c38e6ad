//! Azure AD B2C ID tokens (the relying-party call `POST /v1/link`), one provider per policy.

use std::collections::HashSet;
use std::sync::Arc;

use crate::auth::fetch::Fetcher;
use crate::config::{ConfigError, RelyingPartySettings};

use super::discovery::OidcProvider;
use super::verification::{
    accepted_audience, check_not_before, non_empty, now, read, unverified_claims, OneOrMany,
};
use super::TokenError;

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
    /// `email_verified`, when the token carries it (a boolean, or exactly the string
    /// `true`/`false`).
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
        let (header, token) = read(token)?;
        // The policy the token names, not yet trusted, only decides whose document and keys
        // verify it: a token of a policy that is not configured costs no fetch.
        let unverified = unverified_claims(&token)?;
        let named = non_empty(unverified.additional_claims().tfp.as_deref())
            .or_else(|| non_empty(unverified.auth_context_ref().map(|acr| acr.as_str())))
            .ok_or(TokenError::PolicyNotAllowed)?;
        let policy = self
            .policies
            .iter()
            .find(|p| p.policy.eq_ignore_ascii_case(named))
            .ok_or(TokenError::PolicyNotAllowed)?;
        // The same claims, now verified against that policy's issuer and keys.
        let (_, claims) = policy.provider.verify(&header, &token).await?;
        let extra = claims.additional_claims();
        if non_empty(extra.scp.as_deref()).is_some() || extra.roles.is_some() {
            return Err(TokenError::NotAnIdToken);
        }
        let audience = accepted_audience(claims, &self.audiences)?.to_string();
        check_not_before(claims, now())?;
        let subject = non_empty(Some(claims.subject().as_str()))
            .ok_or(TokenError::Malformed("missing sub"))?
            .to_string();
        let email = extra
            .emails
            .as_ref()
            .and_then(|emails| match emails {
                OneOrMany::One(one) => non_empty(Some(one)).map(str::to_string),
                OneOrMany::Many(many) => many
                    .first()
                    .and_then(|first| non_empty(Some(first)))
                    .map(str::to_string),
            })
            .or_else(|| non_empty(claims.email().map(|email| email.as_str())).map(str::to_string));
        Ok(B2cIdentity {
            issuer: claims.issuer().as_str().to_string(),
            subject,
            audience,
            email,
            identity_provider: non_empty(extra.idp.as_deref()).map(str::to_string),
            email_verified: claims.email_verified(),
            policy: policy.policy.clone(),
        })
    }
}
