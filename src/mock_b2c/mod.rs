//! A stand-in for Azure AD B2C, from the service's side of the wire, for QA and the end-to-end
//! tests: an OpenID provider for one tenant and several policies, sign-up and sign-in journeys
//! that call autolink as B2C does (user-flow API connector or the project's custom policy), an
//! HTML sign-in page a person can click through, a JSON driver API, and a demo relying party.
//!
//! Endpoints (`{tenant}` is the tenant's domain name or id, `{policy}` a configured policy):
//! - `GET /{tenant}/{policy}/v2.0/.well-known/openid-configuration`, whose `issuer` is B2C's
//!   default form `{base}/{tenant_id}/v2.0/`, not the discovery URL;
//! - `GET /{tenant}/{policy}/discovery/v2.0/keys`; `GET|POST /{tenant}/{policy}/oauth2/v2.0/authorize`
//!   (HTML); `POST /{tenant}/{policy}/oauth2/v2.0/token`;
//! - Entra ID for client credentials (the `Bearer` authentication type):
//!   `GET /{tenant_id}/v2.0/.well-known/openid-configuration`, `GET /{tenant_id}/discovery/v2.0/keys`,
//!   `POST /{tenant_id}/oauth2/v2.0/token`;
//! - an External ID tenant under `/ciam/{tenant_id}/...` and Graph under `/graph` (see
//!   [`external_id`]);
//! - the driver: `POST /mock/journeys` (a [`JourneyRequest`], answers a [`JourneyResult`]),
//!   `GET /mock/users`; the demo relying party under `/demo`.

pub mod caller;
pub mod config;
pub mod demo;
pub mod directory;
pub mod external_id;
pub mod journey;
pub mod keys;
mod pages;
pub mod policy;
mod server;
pub mod types;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Map, Value};

pub use config::{
    autolink_application_claims, default_providers, Application, CallerAuth, CustomPolicySettings,
    EntraClient, MockSettings, Provider,
};
pub use external_id::{EmailAttribute, ExternalIdSettings, LocalIdentity, PayloadVariant};
pub use journey::Mode;
pub use types::{AccountKind, CallRecord, JourneyKind, JourneyRequest, JourneyResult, Outcome};

use caller::Caller;
use directory::Directory;
use keys::SigningKey;
use policy::PolicySet;

/// How long an authorization code may be redeemed.
const CODE_LIFETIME: Duration = Duration::from_secs(300);

/// An authorization code waiting at the token endpoint.
struct IssuedCode {
    client_id: String,
    redirect_uri: String,
    policy: String,
    id_token: String,
    code_challenge: Option<String>,
    /// The authorize request's scope named the application itself: an access token too.
    with_access_token: bool,
    issued: Instant,
}

/// The tenant: settings, keys, directory, and the callers.
pub struct Tenant {
    pub settings: MockSettings,
    base_url: String,
    service_url: Arc<RwLock<String>>,
    key: SigningKey,
    pub directory: Directory,
    /// The External ID tenant, when configured.
    pub external_id: Option<external_id::ExternalId>,
    user_flow_caller: Caller,
    policy_caller: Caller,
    codes: Mutex<HashMap<String, IssuedCode>>,
    interactions: Mutex<HashMap<String, pages::Interaction>>,
    /// B2C's single sign-on sessions, by the value of the browser's session cookie.
    sessions: Mutex<HashMap<String, pages::Session>>,
    /// The codes "mailed" to addresses being verified.
    mailbox: pages::Mailbox,
    /// The custom policy as last rendered, with the service URL it was rendered for.
    rendered: Mutex<Option<(String, Arc<PolicySet>)>>,
}

