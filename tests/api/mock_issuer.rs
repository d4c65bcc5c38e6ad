//! A mock OpenID issuer over real HTTP on `127.0.0.1`, shaped like Azure AD B2C and Microsoft
//! Entra ID, with token builders for valid tokens and for attacks.
//!
//! - B2C: discovery at `/{tenant}/{policy}/v2.0/.well-known/openid-configuration`, whose `issuer`
//!   is `http://127.0.0.1:PORT/{tenant-guid}/v2.0/`, *not* the discovery URL (as in production),
//!   and keys at `/{tenant}/{policy}/discovery/v2.0/keys`.
//! - Entra ID (access tokens for client credentials): discovery at
//!   `/{tenant-guid}/v2.0/.well-known/openid-configuration`, issuer
//!   `http://127.0.0.1:PORT/{tenant-guid}/v2.0`, keys at `/{tenant-guid}/discovery/v2.0/keys`.
//!
//! Both publish the same key set, which tests replace to rotate keys. The mock counts fetches
//! and misbehaves on demand ([`Behavior`]): slow, redirecting, huge, or naming another issuer.
//! Keys come from the test-only PEM files in `tests/fixtures/` (RSA key generation is slow in
//! debug builds).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpResponse, HttpServer};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Map, Value};
use sha2::Sha256;

/// The B2C tenant's domain, as in discovery URLs.
pub const B2C_TENANT: &str = "fabrikam.onmicrosoft.com";
/// The B2C tenant's id, as in its issuer.
pub const B2C_TENANT_ID: &str = "775527ff-9a37-4307-8b3d-cc311f58d925";
/// The B2C policy tests configure.
pub const B2C_POLICY: &str = "B2C_1A_signup_signin";
/// Another B2C policy of the tenant, not configured.
pub const B2C_OTHER_POLICY: &str = "B2C_1A_password_reset";
/// A relying party's client id (the `aud` of B2C ID tokens).
pub const B2C_CLIENT_ID: &str = "93fd07aa-333c-409d-955d-96008fd08dd9";
/// The Entra ID tenant issuing access tokens.
pub const ENTRA_TENANT_ID: &str = "0c8c1c5e-5b8e-4e43-9d0b-4b1a3f1d2e3f";
/// The protected API's application id URI (the `aud` of access tokens).
pub const API_AUDIENCE: &str = "api://autolink-connector";
/// The calling application (B2C's client-credentials app): `azp` of access tokens.
pub const CALLER_CLIENT_ID: &str = "4b9c6f0e-2f4c-4d1e-8b1a-3c2d1e0f9a8b";
/// The application role access tokens carry.
pub const CONNECTOR_ROLE: &str = "Connector.Call";
/// The email of the default B2C user.
pub const ALICE_EMAIL: &str = "alice@example.com";
/// The object id (and `sub`) of the default B2C user.
pub const ALICE_OID: &str = "2f1a7c1e-8d0b-4a57-9a55-7d1a5f3c9e01";

/// Bytes the huge answers send: far above any document limit.
pub const HUGE_BYTES: u64 = 1 << 30;

// ---------------------------------------------------------------------------------------------
// Keys.
// ---------------------------------------------------------------------------------------------

/// An RSA key pair from `tests/fixtures/`, with its key id.
pub struct TestKey {
    pub kid: String,
    pub private: RsaPrivateKey,
    pub public: RsaPublicKey,
}

const KEY_PEMS: [&str; 3] = [
    include_str!("../fixtures/oidc-test-key-1.pem"),
    include_str!("../fixtures/oidc-test-key-2.pem"),
    include_str!("../fixtures/oidc-test-key-3.pem"),
];

/// Test key `n` (1, 2 or 3), parsed once per test binary. The mock publishes key 1 at start;
/// key 2 is for rotations; key 3 is the attacker's.
pub fn key(n: usize) -> &'static TestKey {
    static KEYS: OnceLock<Vec<TestKey>> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        KEY_PEMS
            .iter()
            .enumerate()
            .map(|(i, pem)| {
                let private = RsaPrivateKey::from_pkcs8_pem(pem).expect("fixture key");
                TestKey {
                    kid: format!("test-key-{}", i + 1),
                    public: private.to_public_key(),
                    private,
                }
            })
            .collect()
    });
    &keys[n - 1]
}

