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
use super::id_token::B2cIdentity;
use super::verification::{
    accepted_audience, check_not_before, non_empty, now, read, unverified_claims, Claims,
};
use super::TokenError;

/// What `POST /v1/link` reports as the "policy" of an External ID token (its note and audit).
pub const EXTERNAL_ID_POLICY: &str = "external-id";

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

    /// Whether the token, not yet verified, names one of the tenant's issuers: which verifier
    /// `POST /v1/link` hands it to. Never a reason to trust it.
    pub fn names_issuer(&self, token: &str) -> bool {
        read(token)
            .ok()
            .and_then(|(_, token)| {
                unverified_claims(&token)
                    .ok()
                    .map(|claims| self.issuers.iter().any(|i| i == claims.issuer().as_str()))
            })
            .unwrap_or(false)
    }

    /// The signature, `iss` in the list and `tid` the tenant: what every token of the tenant
    /// must show. Returns the verified claims' tenant.
    fn tenant_of<'c>(&self, claims: &'c Claims) -> Result<&'c str, TokenError> {
        let issuer = claims.issuer().as_str();
        if !self.issuers.iter().any(|accepted| accepted == issuer) {
            return Err(TokenError::WrongIssuer);
        }
        let tenant =
            non_empty(claims.additional_claims().tid.as_deref()).ok_or(TokenError::WrongTenant)?;
        if !tenant.eq_ignore_ascii_case(&self.tenant_id) {
            return Err(TokenError::WrongTenant);
        }
        Ok(tenant)
    }

    /// Verifies an ID token the tenant issued to one of the store's applications (`POST
    /// /v1/link`): signature, `iss` and `tid` as for the extensions' tokens, `aud` one of
    /// `audiences` (the channels' client ids), no access-token claims. The identity is
    /// (`identity_issuer`, `oid`), the identity token issuance links: External ID's `sub` is
    /// pairwise per application, `oid` is the user's object id.
    pub async fn verify_id_token(
        &self,
        token: &str,
        audiences: &[String],
        identity_issuer: &str,
    ) -> Result<B2cIdentity, TokenError> {
        let (header, token) = read(token)?;
        let (_, claims) = self.provider.verify(&header, &token).await?;
        self.tenant_of(claims)?;
        let extra = claims.additional_claims();
        if non_empty(extra.scp.as_deref()).is_some() || extra.roles.is_some() {
            return Err(TokenError::NotAnIdToken);
        }
        let audience = accepted_audience(claims, audiences)?.to_string();
        check_not_before(claims, now())?;
        let subject = non_empty(extra.oid.as_deref())
            .ok_or(TokenError::Malformed("missing oid"))?
            .to_string();
        Ok(B2cIdentity {
            issuer: identity_issuer.to_string(),
            subject,
            audience,
            email: non_empty(claims.email().map(|email| email.as_str())).map(str::to_string),
            identity_provider: non_empty(extra.idp.as_deref()).map(str::to_string),
            email_verified: claims.email_verified(),
            policy: EXTERNAL_ID_POLICY.to_string(),
        })
    }

    /// Verifies a bearer token (the value after `Bearer `).
    pub async fn verify(&self, token: &str) -> Result<EntraCaller, TokenError> {
        let (header, token) = read(token)?;
        let (_, claims) = self.provider.verify(&header, &token).await?;
        let tenant = self.tenant_of(claims)?;
        let extra = claims.additional_claims();
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
