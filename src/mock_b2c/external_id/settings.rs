//! The External ID tenant's settings (`[external_id]` in the mock's file) and the payload
//! variants of Microsoft's samples that the extension caller can send.

use serde::{Deserialize, Serialize};

/// The client id of the authentication events service, the `azp` of every token Entra sends to
/// a custom authentication extension.
pub const EVENTS_SERVICE_APP_ID: &str = "99045fe1-7639-4a75-9d4a-577b6ca3810f";

/// The External ID tenant of the mock (a customer tenant of Microsoft Entra External ID).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIdSettings {
    /// The tenant id (GUID): the issuer is `https://{tenant_id}.ciamlogin.com/{tenant_id}/v2.0`.
    pub tenant_id: String,
    /// The tenant's domain name, the issuer of local identities (`contoso.onmicrosoft.com` in
    /// Microsoft's samples) and the domain of user principal names.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// The app registration of the custom authentication extension: the `aud` of the bearer
    /// tokens sent to autolink.
    pub extension_app_id: String,
    /// The application that reads users from Graph with client credentials (autolink's
    /// `[entra.graph] client_id` / `client_secret`).
    pub graph_client_id: String,
    pub graph_client_secret: String,
    /// Time limit per extension call (`clientConfiguration.timeoutInMilliseconds`; Entra's
    /// default 1000, valid 200 to 2000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries after a time-out or a failed connection (`maximumRetries`: 0 or 1).
    #[serde(default = "one")]
    pub retries: u32,
    /// autolink's submit endpoint; default `{service_url}/entra/attribute-collection-submit`.
    #[serde(default)]
    pub submit_url: Option<String>,
    /// autolink's token-issuance endpoint; default `{service_url}/entra/token-issuance-start`.
    #[serde(default)]
    pub token_issuance_url: Option<String>,
    /// What the extension calls send (the variants of Microsoft's samples).
    #[serde(default)]
    pub payload: PayloadVariant,
    /// The claims the application's claims mapping takes from the token-issuance answer into
    /// the ID token (claims the answer carries beyond these are dropped, as Entra drops claims
    /// no mapping names).
    #[serde(default = "default_token_claims")]
    pub token_claims: Vec<String>,
    /// The object id of the service principal the extension's tokens are issued to (`sub`,
    /// `oid`).
    #[serde(default = "default_caller_object_id")]
    pub caller_object_id: String,
}

fn default_domain() -> String {
    "fabrikamcustomers.onmicrosoft.com".into()
}

fn default_timeout_ms() -> u64 {
    1000
}

fn one() -> u32 {
    1
}

fn default_caller_object_id() -> String {
    "c3a5b0d4-8f53-4f3c-9a57-6f0e1d2b7a10".into()
}

/// The two claims autolink's token-issuance answer provides.
pub fn default_token_claims() -> Vec<String> {
    vec!["customerAccountNumber".into(), "autoLinkOutcome".into()]
}

/// How a local (email one-time code) identity appears in `userSignUpInfo.identities`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LocalIdentity {
    /// `{"signInType":"email","issuer":"<domain>"}` (Microsoft's event reference).
    #[default]
    #[serde(rename = "email")]
    Email,
    /// `{"signInType":"emailAddress","issuer":"<domain>"}` (how Graph keeps password accounts).
    #[serde(rename = "emailAddress")]
    EmailAddress,
    /// `{"signInType":"federated","issuer":"mail"}` (the Woodgrove local-account sample).
    #[serde(rename = "federatedMail")]
    FederatedMail,
}

/// Under which attribute key the form's email is sent, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EmailAttribute {
    /// `email` (Woodgrove's submit samples).
    #[default]
    #[serde(rename = "email")]
    Email,
    /// `EmailAddress` (Woodgrove's start samples).
    #[serde(rename = "EmailAddress")]
    EmailAddress,
    /// No email attribute (the event reference's sample: the address only in `identities`).
    #[serde(rename = "none")]
    None,
}

/// The payload variants of Microsoft's samples, chosen by setting (or per driver journey).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayloadVariant {
    /// How an email one-time-code identity is written.
    pub local_identity: LocalIdentity,
    /// Whether `userSignUpInfo.identities` is sent at all (false: the Woodgrove submit samples,
    /// attributes only, for local and social sign-ups alike).
    pub identities: bool,
    pub email_attribute: EmailAttribute,
    /// Whether the attributes' type key is spelled `@odata.Type` (capital T), as one attribute
    /// of the reference sample has it.
    pub capital_odata_type: bool,
    /// Whether token issuance carries the submit call's `correlationId` (Microsoft does not say
    /// whether one sign-up shares it; false: a new one).
    pub share_correlation_id: bool,
}

impl Default for PayloadVariant {
    fn default() -> Self {
        PayloadVariant {
            local_identity: LocalIdentity::Email,
            identities: true,
            email_attribute: EmailAttribute::Email,
            capital_odata_type: false,
            share_correlation_id: true,
        }
    }
}
