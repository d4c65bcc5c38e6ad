//! The mock's Microsoft Entra External ID tenant (B2C's successor), beside the B2C tenant in the
//! same process, with its own settings ([`ExternalIdSettings`], `[external_id]`).
//!
//! Endpoints (`{tid}` is the tenant id; the prefix `/ciam` keeps them apart from the B2C tenant's
//! Entra ID endpoints, which already use `/{tenant_id}/...`):
//! - `GET /ciam/{tid}/v2.0/.well-known/openid-configuration`: issuer exactly
//!   `https://{tid}.ciamlogin.com/{tid}/v2.0`, the form External ID's tokens carry;
//! - `GET /ciam/{tid}/discovery/v2.0/keys` (the mock's signing key);
//! - `POST /ciam/{tid}/oauth2/v2.0/token`: client credentials for Graph (the configured Graph
//!   client, scope `https://graph.microsoft.com/.default`) and authorization codes of the
//!   sign-up flow (the relying party's ID token);
//! - `GET /graph/v1.0/users/{id}?$select=identities,mail`: the tenant's users as Microsoft Graph
//!   shows them, with a Graph token from the token endpoint;
//! - `GET /ciam/{tid}/oauth2/v2.0/authorize`: the user flow's pages (see [`pages`]).
//!
//! Sign-up journeys (`POST /mock/journeys` with `external_id: true`) call autolink's custom
//! authentication extensions as Entra does: see [`extension`] and [`journey`].

pub mod answers;
mod endpoints;
pub mod extension;
pub mod graph;
pub mod journey;
mod pages;
pub mod settings;

use std::time::Duration;

use serde_json::{json, Map, Value};

pub use settings::{
    EmailAttribute, ExternalIdSettings, LocalIdentity, PayloadVariant, EVENTS_SERVICE_APP_ID,
};

use super::caller::Caller;
use super::keys::SigningKey;

/// The audience of Graph access tokens, and the scope that asks for one.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// How long the tokens the tenant issues live.
const TOKEN_LIFETIME_S: i64 = 3600;

/// The tenant's routes: its endpoints and the user flow's pages.
pub fn routes(cfg: &mut actix_web::web::ServiceConfig) {
    endpoints::routes(cfg);
    pages::routes(cfg);
}

/// The External ID tenant: its settings, the HTTP side of its extension calls, and the page flows
/// in progress.
pub struct ExternalId {
    pub settings: ExternalIdSettings,
    caller: Caller,
    interactions: pages::Interactions,
}

impl ExternalId {
    pub fn new(
        settings: ExternalIdSettings,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<ExternalId> {
        if settings.retries > 1 {
            anyhow::bail!("external_id.retries is 0 or 1, as Entra's maximumRetries");
        }
        let caller = Caller::new(
            Duration::from_millis(settings.timeout_ms),
            settings.retries,
            ca_file,
        )?;
        Ok(ExternalId {
            settings,
            caller,
            interactions: pages::Interactions::default(),
        })
    }

    /// `https://{tid}.ciamlogin.com/{tid}/v2.0`, in every token the tenant signs.
    pub fn issuer(&self) -> String {
        let tid = &self.settings.tenant_id;
        format!("https://{tid}.ciamlogin.com/{tid}/v2.0")
    }

    /// The time claims of a token issued now.
    fn times(claims: &mut Map<String, Value>) {
        let now = chrono::Utc::now().timestamp();
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now + TOKEN_LIFETIME_S));
    }

    /// The bearer token Entra sends to a custom authentication extension (client credentials of
    /// the authentication events service, for the extension's app registration).
    pub fn extension_token(&self, key: &SigningKey) -> String {
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer()));
        claims.insert("tid".into(), json!(self.settings.tenant_id));
        claims.insert("aud".into(), json!(self.settings.extension_app_id));
        claims.insert("azp".into(), json!(EVENTS_SERVICE_APP_ID));
        claims.insert("azpacr".into(), json!("1"));
        claims.insert("sub".into(), json!(self.settings.caller_object_id));
        claims.insert("oid".into(), json!(self.settings.caller_object_id));
        claims.insert("idtyp".into(), json!("app"));
        claims.insert("ver".into(), json!("2.0"));
        Self::times(&mut claims);
        key.sign(&claims)
    }

    /// A Graph access token for the configured Graph client (client credentials), or why not.
    pub fn graph_token(
        &self,
        key: &SigningKey,
        client_id: &str,
        client_secret: &str,
        scope: &str,
    ) -> Result<String, (&'static str, &'static str)> {
        use subtle::ConstantTimeEq;
        let id_ok = client_id
            .as_bytes()
            .ct_eq(self.settings.graph_client_id.as_bytes());
        let secret_ok = client_secret
            .as_bytes()
            .ct_eq(self.settings.graph_client_secret.as_bytes());
        if !bool::from(id_ok & secret_ok) {
            return Err(("invalid_client", "unknown client or wrong secret"));
        }
        if scope.split_whitespace().collect::<Vec<_>>() != [GRAPH_SCOPE] {
            return Err((
                "invalid_scope",
                "the scope must be https://graph.microsoft.com/.default",
            ));
        }
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer()));
        claims.insert("tid".into(), json!(self.settings.tenant_id));
        claims.insert("aud".into(), json!(GRAPH_AUDIENCE));
        claims.insert("appid".into(), json!(self.settings.graph_client_id));
        claims.insert("sub".into(), json!(self.settings.graph_client_id));
        claims.insert("roles".into(), json!(["User.Read.All"]));
        claims.insert("idtyp".into(), json!("app"));
        claims.insert("ver".into(), json!("1.0"));
        Self::times(&mut claims);
        Ok(key.sign(&claims))
    }

    /// Whether `token` is a live Graph token this tenant issued.
    pub fn accepts_graph_token(&self, key: &SigningKey, token: &str) -> bool {
        let Some(claims) = key.verify(token) else {
            return false;
        };
        let now = chrono::Utc::now().timestamp();
        claims.get("iss").and_then(Value::as_str) == Some(self.issuer().as_str())
            && claims.get("aud").and_then(Value::as_str) == Some(GRAPH_AUDIENCE)
            && claims.get("tid").and_then(Value::as_str) == Some(&self.settings.tenant_id)
            && claims
                .get("exp")
                .and_then(Value::as_i64)
                .is_some_and(|exp| exp > now)
    }

    /// autolink's submit endpoint.
    pub fn submit_url(&self, service_url: &str) -> String {
        self.settings
            .submit_url
            .clone()
            .unwrap_or_else(|| format!("{service_url}/entra/attribute-collection-submit"))
    }

    /// autolink's token-issuance endpoint.
    pub fn token_issuance_url(&self, service_url: &str) -> String {
        self.settings
            .token_issuance_url
            .clone()
            .unwrap_or_else(|| format!("{service_url}/entra/token-issuance-start"))
    }
}
