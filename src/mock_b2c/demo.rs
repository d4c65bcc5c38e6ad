//! A small relying party served by the mock under `/demo`, for QA and the browser test: it signs
//! in through the mock's pages with the openidconnect crate, the way a store's web site would,
//! and shows the customer account number the ID token carries.
//!
//! - `GET /demo`: one sign-in link per policy (`a.sign-in`, the first with id `sign-in`).
//! - `GET /demo/login?policy=P`: reads the policy's discovery document (fetched with reqwest,
//!   redirects not followed, and deserialized into [`CoreProviderMetadata`]: B2C's issuer is not
//!   the discovery URL, so openidconnect's own discovery would refuse it), builds the authorization
//!   URL (code flow, PKCE S256, nonce, CSRF state kept in memory; scope `openid` plus the client id,
//!   so that the token response carries an `access_token`) and redirects to it.
//! - `GET /demo/callback?code&state`: exchanges the code at the token endpoint, verifies the ID
//!   token (signature against the policy's keys, issuer, audience, nonce) and shows
//!   `#account-number` (or `#no-account-number` and `#autolink-error`), `#outcome` and every claim.
//! - `POST /demo/link`: sends the ID token of a finished sign-in to autolink's
//!   `POST {service_url}/v1/link` (`Authorization: Bearer`) and shows the answer in `#link-result`.
//!   The token stays on the server; the page only holds a random id for it.
//!
//! Everything the caller sends that does not fit ends on an HTML page with `#error-message` (status
//! 400, or 502 when the provider fails), never a panic or a 500.

use std::collections::HashMap;

use super::journey::urlencode;
use super::pages::esc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, Scope};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthType, AuthenticationFlow, AuthorizationCode, Client, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdTokenFields, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope as OidcScope,
    StandardErrorResponse, StandardTokenResponse, TokenResponse,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The claim carrying the customer account number.
const CLAIM_ACCOUNT_NUMBER: &str = "extension_CustomerAccountNumber";
/// The claim carrying autolink's outcome (`Linked`, `Created`, `AlreadyLinked`).
const CLAIM_OUTCOME: &str = "extension_AutoLinkOutcome";
/// The claim carrying autolink's refusal code at the token step.
const CLAIM_ERROR: &str = "extension_AutoLinkError";

/// How long a started sign-in may take before its state is forgotten.
const LOGIN_TTL: Duration = Duration::from_secs(30 * 60);
/// How long a finished sign-in (its ID token) is kept.
const SIGNED_IN_TTL: Duration = Duration::from_secs(2 * 3600);
/// At most this many pending and as many finished sign-ins are kept; the oldest go first.
const MAX_ENTRIES: usize = 10_000;
/// Time limit of one outgoing HTTP call (discovery, keys, token, `/v1/link`).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from the provider or from autolink.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the demo needs to know.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// The mock's base URL, e.g. `http://127.0.0.1:8081`; the demo lives at `{base_url}/demo`.
    pub base_url: String,
    /// The tenant's domain name, as in discovery URLs.
    pub tenant: String,
    /// The demo's application (client id) in the tenant; its redirect URI must be
    /// `{base_url}/demo/callback`.
    pub client_id: String,
    /// Its client secret, if it is a confidential client.
    pub client_secret: Option<String>,
    /// The policies offered on the start page.
    pub policies: Vec<String>,
    /// autolink's base URL, for `POST /v1/link`; changeable while running.
    pub service_url: Arc<RwLock<String>>,
}

/// The demo relying party: its settings and what it remembers between pages.
pub struct Demo {
    settings: DemoSettings,
    http: Result<reqwest::Client, String>,
    logins: Mutex<HashMap<String, PendingLogin>>,
    signed_in: Mutex<HashMap<String, SignedIn>>,
}

/// A sign-in that was sent to the provider and has not come back.
struct PendingLogin {
    policy: String,
    nonce: String,
    pkce_verifier: String,
    created: Instant,
}

/// A finished sign-in: the verified token and its claims.
#[derive(Clone)]
struct SignedIn {
    policy: String,
    issuer: String,
    id_token: String,
    claims: Map<String, Value>,
    created: Instant,
}

