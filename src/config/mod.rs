//! Configuration: typed settings layered from defaults, a TOML file and `AUTOLINK_*` variables.
//!
//! Environment variables override the file; nested keys use a double underscore
//! (`AUTOLINK_LINKING__ENABLED=false`). The keys of DESIGN section 8 are stable.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::domain::channel::{Channel, ChannelDirectory, CustomerType};
use crate::domain::verification::VerificationPolicy;

mod auth;
mod entra;
pub mod webhooks;

pub use self::auth::{
    AdminSettings, ApiKeySettings, AuthSettings, BasicSettings, BearerSettings,
    ClientCertificateSettings, OidcFetchSettings, RelyingPartySettings, TlsSettings,
};
pub use self::entra::{EntraSettings, GraphSettings, ENTRA_AUTHENTICATION_EVENTS_APP};
pub use self::webhooks::{WebhookDeliverySettings, WebhookSettings};

/// Id of the channel used when the configuration names none.
pub const DEMO_CHANNEL_ID: &str = "web";
/// Legal entity of that channel.
pub const DEMO_LEGAL_ENTITY: &str = "USRT";
/// Issuer used for connector identities when `tenant_issuer` is not configured.
pub const UNCONFIGURED_TENANT_ISSUER: &str = "urn:autolink:unconfigured-tenant";

/// All settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on.
    pub bind: String,
    /// `sqlite://PATH` or `postgres://...`.
    pub database_url: String,
    /// Channel for client ids that map to no channel.
    pub default_channel: Option<String>,
    /// Issuer of the identities that connector calls name by `objectId`; equal to the token's `iss`.
    pub tenant_issuer: String,
    /// HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// Linking rules.
    pub linking: LinkingSettings,
    /// Channels.
    pub channels: Vec<ChannelSettings>,
    /// How B2C authenticates.
    pub auth: AuthSettings,
    /// Administrator credentials.
    pub admin: AdminSettings,
    /// Pool and time limits.
    pub database: DatabaseSettings,
    /// Request limits.
    pub limits: LimitSettings,
    /// Customers autolink creates.
    pub customers: CustomerSettings,
    /// Serve HTTPS with these files instead of plain HTTP.
    pub tls: Option<TlsSettings>,
    /// The relying-party call `POST /v1/link`: which B2C policies' tokens it accepts.
    pub relying_party: Option<RelyingPartySettings>,
    /// Limits on fetching OpenID discovery documents and key sets.
    pub oidc: OidcFetchSettings,
    /// Replacement refusal messages.
    pub messages: MessageSettings,
    /// Microsoft Entra External ID's custom authentication extensions (`/entra/...`).
    pub entra: Option<EntraSettings>,
    /// The store's endpoints told of every change (signed webhooks).
    pub webhooks: Vec<WebhookSettings>,
    /// How this instance delivers them.
    pub webhook_delivery: WebhookDeliverySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            database_url: "sqlite://autolink.db".into(),
            default_channel: None,
            tenant_issuer: UNCONFIGURED_TENANT_ISSUER.into(),
            workers: None,
            linking: LinkingSettings::default(),
            channels: Vec::new(),
            auth: AuthSettings::default(),
            admin: AdminSettings::default(),
            database: DatabaseSettings::default(),
            limits: LimitSettings::default(),
            customers: CustomerSettings::default(),
            tls: None,
            relying_party: None,
            oidc: OidcFetchSettings::default(),
            messages: MessageSettings::default(),
            entra: None,
            webhooks: Vec::new(),
            webhook_delivery: WebhookDeliverySettings::default(),
        }
    }
}

/// `[linking]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkingSettings {
    /// The environment-wide switch.
    pub enabled: bool,
    /// The tenant keeps "Email Address, Requires verification = Yes" for local accounts.
    pub local_accounts_verify_email: bool,
    /// Social providers whose email counts as verified.
    pub email_verifying_idps: Vec<String>,
    /// Treat a request without `identities` as a local account.
    pub treat_missing_identities_as_local: bool,
    /// Link to a customer whose identities were linked under another email (off: refuse with
    /// `LinkRequiresReview`).
    pub allow_link_after_email_change: bool,
}

impl Default for LinkingSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            local_accounts_verify_email: true,
            email_verifying_idps: vec!["google.com".into()],
            treat_missing_identities_as_local: true,
            allow_link_after_email_change: false,
        }
    }
}

