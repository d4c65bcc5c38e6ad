//! Who may call the B2C endpoints. Several authentication types may be configured at once; a
//! request is accepted when any configured type accepts it, and refused with 401 and a JSON
//! reason otherwise. Credentials are checked before the body is read.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};
use std::net::IpAddr;
use std::time::Duration;

use super::{loggable_method, loggable_path, too_many_attempts, unauthorized, AppState};
use crate::auth::api_key::ApiKeys;
use crate::auth::gate::{ClientKey, Verdict};
use crate::auth::oidc::AccessTokenVerifier;
use crate::auth::BasicCredentials;
use crate::tls::{CertError, ClientCertPolicy};

/// How the caller authenticated (in request extensions, for the audit and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// HTTP Basic with this user name.
    Basic(String),
    /// An API key in the configured header.
    ApiKey,
    /// A bearer access token of this subject (and calling application).
    Bearer {
        /// `sub` of the token.
        subject: String,
        /// `azp` / `appid` of the token.
        client_id: Option<String>,
    },
    /// A client certificate with this SHA-1 thumbprint.
    Certificate(String),
}

/// The configured authentication types of the B2C endpoints.
#[derive(Default)]
pub struct ConnectorAuth {
    /// HTTP Basic.
    pub basic: Option<BasicCredentials>,
    /// API key header.
    pub api_key: Option<ApiKeys>,
    /// Bearer access tokens.
    pub bearer: Option<AccessTokenVerifier>,
    /// Client certificates (TLS handshake or `X-ARR-ClientCert`).
    pub client_certificate: Option<ClientCertPolicy>,
}

impl ConnectorAuth {
    /// The `WWW-Authenticate` challenge naming the accepted schemes.
    fn challenge(&self) -> &'static str {
        if self.basic.is_some() {
            "Basic realm=\"autolink\""
        } else if self.bearer.is_some() {
            "Bearer realm=\"autolink\""
        } else {
            "ApiKey realm=\"autolink\""
        }
    }

    /// Checks the request's credentials.
    async fn authenticate(
        &self,
        req: &ServiceRequest,
        state: &web::Data<AppState>,
    ) -> Result<Caller, Refused> {
        let mut failure = Refused::default();
        let client = client_key(req, state);
        let gate = &state.credential_gate;

        if let Some(policy) = &self.client_certificate {
            match crate::tls::authenticate(req.request(), policy) {
                Ok(client) => return Ok(Caller::Certificate(client.thumbprint_sha1)),
                Err(CertError::NoCertificate) => {}
                Err(error) => failure.reason = Some(error.to_string()),
            }
        }

        if let Some(keys) = &self.api_key {
            if let Some(value) = req.headers().get(keys.header()) {
                let presented = value.as_bytes().trim_ascii();
                let ok = if presented.is_empty() || presented.len() > MAX_SECRET_LEN {
                    Verdict::Refused
                } else if let Ok(presented) = std::str::from_utf8(presented) {
                    if keys.verified_before(presented) {
                        Verdict::Accepted
                    } else {
                        gate.check(
                            client,
                            "api-key",
                            presented.as_bytes(),
                            keys.verify(presented),
                        )
                        .await
                    }
                } else {
                    Verdict::Refused
                };
                match ok {
                    Verdict::Accepted => return Ok(Caller::ApiKey),
                    Verdict::Refused => {
                        failure.note(
                            format!("the {} header does not hold a valid API key", keys.header()),
                            gate.log_fingerprint(presented),
                        );
                    }
                    busy => failure.throttle(busy),
                }
            }
        }

        if let Some(value) = req.headers().get(header::AUTHORIZATION) {
            // Computed only for a refusal: an accepted call pays nothing for the log.
            let fingerprint = || gate.log_fingerprint(value.as_bytes());
            match scheme_of(value.as_bytes()) {
                Some(Scheme::Basic) => {
                    let parsed = value
                        .to_str()
                        .ok()
                        .filter(|v| v.len() <= MAX_AUTHORIZATION_LEN)
                        .and_then(crate::auth::parse_basic);
                    match (&self.basic, parsed) {
                        (None, _) => {
                            failure.note("HTTP Basic is not accepted here".into(), fingerprint())
                        }
                        (Some(_), None) => {
                            failure.note("the HTTP Basic header is malformed".into(), fingerprint())
                        }
                        (Some(basic), Some((user, password))) => {
                            let verdict = if basic.verified_before(&user, &password) {
                                Verdict::Accepted
                            } else {
                                let presented = BasicCredentials::presented(&user, &password);
                                gate.check(
                                    client,
                                    "basic",
                                    &presented,
                                    basic.verify(&user, &password),
                                )
                                .await
                            };
                            match verdict {
                                Verdict::Accepted => return Ok(Caller::Basic(user)),
                                Verdict::Refused => failure.note(
                                    "the HTTP Basic credentials are not valid".into(),
                                    fingerprint(),
                                ),
                                busy => failure.throttle(busy),
                            }
                        }
                    }
                }
                Some(Scheme::Bearer) => {
                    let token = value
                        .to_str()
                        .ok()
                        .map(|v| v.trim()[BEARER.len()..].trim())
                        .unwrap_or_default();
                    match &self.bearer {
                        None => failure
                            .note("bearer tokens are not accepted here".into(), fingerprint()),
                        Some(verifier) => match verifier.verify(token).await {
                            Ok(info) => {
                                return Ok(Caller::Bearer {
                                    subject: info.subject,
                                    client_id: info.client_id,
                                })
                            }
                            Err(error) => failure.note(token_refusal(&error), fingerprint()),
                        },
                    }
                }
                None => failure.note(
                    "the authorization scheme is not accepted here".into(),
                    fingerprint(),
                ),
            }
        }

        Err(failure)
    }
}

