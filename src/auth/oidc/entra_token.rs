//! Bearer tokens that Microsoft Entra External ID sends to custom authentication extensions
//! (`[entra]`).
//!
//! Entra's authentication events service (application `99045fe1-7639-4a75-9d4a-577b6ca3810f`)
//! requests a client-credentials token for the extension's application and sends it on every
//! call. The same path as every other token checks the header (RS256 only), the signature with
//! the tenant's published keys (one refetch, rate limited, for an unknown `kid`) and `exp` (60 s
//! of skew); then, on the verified claims:
//!
//! - `iss` is one of `[entra] issuers` (exactly): External ID signs with the ciamlogin issuer,
//!   the login.microsoftonline.com issuer was seen in production tenants, and v1 tokens carry
//!   `https://sts.windows.net/{tenant}/`; the discovery document names only one of them;
//! - `tid` is the configured tenant;
//! - `aud` is an accepted audience;
//! - `nbf` holds (60 s of skew);
//! - the calling application is the authorized party: `appid` for v1 tokens (`ver` `1.0`), `azp`
//!   otherwise.

use std::sync::Arc;

use crate::auth::fetch::Fetcher;
use crate::config::{ConfigError, EntraSettings};

use super::discovery::OidcProvider;
use super::verification::{accepted_audience, check_not_before, non_empty, now, read};
use super::TokenError;

/// What a verified Entra token says about the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraCaller {
    /// `tid`: the call's `data.tenantId` must equal it.
    pub tenant_id: String,
}

/// Verifies the bearer tokens of Entra's custom authentication extensions.
#[derive(Debug)]
pub struct EntraTokenVerifier {
    provider: OidcProvider,
    issuers: Vec<String>,
    tenant_id: String,
    audiences: Vec<String>,
    authorized_party: String,
}

impl EntraTokenVerifier {
    /// A verifier for `[entra]`; nothing is fetched yet.
    pub fn new(
        settings: &EntraSettings,
        fetcher: Arc<Fetcher>,
    ) -> Result<EntraTokenVerifier, ConfigError> {
        let provider = OidcProvider::new(&settings.metadata_url(), fetcher)
            .map_err(|e| ConfigError::Invalid(format!("entra.metadata_url: {e}")))?
            .with_issuer_checked_by_caller();
        Ok(EntraTokenVerifier {
            provider,
            issuers: settings.issuers(),
            tenant_id: settings.tenant_id.trim().to_string(),
            audiences: settings.audiences(),
            authorized_party: settings.authorized_party.trim().to_string(),
        })
    }

    /// The tenant's provider (discovery document and keys).
    pub fn provider(&self) -> &OidcProvider {
        &self.provider
    }

    /// Verifies a bearer token (the value after `Bearer `).
    pub async fn verify(&self, token: &str) -> Result<EntraCaller, TokenError> {
        let (header, token) = read(token)?;
        let (_, claims) = self.provider.verify(&header, &token).await?;
        let issuer = claims.issuer().as_str();
        if !self.issuers.iter().any(|accepted| accepted == issuer) {
            return Err(TokenError::WrongIssuer);
        }
        let extra = claims.additional_claims();
        let tenant = non_empty(extra.tid.as_deref()).ok_or(TokenError::WrongTenant)?;
        if !tenant.eq_ignore_ascii_case(&self.tenant_id) {
            return Err(TokenError::WrongTenant);
        }
        accepted_audience(claims, &self.audiences)?;
        check_not_before(claims, now())?;
        let v1 = extra.ver.as_ref().and_then(|v| v.as_str()) == Some("1.0");
        let client = if v1 {
            non_empty(extra.appid.as_deref())
        } else {
            non_empty(claims.authorized_party().map(|azp| azp.as_str()))
        };
        if !client.is_some_and(|c| c.eq_ignore_ascii_case(&self.authorized_party)) {
            return Err(TokenError::ClientNotAllowed);
        }
        Ok(EntraCaller {
            tenant_id: tenant.to_string(),
        })
    }
}