impl LinkingSettings {
    /// The verification facts for the pure rules.
    pub fn verification_policy(&self) -> VerificationPolicy {
        VerificationPolicy {
            local_accounts_verify_email: self.local_accounts_verify_email,
            email_verifying_idps: self
                .email_verifying_idps
                .iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .collect(),
            treat_missing_identities_as_local: self.treat_missing_identities_as_local,
        }
    }
}

/// `[[channels]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    /// Channel id.
    pub id: String,
    /// Legal entity (compared upper-case).
    pub legal_entity: String,
    /// `B2B` or `B2C`.
    pub customer_type: CustomerType,
    /// Relying-party client ids of this channel.
    #[serde(default)]
    pub client_ids: Vec<String>,
    /// Overrides `[linking] enabled` for this channel.
    #[serde(default)]
    pub linking_enabled: Option<bool>,
}

/// `[messages]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageSettings {
    /// A TOML file of replacement messages: a table per language, code = message
    /// (`[fr] Microsoft_Dynamics_CommerceIdentityNotFound = "..."`).
    pub file: Option<PathBuf>,
}

/// `[database]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// Most pooled connections.
    pub pool_size: u32,
    /// How long a request waits for a pooled connection, in milliseconds.
    pub checkout_timeout_ms: u64,
    /// The whole database part of a request must finish within this many milliseconds, or the
    /// request fails closed (block page; continue with an error at the token step).
    pub request_timeout_ms: u64,
    /// SQLite: whether a commit is on disk before the answer (`synchronous = FULL`, one sync per
    /// group commit), or may be lost by a power cut or an operating-system crash, though not by
    /// a crash of the process (`NORMAL`). PostgreSQL: unused (the server decides).
    pub sqlite_durable_commits: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            pool_size: 8,
            checkout_timeout_ms: 1000,
            request_timeout_ms: 1500,
            sqlite_durable_commits: true,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Largest request body accepted from B2C, in bytes.
    pub max_body_bytes: usize,
    /// What failed credential checks cost a client.
    pub credentials: ThrottleSettings,
    /// Time a request's body has to arrive, whole, once the request is authenticated (every
    /// endpoint that reads a body: B2C's and the admin API). Later: 408 and the connection is
    /// closed. The request head has its own 5 s limit.
    pub body_timeout_ms: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            body_timeout_ms: 5000,
            credentials: ThrottleSettings::default(),
        }
    }
}

/// `[limits.credentials]`: failed credential checks, remembered and throttled per client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// Failed checks a client may have in one window; after that, 429 until the window ends.
    pub max_failures: u32,
    /// The window, in seconds.
    pub window_s: u64,
    /// How long a failed secret is refused again without a new check, in seconds.
    pub remember_failure_s: u64,
    /// A header that holds the client's address (its last entry), for a deployment behind a
    /// proxy that sets it; unset = the connection's peer address.
    pub client_ip_header: Option<String>,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window_s: 60,
            remember_failure_s: 600,
            client_ip_header: None,
        }
    }
}

/// `[customers]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerSettings {
    /// Prefix of account numbers autolink gives the customers it creates.
    pub account_number_prefix: String,
}

impl Default for CustomerSettings {
    fn default() -> Self {
        Self {
            account_number_prefix: "AL".into(),
        }
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or a variable could not be read or has the wrong shape.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// The values are inconsistent.
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Top-level keys that environment variables may set. Other `AUTOLINK_*` variables
/// (`AUTOLINK_CONFIG`, `AUTOLINK_TEST_POSTGRES_URL`, ...) are not settings.
const ENV_KEYS: &[&str] = &[
    "tls",
    "relying_party",
    "oidc",
    "messages",
    "bind",
    "database_url",
    "default_channel",
    "tenant_issuer",
    "workers",
    "linking",
    "channels",
    "auth",
    "admin",
    "database",
    "limits",
    "customers",
    "entra",
    "webhooks",
    "webhook_delivery",
];

impl Settings {
    /// Loads defaults, then the file (when given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::figment(file)
            .extract::<Settings>()
            .map_err(|e| ConfigError::Load(Box::new(e)))?
            .finish()
    }

    /// The layered sources, for callers that add their own layer (tests).
    pub fn figment(file: Option<&Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(Env::prefixed("AUTOLINK_").split("__").filter(|key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            ENV_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
        }))
    }

