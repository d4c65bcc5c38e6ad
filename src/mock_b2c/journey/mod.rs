//! Journeys: what B2C does between the sign-up or sign-in page and the token, with the calls to
//! the service at the points B2C makes them.
//!
//! A user flow (`B2C_1_...`) calls the API connector at its three steps and reads the answers as
//! B2C does: continue, block page, validation error; anything else is B2C's error page. The custom
//! policy (`B2C_1A_...`) runs the project's journey `AutolinkSignUpOrSignIn`: its REST technical
//! profiles (URL, authentication, input and output claims with their partner names) are read from
//! the policy files, so a policy and a service that disagree fail here as they would in B2C.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::caller::Credentials;
use super::config::CallerAuth;
use super::directory::User;
use super::policy::PolicySet;
use super::types::{AccountKind, JourneyKind, JourneyRequest, JourneyResult, Outcome};
use super::Tenant;

mod accounts;
mod connector;
mod custom_policy;
pub(crate) mod token;

pub use self::connector::{read_connector_answer, ConnectorAnswer};

/// The password a journey uses when the request names none.
pub const DEFAULT_PASSWORD: &str = "Passw0rd!";
/// B2C's message when a sign-up names an existing account.
pub const USER_EXISTS: &str =
    "A user with the specified ID already exists. Please choose a different one.";
/// B2C's message when a local sign-in names no account.
pub const NO_ACCOUNT: &str = "We can't seem to find your account.";
/// The mock's message when single sign-on names an account the directory does not hold (the
/// session outlived the account).
pub const NO_SESSION: &str = "Your session has ended. Please sign in again.";
/// B2C's message for a wrong password.
pub const WRONG_PASSWORD: &str = "Your password is incorrect.";
/// The sign-up page's message when the email was not verified.
pub const VERIFY_FIRST: &str = "Please verify your email address before you continue.";
/// The mock's own message when its directory file cannot be written (B2C has no such page).
pub const DIRECTORY_DOWN: &str = "Something went wrong. The mock's directory could not be written.";
/// B2C's error page after a connector failure or an answer it does not accept.
pub const CONNECTOR_FAILED: &str =
    "Something went wrong. The API connector did not give a valid answer.";

/// A request the driver must refuse (HTTP 400), before anything runs.
#[derive(Debug)]
pub struct BadJourney(pub String);

/// How a journey runs: as a user flow or as the custom policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    UserFlow,
    CustomPolicy,
}

/// The claims the journey carries (B2C's claim bag), by claim type.
type Bag = BTreeMap<String, Value>;

/// What the person did at the provider (social accounts).
struct ProviderAnswer {
    name: String,
    subject: String,
    email_verified: Option<bool>,
}

/// Runs one journey.
pub async fn run(tenant: &Tenant, request: JourneyRequest) -> Result<JourneyResult, BadJourney> {
    if request.external_id {
        return super::external_id::journey::run(tenant, request).await;
    }
    if request.payload.is_some() {
        return Err(BadJourney(
            "payload is for External ID journeys (external_id: true)".into(),
        ));
    }
    let policy = match &request.policy {
        Some(p) => p.clone(),
        None => tenant
            .policies()
            .first()
            .cloned()
            .ok_or_else(|| BadJourney("the mock has no policy".into()))?,
    };
    let mode = tenant
        .mode_of(&policy)
        .ok_or_else(|| BadJourney(format!("unknown policy {policy}")))?;
    if !tenant
        .settings
        .applications
        .iter()
        .any(|a| a.client_id == request.client_id)
    {
        return Err(BadJourney(format!(
            "no application with client id {} is registered in the tenant",
            request.client_id
        )));
    }
    if let Some(uri) = &request.redirect_uri {
        tenant
            .check_redirect(&request.client_id, uri)
            .map_err(BadJourney)?;
    }
    if request.email.trim().is_empty() {
        return Err(BadJourney("email is required".into()));
    }
    let provider = match request.account {
        AccountKind::Local => None,
        AccountKind::Social => {
            let name = request
                .provider
                .clone()
                .unwrap_or_else(|| "google.com".into());
            let configured = tenant
                .settings
                .providers
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| BadJourney(format!("unknown identity provider {name}")))?;
            let subject = request
                .provider_subject
                .clone()
                .unwrap_or_else(|| derived_subject(&name, &request.email));
            let email_verified = match request.email_verified {
                Some(v) => Some(v),
                None if configured.verifies_email => Some(true),
                None => None,
            };
            Some(ProviderAnswer {
                name,
                subject,
                email_verified,
            })
        }
    };
    let policies = match mode {
        Mode::CustomPolicy => Some(tenant.policy_set().map_err(BadJourney)?),
        Mode::UserFlow => None,
    };
    let mut journey = Journey {
        tenant,
        request: &request,
        policy: &policy,
        provider,
        policies,
        result: JourneyResult::new(Outcome::Error),
    };
    journey.run().await;
    Ok(journey.result)
}

