//! The settings of who may call: `[auth]` (B2C's credentials: HTTP Basic, API key, bearer
//! token, client certificate), `[tls]`, `[relying_party]`, `[oidc]` and `[admin]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[auth]`: how B2C authenticates to the connector and REST endpoints. Several types may be
/// configured at once; a request is accepted when any of them accepts it. With none configured,
/// Basic credentials are generated at first start.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// HTTP Basic.
    pub basic: Option<BasicSettings>,
    /// Bearer access tokens (OAuth2 client credentials from Microsoft Entra ID).
    pub bearer: Option<BearerSettings>,
    /// An API key in a header (`ApiKeyHeader`).
    pub api_key: Option<ApiKeySettings>,
    /// Client certificates (mutual TLS, or App Service's `X-ARR-ClientCert`).
    pub client_certificate: Option<ClientCertificateSettings>,
}

impl AuthSettings {
    /// Whether any authentication type is configured.
    pub fn any_configured(&self) -> bool {
        self.basic.is_some()
            || self.bearer.is_some()
            || self.api_key.is_some()
            || self.client_certificate.is_some()
    }
}

/// `[auth.bearer]`: access tokens issued by an OpenID provider (Entra ID) to B2C's client
/// credentials.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerSettings {
    /// The issuer's discovery document, e.g.
    /// `https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration`.
    pub discovery_url: String,
    /// Accepted audiences (`aud`): this API's application id URI or client id.
    pub audiences: Vec<String>,
    /// When not empty, the token must carry one of these application roles (`roles`); when empty
    /// it must still carry `roles` or `scp`, which ID tokens do not.
    #[serde(default)]
    pub required_roles: Vec<String>,
    /// When not empty, the calling application (`azp` or `appid`) must be one of these.
    #[serde(default)]
    pub allowed_client_ids: Vec<String>,
}

/// `[auth.api_key]`: a key B2C sends in a header (`ApiKeyHeader` authentication type). Several
/// keys may be valid at once, for rotation.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySettings {
    /// The header name, e.g. `x-functions-key`.
    #[serde(default = "default_api_key_header")]
    pub header: String,
    /// PHC hashes of the valid keys (from `autolink hash-secret`).
    #[serde(default)]
    pub key_hashes: Vec<String>,
    /// Valid keys in clear, for development only (hashed at start).
    #[serde(default)]
    pub keys: Vec<String>,
}

fn default_api_key_header() -> String {
    "x-functions-key".into()
}

impl std::fmt::Debug for ApiKeySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeySettings")
            .field("header", &self.header)
            .field("key_hashes", &self.key_hashes.len())
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// `[auth.client_certificate]`: which client certificates are accepted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientCertificateSettings {
    /// PEM files of the certificate authorities whose (unexpired) certificates are accepted.
    pub ca_files: Vec<PathBuf>,
    /// Pinned certificates by thumbprint: hex SHA-1 (as Azure shows them) or SHA-256, case and
    /// colons ignored. Give two during a rotation.
    pub thumbprints: Vec<String>,
    /// Read the certificate from Azure App Service's `X-ARR-ClientCert` header (base64 DER), for
    /// deployments where TLS ends at the App Service front end. Only enable it there: anyone who
    /// reaches the service directly could send the header.
    pub trust_arr_header: bool,
}

/// `[tls]`: serve HTTPS on `bind` with this certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[relying_party]`: the B2C policies whose ID tokens `POST /v1/link` accepts. The audience must
/// be a client id of a configured channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelyingPartySettings {
    /// Discovery documents of the policies, e.g.
    /// `https://fabrikam.b2clogin.com/fabrikam.onmicrosoft.com/B2C_1A_signup_signin/v2.0/.well-known/openid-configuration`.
    pub metadata_urls: Vec<String>,
}

/// `[oidc]`: limits on fetching discovery documents and key sets. Fetches use https only (plain
/// http is allowed for loopback addresses, for tests and the mock B2C), never follow redirects,
/// and stop at the time and size limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OidcFetchSettings {
    /// Time limit of one fetch, in milliseconds.
    pub timeout_ms: u64,
    /// Largest document accepted, in bytes.
    pub max_document_bytes: usize,
    /// Least time between two key-set refetches caused by unknown key ids, in seconds.
    pub min_refetch_interval_s: u64,
    /// Discovery documents and keys are refreshed after this many seconds.
    pub cache_ttl_s: u64,
}

impl Default for OidcFetchSettings {
    fn default() -> Self {
        Self {
            timeout_ms: 5000,
            max_document_bytes: 1024 * 1024,
            min_refetch_interval_s: 30,
            cache_ttl_s: 24 * 3600,
        }
    }
}

/// `[auth.basic]`: a user name and either a password hash (PHC string, argon2id) or, for
/// development, the password itself.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicSettings {
    /// User name.
    pub username: String,
    /// PHC hash of the password.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// The password in clear, for development only.
    #[serde(default)]
    pub password: Option<String>,
}

impl std::fmt::Debug for BasicSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicSettings")
            .field("username", &self.username)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "***"))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `[admin]`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSettings {
    /// PHC hash of the admin bearer token.
    pub token_hash: Option<String>,
    /// The token in clear, for development only.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("token_hash", &self.token_hash.as_ref().map(|_| "***"))
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}
