//! `[entra]` and `[entra.graph]`: Microsoft Entra External ID calling autolink from its custom
//! authentication extensions (`POST /entra/attribute-collection-submit`,
//! `POST /entra/token-issuance-start`).
//!
//! Only `tenant_id` and `audiences` are required; every other key defaults to what an External ID
//! tenant uses (README, "Microsoft Entra External ID").

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The first-party application of Entra's authentication events service: the `azp` (v2 tokens)
/// or `appid` (v1 tokens) of every bearer token it sends to a custom authentication extension.
pub const ENTRA_AUTHENTICATION_EVENTS_APP: &str = "99045fe1-7639-4a75-9d4a-577b6ca3810f";

/// Default answer budget, in milliseconds (Entra waits 1000 ms by default, 2000 at most).
pub const DEFAULT_DEADLINE_MS: u64 = 800;

/// `[entra]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraSettings {
    /// The External ID tenant's id (a GUID): the `tid` of every token, the `data.tenantId` of
    /// every call.
    pub tenant_id: String,
    /// The tenant's OpenID discovery document (keys of the bearer tokens). Default:
    /// `https://{tenant_id}.ciamlogin.com/{tenant_id}/v2.0/.well-known/openid-configuration`.
    #[serde(default)]
    pub metadata_url: Option<String>,
    /// Accepted `iss` values. Default: the ciamlogin and login.microsoftonline.com v2.0 issuers
    /// and `https://sts.windows.net/{tenant_id}/` (v1 tokens).
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
    /// Accepted `aud` values: the extension's application id and its application id URI
    /// (`api://{host}/{app id}`).
    pub audiences: Vec<String>,
    /// The calling application (`azp` or `appid`).
    #[serde(default = "default_authorized_party")]
    pub authorized_party: String,
    /// Every answer leaves within this many milliseconds, whatever the database does.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// The issuer of the identities token issuance links (with `authenticationContext.user.id`):
    /// the `iss` of the store's ID tokens. Default: `https://{tenant_id}.ciamlogin.com/{tenant_id}/v2.0`.
    #[serde(default)]
    pub identity_issuer: Option<String>,
    /// Microsoft Graph, read at token issuance when no verified sign-up of the same correlation
    /// id is remembered.
    #[serde(default)]
    pub graph: Option<GraphSettings>,
}

fn default_authorized_party() -> String {
    ENTRA_AUTHENTICATION_EVENTS_APP.into()
}

fn default_deadline_ms() -> u64 {
    DEFAULT_DEADLINE_MS
}

/// `[entra.graph]`: client credentials of an application allowed to read users
/// (`User.Read.All`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSettings {
    /// The application's client id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: String,
    /// Default: `https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Default: `https://graph.microsoft.com`; users are read at
    /// `{base_url}/v1.0/users/{id}?$select=identities,mail`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Default: `https://graph.microsoft.com/.default`.
    #[serde(default)]
    pub scope: Option<String>,
}

impl std::fmt::Debug for GraphSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphSettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_url", &self.token_url)
            .field("base_url", &self.base_url)
            .field("scope", &self.scope)
            .finish()
    }
}

impl EntraSettings {
    fn tenant(&self) -> &str {
        self.tenant_id.trim()
    }

    /// The discovery document's URL.
    pub fn metadata_url(&self) -> String {
        match &self.metadata_url {
            Some(url) => url.trim().to_string(),
            None => format!(
                "https://{t}.ciamlogin.com/{t}/v2.0/.well-known/openid-configuration",
                t = self.tenant()
            ),
        }
    }

    /// The accepted issuers.
    pub fn issuers(&self) -> Vec<String> {
        match &self.issuers {
            Some(issuers) => issuers.iter().map(|i| i.trim().to_string()).collect(),
            None => {
                let t = self.tenant();
                vec![
                    format!("https://{t}.ciamlogin.com/{t}/v2.0"),
                    format!("https://login.microsoftonline.com/{t}/v2.0"),
                    format!("https://sts.windows.net/{t}/"),
                ]
            }
        }
    }

    /// The accepted audiences, trimmed.
    pub fn audiences(&self) -> Vec<String> {
        self.audiences
            .iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect()
    }

    /// The issuer of linked identities.
    pub fn identity_issuer(&self) -> String {
        match &self.identity_issuer {
            Some(issuer) => issuer.trim().to_string(),
            None => format!("https://{t}.ciamlogin.com/{t}/v2.0", t = self.tenant()),
        }
    }

