//! The sign-in flow as a store's web site runs it: the authorization URL, the code exchange,
//! the ID token check, and the call to autolink's `POST /v1/link`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use actix_web::http::header;
use openidconnect::core::{
    CoreClientAuthMethod, CoreJsonWebKeySet, CoreProviderMetadata, CoreResponseType,
};
use openidconnect::{
    AuthType, AuthenticationFlow, AuthorizationCode, ClientId, ClientSecret, CsrfToken, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope as OidcScope, TokenResponse,
};
use serde_json::Value;

use super::handlers::LinkResult;
use super::support::{error_chain, random_id, read_limited, token_error, trim_oldest, without_url};
use super::{
    B2cClient, Demo, DemoSettings, HttpError, PageError, PendingLogin, SignedIn, HTTP_TIMEOUT,
    LOGIN_TTL, SIGNED_IN_TTL,
};

impl Demo {
    /// A demo with nothing remembered yet.
    pub fn new(settings: DemoSettings) -> Demo {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"));
        Demo {
            settings,
            http,
            logins: Mutex::new(HashMap::new()),
            signed_in: Mutex::new(HashMap::new()),
        }
    }

    fn base(&self) -> &str {
        self.settings.base_url.trim_end_matches('/')
    }

    /// The path the demo is served at, e.g. `/demo` (the base URL's own path first, if any).
    pub(super) fn mount_path(&self) -> String {
        let path = openidconnect::url::Url::parse(self.base())
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        format!("{path}/{}", self.settings.path)
    }

    fn redirect_uri(&self) -> String {
        format!("{}/{}/callback", self.base(), self.settings.path)
    }

    fn discovery_url(&self, policy: &str) -> String {
        if let Some(url) = &self.settings.external_id {
            return url.clone();
        }
        format!(
            "{}/{}/{}/v2.0/.well-known/openid-configuration",
            self.base(),
            self.settings.tenant,
            policy
        )
    }

    pub(super) fn service_url(&self) -> String {
        self.settings
            .service_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .trim_end_matches('/')
            .to_string()
    }

    fn http(&self) -> Result<&reqwest::Client, PageError> {
        self.http
            .as_ref()
            .map_err(|e| PageError::provider(e.clone()))
    }

    fn known_policy(&self, policy: &str) -> bool {
        self.settings.policies.iter().any(|p| p == policy)
    }

