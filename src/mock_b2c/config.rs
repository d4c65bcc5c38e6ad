//! The mock's settings: one tenant, its policies, the applications registered in it, the
//! simulated identity providers, and how it calls autolink.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How B2C authenticates its calls to the service.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CallerAuth {
    /// No credentials (the service answers 401; useful to show that).
    #[default]
    None,
    /// HTTP Basic.
    Basic { username: String, password: String },
    /// A key in a header (`ApiKeyHeader`).
    ApiKey { header: String, key: String },
    /// An access token acquired with client credentials from the mock's own Entra ID token
    /// endpoint (`/{tenant_id}/oauth2/v2.0/token`), as the `Bearer` policy does.
    Bearer {
        client_id: String,
        client_secret: String,
        scope: String,
    },
    /// Mutual TLS with this certificate and key (PEM files).
    ClientCertificate {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

/// An application registered in the tenant (a relying party).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub client_id: String,
    /// Redirect URIs the authorize endpoint accepts for it.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Its client secret at the token endpoint (none: a public client, PKCE or not).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A name for the pages.
    #[serde(default)]
    pub name: Option<String>,
}

/// A simulated social identity provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Its issuer name in B2C's `identities` (`google.com`, `facebook.com`).
    pub name: String,
    /// Whether it vouches for email addresses by default (Google does; Facebook's claim is not
    /// an `email_verified`).
    pub verifies_email: bool,
}

/// An application of the tenant's Entra ID that may get access tokens (client credentials),
/// for the `Bearer` authentication type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraClient {
    pub client_id: String,
    pub client_secret: String,
    /// Application roles put in its tokens (`roles`).
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Custom-policy mode: where the project's policies are and which variant to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPolicySettings {
    /// The project's `policies/` folder.
    pub dir: PathBuf,
    /// The environment of `appsettings.json` to render (`Test`).
    #[serde(default = "test_environment")]
    pub environment: String,
    /// Which `AutolinkRestAuth.*.xml` to upload: `Basic`, `Bearer`, `ApiKeyHeader`,
    /// `ClientCertificate`.
    #[serde(default = "basic")]
    pub rest_auth: String,
    /// Policy keys (`B2C_1A_...` container name to its secret value); for a client certificate,
    /// the value is `CERT_FILE|KEY_FILE` (PEM).
    #[serde(default)]
    pub policy_keys: BTreeMap<String, String>,
}

fn test_environment() -> String {
    "Test".into()
}

fn basic() -> String {
    "Basic".into()
}

/// Everything the mock needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockSettings {
    /// Where to listen, e.g. `127.0.0.1:8081` (`127.0.0.1:0` for a free port).
    pub bind: String,
    /// The tenant's domain name, e.g. `fabrikamtest.onmicrosoft.com`.
    pub tenant: String,
    /// The tenant's id: the issuer is `{base}/{tenant_id}/v2.0/`.
    pub tenant_id: String,
    /// User flows (`B2C_1_...`), called through the API connector.
    pub user_flows: Vec<String>,
    /// The claims selected under the user flows' "Application claims" that a connector's
    /// answer at the token step may set (B2C puts a returned claim in the token only when it is
    /// selected there: "Add an API connector to a sign-up user flow", section "Before sending the
    /// token"). Default: autolink's three claims.
    #[serde(default = "autolink_application_claims")]
    pub application_claims: Vec<String>,
    /// The custom policy's relying-party id (`B2C_1A_Autolink_signup_signin`), when custom-policy
    /// mode is on.
    #[serde(default)]
    pub custom_policy_id: Option<String>,
    #[serde(default)]
    pub custom_policy: Option<CustomPolicySettings>,
    /// autolink's base URL, e.g. `http://127.0.0.1:8080`.
    pub service_url: String,
    /// How user flows authenticate to the API connector.
    #[serde(default)]
    pub connector_auth: CallerAuth,
    /// A CA certificate (PEM) to trust for an HTTPS service URL, besides the system's.
    #[serde(default)]
    pub service_ca_file: Option<PathBuf>,
    /// Time limit per call; default: 20 s for user flows, 30 s for custom policies.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Retries after a failed call; default: 1 for user flows, 2 for custom policies.
    #[serde(default)]
    pub retries: Option<u32>,
    /// Whether local sign-up requires email verification ("Requires verification = Yes").
    #[serde(default = "yes")]
    pub local_email_verification: bool,
    pub applications: Vec<Application>,
    #[serde(default = "default_providers")]
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub entra_clients: Vec<EntraClient>,
    /// How long a verification code is good for, in seconds (default 600; short for tests of
    /// an expired code).
    #[serde(default)]
    pub verification_code_lifetime_s: Option<u64>,
    /// The directory file (SQLite): users survive a restart. None: the directory lives in
    /// memory and is empty at every start.
    #[serde(default)]
    pub directory_file: Option<PathBuf>,
    /// The RSA signing key (PKCS#8 or PKCS#1 PEM); generated at start when absent.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// An External ID tenant beside the B2C tenant (`[external_id]`), signing with the same key.
    #[serde(default)]
    pub external_id: Option<super::external_id::ExternalIdSettings>,
}

/// autolink's claims, as a user flow's "Application claims" would select them.
pub fn autolink_application_claims() -> Vec<String> {
    [
        "extension_CustomerAccountNumber",
        "extension_AutoLinkOutcome",
        "extension_AutoLinkError",
    ]
    .map(String::from)
    .to_vec()
}

impl MockSettings {
    /// How long a verification code is good for.
    pub fn verification_code_lifetime(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.verification_code_lifetime_s.unwrap_or(600))
    }
}

fn yes() -> bool {
    true
}

/// Google verifies email; Facebook does not say so.
pub fn default_providers() -> Vec<Provider> {
    vec![
        Provider {
            name: "google.com".into(),
            verifies_email: true,
        },
        Provider {
            name: "facebook.com".into(),
            verifies_email: false,
        },
    ]
}
