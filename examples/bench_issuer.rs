//! A tiny OpenID issuer for the authentication benchmark (`bench/auth.sh`), shaped like Microsoft
//! Entra ID's v2.0 endpoints.
//!
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration`: the discovery document, issuer
//!   `http://127.0.0.1:PORT/{tenant}/v2.0`, `jwks_uri` below, and the fields
//!   `CoreProviderMetadata` requires.
//! - `GET /{tenant}/discovery/v2.0/keys`: the key set (one RSA-2048 key, RS256).
//!
//! At start it generates the RSA key, binds, and prints on stdout, in this order:
//!
//! ```text
//! bench_issuer listening on http://127.0.0.1:PORT
//! TOKEN <jwt>
//! ```
//!
//! The token is an RS256 client-credentials access token for tenant TENANT: `aud`
//! `api://autolink-bench`, `roles` `["Connector.Call"]`, `azp`, `sub`, `iss`, `iat`, `nbf`, and
//! `exp` two hours from now. A second line, `ENTRA_TOKEN <jwt>`, is the bearer token Microsoft
//! Entra External ID sends to custom authentication extensions (`bench/entra.sh`): `aud`
//! [`EXTENSION_APP`], `azp` the authentication events service, `tid`, `ver` 2.0, no roles. Every
//! request is logged on stderr (so the benchmark can show how
//! often the service fetched the document and the keys).
//!
//! Usage: `bench_issuer PORT [TENANT]` (PORT 0: an ephemeral port).

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};
use sha2::Sha256;

/// Tenant id used when none is given.
const DEFAULT_TENANT: &str = "0c8c1c5e-5b8e-4e43-9d0b-4b1a3f1d2e3f";
/// The protected API's application id URI (`aud`).
const AUDIENCE: &str = "api://autolink-bench";
/// The application role the token carries.
const ROLE: &str = "Connector.Call";
/// The calling application (B2C's client-credentials app registration).
const CALLER_CLIENT_ID: &str = "4b9c6f0e-2f4c-4d1e-8b1a-3c2d1e0f9a8b";
/// The Entra External ID extension's application id (`aud` of `ENTRA_TOKEN`).
const EXTENSION_APP: &str = "a13d0fc1-04ab-4ede-b215-63de0174cbb4";
/// Entra's authentication events service (`azp` of `ENTRA_TOKEN`).
const EVENTS_APP: &str = "99045fe1-7639-4a75-9d4a-577b6ca3810f";
/// Key id of the one signing key.
const KID: &str = "bench-key-1";
/// Token lifetime.
const TOKEN_LIFETIME_S: u64 = 2 * 3600;

struct State {
    base: String,
    jwks: Value,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn log_request(req: &HttpRequest) {
    eprintln!(
        "bench_issuer: {} {} {}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        req.method(),
        req.path()
    );
}

async fn discovery(
    req: HttpRequest,
    state: web::Data<Arc<State>>,
    path: web::Path<String>,
) -> HttpResponse {
    log_request(&req);
    let tenant = path.into_inner();
    let base = &state.base;
    HttpResponse::Ok().json(json!({
        "issuer": format!("{base}/{tenant}/v2.0"),
        "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
        "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "roles", "azp", "tid", "ver"]
    }))
}

async fn keys(req: HttpRequest, state: web::Data<Arc<State>>) -> HttpResponse {
    log_request(&req);
    HttpResponse::Ok().json(&state.jwks)
}

/// An RS256 compact JWS of `claims`, signed by `key`, naming [`KID`].
fn sign(key: &RsaPrivateKey, claims: &Value) -> String {
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": KID});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
    let signature = signer.sign(input.as_bytes()).to_vec();
    format!("{input}.{}", b64(&signature))
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next() {
        Some(p) => p.parse().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "PORT must be a number")
        })?,
        None => 0,
    };
    let tenant = args.next().unwrap_or_else(|| DEFAULT_TENANT.to_string());

    let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
        .map_err(|e| std::io::Error::other(format!("RSA key generation: {e}")))?;
    let public = key.to_public_key();
    let jwks = json!({"keys": [{
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": KID,
        "n": b64(&public.n().to_bytes_be()),
        "e": b64(&public.e().to_bytes_be()),
    }]});

    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let port = listener.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({
        "aud": AUDIENCE,
        "iss": format!("{base}/{tenant}/v2.0"),
        "iat": now,
        "nbf": now,
        "exp": now + TOKEN_LIFETIME_S,
        "azp": CALLER_CLIENT_ID,
        "azpacr": "1",
        "oid": "6a0d4b5e-1f2c-4e3d-9c8b-7a6f5e4d3c2b",
        "roles": [ROLE],
        "sub": "6a0d4b5e-1f2c-4e3d-9c8b-7a6f5e4d3c2b",
        "tid": tenant,
        "ver": "2.0"
    });
    let token = sign(&key, &claims);
    let entra_claims = json!({
        "aud": EXTENSION_APP,
        "iss": format!("{base}/{tenant}/v2.0"),
        "iat": now,
        "nbf": now,
        "exp": now + TOKEN_LIFETIME_S,
        "azp": EVENTS_APP,
        "azpacr": "2",
        "oid": "1b8a4c7e-0f5d-4f6a-9e3b-2c1d0e9f8a7b",
        "sub": "1b8a4c7e-0f5d-4f6a-9e3b-2c1d0e9f8a7b",
        "tid": tenant,
        "ver": "2.0"
    });
    let entra_token = sign(&key, &entra_claims);

    let state = Arc::new(State {
        base: base.clone(),
        jwks,
    });
    actix_web::rt::System::new().block_on(async move {
        let data = web::Data::new(state);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/{tenant}/v2.0/.well-known/openid-configuration",
                    web::get().to(discovery),
                )
                .route("/{tenant}/discovery/v2.0/keys", web::get().to(keys))
        })
        .workers(1)
        .listen(listener)?
        .run();
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "bench_issuer listening on {base}")?;
            writeln!(out, "TOKEN {token}")?;
            writeln!(out, "ENTRA_TOKEN {entra_token}")?;
            out.flush()?;
        }
        server.await
    })
}