impl Tenant {
    fn new(settings: MockSettings, base_url: String) -> anyhow::Result<Tenant> {
        let key = match &settings.signing_key_file {
            Some(path) => SigningKey::from_file(path)?,
            None => SigningKey::generate()?,
        };
        let timeout = |default: u64| Duration::from_millis(settings.timeout_ms.unwrap_or(default));
        let ca = settings.service_ca_file.as_deref();
        let user_flow_caller = Caller::new(timeout(20_000), settings.retries.unwrap_or(1), ca)?;
        let policy_caller = Caller::new(timeout(30_000), settings.retries.unwrap_or(2), ca)?;
        if let Some(cp) = &settings.custom_policy {
            // Fail at start, not at the first journey, when the policies do not load.
            PolicySet::load(cp, &settings.service_url, "http://127.0.0.1/")
                .map_err(|e| anyhow::anyhow!("the custom policies do not load: {e}"))?;
        }
        if settings.custom_policy.is_some() != settings.custom_policy_id.is_some() {
            anyhow::bail!("custom_policy and custom_policy_id go together");
        }
        let directory = match &settings.directory_file {
            Some(path) => Directory::open(path)
                .map_err(|e| anyhow::anyhow!("the directory file does not open: {e}"))?,
            None => Directory::default(),
        };
        let external_id = match &settings.external_id {
            Some(ext) => Some(external_id::ExternalId::new(ext.clone(), ca)?),
            None => None,
        };
        Ok(Tenant {
            external_id,
            service_url: Arc::new(RwLock::new(settings.service_url.clone())),
            settings,
            base_url,
            key,
            directory,
            user_flow_caller,
            policy_caller,
            codes: Mutex::new(HashMap::new()),
            interactions: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            mailbox: pages::Mailbox::default(),
            rendered: Mutex::new(None),
        })
    }

    /// Every policy: the user flows, then the custom policy.
    pub fn policies(&self) -> Vec<String> {
        let mut all = self.settings.user_flows.clone();
        all.extend(self.settings.custom_policy_id.clone());
        all
    }

    /// The configured spelling of a policy named in any case (B2C's names are case-insensitive),
    /// and how it runs.
    pub fn find_policy(&self, name: &str) -> Option<(String, Mode)> {
        if let Some(p) = self
            .settings
            .user_flows
            .iter()
            .find(|p| p.eq_ignore_ascii_case(name))
        {
            return Some((p.clone(), Mode::UserFlow));
        }
        self.settings
            .custom_policy_id
            .as_ref()
            .filter(|p| p.eq_ignore_ascii_case(name))
            .map(|p| (p.clone(), Mode::CustomPolicy))
    }

    pub fn mode_of(&self, policy: &str) -> Option<Mode> {
        self.find_policy(policy).map(|(_, mode)| mode)
    }

