//! A small relying party served by the mock under `/demo`, for QA and the browser test: it signs
//! in through the mock's pages with the openidconnect crate, the way a store's web site would,
//! and shows the customer account number the ID token carries.
//!
//! - `GET /demo`: one sign-in link per policy (`a.sign-in`, the first with id `sign-in`).
//! - `GET /demo/login?policy=P`: reads the policy's discovery document (fetched with reqwest,
//!   redirects not followed, and deserialized into
//!   [`CoreProviderMetadata`](openidconnect::core::CoreProviderMetadata): B2C's issuer is not
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
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreRevocableToken,
    CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, Client, EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet,
    IdTokenFields, StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod flow;
mod handlers;
mod support;
mod views;

pub use self::handlers::scope;

/// The claims carrying the customer account number, autolink's outcome (`Linked`, `Created`,
/// `AlreadyLinked`) and its refusal code at the token step: B2C's, then External ID's.
const B2C_CLAIMS: [&str; 3] = [
    "extension_CustomerAccountNumber",
    "extension_AutoLinkOutcome",
    "extension_AutoLinkError",
];
const EXTERNAL_ID_CLAIMS: [&str; 3] = ["customerAccountNumber", "autoLinkOutcome", "autoLinkError"];

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
    /// The mock's base URL, e.g. `http://127.0.0.1:8081`; the demo lives at
    /// `{base_url}/{path}`.
    pub base_url: String,
    /// Where the demo is served under the base URL: `demo` (the consumer store) or
    /// `demo-business` (the business store).
    pub path: String,
    /// The store's name on its pages.
    pub name: String,
    /// The tenant's domain name, as in discovery URLs.
    pub tenant: String,
    /// The demo's application (client id) in the tenant; its redirect URI must be
    /// `{base_url}/{path}/callback`.
    pub client_id: String,
    /// Its client secret, if it is a confidential client.
    pub client_secret: Option<String>,
    /// The policies offered on the start page.
    pub policies: Vec<String>,
    /// autolink's base URL, for `POST /v1/link`; changeable while running.
    pub service_url: Arc<RwLock<String>>,
    /// An External ID tenant's discovery URL: the demo signs in there (its one policy is only
    /// the user flow's name) and reads External ID's claims (`customerAccountNumber`,
    /// `autoLinkOutcome`, `autoLinkError`) instead of B2C's `extension_*` ones.
    pub external_id: Option<String>,
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

#[cfg(test)]
mod tests;