/// The provider's subject when the request names none: stable per provider and address.
pub(crate) fn derived_subject(provider: &str, email: &str) -> String {
    let digest = Sha256::digest(format!("{provider}\n{}", email.trim().to_lowercase()));
    digest[..12].iter().map(|b| format!("{b:02x}")).collect()
}

struct Journey<'a> {
    tenant: &'a Tenant,
    request: &'a JourneyRequest,
    policy: &'a str,
    provider: Option<ProviderAnswer>,
    policies: Option<std::sync::Arc<PolicySet>>,
    result: JourneyResult,
}

/// Where a step left the journey.
enum Step<T> {
    Go(T),
    Stop,
}

impl Journey<'_> {
    fn ui_locales(&self) -> String {
        self.request
            .ui_locales
            .clone()
            .unwrap_or_else(|| "en-US".into())
    }

    fn stop(&mut self, outcome: Outcome, message: &str, code: Option<String>) -> Step<()> {
        self.result.outcome = outcome;
        self.result.message = Some(message.to_string());
        self.result.code = code;
        Step::Stop
    }

    async fn run(&mut self) {
        if self.request.single_sign_on && self.request.account == AccountKind::Local {
            let _ = self.local_sign_in().await;
            return;
        }
        let _ = match (self.request.kind, self.request.account) {
            (JourneyKind::SignUp, AccountKind::Local) => self.local_sign_up().await,
            (JourneyKind::SignIn, AccountKind::Local) => self.local_sign_in().await,
            // The sign-up-or-sign-in policy decides by the directory: a known social identity
            // signs in, a new one signs up.
            (_, AccountKind::Social) => self.social().await,
        };
    }
}

impl Step<()> {
    fn map_never<T>(self) -> Step<T> {
        Step::Stop
    }
}

/// A continue answer may change the collected attributes (B2C copies them back).
fn apply_attribute_overrides(user: &mut User, claims: &Map<String, Value>) {
    if let Some(v) = claims.get("givenName").and_then(Value::as_str) {
        user.given_name = Some(v.to_string());
    }
    if let Some(v) = claims.get("surname").and_then(Value::as_str) {
        user.surname = Some(v.to_string());
    }
}

/// Percent-encodes a query value.
pub fn urlencode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl super::Tenant {
    /// The credentials of an authentication setting (a bearer token is acquired now).
    pub(crate) async fn credentials(&self, auth: &CallerAuth) -> Result<Credentials, String> {
        Ok(match auth {
            CallerAuth::None => Credentials::None,
            CallerAuth::Basic { username, password } => Credentials::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            CallerAuth::ApiKey { header, key } => Credentials::ApiKey {
                header: header.clone(),
                key: key.clone(),
            },
            CallerAuth::Bearer {
                client_id,
                client_secret,
                scope,
            } => Credentials::Bearer(
                self.client_credentials_token(client_id, client_secret, scope)
                    .map_err(|e| format!("no access token: {e}"))?,
            ),
            CallerAuth::ClientCertificate {
                cert_file,
                key_file,
            } => Credentials::ClientCertificate {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests;