impl TestKey {
    /// The public key as a JWK, as B2C publishes it.
    pub fn jwk(&self) -> Value {
        json!({
            "kid": self.kid,
            "nbf": 1493763266,
            "use": "sig",
            "kty": "RSA",
            "e": b64(&self.public.e().to_bytes_be()),
            "n": b64(&self.public.n().to_bytes_be()),
        })
    }

    /// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) signature of `message`.
    pub fn sign_rs256(&self, message: &[u8]) -> Vec<u8> {
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(self.private.clone());
        signer.sign(message).to_vec()
    }

    /// Every form of the public key an HS256 confusion attack may use as the HMAC secret:
    /// SPKI and PKCS#1 PEM (with and without a final newline), SPKI and PKCS#1 DER, the JWK
    /// JSON and the raw modulus.
    pub fn public_key_secrets(&self) -> Vec<(&'static str, Vec<u8>)> {
        let spki_pem = self
            .public
            .to_public_key_pem(LineEnding::LF)
            .expect("spki pem");
        let pkcs1_pem = self.public.to_pkcs1_pem(LineEnding::LF).expect("pkcs1 pem");
        vec![
            ("SPKI PEM", spki_pem.as_bytes().to_vec()),
            (
                "SPKI PEM without final newline",
                spki_pem.trim_end().as_bytes().to_vec(),
            ),
            ("PKCS#1 PEM", pkcs1_pem.as_bytes().to_vec()),
            (
                "SPKI DER",
                self.public
                    .to_public_key_der()
                    .expect("spki der")
                    .as_bytes()
                    .to_vec(),
            ),
            (
                "PKCS#1 DER",
                self.public
                    .to_pkcs1_der()
                    .expect("pkcs1 der")
                    .as_bytes()
                    .to_vec(),
            ),
            ("JWK JSON", self.jwk().to_string().into_bytes()),
            ("modulus", self.public.n().to_bytes_be()),
        ]
    }
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---------------------------------------------------------------------------------------------
// Tokens.
// ---------------------------------------------------------------------------------------------

/// A JWT under construction: header and claims, signed at the end.
#[derive(Clone, Debug)]
pub struct TokenBuilder {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

impl TokenBuilder {
    /// A token with these claims and a `typ: JWT` header.
    pub fn new(claims: Value) -> TokenBuilder {
        let claims = match claims {
            Value::Object(map) => map,
            _ => panic!("claims must be an object"),
        };
        let mut header = Map::new();
        header.insert("typ".into(), json!("JWT"));
        TokenBuilder { header, claims }
    }

    /// Sets a claim.
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> TokenBuilder {
        self.claims.insert(name.into(), value.into());
        self
    }

    /// Removes a claim.
    pub fn without(mut self, name: &str) -> TokenBuilder {
        self.claims.remove(name);
        self
    }

    /// Sets a header parameter.
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> TokenBuilder {
        self.header.insert(name.into(), value.into());
        self
    }

    /// Names this key id in the header, whatever key signs.
    pub fn kid(self, kid: &str) -> TokenBuilder {
        self.header("kid", kid)
    }

    /// `exp` this many seconds from now (negative: in the past).
    pub fn expires_in(self, seconds: i64) -> TokenBuilder {
        self.claim("exp", now() + seconds)
    }

    /// `nbf` this many seconds from now.
    pub fn not_before_in(self, seconds: i64) -> TokenBuilder {
        self.claim("nbf", now() + seconds)
    }

    fn encode(&self, header: &Map<String, Value>) -> String {
        format!(
            "{}.{}",
            b64(Value::Object(header.clone()).to_string().as_bytes()),
            b64(Value::Object(self.claims.clone()).to_string().as_bytes())
        )
    }