/// The claims the standard ones leave over (B2C's `emails`, `tfp`, `idp`, `extension_*`, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct B2cClaims {
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl AdditionalClaims for B2cClaims {}

type B2cIdTokenFields = IdTokenFields<
    B2cClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type B2cTokenResponse = StandardTokenResponse<B2cIdTokenFields, CoreTokenType>;
type B2cClient = Client<
    B2cClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    B2cTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// An outgoing HTTP call that failed (the message never holds a body).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HttpError(String);

/// Why a page could not be shown: the status and the text of `#error-message`.
#[derive(Debug)]
struct PageError {
    status: actix_web::http::StatusCode,
    title: &'static str,
    message: String,
    code: Option<String>,
}

impl PageError {
    fn bad_request(message: impl Into<String>) -> PageError {
        PageError {
            status: actix_web::http::StatusCode::BAD_REQUEST,
            title: "This request cannot be handled",
            message: message.into(),
            code: None,
        }
    }

    fn provider(message: impl Into<String>) -> PageError {
        PageError {
            status: actix_web::http::StatusCode::BAD_GATEWAY,
            title: "Sign-in failed",
            message: message.into(),
            code: None,
        }
    }
}

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
    fn mount_path(&self) -> String {
        let path = openidconnect::url::Url::parse(self.base())
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        format!("{path}/demo")
    }

    fn redirect_uri(&self) -> String {
        format!("{}/demo/callback", self.base())
    }

    fn discovery_url(&self, policy: &str) -> String {
        format!(
            "{}/{}/{}/v2.0/.well-known/openid-configuration",
            self.base(),
            self.settings.tenant,
            policy
        )
    }

    fn service_url(&self) -> String {
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

    fn signed_in(&self, id: &str) -> Option<SignedIn> {
        let all = self.signed_in.lock().unwrap_or_else(|e| e.into_inner());
        all.get(id)
            .filter(|s| s.created.elapsed() < SIGNED_IN_TTL)
            .cloned()
    }

    /// `GET /demo/login`: the authorization URL, or why there is none.
    async fn start_login(&self, query: &HashMap<String, String>) -> Result<String, PageError> {
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
    async fn finish_login(&self, query: &HashMap<String, String>) -> Result<String, PageError> {
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
    async fn call_link(&self, signed_in: &SignedIn) -> LinkResult {
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

/// What `POST {service_url}/v1/link` answered.
struct LinkResult {
    url: String,
    status: Option<u16>,
    body: String,
}

impl LinkResult {
    fn failed(url: &str, error: String) -> LinkResult {
        LinkResult {
            url: url.to_string(),
            status: None,
            body: format!("the call failed: {error}"),
        }
    }
}

/// Mounts the demo at `/demo`.
pub fn scope(demo: Arc<Demo>) -> Scope {
    web::scope("/demo")
        .app_data(web::Data::from(demo))
        .route("", web::get().to(index))
        .route("/", web::get().to(index))
        .route("/login", web::get().to(login))
        .route("/callback", web::get().to(callback))
        .route("/link", web::post().to(link))
}

async fn index(demo: web::Data<Demo>) -> HttpResponse {
    let mount = demo.mount_path();
    let mut body = String::from("<h1>Demo store</h1>\n");
    if demo.settings.policies.is_empty() {
        body.push_str("<p id=\"error-message\">No policy is configured.</p>\n");
    } else {
        body.push_str("<ul>\n");
        for (i, policy) in demo.settings.policies.iter().enumerate() {
            let href = format!("{mount}/login?policy={}", urlencode(policy));
            let id = if i == 0 { " id=\"sign-in\"" } else { "" };
            body.push_str(&format!(
                "<li><a class=\"sign-in\"{id} href=\"{}\" data-policy=\"{}\">Sign in with {}</a></li>\n",
                esc(&href),
                esc(policy),
                esc(policy)
            ));
        }
        body.push_str("</ul>\n");
    }
    body.push_str(&format!(
        "<p class=\"muted\">Application <code>{}</code>; autolink at <code id=\"service-url\">{}</code>.</p>\n",
        esc(&demo.settings.client_id),
        esc(&demo.service_url())
    ));
    page(actix_web::http::StatusCode::OK, "Demo store", &body)
}

async fn login(demo: web::Data<Demo>, req: HttpRequest) -> HttpResponse {
    let query = parse_pairs(req.query_string().as_bytes());
    match demo.start_login(&query).await {
        Ok(url) => HttpResponse::Found()
            .insert_header((header::LOCATION, url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Err(error) => error_page(&demo, error),
    }
}

async fn callback(demo: web::Data<Demo>, req: HttpRequest) -> HttpResponse {
    let query = parse_pairs(req.query_string().as_bytes());
    match demo.finish_login(&query).await {
        Ok(id) => match demo.signed_in(&id) {
            Some(signed_in) => result_page(&demo, &id, &signed_in, None),
            None => error_page(&demo, PageError::bad_request("the sign-in expired")),
        },
        Err(error) => {
            if error.status.is_server_error() {
                log::warn!("demo: sign-in failed: {}", error.message);
            }
            error_page(&demo, error)
        }
    }
}

async fn link(demo: web::Data<Demo>, body: Bytes) -> HttpResponse {
    let form = parse_pairs(&body);
    let id = form.get("signin").map(String::as_str).unwrap_or_default();
    let Some(signed_in) = demo.signed_in(id) else {
        return error_page(
            &demo,
            PageError::bad_request("unknown or expired sign-in: sign in again"),
        );
    };
    let result = demo.call_link(&signed_in).await;
    result_page(&demo, id, &signed_in, Some(&result))
}

/// The page after a sign-in: the account number, the outcome, the claims and the link button.
fn result_page(
    demo: &Demo,
    signed_in_id: &str,
    signed_in: &SignedIn,
    link: Option<&LinkResult>,
) -> HttpResponse {
    let claims = &signed_in.claims;
    let mount = demo.mount_path();
    let mut body = String::from("<h1>Signed in</h1>\n");
    match claims.get(CLAIM_ACCOUNT_NUMBER).map(claim_text) {
        Some(number) if !number.is_empty() => body.push_str(&format!(
            "<p>Customer account number: <span id=\"account-number\">{}</span></p>\n",
            esc(&number)
        )),
        _ => body.push_str(
            "<p id=\"no-account-number\">The token carries no customer account number.</p>\n",
        ),
    }
    if let Some(error) = claims.get(CLAIM_ERROR).map(claim_text) {
        body.push_str(&format!(
            "<p>autolink refused: <span id=\"autolink-error\">{}</span></p>\n",
            esc(&error)
        ));
    }
    body.push_str(&format!(
        "<p>Outcome: <span id=\"outcome\">{}</span></p>\n",
        esc(&claims
            .get(CLAIM_OUTCOME)
            .map(claim_text)
            .unwrap_or_default())
    ));
    body.push_str(&format!(
        "<p class=\"muted\">Policy <code id=\"policy\">{}</code>, issuer <code id=\"issuer\">{}</code>.</p>\n",
        esc(&signed_in.policy),
        esc(&signed_in.issuer)
    ));
    body.push_str(&format!(
        "<form method=\"post\" action=\"{}\">\n<input type=\"hidden\" name=\"signin\" value=\"{}\">\n\
         <button id=\"link\" type=\"submit\">Link with POST /v1/link</button>\n</form>\n",
        esc(&format!("{mount}/link")),
        esc(signed_in_id)
    ));
    if let Some(link) = link {
        let status = link
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "no answer".into());
        body.push_str(&format!(
            "<h2>POST <code>{}</code>: <span id=\"link-status\">{}</span></h2>\n<pre id=\"link-result\">{}</pre>\n",
            esc(&link.url),
            esc(&status),
            esc(&link.body)
        ));
    }
    body.push_str(
        "<h2>Claims</h2>\n<table id=\"claims\">\n<tr><th>Claim</th><th>Value</th></tr>\n",
    );
    for (name, value) in claims {
        body.push_str(&format!(
            "<tr><td class=\"claim-name\">{}</td><td class=\"claim-value\" data-claim=\"{}\">{}</td></tr>\n",
            esc(name),
            esc(name),
            esc(&claim_text(value))
        ));
    }
    body.push_str("</table>\n");
    body.push_str(&format!(
        "<p><a id=\"start-over\" href=\"{}\">Start over</a></p>\n",
        esc(&mount)
    ));
    page(actix_web::http::StatusCode::OK, "Signed in", &body)
}

fn error_page(demo: &Demo, error: PageError) -> HttpResponse {
    let mut body = format!("<h1>{}</h1>\n", esc(error.title));
    if let Some(code) = &error.code {
        body.push_str(&format!(
            "<p>Error: <code id=\"error-code\">{}</code></p>\n",
            esc(code)
        ));
    }
    body.push_str(&format!(
        "<p id=\"error-message\">{}</p>\n<p><a id=\"start-over\" href=\"{}\">Start over</a></p>\n",
        esc(&error.message),
        esc(&demo.mount_path())
    ));
    page(error.status, error.title, &body)
}

fn page(status: actix_web::http::StatusCode, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em;max-width:60em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}\
         td{{font-family:monospace;word-break:break-all}}.muted{{color:#666}}</style>\n\
         </head>\n<body>\n{}</body>\n</html>\n",
        esc(title),
        body
    );
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ))
        .body(html)
}

/// A claim as text: strings as they are, anything else as JSON.
fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `application/x-www-form-urlencoded` pairs; the first of a repeated name wins.
fn parse_pairs(input: &[u8]) -> HashMap<String, String> {
    let mut pairs = HashMap::new();
    for (name, value) in form_urlencoded::parse(input) {
        pairs
            .entry(name.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    pairs
}

/// 32 random bytes, base64url.
fn random_id() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Drops the oldest entries so that one more fits under [`MAX_ENTRIES`].
fn trim_oldest<T>(map: &mut HashMap<String, T>, created: impl Fn(&T) -> Instant) {
    while map.len() >= MAX_ENTRIES {
        let oldest = map
            .iter()
            .min_by_key(|(_, v)| created(v))
            .map(|(k, _)| k.clone());
        match oldest {
            Some(key) => {
                map.remove(&key);
            }
            None => break,
        }
    }
}

/// Reads an answer's body up to [`MAX_BODY_BYTES`].
async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(format!("the answer is larger than {MAX_BODY_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| without_url(&e))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("the answer is larger than {MAX_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error's message and causes, without its URL (the caller names the URL).
fn without_url(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// An error and its causes on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A token request's failure, with the provider's error code and description when it sent one.
fn token_error(
    error: &openidconnect::RequestTokenError<
        HttpError,
        StandardErrorResponse<CoreErrorResponseType>,
    >,
) -> String {
    match error {
        openidconnect::RequestTokenError::ServerResponse(answer) => {
            let mut text = answer.error().to_string();
            if let Some(description) = answer.error_description() {
                text.push_str(": ");
                text.push_str(description);
            }
            text
        }
        openidconnect::RequestTokenError::Parse(e, _) => {
            format!("the token response is not valid: {e}")
        }
        other => error_chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as atest;
    use actix_web::{App, HttpServer};
    use base64::Engine as _;
    use rsa::pkcs1v15::SigningKey;
    use rsa::pkcs8::DecodePrivateKey;
    use rsa::signature::{SignatureEncoding, Signer};
    use rsa::traits::PublicKeyParts;
    use rsa::RsaPrivateKey;
    use serde_json::json;
    use sha2::{Digest, Sha256};

    const TENANT: &str = "fabrikam.onmicrosoft.com";
    const TENANT_ID: &str = "775527ff-9a37-4307-8b3d-cc311f58d925";
    const POLICY: &str = "B2C_1_signup_signin";
    const CLIENT: &str = "93fd07aa-333c-409d-955d-96008fd08dd9";
    const SECRET: &str = "demo-client-secret";
    const CODE: &str = "the-authorization-code";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// What the fake provider saw and how it answers.
    #[derive(Default)]
    struct Fake {
        base: String,
        /// `aud` of the tokens it issues (default: the client id).
        audience: Option<String>,
        /// The `nonce` and `code_challenge` of the last authorization request.
        nonce: Option<String>,
        challenge: Option<String>,
        /// The form of the last token request.
        token_form: HashMap<String, String>,
        /// The `Authorization` header of the last `/v1/link` call.
        link_authorization: Option<String>,
    }

    fn key() -> RsaPrivateKey {
        RsaPrivateKey::from_pkcs8_pem(include_str!("../../tests/fixtures/oidc-test-key-1.pem"))
            .unwrap()
    }

    fn sign(claims: &Value) -> String {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": "demo-test-key"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = SigningKey::<Sha256>::new(key()).sign(input.as_bytes());
        format!("{input}.{}", b64(&signature.to_vec()))
    }

    async fn discovery(
        fake: web::Data<Mutex<Fake>>,
        path: web::Path<(String, String)>,
    ) -> HttpResponse {
        let (tenant, policy) = path.into_inner();
        let base = fake.lock().unwrap().base.clone();
        HttpResponse::Ok().json(json!({
            // B2C's issuer is not the discovery URL.
            "issuer": format!("{base}/{TENANT_ID}/v2.0/"),
            "authorization_endpoint": format!("{base}/{tenant}/{policy}/oauth2/v2.0/authorize"),
            "token_endpoint": format!("{base}/{tenant}/{policy}/oauth2/v2.0/token"),
            "jwks_uri": format!("{base}/{tenant}/{policy}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "response_types_supported": ["code", "code id_token", "code token", "code id_token token", "id_token", "id_token token", "token", "token id_token"],
            "scopes_supported": ["openid"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": ["sub", "emails", "extension_CustomerAccountNumber"],
        }))
    }

    async fn keys() -> HttpResponse {
        let public = key().to_public_key();
        HttpResponse::Ok().json(json!({"keys": [{
            "kid": "demo-test-key", "use": "sig", "kty": "RSA",
            "e": b64(&public.e().to_bytes_be()), "n": b64(&public.n().to_bytes_be()),
        }]}))
    }

    async fn token(fake: web::Data<Mutex<Fake>>, req: HttpRequest, body: Bytes) -> HttpResponse {
        let mut form = parse_pairs(&body);
        let mut fake = fake.lock().unwrap();
        // Basic client authentication counts as the form's client_id and client_secret.
        if let Some(basic) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic)
                .unwrap();
            let decoded = String::from_utf8(decoded).unwrap();
            let (id, secret) = decoded.split_once(':').unwrap();
            let decode = |s: &str| {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .unwrap()
                    .1
                    .into_owned()
            };
            form.insert("client_id".into(), decode(id));
            form.insert("client_secret".into(), decode(secret));
        }
        fake.token_form = form.clone();
        let verifier = form.get("code_verifier").cloned().unwrap_or_default();
        let challenge = b64(&Sha256::digest(verifier.as_bytes()));
        if form.get("code").map(String::as_str) != Some(CODE)
            || fake.challenge.as_deref() != Some(challenge.as_str())
            || form.get("client_secret").map(String::as_str) != Some(SECRET)
        {
            return HttpResponse::BadRequest().json(json!({
                "error": "invalid_grant",
                "error_description": "AADB2C90090: The provided JWE is not a valid 5 segment token.",
            }));
        }
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": format!("{}/{TENANT_ID}/v2.0/", fake.base),
            "aud": fake.audience.clone().unwrap_or_else(|| CLIENT.to_string()),
            "sub": "2f1a7c1e-8d0b-4a57-9a55-7d1a5f3c9e01",
            "exp": now + 3600, "iat": now, "nbf": now, "auth_time": now,
            "nonce": fake.nonce.clone(),
            "ver": "1.0", "tfp": POLICY,
            "emails": ["alice@example.com"],
            "extension_CustomerAccountNumber": "C0001<&>",
            "extension_AutoLinkOutcome": "Created",
        });
        HttpResponse::Ok().json(json!({
            "id_token": sign(&claims),
            "token_type": "Bearer",
            "access_token": sign(&claims),
            "expires_in": 3600,
        }))
    }

    async fn v1_link(fake: web::Data<Mutex<Fake>>, req: HttpRequest) -> HttpResponse {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        fake.lock().unwrap().link_authorization = authorization;
        HttpResponse::Ok()
            .json(json!({"customerAccountNumber": "C0001<&>", "outcome": "AlreadyLinked"}))
    }

    /// Starts the fake provider (and autolink's `/v1/link`) on a free port.
    fn start_fake(fake: Fake) -> (String, web::Data<Mutex<Fake>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let shared = web::Data::new(Mutex::new(Fake {
            base: base.clone(),
            ..fake
        }));
        let data = shared.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/{tenant}/{policy}/v2.0/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route(
                    "/{tenant}/{policy}/discovery/v2.0/keys",
                    web::get().to(keys),
                )
                .route(
                    "/{tenant}/{policy}/oauth2/v2.0/token",
                    web::post().to(token),
                )
                .route("/v1/link", web::post().to(v1_link))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        actix_web::rt::spawn(server);
        (base, shared)
    }

    fn demo(base: &str) -> Arc<Demo> {
        Arc::new(Demo::new(DemoSettings {
            base_url: base.to_string(),
            tenant: TENANT.into(),
            client_id: CLIENT.into(),
            client_secret: Some(SECRET.into()),
            policies: vec![POLICY.into(), "B2C_1A_<other>".into()],
            service_url: Arc::new(RwLock::new(base.to_string())),
        }))
    }

    async fn body_of(response: actix_web::dev::ServiceResponse) -> String {
        String::from_utf8(atest::read_body(response).await.to_vec()).unwrap()
    }

    /// The text of the element with this id (up to the next tag).
    fn text_of(html: &str, id: &str) -> Option<String> {
        let start = html.find(&format!("id=\"{id}\""))?;
        let open = start + html[start..].find('>')? + 1;
        let close = open + html[open..].find('<')?;
        Some(html[open..close].to_string())
    }

    fn hidden_signin(html: &str) -> String {
        let marker = "name=\"signin\" value=\"";
        let start = html.find(marker).unwrap() + marker.len();
        let end = start + html[start..].find('"').unwrap();
        html[start..end].to_string()
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(esc("plain"), "plain");
    }

    #[test]
    fn parses_pairs_and_keeps_the_first() {
        let pairs = parse_pairs(b"a=1&b=x%20y+z&a=2&c");
        assert_eq!(pairs["a"], "1");
        assert_eq!(pairs["b"], "x y z");
        assert_eq!(pairs["c"], "");
    }

    #[actix_web::test]
    async fn the_start_page_links_every_policy() {
        let app = atest::init_service(App::new().service(scope(demo("http://127.0.0.1:9")))).await;
        for path in ["/demo", "/demo/"] {
            let response =
                atest::call_service(&app, atest::TestRequest::get().uri(path).to_request()).await;
            assert_eq!(response.status(), 200);
            let html = body_of(response).await;
            assert!(html.contains("<a class=\"sign-in\" id=\"sign-in\" href=\"/demo/login?policy=B2C_1_signup_signin\""), "{html}");
            assert!(
                html.contains("href=\"/demo/login?policy=B2C_1A_%3Cother%3E\""),
                "{html}"
            );
            assert!(html.contains("Sign in with B2C_1A_&lt;other&gt;"), "{html}");
            assert_eq!(html.matches("class=\"sign-in\"").count(), 2);
            assert_eq!(html.matches("id=\"sign-in\"").count(), 1);
        }
    }

    #[actix_web::test]
    async fn caller_mistakes_end_on_an_error_page() {
        let app = atest::init_service(App::new().service(scope(demo("http://127.0.0.1:9")))).await;
        let cases = [
            ("/demo/login?policy=%3Cscript%3E", 400, "unknown policy &quot;&lt;script&gt;&quot;"),
            ("/demo/callback?code=x&state=unknown", 400, "unknown or expired state"),
            ("/demo/callback?code=x", 400, "no state"),
            ("/demo/callback", 400, "no state"),
            (
                "/demo/callback?error=access_denied&error_description=AADB2C90091%3A+%3Cb%3Ecancelled%3C%2Fb%3E&state=s",
                200,
                "AADB2C90091: &lt;b&gt;cancelled&lt;/b&gt;",
            ),
        ];
        for (uri, status, message) in cases {
            let response =
                atest::call_service(&app, atest::TestRequest::get().uri(uri).to_request()).await;
            assert_eq!(response.status(), status, "{uri}");
            let html = body_of(response).await;
            let shown = text_of(&html, "error-message").unwrap_or_default();
            assert!(shown.contains(message), "{uri}: {html}");
        }
        let response = atest::call_service(
            &app,
            atest::TestRequest::post()
                .uri("/demo/link")
                .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                .set_payload("signin=nothing")
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), 400);
        let html = body_of(response).await;
        assert!(text_of(&html, "error-message")
            .unwrap()
            .contains("unknown or expired sign-in"));
    }

    #[actix_web::test]
    async fn an_unreachable_provider_is_a_bad_gateway() {
        // Nothing listens on the discard port.
        let app = atest::init_service(App::new().service(scope(demo("http://127.0.0.1:9")))).await;
        let response = atest::call_service(
            &app,
            atest::TestRequest::get()
                .uri("/demo/login?policy=B2C_1_signup_signin")
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), 502);
        let html = body_of(response).await;
        assert!(
            text_of(&html, "error-message")
                .unwrap()
                .contains("discovery document"),
            "{html}"
        );
    }

    const LOGIN: &str = "/demo/login?policy=B2C_1_signup_signin";

    /// Reads the redirect of `/demo/login`: the authorization URL's parameters, whose nonce and
    /// code challenge the fake provider then expects.
    fn authorization(
        response: actix_web::dev::ServiceResponse,
        base: &str,
        fake: &web::Data<Mutex<Fake>>,
    ) -> HashMap<String, String> {
        assert_eq!(response.status(), 302);
        let location = response
            .headers()
            .get(header::LOCATION)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let (endpoint, query) = location.split_once('?').unwrap();
        assert_eq!(
            endpoint,
            format!("{base}/{TENANT}/{POLICY}/oauth2/v2.0/authorize")
        );
        let params = parse_pairs(query.as_bytes());
        let mut f = fake.lock().unwrap();
        f.nonce = params.get("nonce").cloned();
        f.challenge = params.get("code_challenge").cloned();
        params
    }

    #[actix_web::test]
    async fn signs_in_with_pkce_and_shows_the_account_number() {
        let (base, fake) = start_fake(Fake::default());
        let app = atest::init_service(App::new().service(scope(demo(&base)))).await;
        let login =
            atest::call_service(&app, atest::TestRequest::get().uri(LOGIN).to_request()).await;
        let params = authorization(login, &base, &fake);
        assert_eq!(params["client_id"], CLIENT);
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["redirect_uri"], format!("{base}/demo/callback"));
        assert_eq!(params["code_challenge_method"], "S256");
        let scopes: Vec<&str> = params["scope"].split(' ').collect();
        assert!(
            scopes.contains(&"openid") && scopes.contains(&CLIENT),
            "{scopes:?}"
        );
        assert!(params["nonce"].len() >= 16 && params["state"].len() >= 16);

        let callback = format!(
            "/demo/callback?code={CODE}&state={}",
            urlencode(&params["state"])
        );
        let response =
            atest::call_service(&app, atest::TestRequest::get().uri(&callback).to_request()).await;
        assert_eq!(response.status(), 200);
        let html = body_of(response).await;
        assert_eq!(
            text_of(&html, "account-number").as_deref(),
            Some("C0001&lt;&amp;&gt;"),
            "{html}"
        );
        assert_eq!(text_of(&html, "outcome").as_deref(), Some("Created"));
        assert!(!html.contains("no-account-number"));
        assert!(
            html.contains("data-claim=\"tfp\">B2C_1_signup_signin</td>"),
            "{html}"
        );
        assert!(
            html.contains("data-claim=\"emails\">[&quot;alice@example.com&quot;]</td>"),
            "{html}"
        );
        assert_eq!(
            text_of(&html, "issuer").unwrap(),
            format!("{base}/{TENANT_ID}/v2.0/")
        );
        {
            let f = fake.lock().unwrap();
            assert_eq!(f.token_form["grant_type"], "authorization_code");
            assert_eq!(
                f.token_form["redirect_uri"],
                format!("{base}/demo/callback")
            );
        }
        // The token stays on the server.
        let signin = hidden_signin(&html);
        assert!(!html.contains("eyJ"), "{html}");

        // The same answer twice: the state was used.
        let response =
            atest::call_service(&app, atest::TestRequest::get().uri(&callback).to_request()).await;
        assert_eq!(response.status(), 400);

        // Link: the ID token goes to /v1/link as a bearer token.
        let response = atest::call_service(
            &app,
            atest::TestRequest::post()
                .uri("/demo/link")
                .insert_header((header::CONTENT_TYPE, "application/x-www-form-urlencoded"))
                .set_payload(format!("signin={}", urlencode(&signin)))
                .to_request(),
        )
        .await;
        assert_eq!(response.status(), 200);
        let html = body_of(response).await;
        assert_eq!(text_of(&html, "link-status").as_deref(), Some("200"));
        let result = text_of(&html, "link-result").unwrap();
        assert!(
            result.contains("AlreadyLinked") && result.contains("C0001&lt;&amp;&gt;"),
            "{html}"
        );
        let authorization = fake.lock().unwrap().link_authorization.clone().unwrap();
        assert!(authorization.starts_with("Bearer eyJ"), "{authorization}");
        assert_eq!(
            text_of(&html, "account-number").as_deref(),
            Some("C0001&lt;&amp;&gt;")
        );
    }

    #[actix_web::test]
    async fn a_token_for_another_audience_is_refused() {
        let (base, fake) = start_fake(Fake {
            audience: Some("someone-else".into()),
            ..Fake::default()
        });
        let app = atest::init_service(App::new().service(scope(demo(&base)))).await;
        let login =
            atest::call_service(&app, atest::TestRequest::get().uri(LOGIN).to_request()).await;
        let params = authorization(login, &base, &fake);
        let callback = format!(
            "/demo/callback?code={CODE}&state={}",
            urlencode(&params["state"])
        );
        let response =
            atest::call_service(&app, atest::TestRequest::get().uri(&callback).to_request()).await;
        assert_eq!(response.status(), 502);
        let html = body_of(response).await;
        assert!(
            text_of(&html, "error-message")
                .unwrap()
                .contains("ID token is not valid"),
            "{html}"
        );
        assert!(!html.contains("account-number"));
    }

    #[actix_web::test]
    async fn a_refused_code_is_shown_with_the_provider_error() {
        let (base, fake) = start_fake(Fake::default());
        let app = atest::init_service(App::new().service(scope(demo(&base)))).await;
        let login =
            atest::call_service(&app, atest::TestRequest::get().uri(LOGIN).to_request()).await;
        let params = authorization(login, &base, &fake);
        let callback = format!(
            "/demo/callback?code=wrong&state={}",
            urlencode(&params["state"])
        );
        let response =
            atest::call_service(&app, atest::TestRequest::get().uri(&callback).to_request()).await;
        assert_eq!(response.status(), 502);
        let html = body_of(response).await;
        let message = text_of(&html, "error-message").unwrap();
        assert!(
            message.contains("invalid_grant") && message.contains("AADB2C90090"),
            "{message}"
        );
    }

    #[test]
    fn keeps_a_bounded_number_of_entries() {
        let mut map = HashMap::new();
        let start = Instant::now();
        for i in 0..MAX_ENTRIES {
            map.insert(i.to_string(), start + Duration::from_millis(i as u64));
        }
        trim_oldest(&mut map, |t| *t);
        assert_eq!(map.len(), MAX_ENTRIES - 1);
        assert!(!map.contains_key("0"));
    }
}