/// Longest API key or Basic password considered; longer values are refused without a check.
pub const MAX_SECRET_LEN: usize = 1024;
/// Longest `Authorization` value considered (a Basic header of the longest credentials).
const MAX_AUTHORIZATION_LEN: usize = 4 * MAX_SECRET_LEN;
const BEARER: &str = "bearer";

/// The authorization schemes autolink reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Basic`.
    Basic,
    /// `Bearer`.
    Bearer,
}

impl Scheme {
    /// The scheme's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Basic => "Basic",
            Scheme::Bearer => "Bearer",
        }
    }
}

/// The scheme of an `Authorization` value, when it is one autolink reads. Anything else is not
/// named back, in logs or answers: a value without a known scheme may be a bare secret.
pub fn scheme_of(value: &[u8]) -> Option<Scheme> {
    let value = value.trim_ascii_start();
    let end = value
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(value.len());
    let (scheme, rest) = value.split_at(end);
    if rest.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        Some(Scheme::Basic)
    } else if scheme.eq_ignore_ascii_case(BEARER.as_bytes()) {
        Some(Scheme::Bearer)
    } else {
        None
    }
}

/// The client, as the failure throttle counts it: the peer address, or the last address of
/// `[limits.credentials] client_ip_header` when a proxy sets it.
pub fn client_key(req: &ServiceRequest, state: &AppState) -> ClientKey {
    if let Some(name) = &state.client_ip_header {
        let from_header = req
            .headers()
            .get_all(name)
            .last()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| parse_client_address(v.trim()));
        return ClientKey::of(from_header);
    }
    ClientKey::of(req.peer_addr().map(|a| a.ip()))
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:443`, `2001:db8::1`.
fn parse_client_address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// Why credentials were refused: the 401 reason, or a 429 with its wait.
#[derive(Debug, Default)]
pub struct Refused {
    /// The reason told to the caller (first failure wins); never a presented value.
    pub reason: Option<String>,
    /// A short fingerprint of the refused value, for the log only.
    pub fingerprint: Option<String>,
    /// Set when a check was throttled or the checks are saturated: answer 429.
    pub retry_after: Option<Duration>,
}

impl Refused {
    /// A refusal with this reason (and the refused value's fingerprint, for the log).
    pub fn because(reason: &str, fingerprint: Option<String>) -> Refused {
        Refused {
            reason: Some(reason.to_string()),
            fingerprint,
            retry_after: None,
        }
    }

    /// A throttled check: 429 with this wait.
    pub fn throttled(wait: Duration) -> Refused {
        Refused {
            retry_after: Some(wait),
            ..Refused::default()
        }
    }

    fn note(&mut self, reason: String, fingerprint: String) {
        if self.reason.is_none() {
            self.reason = Some(reason);
            self.fingerprint = Some(fingerprint);
        }
    }

    fn throttle(&mut self, verdict: Verdict) {
        let wait = match verdict {
            Verdict::Throttled(wait) => wait,
            _ => Duration::from_secs(1),
        };
        self.retry_after = Some(self.retry_after.map_or(wait, |w| w.max(wait)));
    }

    /// The answer: 429 with `Retry-After` when throttled, else 401 with the reason.
    pub fn response(&self, challenge: &'static str, default_reason: &str) -> HttpResponse {
        match self.retry_after {
            Some(wait) => too_many_attempts(wait),
            None => unauthorized(self.reason.as_deref().unwrap_or(default_reason), challenge),
        }
    }

    /// Logs the refusal: method, a bounded path, the reason and the fingerprint; never a value.
    pub fn log(&self, req: &ServiceRequest, what: &str) {
        let path = loggable_path(req.path());
        match self.retry_after {
            Some(wait) => log::warn!(
                "{} {path}: {what} throttled: too many failed credential checks (retry after {} s)",
                loggable_method(req.method()),
                wait.as_secs().max(1)
            ),
            None => log::warn!(
                "{} {path}: {what} refused: {} (credential fingerprint {})",
                loggable_method(req.method()),
                self.reason.as_deref().unwrap_or("credentials are required"),
                self.fingerprint.as_deref().unwrap_or("-")
            ),
        }
    }
}

/// The 401 reason for a refused token. Never the token; never the issuer's URL (an outage of the
/// issuer is logged, not told to the caller).
pub fn token_refusal(error: &crate::auth::oidc::TokenError) -> String {
    if error.is_provider_unavailable() {
        "the token issuer's keys could not be fetched".into()
    } else {
        format!(
            "the bearer token is not valid ({}): {error}",
            error.reason()
        )
    }
}

/// Middleware for the B2C scope.
pub async fn require_b2c_caller(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(req
            .into_response(unauthorized("server misconfigured", "Basic"))
            .map_into_right_body());
    };
    match state.connector_auth.authenticate(&req, &state).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(refused) => {
            refused.log(&req, "connector");
            let challenge = state.connector_auth.challenge();
            Ok(req
                .into_response(refused.response(challenge, "credentials are required"))
                .map_into_right_body())
        }
    }
}