    /// RS256-signed by `key`; the header names `key`'s id unless [`kid`](Self::kid) set one.
    pub fn signed_by(&self, key: &TestKey) -> String {
        let mut header = self.header.clone();
        header.insert("alg".into(), json!("RS256"));
        header
            .entry("kid")
            .or_insert_with(|| json!(key.kid.clone()));
        let input = self.encode(&header);
        let signature = key.sign_rs256(input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }

    /// Unsigned: `alg` set to `alg` (`none`, `None`...) and an empty signature.
    pub fn unsigned(&self, alg: &str) -> String {
        let mut header = self.header.clone();
        header.insert("alg".into(), json!(alg));
        format!("{}.", self.encode(&header))
    }

    /// HS256 with `secret` as the HMAC key (the key-confusion attack when `secret` is the
    /// issuer's public key). The header keeps its `kid`, or names key 1.
    pub fn hs256(&self, secret: &[u8]) -> String {
        let mut header = self.header.clone();
        header.insert("alg".into(), json!("HS256"));
        header
            .entry("kid")
            .or_insert_with(|| json!(key(1).kid.clone()));
        let input = self.encode(&header);
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("hmac key");
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    /// RS256 header naming `kid` and 256 random bytes as signature: what a flood of forged
    /// tokens looks like (nobody gets to check the signature when the key is unknown).
    pub fn with_random_signature(&self, kid: &str) -> String {
        let mut header = self.header.clone();
        header.insert("alg".into(), json!("RS256"));
        header.insert("kid".into(), json!(kid));
        let signature: Vec<u8> = (0..256).map(|_| rand::random::<u8>()).collect();
        format!("{}.{}", self.encode(&header), b64(&signature))
    }
}

/// The token with its payload changed after signing (header and signature kept).
pub fn tamper_payload(token: &str, change: impl FnOnce(&mut Map<String, Value>)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1])
        .expect("base64url payload");
    let mut claims: Map<String, Value> = serde_json::from_slice(&payload).expect("JSON payload");
    change(&mut claims);
    format!(
        "{}.{}.{}",
        parts[0],
        b64(Value::Object(claims).to_string().as_bytes()),
        parts[2]
    )
}

// ---------------------------------------------------------------------------------------------
// The server.
// ---------------------------------------------------------------------------------------------

/// How an endpoint answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// The document.
    Normal,
    /// The document, after sleeping this long.
    Slow(Duration),
    /// `302 Found` to `/moved/openid-configuration` on the mock (which counts its hits).
    Redirect,
    /// `200 OK` streaming [`HUGE_BYTES`] bytes, chunked, without `Content-Length`.
    Huge,
    /// `200 OK` streaming [`HUGE_BYTES`] bytes with an honest `Content-Length`.
    HugeDeclared,
}

struct State {
    base: String,
    keys: Mutex<Vec<Value>>,
    discovery_behavior: Mutex<Behavior>,
    keys_behavior: Mutex<Behavior>,
    issuer_override: Mutex<Option<String>>,
    jwks_uri_override: Mutex<Option<String>>,
    discovery_fetches: AtomicUsize,
    key_fetches: AtomicUsize,
    redirect_target_hits: AtomicUsize,
}

impl State {
    fn b2c_issuer(&self) -> String {
        self.issuer_override
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("{}/{B2C_TENANT_ID}/v2.0/", self.base))
    }

    fn entra_issuer(&self) -> String {
        self.issuer_override
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("{}/{ENTRA_TENANT_ID}/v2.0", self.base))
    }

    fn jwks_uri(&self, default: String) -> String {
        self.jwks_uri_override
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(default)
    }

    fn b2c_document(&self, tenant: &str, policy: &str) -> Value {
        let base = &self.base;
        json!({
            "issuer": self.b2c_issuer(),
            "authorization_endpoint": format!("{base}/{tenant}/{policy}/oauth2/v2.0/authorize"),
            "token_endpoint": format!("{base}/{tenant}/{policy}/oauth2/v2.0/token"),
            "end_session_endpoint": format!("{base}/{tenant}/{policy}/oauth2/v2.0/logout"),
            "jwks_uri": self.jwks_uri(format!("{base}/{tenant}/{policy}/discovery/v2.0/keys")),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "response_types_supported": [
                "code", "code id_token", "code token", "code id_token token", "id_token",
                "id_token token", "token", "token id_token"
            ],
            "scopes_supported": ["openid"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "claims_supported": [
                "name", "given_name", "family_name", "email", "emails", "sub", "oid", "idp",
                "tfp", "iss", "iat", "exp", "aud", "acr", "nonce", "auth_time"
            ]
        })
    }

    fn entra_document(&self, tenant: &str) -> Value {
        let base = &self.base;
        json!({
            "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic"
            ],
            "jwks_uri": self.jwks_uri(format!("{base}/{tenant}/discovery/v2.0/keys")),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.entra_issuer(),
            "request_uri_parameter_supported": false,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
            "claims_supported": [
                "sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
                "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"
            ],
            "kerberos_endpoint": format!("{base}/{tenant}/kerberos"),
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net"
        })
    }

    fn key_set(&self) -> Value {
        json!({ "keys": self.keys.lock().unwrap().clone() })
    }
}

static HUGE_CHUNK: [u8; 64 * 1024] = [b' '; 64 * 1024];