    /// Sends one request for openidconnect (its `AsyncHttpClient`), without following redirects.
    async fn send(
        http: reqwest::Client,
        request: openidconnect::HttpRequest,
    ) -> Result<openidconnect::HttpResponse, HttpError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let response = http
            .request(parts.method, &url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|e| HttpError(format!("{url}: {}", without_url(&e))))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_limited(response)
            .await
            .map_err(|e| HttpError(format!("{url}: {e}")))?;
        let mut answer = openidconnect::http::Response::new(body);
        *answer.status_mut() = status;
        *answer.headers_mut() = headers;
        Ok(answer)
    }

    /// The policy's discovery document and, when `with_keys`, its key set.
    async fn provider(
        &self,
        policy: &str,
        with_keys: bool,
    ) -> Result<CoreProviderMetadata, PageError> {
        let http = self.http()?;
        let url = self.discovery_url(policy);
        let response = http
            .get(&url)
            .header(header::ACCEPT.as_str(), "application/json")
            .send()
            .await
            .map_err(|e| {
                PageError::provider(format!(
                    "the discovery document {url} could not be fetched: {}",
                    without_url(&e)
                ))
            })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(PageError::provider(format!(
                "the discovery document {url} answered with a redirect ({status}), which is not followed"
            )));
        }
        if !status.is_success() {
            return Err(PageError::provider(format!(
                "the discovery document {url} answered with HTTP status {status}"
            )));
        }
        let body = read_limited(response).await.map_err(|e| {
            PageError::provider(format!(
                "the discovery document {url} could not be read: {e}"
            ))
        })?;
        let metadata: CoreProviderMetadata = serde_json::from_slice(&body).map_err(|e| {
            PageError::provider(format!("the discovery document {url} is not valid: {e}"))
        })?;
        if !with_keys {
            return Ok(metadata);
        }
        let client = http.clone();
        let http_client =
            move |request: openidconnect::HttpRequest| Demo::send(client.clone(), request);
        let keys = CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), &http_client)
            .await
            .map_err(|e| {
                PageError::provider(format!(
                    "the key set {} could not be fetched: {}",
                    metadata.jwks_uri().as_str(),
                    error_chain(&e)
                ))
            })?;
        Ok(metadata.set_jwks(keys))
    }

    /// The openidconnect client for a policy's metadata.
    fn client(&self, metadata: CoreProviderMetadata) -> Result<B2cClient, PageError> {
        let post_only = metadata
            .token_endpoint_auth_methods_supported()
            .is_some_and(|methods| {
                methods.contains(&CoreClientAuthMethod::ClientSecretPost)
                    && !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
            });
        let redirect = RedirectUrl::new(self.redirect_uri())
            .map_err(|e| PageError::provider(format!("the redirect URI is not valid: {e}")))?;
        let client = B2cClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect);
        Ok(if post_only {
            client.set_auth_type(AuthType::RequestBody)
        } else {
            client
        })
    }

    fn remember_login(&self, state: String, login: PendingLogin) {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.retain(|_, l| l.created.elapsed() < LOGIN_TTL);
        trim_oldest(&mut logins, |l| l.created);
        logins.insert(state, login);
    }

    fn take_login(&self, state: &str) -> Option<PendingLogin> {
        let mut logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins
            .remove(state)
            .filter(|l| l.created.elapsed() < LOGIN_TTL)
    }

    fn remember_signed_in(&self, signed_in: SignedIn) -> String {
        let id = random_id();
        let mut all = self.signed_in.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|_, s| s.created.elapsed() < SIGNED_IN_TTL);
        trim_oldest(&mut all, |s| s.created);
        all.insert(id.clone(), signed_in);
        id
    }

    pub(super) fn signed_in(&self, id: &str) -> Option<SignedIn> {
        let all = self.signed_in.lock().unwrap_or_else(|e| e.into_inner());
        all.get(id)
            .filter(|s| s.created.elapsed() < SIGNED_IN_TTL)
            .cloned()
    }

    /// `GET /demo/login`: the authorization URL, or why there is none.
    pub(super) async fn start_login(
        &self,
        query: &HashMap<String, String>,
    ) -> Result<String, PageError> {
        let policy = query
            .get("policy")
            .map(|p| p.trim())
            .filter(|p| !p.is_empty())
            .or_else(|| self.settings.policies.first().map(String::as_str))
            .ok_or_else(|| PageError::bad_request("no policy is configured"))?
            .to_string();
        if !self.known_policy(&policy) {
            return Err(PageError::bad_request(format!(
                "unknown policy {policy:?}; this demo offers: {}",
                self.settings.policies.join(", ")
            )));
        }
        let metadata = self.provider(&policy, false).await?;
        let client = self.client(metadata)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(OidcScope::new(self.settings.client_id.clone()))
            .set_pkce_challenge(challenge)
            .url();
        self.remember_login(
            state.secret().clone(),
            PendingLogin {
                policy,
                nonce: nonce.secret().clone(),
                pkce_verifier: verifier.secret().clone(),
                created: Instant::now(),
            },
        );
        Ok(url.to_string())
    }

    /// `GET /demo/callback`: the id of the finished sign-in, or why there is none.
    pub(super) async fn finish_login(
        &self,
        query: &HashMap<String, String>,
    ) -> Result<String, PageError> {
        let state = query.get("state").map(String::as_str).unwrap_or_default();
        if let Some(error) = query.get("error") {
            // The provider ended the journey; forget the sign-in it belonged to.
            if !state.is_empty() {
                self.take_login(state);
            }
            let description = query
                .get("error_description")
                .map(String::as_str)
                .unwrap_or_default();
            return Err(PageError {
                status: actix_web::http::StatusCode::OK,
                title: "The sign-in did not succeed",
                message: if description.is_empty() {
                    error.clone()
                } else {
                    description.to_string()
                },
                code: Some(error.clone()),
            });
        }
        if state.is_empty() {
            return Err(PageError::bad_request("the answer has no state"));
        }
        let login = self.take_login(state).ok_or_else(|| {
            PageError::bad_request(
                "unknown or expired state: this sign-in was not started here, or it was already used",
            )
        })?;
        let code = query
            .get("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| PageError::bad_request("the answer has no authorization code"))?;
        let metadata = self.provider(&login.policy, true).await?;
        let issuer = metadata.issuer().as_str().to_string();
        let client = self.client(metadata)?;
        let http = self.http()?.clone();
        let http_client =
            move |request: openidconnect::HttpRequest| Demo::send(http.clone(), request);
        let response = client
            .exchange_code(AuthorizationCode::new(code.clone()))
            .map_err(|e| PageError::provider(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(login.pkce_verifier))
            .request_async(&http_client)
            .await
            .map_err(|e| {
                PageError::provider(format!(
                    "the authorization code could not be exchanged: {}",
                    token_error(&e)
                ))
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| PageError::provider("the token response has no id_token"))?;
        let verifier = client.id_token_verifier();
        let nonce = Nonce::new(login.nonce);
        let claims = id_token.claims(&verifier, &nonce).map_err(|e| {
            PageError::provider(format!("the ID token is not valid: {}", error_chain(&e)))
        })?;
        let claims = match serde_json::to_value(claims) {
            Ok(Value::Object(map)) => map,
            Ok(_) | Err(_) => {
                return Err(PageError::provider("the ID token's claims cannot be shown"));
            }
        };
        Ok(self.remember_signed_in(SignedIn {
            policy: login.policy,
            issuer,
            id_token: id_token.to_string(),
            claims,
            created: Instant::now(),
        }))
    }

    /// `POST /demo/link`: autolink's answer to the sign-in's ID token.
    pub(super) async fn call_link(&self, signed_in: &SignedIn) -> LinkResult {
        let url = format!("{}/v1/link", self.service_url());
        let http = match self.http() {
            Ok(http) => http,
            Err(e) => return LinkResult::failed(&url, e.message),
        };
        let response = http
            .post(&url)
            .bearer_auth(&signed_in.id_token)
            .header(header::ACCEPT.as_str(), "application/json")
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(e) => return LinkResult::failed(&url, without_url(&e)),
        };
        let status = response.status().as_u16();
        match read_limited(response).await {
            Ok(body) => {
                let text = match serde_json::from_slice::<Value>(&body) {
                    Ok(json) => {
                        serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string())
                    }
                    Err(_) => String::from_utf8_lossy(&body).into_owned(),
                };
                LinkResult {
                    url,
                    status: Some(status),
                    body: text,
                }
            }
            Err(e) => LinkResult::failed(&url, e),
        }
    }
}