    /// Fills the zero-configuration defaults and checks the values.
    pub fn finish(mut self) -> Result<Settings, ConfigError> {
        if self.channels.is_empty() {
            self.channels.push(ChannelSettings {
                id: DEMO_CHANNEL_ID.into(),
                legal_entity: DEMO_LEGAL_ENTITY.into(),
                customer_type: CustomerType::B2C,
                client_ids: Vec::new(),
                linking_enabled: None,
            });
            if self.default_channel.is_none() {
                self.default_channel = Some(DEMO_CHANNEL_ID.into());
            }
        }
        self.channel_directory()?;
        if let Some(basic) = &self.auth.basic {
            if basic.username.trim().is_empty() {
                return Err(ConfigError::Invalid("auth.basic.username is empty".into()));
            }
            if basic.password_hash.is_some() == basic.password.is_some() {
                return Err(ConfigError::Invalid(
                    "auth.basic needs exactly one of password_hash and password".into(),
                ));
            }
        }
        if let Some(api_key) = &self.auth.api_key {
            if api_key.key_hashes.is_empty() && api_key.keys.is_empty() {
                return Err(ConfigError::Invalid(
                    "auth.api_key needs key_hashes or keys".into(),
                ));
            }
            if api_key.header.trim().is_empty()
                || api_key.header.eq_ignore_ascii_case("authorization")
            {
                return Err(ConfigError::Invalid(
                    "auth.api_key.header must name another header".into(),
                ));
            }
        }
        if let Some(bearer) = &self.auth.bearer {
            if bearer.audiences.is_empty() {
                return Err(ConfigError::Invalid(
                    "auth.bearer.audiences is empty".into(),
                ));
            }
        }
        if let Some(cert) = &self.auth.client_certificate {
            if cert.ca_files.is_empty() && cert.thumbprints.is_empty() {
                return Err(ConfigError::Invalid(
                    "auth.client_certificate needs ca_files or thumbprints".into(),
                ));
            }
            if self.tls.is_none() && !cert.trust_arr_header {
                return Err(ConfigError::Invalid(
                    "auth.client_certificate needs [tls] (the server terminates TLS) or trust_arr_header = true".into(),
                ));
            }
        }
        if let Some(rp) = &self.relying_party {
            if rp.metadata_urls.is_empty() {
                return Err(ConfigError::Invalid(
                    "relying_party.metadata_urls is empty".into(),
                ));
            }
        }
        if self.admin.token_hash.is_some() && self.admin.token.is_some() {
            return Err(ConfigError::Invalid(
                "admin needs at most one of token_hash and token".into(),
            ));
        }
        if self.database.pool_size == 0 {
            return Err(ConfigError::Invalid(
                "database.pool_size must be at least 1".into(),
            ));
        }
        if self.limits.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "limits.max_body_bytes must be at least 1024".into(),
            ));
        }
        if !(100..=60_000).contains(&self.limits.body_timeout_ms) {
            return Err(ConfigError::Invalid(
                "limits.body_timeout_ms must be between 100 and 60000".into(),
            ));
        }
        if let Some(entra) = &self.entra {
            entra.check()?;
        }
        webhooks::check(&self.webhooks, &self.webhook_delivery)?;
        if self.tenant_issuer.trim().is_empty() {
            return Err(ConfigError::Invalid("tenant_issuer is empty".into()));
        }
        Ok(self)
    }

    /// The channels as the domain sees them.
    pub fn channel_directory(&self) -> Result<ChannelDirectory, ConfigError> {
        let channels = self
            .channels
            .iter()
            .map(|c| Channel {
                id: c.id.clone(),
                legal_entity: c.legal_entity.trim().to_ascii_uppercase(),
                customer_type: c.customer_type,
                client_ids: c.client_ids.clone(),
                linking_enabled: c.linking_enabled,
            })
            .collect();
        ChannelDirectory::new(channels, self.default_channel.as_deref())
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// Whether the configuration names the tenant issuer.
    pub fn tenant_issuer_configured(&self) -> bool {
        self.tenant_issuer != UNCONFIGURED_TENANT_ISSUER
    }

    /// The SQLite file path when the database is SQLite.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match crate::storage::Backend::from_url(&self.database_url) {
            Ok(crate::storage::Backend::Sqlite(path)) => Some(PathBuf::from(path)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