    /// Whether `name` is this tenant (its domain name or its id).
    pub fn is_tenant(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(&self.settings.tenant)
            || name.eq_ignore_ascii_case(&self.settings.tenant_id)
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// B2C's default issuer form.
    pub fn issuer(&self) -> String {
        format!("{}/{}/v2.0/", self.base_url, self.settings.tenant_id)
    }

    /// The Entra ID issuer of access tokens for client credentials.
    pub fn entra_issuer(&self) -> String {
        format!("{}/{}/v2.0", self.base_url, self.settings.tenant_id)
    }

    pub fn entra_token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.base_url, self.settings.tenant_id
        )
    }

    pub fn service_url(&self) -> String {
        self.service_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .trim_end_matches('/')
            .to_string()
    }

    /// The custom policy, rendered for the current service URL (read from `policies/` again only
    /// when the service URL changed).
    pub fn policy_set(&self) -> Result<Arc<PolicySet>, String> {
        let settings = self
            .settings
            .custom_policy
            .as_ref()
            .ok_or("custom-policy mode is not configured")?;
        let service_url = self.service_url();
        let mut rendered = self.rendered.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((url, set)) = rendered.as_ref() {
            if *url == service_url {
                return Ok(set.clone());
            }
        }
        let set = Arc::new(PolicySet::load(
            settings,
            &service_url,
            &self.entra_token_url(),
        )?);
        *rendered = Some((service_url, set.clone()));
        Ok(set)
    }

    fn application(&self, client_id: &str) -> Option<&Application> {
        self.settings
            .applications
            .iter()
            .find(|a| a.client_id == client_id)
    }

    /// A redirect URI must be registered for the application, exactly.
    pub fn check_redirect(&self, client_id: &str, uri: &str) -> Result<(), String> {
        let app = self
            .application(client_id)
            .ok_or_else(|| format!("no application with client id {client_id}"))?;
        if app.redirect_uris.iter().any(|r| r == uri) {
            Ok(())
        } else {
            Err(format!(
                "the redirect URI {uri} is not registered for the application {client_id}"
            ))
        }
    }

    /// Keeps an ID token behind a new authorization code.
    pub fn remember_code(
        &self,
        client_id: &str,
        redirect_uri: &str,
        policy: &str,
        id_token: &str,
        code_challenge: Option<String>,
        with_access_token: bool,
    ) -> String {
        let code = random_token();
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, c| c.issued.elapsed() < CODE_LIFETIME);
        codes.insert(
            code.clone(),
            IssuedCode {
                client_id: client_id.into(),
                redirect_uri: redirect_uri.into(),
                policy: policy.into(),
                id_token: id_token.into(),
                code_challenge,
                with_access_token,
                issued: Instant::now(),
            },
        );
        code
    }

    fn take_code(&self, code: &str) -> Option<IssuedCode> {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes
            .remove(code)
            .filter(|c| c.issued.elapsed() < CODE_LIFETIME)
    }

    /// An Entra ID access token for an application's client credentials.
    pub fn client_credentials_token(
        &self,
        client_id: &str,
        client_secret: &str,
        scope: &str,
    ) -> Result<String, String> {
        use subtle::ConstantTimeEq;
        let client = self
            .settings
            .entra_clients
            .iter()
            .find(|c| c.client_id == client_id)
            .ok_or("unknown client")?;
        if !bool::from(
            client
                .client_secret
                .as_bytes()
                .ct_eq(client_secret.as_bytes()),
        ) {
            return Err("invalid client secret".into());
        }
        let audience = scope
            .split_whitespace()
            .find_map(|s| s.strip_suffix("/.default"))
            .ok_or("the scope must be an application's /.default")?;
        let now = chrono::Utc::now().timestamp();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.entra_issuer()));
        claims.insert("aud".into(), json!(audience));
        claims.insert("sub".into(), json!(client.client_id));
        claims.insert("azp".into(), json!(client.client_id));
        claims.insert("tid".into(), json!(self.settings.tenant_id));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now + 3600));
        claims.insert("ver".into(), json!("2.0"));
        if !client.roles.is_empty() {
            claims.insert("roles".into(), json!(client.roles));
        }
        Ok(self.key.sign(&claims))
    }

    /// An access token for the application itself (scope `{client_id}`), as B2C issues one.
    fn application_access_token(&self, id_token_claims: &Map<String, Value>) -> String {
        let mut claims = Map::new();
        for name in [
            "iss", "sub", "oid", "aud", "tfp", "acr", "iat", "nbf", "exp", "ver",
        ] {
            if let Some(v) = id_token_claims.get(name) {
                claims.insert(name.into(), v.clone());
            }
        }
        if let Some(aud) = id_token_claims.get("aud").cloned() {
            claims.insert("azp".into(), aud);
        }
        claims.insert("scp".into(), json!("access"));
        self.key.sign(&claims)
    }
}

/// A random URL-safe token (authorization codes, interaction ids).
pub(crate) fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    keys::b64(&bytes)
}

/// A running mock.
pub struct MockB2c {
    tenant: Arc<Tenant>,
    handle: actix_web::dev::ServerHandle,
}