/// The answer for `behavior`, with `document` as the normal body.
async fn answer(
    state: &State,
    behavior: Behavior,
    document: impl FnOnce() -> Value,
) -> HttpResponse {
    let huge = || {
        let chunks = HUGE_BYTES / HUGE_CHUNK.len() as u64;
        let mut first = true;
        futures_util::stream::iter((0..chunks).map(move |_| {
            let chunk = if first {
                first = false;
                Bytes::from_static(b"{\"issuer\": \"")
            } else {
                Bytes::from_static(&HUGE_CHUNK)
            };
            Ok::<_, std::convert::Infallible>(chunk)
        }))
    };
    match behavior {
        Behavior::Normal => HttpResponse::Ok().json(document()),
        Behavior::Slow(delay) => {
            actix_web::rt::time::sleep(delay).await;
            HttpResponse::Ok().json(document())
        }
        Behavior::Redirect => HttpResponse::Found()
            .insert_header((
                "location",
                format!("{}/moved/openid-configuration", state.base),
            ))
            .finish(),
        Behavior::Huge => HttpResponse::Ok()
            .content_type("application/json")
            .streaming(huge()),
        Behavior::HugeDeclared => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("content-length", HUGE_BYTES.to_string()))
            .streaming(huge()),
    }
}

async fn b2c_discovery(
    state: web::Data<Arc<State>>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (tenant, policy) = path.into_inner();
    state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let behavior = *state.discovery_behavior.lock().unwrap();
    answer(&state, behavior, || state.b2c_document(&tenant, &policy)).await
}

async fn entra_discovery(state: web::Data<Arc<State>>, path: web::Path<String>) -> HttpResponse {
    let tenant = path.into_inner();
    state.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let behavior = *state.discovery_behavior.lock().unwrap();
    answer(&state, behavior, || state.entra_document(&tenant)).await
}

async fn keys(state: web::Data<Arc<State>>) -> HttpResponse {
    state.key_fetches.fetch_add(1, Ordering::SeqCst);
    let behavior = *state.keys_behavior.lock().unwrap();
    answer(&state, behavior, || state.key_set()).await
}

async fn redirect_target(state: web::Data<Arc<State>>) -> HttpResponse {
    state.redirect_target_hits.fetch_add(1, Ordering::SeqCst);
    HttpResponse::Ok().json(state.b2c_document(B2C_TENANT, B2C_POLICY))
}

/// A running mock issuer; stopped when dropped.
pub struct MockIssuer {
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    state: Arc<State>,
    handle: ServerHandle,
}

impl Drop for MockIssuer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

