//! Who may call the B2C endpoints. Several authentication types may be configured at once; a
//! request is accepted when any configured type accepts it, and refused with 401 and a JSON
//! reason otherwise. Credentials are checked before the body is read.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use super::{unauthorized, AppState};
use crate::auth::api_key::ApiKeys;
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

    /// Checks the request's credentials. `Err` carries the reason for the 401 body.
    async fn authenticate(
        &self,
        req: &ServiceRequest,
        state: &web::Data<AppState>,
    ) -> Result<Caller, String> {
        let mut failure: Option<String> = None;

        if let Some(policy) = &self.client_certificate {
            match crate::tls::authenticate(req.request(), policy) {
                Ok(client) => return Ok(Caller::Certificate(client.thumbprint_sha1)),
                Err(CertError::NoCertificate) => {}
                Err(error) => failure = Some(error.to_string()),
            }
        }

        if let Some(keys) = &self.api_key {
            if let Some(value) = req
                .headers()
                .get(keys.header())
                .and_then(|v| v.to_str().ok())
            {
                let presented = value.trim().to_string();
                let ok = keys.verified_before(&presented) || {
                    let state = state.clone();
                    web::block(move || {
                        state
                            .connector_auth
                            .api_key
                            .as_ref()
                            .is_some_and(|k| k.verify(&presented))
                    })
                    .await
                    .unwrap_or(false)
                };
                if ok {
                    return Ok(Caller::ApiKey);
                }
                failure = Some(format!(
                    "the {} header does not hold a valid API key",
                    keys.header()
                ));
            }
        }

        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Some(authorization) = authorization {
            let scheme = authorization.split_whitespace().next().unwrap_or_default();
            if scheme.eq_ignore_ascii_case("basic") {
                match (&self.basic, crate::auth::parse_basic(authorization)) {
                    (None, _) => {
                        failure.get_or_insert_with(|| "HTTP Basic is not accepted here".into())
                    }
                    (Some(_), None) => {
                        failure.get_or_insert_with(|| "the HTTP Basic header is malformed".into())
                    }
                    (Some(basic), Some((user, password))) => {
                        let ok = basic.verified_before(&user, &password) || {
                            let state = state.clone();
                            let user = user.clone();
                            web::block(move || {
                                state
                                    .connector_auth
                                    .basic
                                    .as_ref()
                                    .is_some_and(|b| b.verify(&user, &password))
                            })
                            .await
                            .unwrap_or(false)
                        };
                        if ok {
                            return Ok(Caller::Basic(user));
                        }
                        failure.get_or_insert_with(|| {
                            "the HTTP Basic credentials are not valid".into()
                        })
                    }
                };
            } else if scheme.eq_ignore_ascii_case("bearer") {
                let token = authorization[scheme.len()..].trim();
                match &self.bearer {
                    None => {
                        failure.get_or_insert_with(|| "bearer tokens are not accepted here".into())
                    }
                    Some(verifier) => match verifier.verify(token).await {
                        Ok(info) => {
                            return Ok(Caller::Bearer {
                                subject: info.subject,
                                client_id: info.client_id,
                            })
                        }
                        Err(error) => {
                            log::warn!("bearer token refused: {error}");
                            failure.get_or_insert_with(|| token_refusal(&error))
                        }
                    },
                };
            } else {
                failure.get_or_insert_with(|| {
                    format!("the authorization scheme {scheme:?} is not accepted here")
                });
            }
        }

        Err(failure.unwrap_or_else(|| "credentials are required".into()))
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
        Err(reason) => {
            log::warn!("{} {}: refused: {reason}", req.method(), req.path());
            let challenge = state.connector_auth.challenge();
            Ok(req
                .into_response(unauthorized(&reason, challenge))
                .map_into_right_body())
        }
    }
}