impl MockB2c {
    /// Binds `settings.bind` and serves on the current runtime until [`MockB2c::stop`].
    pub async fn start(settings: MockSettings) -> anyhow::Result<MockB2c> {
        let (mock, server) = Self::build(settings)?;
        tokio::spawn(server);
        Ok(mock)
    }

    /// Binds and assembles the server without running it (the binary awaits the server).
    pub fn build(settings: MockSettings) -> anyhow::Result<(MockB2c, actix_web::dev::Server)> {
        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("binding {}", settings.bind))?;
        let address = listener.local_addr()?;
        let host = match address.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let base_url = format!("http://{host}:{}", address.port());
        let tenant = Arc::new(Tenant::new(settings, base_url)?);
        let server = server::serve(listener, tenant.clone())?;
        let handle = server.handle();
        Ok((MockB2c { tenant, handle }, server))
    }

    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    pub fn base_url(&self) -> String {
        self.tenant.base_url.clone()
    }

    /// B2C's default issuer form, `{base}/{tenant_id}/v2.0/`.
    pub fn issuer(&self) -> String {
        self.tenant.issuer()
    }

    fn policy_url(&self, policy: &str, rest: &str) -> String {
        format!(
            "{}/{}/{policy}/{rest}",
            self.tenant.base_url, self.tenant.settings.tenant
        )
    }

    pub fn discovery_url(&self, policy: &str) -> String {
        self.policy_url(policy, "v2.0/.well-known/openid-configuration")
    }

    pub fn authorize_url(&self, policy: &str) -> String {
        self.policy_url(policy, "oauth2/v2.0/authorize")
    }

    pub fn token_url(&self, policy: &str) -> String {
        self.policy_url(policy, "oauth2/v2.0/token")
    }

    /// Entra ID's discovery document for the access tokens of client credentials.
    pub fn entra_discovery_url(&self) -> String {
        format!(
            "{}/{}/v2.0/.well-known/openid-configuration",
            self.tenant.base_url, self.tenant.settings.tenant_id
        )
    }

    /// The External ID tenant's id, when there is one.
    fn external_tenant_id(&self) -> Option<&str> {
        self.tenant
            .external_id
            .as_ref()
            .map(|e| e.settings.tenant_id.as_str())
    }

    /// The External ID tenant's issuer, `https://{tid}.ciamlogin.com/{tid}/v2.0`.
    pub fn external_id_issuer(&self) -> Option<String> {
        self.tenant.external_id.as_ref().map(|e| e.issuer())
    }

    /// The External ID tenant's discovery document (autolink's `[entra] metadata_url`).
    pub fn external_id_discovery_url(&self) -> Option<String> {
        self.external_tenant_id().map(|tid| {
            format!(
                "{}/ciam/{tid}/v2.0/.well-known/openid-configuration",
                self.tenant.base_url
            )
        })
    }

    /// The External ID tenant's token endpoint (autolink's `[entra.graph] token_url`).
    pub fn external_id_token_url(&self) -> Option<String> {
        self.external_tenant_id()
            .map(|tid| format!("{}/ciam/{tid}/oauth2/v2.0/token", self.tenant.base_url))
    }

    /// Graph's base URL in the mock (autolink's `[entra.graph] base_url`).
    pub fn graph_base_url(&self) -> String {
        format!("{}/graph", self.tenant.base_url)
    }

    /// Points the mock at the service (autolink's base URL).
    pub fn set_service_url(&self, url: &str) {
        *self
            .tenant
            .service_url
            .write()
            .unwrap_or_else(|e| e.into_inner()) = url.trim_end_matches('/').to_string();
    }

    /// Runs a journey, as `POST /mock/journeys` does.
    pub async fn run(&self, request: JourneyRequest) -> Result<JourneyResult, String> {
        journey::run(&self.tenant, request).await.map_err(|e| e.0)
    }

    pub fn stop(&self) {
        drop(self.handle.stop(false));
    }
}

impl Drop for MockB2c {
    fn drop(&mut self) {
        self.stop();
    }
}