impl MockIssuer {
    /// Starts a mock issuer on a free port, publishing key 1.
    pub async fn start() -> MockIssuer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        let base_url = format!("http://127.0.0.1:{port}");
        let state = Arc::new(State {
            base: base_url.clone(),
            keys: Mutex::new(vec![key(1).jwk()]),
            discovery_behavior: Mutex::new(Behavior::Normal),
            keys_behavior: Mutex::new(Behavior::Normal),
            issuer_override: Mutex::new(None),
            jwks_uri_override: Mutex::new(None),
            discovery_fetches: AtomicUsize::new(0),
            key_fetches: AtomicUsize::new(0),
            redirect_target_hits: AtomicUsize::new(0),
        });
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/moved/openid-configuration",
                    web::get().to(redirect_target),
                )
                .route(
                    "/{tenant}/{policy}/v2.0/.well-known/openid-configuration",
                    web::get().to(b2c_discovery),
                )
                .route(
                    "/{tenant}/{policy}/discovery/v2.0/keys",
                    web::get().to(keys),
                )
                .route(
                    "/{tenant}/v2.0/.well-known/openid-configuration",
                    web::get().to(entra_discovery),
                )
                .route("/{tenant}/discovery/v2.0/keys", web::get().to(keys))
        })
        .workers(1)
        .shutdown_timeout(0)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        MockIssuer {
            base_url,
            state,
            handle,
        }
    }

    /// The B2C discovery URL of `policy`.
    pub fn b2c_discovery_url(&self, policy: &str) -> String {
        format!(
            "{}/{B2C_TENANT}/{policy}/v2.0/.well-known/openid-configuration",
            self.base_url
        )
    }

    /// The B2C issuer (`iss` of B2C tokens), unlike the discovery URL.
    pub fn b2c_issuer(&self) -> String {
        format!("{}/{B2C_TENANT_ID}/v2.0/", self.base_url)
    }

    /// The Entra ID discovery URL.
    pub fn entra_discovery_url(&self) -> String {
        format!(
            "{}/{ENTRA_TENANT_ID}/v2.0/.well-known/openid-configuration",
            self.base_url
        )
    }

    /// The Entra ID issuer (`iss` of access tokens).
    pub fn entra_issuer(&self) -> String {
        format!("{}/{ENTRA_TENANT_ID}/v2.0", self.base_url)
    }

    /// Publishes exactly these keys from now on (a rotation).
    pub fn publish_keys(&self, keys: &[&TestKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
    }

    /// Publishes these raw JWKs (for odd key sets).
    pub fn publish_jwks(&self, jwks: Vec<Value>) {
        *self.state.keys.lock().unwrap() = jwks;
    }

    /// How discovery documents are answered from now on.
    pub fn set_discovery_behavior(&self, behavior: Behavior) {
        *self.state.discovery_behavior.lock().unwrap() = behavior;
    }

    /// How key sets are answered from now on.
    pub fn set_keys_behavior(&self, behavior: Behavior) {
        *self.state.keys_behavior.lock().unwrap() = behavior;
    }

    /// Makes the discovery documents name another issuer (`None`: the real one again).
    pub fn set_document_issuer(&self, issuer: Option<String>) {
        *self.state.issuer_override.lock().unwrap() = issuer;
    }

    /// Makes the discovery documents name another `jwks_uri` (`None`: the real one again).
    pub fn set_jwks_uri(&self, jwks_uri: Option<String>) {
        *self.state.jwks_uri_override.lock().unwrap() = jwks_uri;
    }

    /// Discovery documents requested so far.
    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Key sets requested so far.
    pub fn key_fetches(&self) -> usize {
        self.state.key_fetches.load(Ordering::SeqCst)
    }

    /// Requests to the redirect target so far (a client that follows redirects would land there).
    pub fn redirect_target_hits(&self) -> usize {
        self.state.redirect_target_hits.load(Ordering::SeqCst)
    }

    /// A valid Entra ID v2 access token for the client-credentials caller: `roles`, `azp`, `aud`,
    /// `iss`, `exp` (in an hour), `nbf`, `iat`, `sub`, `tid`, `ver`. Sign with
    /// [`TokenBuilder::signed_by`].
    pub fn access_token(&self) -> TokenBuilder {
        let now = now();
        TokenBuilder::new(json!({
            "aud": API_AUDIENCE,
            "iss": self.entra_issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "aio": "k2BgYJgXxmVQ9L7+AQA=",
            "azp": CALLER_CLIENT_ID,
            "azpacr": "1",
            "oid": "6a0d4b5e-1f2c-4e3d-9c8b-7a6f5e4d3c2b",
            "rh": "0.AXkA.",
            "roles": [CONNECTOR_ROLE],
            "sub": "6a0d4b5e-1f2c-4e3d-9c8b-7a6f5e4d3c2b",
            "tid": ENTRA_TENANT_ID,
            "uti": "pVm5nOl3bUq6l3c1Lw8AAA",
            "ver": "2.0"
        }))
    }

    /// A valid Entra ID v2 *ID token* of the same issuer, for the same audience: no `roles`,
    /// no `scp`, a `nonce`. Not an access token.
    pub fn entra_id_token(&self) -> TokenBuilder {
        let now = now();
        TokenBuilder::new(json!({
            "aud": API_AUDIENCE,
            "iss": self.entra_issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "name": "Alice",
            "nonce": "6d1c0f5a",
            "oid": ALICE_OID,
            "preferred_username": ALICE_EMAIL,
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            "tid": ENTRA_TENANT_ID,
            "ver": "2.0"
        }))
    }

    /// A valid B2C ID token of `policy` for `audience`, as a user flow issues it: `emails`,
    /// `tfp`, `oid`, `sub`, `nonce`, `auth_time`, `ver`, `iat`, `exp` (in an hour), `nbf`.
    /// Add `idp` for a social account; replace `emails` by `email` for custom policies.
    pub fn b2c_id_token(&self, policy: &str, audience: &str) -> TokenBuilder {
        let now = now();
        TokenBuilder::new(json!({
            "exp": now + 3600,
            "nbf": now,
            "ver": "1.0",
            "iss": self.b2c_issuer(),
            "sub": ALICE_OID,
            "aud": audience,
            "nonce": "defaultNonce",
            "iat": now,
            "auth_time": now,
            "oid": ALICE_OID,
            "emails": [ALICE_EMAIL],
            "tfp": policy
        }))
    }
}
