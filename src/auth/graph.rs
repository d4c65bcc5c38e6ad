//! A small Microsoft Graph client for `[entra.graph]`: an app-only token by client credentials,
//! kept until shortly before it expires, and one read, a user's `identities` and `mail`
//! (`GET {base_url}/v1.0/users/{id}?$select=identities,mail`).
//!
//! Every call is bounded: no redirects, https only (http on loopback, for the mock and tests),
//! at most [`MAX_RESPONSE_BYTES`] read, and the caller's deadline for the whole exchange. The
//! client secret and the tokens are never logged.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use reqwest::redirect::Policy;
use serde::Deserialize;

use crate::auth::fetch::Fetcher;
use crate::config::{ConfigError, GraphSettings};
use crate::domain::entra_signup::ObjectIdentity;

/// Largest Graph answer read, in bytes (a user with ten identities is far smaller).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(120);

/// What Graph says about a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryUser {
    /// `mail`.
    pub mail: Option<String>,
    /// `identities`.
    pub identities: Vec<ObjectIdentity>,
}

/// Why Graph gave no user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Graph does not know the user (404), or the id is not one.
    #[error("no such user")]
    NotFound,
    /// The token or the read failed, or the deadline passed.
    #[error("Microsoft Graph is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct UserAnswer {
    #[serde(default)]
    mail: Option<String>,
    #[serde(default)]
    identities: Option<Vec<IdentityAnswer>>,
}

#[derive(Deserialize)]
struct IdentityAnswer {
    #[serde(default, rename = "signInType")]
    sign_in_type: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default, rename = "issuerAssignedId")]
    issuer_assigned_id: Option<String>,
}

/// The Graph client.
pub struct GraphClient {
    client: reqwest::Client,
    token_url: String,
    users_url: String,
    client_id: String,
    client_secret: String,
    scope: String,
    /// The current token and when to renew it.
    token: RwLock<Option<(String, Instant)>>,
    /// One token request at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("token_url", &self.token_url)
            .field("users_url", &self.users_url)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// A client for `[entra.graph]` of tenant `tenant_id`; nothing is fetched yet.
    pub fn new(settings: &GraphSettings, tenant_id: &str) -> Result<GraphClient, ConfigError> {
        let token_url = settings.token_url(tenant_id);
        let base_url = settings.base_url();
        let (_, token_loopback) = Fetcher::check_url(&token_url)
            .map_err(|e| ConfigError::Invalid(format!("entra.graph.token_url: {e}")))?;
        let (_, base_loopback) = Fetcher::check_url(&base_url)
            .map_err(|e| ConfigError::Invalid(format!("entra.graph.base_url: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .redirect(Policy::none())
            .user_agent(concat!("autolink/", env!("CARGO_PKG_VERSION")));
        if token_loopback && base_loopback {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| ConfigError::Invalid(format!("entra.graph: {e}")))?;
        Ok(GraphClient {
            client,
            token_url,
            users_url: format!("{base_url}/v1.0/users"),
            client_id: settings.client_id.trim().to_string(),
            client_secret: settings.client_secret.clone(),
            scope: settings.scope(),
            token: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The user's `identities` and `mail`, by object id, before `deadline`.
    pub async fn user(&self, id: &str, deadline: Instant) -> Result<DirectoryUser, GraphError> {
        let id = id.trim();
        let plausible = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !plausible {
            return Err(GraphError::NotFound);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.read_user(id)).await {
            Ok(answer) => answer,
            Err(_) => Err(GraphError::Unavailable("the deadline passed".into())),
        }
    }

    async fn read_user(&self, id: &str) -> Result<DirectoryUser, GraphError> {
        let token = self.token().await?;
        let response = self
            .client
            .get(format!("{}/{id}", self.users_url))
            .query(&[("$select", "identities,mail")])
            .bearer_auth(&token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| unavailable("user read", &e))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(GraphError::NotFound),
            401 => {
                // The token was revoked or the keys rolled: fetch a new one next time.
                self.forget_token();
                return Err(GraphError::Unavailable("Graph refused the token".into()));
            }
            status => return Err(GraphError::Unavailable(format!("Graph answered {status}"))),
        }
        let body = bounded_body(response).await?;
        let user: UserAnswer = serde_json::from_slice(&body)
            .map_err(|_| GraphError::Unavailable("Graph's user is not the expected JSON".into()))?;
        Ok(DirectoryUser {
            mail: user.mail,
            identities: user
                .identities
                .unwrap_or_default()
                .into_iter()
                .map(|i| ObjectIdentity {
                    sign_in_type: i.sign_in_type.unwrap_or_default(),
                    issuer: i.issuer.unwrap_or_default(),
                    issuer_assigned_id: i.issuer_assigned_id.unwrap_or_default(),
                })
                .collect(),
        })
    }

    fn cached_token(&self) -> Option<String> {
        let guard = self.token.read().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .filter(|(_, renew_at)| Instant::now() < *renew_at)
            .map(|(token, _)| token.clone())
    }

    fn forget_token(&self) {
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The cached token, or a new one by client credentials.
    async fn token(&self) -> Result<String, GraphError> {
        if let Some(token) = self.cached_token() {
            return Ok(token);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(token) = self.cached_token() {
            return Ok(token);
        }
        let response = self
            .client
            .post(&self.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("scope", self.scope.as_str()),
            ])
            .send()
            .await
            .map_err(|e| unavailable("token request", &e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(GraphError::Unavailable(format!(
                "the token endpoint answered {}",
                status.as_u16()
            )));
        }
        let body = bounded_body(response).await?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            GraphError::Unavailable("the token endpoint's answer is not a token".into())
        })?;
        // Entra sends `expires_in` as a number; some servers send a string.
        let lifetime = answer
            .expires_in
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(300);
        let renew_at = Instant::now() + Duration::from_secs(lifetime).saturating_sub(RENEW_BEFORE);
        let token = answer.access_token;
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), renew_at));
        Ok(token)
    }
}

fn unavailable(what: &str, error: &reqwest::Error) -> GraphError {
    // Without the URL: it could carry nothing secret, but the message stays short.
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "failed"
    };
    GraphError::Unavailable(format!("Graph {what} {kind}"))
}

/// The body, at most [`MAX_RESPONSE_BYTES`].
async fn bounded_body(mut response: reqwest::Response) -> Result<Vec<u8>, GraphError> {
    let too_large = || GraphError::Unavailable("Graph's answer is too large".into());
    if response
        .content_length()
        .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| unavailable("read", &e))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