    /// Checks the values; every message names its key.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if uuid::Uuid::parse_str(self.tenant()).is_err() {
            return invalid("entra.tenant_id must be the tenant's id (a GUID)");
        }
        if self.audiences().is_empty() {
            return invalid("entra.audiences: name the extension's application id (and its api://{host}/{app id} URI)");
        }
        if self
            .issuers()
            .iter()
            .any(|i| reqwest::Url::parse(i).is_err())
            || self.issuers().is_empty()
        {
            return invalid("entra.issuers must be a non-empty list of URLs");
        }
        if self.authorized_party.trim().is_empty() {
            return invalid("entra.authorized_party is empty");
        }
        if !(100..=2000).contains(&self.deadline_ms) {
            return invalid(
                "entra.deadline_ms must be between 100 and 2000 (Entra waits 2000 ms at most)",
            );
        }
        if reqwest::Url::parse(&self.metadata_url()).is_err() {
            return invalid("entra.metadata_url is not a URL");
        }
        if self.identity_issuer().is_empty() {
            return invalid("entra.identity_issuer is empty");
        }
        if let Some(graph) = &self.graph {
            graph.check(self.tenant())?;
        }
        Ok(())
    }
}

impl GraphSettings {
    /// The token endpoint for client credentials.
    pub fn token_url(&self, tenant_id: &str) -> String {
        match &self.token_url {
            Some(url) => url.trim().to_string(),
            None => format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                tenant_id.trim()
            ),
        }
    }

    /// Graph's base URL, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url
            .as_deref()
            .unwrap_or("https://graph.microsoft.com")
            .trim()
            .trim_end_matches('/')
            .to_string()
    }

    /// The scope requested.
    pub fn scope(&self) -> String {
        self.scope
            .as_deref()
            .unwrap_or("https://graph.microsoft.com/.default")
            .trim()
            .to_string()
    }

    fn check(&self, tenant_id: &str) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.client_id.trim().is_empty() {
            return invalid("entra.graph.client_id is empty");
        }
        if self.client_secret.is_empty() {
            return invalid("entra.graph.client_secret is empty");
        }
        if reqwest::Url::parse(&self.token_url(tenant_id)).is_err() {
            return invalid("entra.graph.token_url is not a URL");
        }
        if reqwest::Url::parse(&self.base_url()).is_err() {
            return invalid("entra.graph.base_url is not a URL");
        }
        if self.scope().is_empty() {
            return invalid("entra.graph.scope is empty");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "ab12cd34-9999-4bbb-846d-ed4b0283d8d7";

    fn parse(text: &str) -> Result<EntraSettings, String> {
        let settings: EntraSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        settings.check().map_err(|e| e.to_string())?;
        Ok(settings)
    }

    #[test]
    fn only_the_tenant_and_the_audiences_are_required_and_the_rest_defaults_to_external_id() {
        let s = parse(&format!("tenant_id = \"{TENANT}\"\naudiences = [\"app\"]")).unwrap();
        assert_eq!(
            s.metadata_url(),
            format!(
                "https://{TENANT}.ciamlogin.com/{TENANT}/v2.0/.well-known/openid-configuration"
            )
        );
        assert_eq!(
            s.issuers(),
            vec![
                format!("https://{TENANT}.ciamlogin.com/{TENANT}/v2.0"),
                format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
                format!("https://sts.windows.net/{TENANT}/"),
            ]
        );
        assert_eq!(s.authorized_party, ENTRA_AUTHENTICATION_EVENTS_APP);
        assert_eq!(s.deadline_ms, 800);
        assert_eq!(
            s.identity_issuer(),
            format!("https://{TENANT}.ciamlogin.com/{TENANT}/v2.0")
        );
    }

    #[test]
    fn each_bad_value_is_named_by_its_key() {
        let base = format!("tenant_id = \"{TENANT}\"\naudiences = [\"app\"]\n");
        let cases = [
            (
                "tenant_id = \"contoso\"\naudiences = [\"app\"]".to_string(),
                "entra.tenant_id",
            ),
            (
                format!("tenant_id = \"{TENANT}\"\naudiences = []"),
                "entra.audiences",
            ),
            (format!("tenant_id = \"{TENANT}\""), "audiences"),
            (format!("{base}deadline_ms = 5000"), "entra.deadline_ms"),
            (format!("{base}issuers = [\"not a url\"]"), "entra.issuers"),
            (
                format!("{base}authorized_party = \" \""),
                "entra.authorized_party",
            ),
            (
                format!("{base}[graph]\nclient_id = \"\"\nclient_secret = \"s\""),
                "entra.graph.client_id",
            ),
            (
                format!("{base}[graph]\nclient_id = \"c\"\nclient_secret = \"\""),
                "entra.graph.client_secret",
            ),
            (format!("{base}colour = \"blue\""), "colour"),
        ];
        for (text, key) in cases {
            let error = parse(&text).unwrap_err();
            assert!(error.contains(key), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_graph_secret_stays_out_of_debug_output() {
        let graph = GraphSettings {
            client_id: "c".into(),
            client_secret: "very-secret".into(),
            token_url: None,
            base_url: None,
            scope: None,
        };
        assert!(!format!("{graph:?}").contains("very-secret"));
        assert_eq!(graph.base_url(), "https://graph.microsoft.com");
        assert_eq!(
            graph.token_url(TENANT),
            format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
        );
    }
}
