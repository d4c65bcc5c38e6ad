//! Journeys: what B2C does between the sign-up or sign-in page and the token, with the calls to
//! the service at the points B2C makes them.
//!
//! A user flow (`B2C_1_...`) calls the API connector at its three steps and reads the answers as
//! B2C does: continue, block page, validation error; anything else is B2C's error page. The custom
//! policy (`B2C_1A_...`) runs the project's journey `AutolinkSignUpOrSignIn`: its REST technical
//! profiles (URL, authentication, input and output claims with their partner names) are read from
//! the policy files, so a policy and a service that disagree fail here as they would in B2C.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::caller::{Answer, Credentials, NoAnswer, Payload};
use super::config::CallerAuth;
use super::directory::User;
use super::policy::{PolicySet, ProfileOutcome, LOCAL_SIGN_UP_PAGE, SOCIAL_SIGN_UP_PAGE};
use super::types::{AccountKind, JourneyKind, JourneyRequest, JourneyResult, Outcome};
use super::Tenant;

/// The password a journey uses when the request names none.
pub const DEFAULT_PASSWORD: &str = "Passw0rd!";
/// B2C's message when a sign-up names an existing account.
pub const USER_EXISTS: &str =
    "A user with the specified ID already exists. Please choose a different one.";
/// B2C's message when a local sign-in names no account.
pub const NO_ACCOUNT: &str = "We can't seem to find your account.";
/// B2C's message for a wrong password.
pub const WRONG_PASSWORD: &str = "Your password is incorrect.";
/// The sign-up page's message when the email was not verified.
pub const VERIFY_FIRST: &str = "Please verify your email address before you continue.";
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
fn derived_subject(provider: &str, email: &str) -> String {
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
        let _ = match (self.request.kind, self.request.account) {
            (JourneyKind::SignUp, AccountKind::Local) => self.local_sign_up().await,
            (JourneyKind::SignIn, AccountKind::Local) => self.local_sign_in().await,
            // The sign-up-or-sign-in policy decides by the directory: a known social identity
            // signs in, a new one signs up.
            (_, AccountKind::Social) => self.social().await,
        };
    }

    // -----------------------------------------------------------------------------------------
    // Local accounts
    // -----------------------------------------------------------------------------------------

    async fn local_sign_up(&mut self) -> Step<()> {
        if self.tenant.settings.local_email_verification
            && !self.request.complete_email_verification
        {
            return self.stop(Outcome::ValidationError, VERIFY_FIRST, None);
        }
        let email = self.request.email.trim().to_string();
        let user = User {
            object_id: uuid::Uuid::new_v4().to_string(),
            sign_in_email: Some(email.clone()),
            password: Some(self.password()),
            provider: None,
            provider_subject: None,
            email: email.clone(),
            email_verified: None,
            given_name: self.request.given_name.clone(),
            surname: self.request.surname.clone(),
        };
        let user = match self.before_local_write(user).await {
            Step::Go(user) => user,
            Step::Stop => return Step::Stop,
        };
        let user = match self.tenant.directory.create(user) {
            Some(user) => user,
            None => return self.stop(Outcome::ValidationError, USER_EXISTS, None),
        };
        self.result.account_created = true;
        self.result.object_id = Some(user.object_id.clone());
        self.before_token(&user).await
    }

    async fn local_sign_in(&mut self) -> Step<()> {
        let Some(user) = self.tenant.directory.local(&self.request.email) else {
            return self.stop(Outcome::ValidationError, NO_ACCOUNT, None);
        };
        if user.password.as_deref() != Some(self.password().as_str()) {
            return self.stop(Outcome::ValidationError, WRONG_PASSWORD, None);
        }
        self.result.object_id = Some(user.object_id.clone());
        self.before_token(&user).await
    }

    fn password(&self) -> String {
        self.request
            .password
            .clone()
            .unwrap_or_else(|| DEFAULT_PASSWORD.into())
    }

    /// The checks on the local sign-up page, before the directory write.
    async fn before_local_write(&mut self, mut user: User) -> Step<User> {
        match self.mode() {
            Mode::UserFlow => {
                let body = self.connector_body("PostAttributeCollection", &user, None);
                match self.connector("PostAttributeCollection", body).await {
                    Step::Go(claims) => {
                        apply_attribute_overrides(&mut user, &claims);
                        Step::Go(user)
                    }
                    Step::Stop => Step::Stop,
                }
            }
            Mode::CustomPolicy => {
                let mut bag = self.page_bag(&user);
                match self.validate_page(LOCAL_SIGN_UP_PAGE, &mut bag).await {
                    Step::Go(()) => Step::Go(user),
                    Step::Stop => Step::Stop,
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Social accounts
    // -----------------------------------------------------------------------------------------

    async fn social(&mut self) -> Step<()> {
        let (name, subject, verified) = match &self.provider {
            Some(p) => (p.name.clone(), p.subject.clone(), p.email_verified),
            None => return self.stop(Outcome::Error, "no identity provider", None),
        };
        if let Some(user) = self.tenant.directory.social(&name, &subject) {
            // Sign-in: the provider answered again, with what it says today.
            let mut user = user;
            user.email_verified = verified;
            self.result.object_id = Some(user.object_id.clone());
            return self.before_token(&user).await;
        }
        let email = self.request.email.trim().to_string();
        let mut user = User {
            object_id: uuid::Uuid::new_v4().to_string(),
            sign_in_email: None,
            password: None,
            provider: Some(name),
            provider_subject: Some(subject),
            email,
            email_verified: verified,
            given_name: self.request.given_name.clone(),
            surname: self.request.surname.clone(),
        };
        match self.mode() {
            Mode::UserFlow => {
                // After the provider returns, before the attribute page.
                let body = self.connector_body("PostFederationSignup", &user, None);
                match self.connector("PostFederationSignup", body).await {
                    Step::Go(claims) => apply_attribute_overrides(&mut user, &claims),
                    Step::Stop => return Step::Stop,
                }
                // The attribute page, submitted.
                let body = self.connector_body("PostAttributeCollection", &user, None);
                match self.connector("PostAttributeCollection", body).await {
                    Step::Go(claims) => apply_attribute_overrides(&mut user, &claims),
                    Step::Stop => return Step::Stop,
                }
            }
            Mode::CustomPolicy => {
                let mut bag = self.page_bag(&user);
                if let Step::Stop = self.validate_page(SOCIAL_SIGN_UP_PAGE, &mut bag).await {
                    return Step::Stop;
                }
            }
        }
        let user = match self.tenant.directory.create(user) {
            Some(user) => user,
            None => return self.stop(Outcome::ValidationError, USER_EXISTS, None),
        };
        self.result.account_created = true;
        self.result.object_id = Some(user.object_id.clone());
        self.before_token(&user).await
    }

    // -----------------------------------------------------------------------------------------
    // After the directory: link, then the token
    // -----------------------------------------------------------------------------------------

    fn mode(&self) -> Mode {
        if self.policies.is_some() {
            Mode::CustomPolicy
        } else {
            Mode::UserFlow
        }
    }

    async fn before_token(&mut self, user: &User) -> Step<()> {
        match self.mode() {
            Mode::UserFlow => {
                let body = self.connector_body("PreTokenIssuance", user, Some(&user.object_id));
                let claims = match self.connector("PreTokenIssuance", body).await {
                    Step::Go(claims) => claims,
                    Step::Stop => return Step::Stop,
                };
                let mut token = self.user_flow_token_claims(user);
                for (name, value) in claims {
                    if name.starts_with("extension_") {
                        token.insert(name, value);
                    }
                }
                self.issue(token);
                Step::Go(())
            }
            Mode::CustomPolicy => {
                let mut bag = self.page_bag(user);
                bag.insert("objectId".into(), json!(user.object_id));
                if let Some(email) = &user.sign_in_email {
                    bag.insert("signInNames.emailAddress".into(), json!(email));
                }
                if let Step::Stop = self
                    .profile("Autolink-AcquireCredentials", &mut bag, false)
                    .await
                {
                    return Step::Stop;
                }
                let link = if user.provider.is_some() {
                    "REST-Autolink-Link-Social"
                } else {
                    "REST-Autolink-Link-Local"
                };
                if let Step::Stop = self.profile(link, &mut bag, false).await {
                    return Step::Stop;
                }
                let token = match self
                    .policies
                    .as_ref()
                    .map(|p| p.token_claims(&bag, self.tenant.settings.tenant_id.as_str()))
                {
                    Some(claims) => claims,
                    None => return self.stop(Outcome::Error, "no policy", None),
                };
                let mut token = token;
                self.standard_claims(&mut token);
                self.issue(token);
                Step::Go(())
            }
        }
    }

    fn user_flow_token_claims(&self, user: &User) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(user.object_id));
        claims.insert("oid".into(), json!(user.object_id));
        claims.insert("emails".into(), json!([user.email]));
        if let Some(provider) = &user.provider {
            claims.insert("idp".into(), json!(provider));
        }
        if let Some(name) = user.display_name() {
            claims.insert("name".into(), json!(name));
        }
        if let Some(g) = &user.given_name {
            claims.insert("given_name".into(), json!(g));
        }
        if let Some(s) = &user.surname {
            claims.insert("family_name".into(), json!(s));
        }
        self.standard_claims(&mut claims);
        claims
    }

    /// What every B2C ID token carries.
    fn standard_claims(&self, claims: &mut Map<String, Value>) {
        let now = chrono::Utc::now().timestamp();
        claims.insert("iss".into(), json!(self.tenant.issuer()));
        claims.insert("aud".into(), json!(self.request.client_id));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now + 3600));
        claims.insert("auth_time".into(), json!(now));
        claims.insert("ver".into(), json!("1.0"));
        claims.insert("tfp".into(), json!(self.policy));
        if let Some(nonce) = &self.request.nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
    }

    fn issue(&mut self, claims: Map<String, Value>) {
        let token = self.tenant.key.sign(&claims);
        if let Some(uri) = &self.request.redirect_uri {
            // A driver journey's code is redeemed as if the application had asked for its own
            // scope too: the token response carries an access token.
            let code = self.tenant.remember_code(
                &self.request.client_id,
                uri,
                self.policy,
                &token,
                None,
                true,
            );
            let mut redirect = format!(
                "{uri}{}code={}",
                if uri.contains('?') { '&' } else { '?' },
                urlencode(&code)
            );
            if let Some(state) = &self.request.state {
                redirect.push_str(&format!("&state={}", urlencode(state)));
            }
            self.result.code_grant = Some(code);
            self.result.redirect = Some(redirect);
        }
        self.result.outcome = Outcome::Token;
        self.result.id_token = Some(token);
        self.result.claims = Some(claims);
    }

    // -----------------------------------------------------------------------------------------
    // User flows: the API connector
    // -----------------------------------------------------------------------------------------

    /// The request body B2C sends at `step` (claims without a value are left out).
    fn connector_body(&self, step: &str, user: &User, object_id: Option<&str>) -> Value {
        let mut body = Map::new();
        body.insert("email".into(), json!(user.email));
        // A local account that does not exist yet has no identities; later it signs in with
        // its email, and a social account always has its provider's identity.
        let identities = match (&user.provider, &user.provider_subject, object_id) {
            (Some(p), Some(s), _) => Some(json!([{
                "signInType": "federated",
                "issuer": p,
                "issuerAssignedId": s,
            }])),
            (None, _, Some(_)) => user.sign_in_email.as_ref().map(|e| {
                json!([{
                    "signInType": "emailAddress",
                    "issuer": self.tenant.settings.tenant,
                    "issuerAssignedId": e,
                }])
            }),
            _ => None,
        };
        if let Some(identities) = identities {
            body.insert("identities".into(), identities);
        }
        if let Some(name) = user.display_name() {
            body.insert("displayName".into(), json!(name));
        }
        if let Some(g) = &user.given_name {
            body.insert("givenName".into(), json!(g));
        }
        if let Some(s) = &user.surname {
            body.insert("surname".into(), json!(s));
        }
        if let Some(id) = object_id {
            body.insert("objectId".into(), json!(id));
        }
        body.insert("step".into(), json!(step));
        body.insert("client_id".into(), json!(self.request.client_id));
        body.insert("ui_locales".into(), json!(self.ui_locales()));
        Value::Object(body)
    }

    /// Calls the API connector and reads its answer as B2C does at `step`.
    async fn connector(&mut self, step: &str, body: Value) -> Step<Map<String, Value>> {
        let url = format!("{}/b2c/api-connector", self.tenant.service_url());
        let credentials = match self
            .tenant
            .credentials(&self.tenant.settings.connector_auth)
            .await
        {
            Ok(c) => c,
            Err(e) => return self.stop(Outcome::Error, &e, None).map_never(),
        };
        let answer = self
            .tenant
            .user_flow_caller
            .post(
                "api-connector",
                Some(step),
                &url,
                &Payload::Json(body),
                &credentials,
                &mut self.result.calls,
            )
            .await;
        match read_connector_answer(step, answer) {
            ConnectorAnswer::Continue(claims) => Step::Go(claims),
            ConnectorAnswer::Block { message, code } => {
                self.stop(Outcome::BlockPage, &message, code).map_never()
            }
            ConnectorAnswer::Validation { message, code } => self
                .stop(Outcome::ValidationError, &message, code)
                .map_never(),
            ConnectorAnswer::Invalid(why) => {
                self.stop(Outcome::Error, CONNECTOR_FAILED, None);
                self.result.message = Some(format!("{CONNECTOR_FAILED} ({why})"));
                Step::Stop
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Custom policy: technical profiles
    // -----------------------------------------------------------------------------------------

    /// The claims of the sign-up page or the directory: email, names, provider.
    fn page_bag(&self, user: &User) -> Bag {
        let mut bag = Bag::new();
        bag.insert("email".into(), json!(user.email));
        if let Some(g) = &user.given_name {
            bag.insert("givenName".into(), json!(g));
        }
        if let Some(s) = &user.surname {
            bag.insert("surname".into(), json!(s));
        }
        if let Some(n) = user.display_name() {
            bag.insert("displayName".into(), json!(n));
        }
        if let Some(p) = &user.provider {
            // What the provider's technical profile maps (see PolicySet::provider_claims).
            if let Some(policies) = &self.policies {
                for (claim, value) in policies.provider_claims(
                    p,
                    user.provider_subject.as_deref().unwrap_or_default(),
                    &user.email,
                    user.email_verified,
                    user.given_name.as_deref(),
                    user.surname.as_deref(),
                ) {
                    bag.insert(claim, value);
                }
            }
        }
        bag
    }

    /// Submits a sign-up page: its validation technical profiles run in order, and the first
    /// refusal stays on the form.
    async fn validate_page(&mut self, page: &str, bag: &mut Bag) -> Step<()> {
        let list = self
            .policies
            .as_ref()
            .map(|p| p.validations(page))
            .unwrap_or_default();
        for id in list {
            if let Step::Stop = self.profile(&id, bag, true).await {
                return Step::Stop;
            }
        }
        Step::Go(())
    }

    /// Runs a technical profile. `on_page`: a validation profile, whose refusal stays on the
    /// form; otherwise a journey step, whose refusal ends the journey with an error.
    async fn profile(&mut self, id: &str, bag: &mut Bag, on_page: bool) -> Step<()> {
        let Some(policies) = self.policies.as_ref() else {
            return self.stop(Outcome::Error, "no policy", None);
        };
        let context = self.resolver_context();
        let outcome = policies
            .run(id, bag, &context, self.tenant, &mut self.result.calls)
            .await;
        match outcome {
            ProfileOutcome::Done => Step::Go(()),
            ProfileOutcome::Refused { message, code } => {
                let outcome = if on_page {
                    Outcome::ValidationError
                } else {
                    Outcome::Error
                };
                self.stop(outcome, &message, code)
            }
            ProfileOutcome::Failed { message } => self.stop(Outcome::Error, &message, None),
        }
    }

    fn resolver_context(&self) -> BTreeMap<&'static str, String> {
        let mut context = BTreeMap::new();
        context.insert("OIDC:ClientId", self.request.client_id.clone());
        context.insert("Culture:RFC5646", self.ui_locales());
        context.insert("Policy:PolicyId", self.policy.to_string());
        context.insert(
            "Policy:TenantObjectId",
            self.tenant.settings.tenant_id.clone(),
        );
        context
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

/// How B2C reads an API connector's answer.
#[derive(Debug, PartialEq)]
pub enum ConnectorAnswer {
    Continue(Map<String, Value>),
    Block {
        message: String,
        code: Option<String>,
    },
    Validation {
        message: String,
        code: Option<String>,
    },
    /// Not an answer B2C accepts at this step: its error page.
    Invalid(String),
}

/// Reads an answer as B2C does: `version` 1.0.0; continue and block with HTTP 200; a
/// validation error with HTTP 400 and `status` 400 (number or string), only after attribute
/// collection; a block page not at the token step.
pub fn read_connector_answer(step: &str, answer: Result<Answer, NoAnswer>) -> ConnectorAnswer {
    let answer = match answer {
        Ok(answer) => answer,
        Err(no) => return ConnectorAnswer::Invalid(no.message),
    };
    let Some(Value::Object(body)) = answer.json else {
        return ConnectorAnswer::Invalid(format!("HTTP {} without a JSON object", answer.status));
    };
    if body.get("version").and_then(Value::as_str) != Some("1.0.0") {
        return ConnectorAnswer::Invalid(format!(
            "HTTP {}: version is not \"1.0.0\"",
            answer.status
        ));
    }
    let message = body
        .get("userMessage")
        .and_then(Value::as_str)
        .map(str::to_string);
    let code = body.get("code").and_then(Value::as_str).map(str::to_string);
    let action = body.get("action").and_then(Value::as_str).unwrap_or("");
    let token_step = matches!(step, "PreTokenIssuance" | "PreTokenApplicationClaims");
    match (answer.status, action) {
        (200, "Continue") => {
            let mut claims = body.clone();
            claims.remove("version");
            claims.remove("action");
            if let Some((name, _)) = claims.iter().find(|(_, v)| v.is_null()) {
                return ConnectorAnswer::Invalid(format!("claim {name} is null"));
            }
            ConnectorAnswer::Continue(claims)
        }
        (200, "ShowBlockPage") if !token_step => match message {
            Some(message) if !message.is_empty() => ConnectorAnswer::Block { message, code },
            _ => ConnectorAnswer::Invalid("a block page without userMessage".into()),
        },
        (400, "ValidationError") if step == "PostAttributeCollection" => {
            let status_ok = match body.get("status") {
                Some(Value::Number(n)) => n.as_u64() == Some(400),
                Some(Value::String(s)) => s == "400",
                _ => false,
            };
            match message {
                Some(message) if status_ok && !message.is_empty() => {
                    ConnectorAnswer::Validation { message, code }
                }
                _ => ConnectorAnswer::Invalid(
                    "a validation error needs status 400 and a userMessage".into(),
                ),
            }
        }
        (status, action) => ConnectorAnswer::Invalid(format!(
            "HTTP {status} with action {action:?} is not allowed at {step}"
        )),
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
mod tests {
    use super::*;

    fn answer(status: u16, body: Value) -> Result<Answer, NoAnswer> {
        Ok(Answer {
            status,
            json: Some(body),
        })
    }

    #[test]
    fn continue_answers_carry_their_claims() {
        let got = read_connector_answer(
            "PreTokenIssuance",
            answer(
                200,
                json!({"version":"1.0.0","action":"Continue","extension_CustomerAccountNumber":"C1"}),
            ),
        );
        let ConnectorAnswer::Continue(claims) = got else {
            panic!("{got:?}")
        };
        assert_eq!(claims["extension_CustomerAccountNumber"], "C1");
        assert!(!claims.contains_key("version"));
    }

    #[test]
    fn a_block_page_is_not_accepted_at_the_token_step() {
        let body = json!({"version":"1.0.0","action":"ShowBlockPage","userMessage":"no"});
        assert!(matches!(
            read_connector_answer("PostFederationSignup", answer(200, body.clone())),
            ConnectorAnswer::Block { .. }
        ));
        assert!(matches!(
            read_connector_answer("PreTokenIssuance", answer(200, body)),
            ConnectorAnswer::Invalid(_)
        ));
    }

    #[test]
    fn validation_errors_need_http_400_status_400_and_the_right_step() {
        let good = json!({"version":"1.0.0","status":400,"action":"ValidationError","userMessage":"fix it"});
        let string_status = json!({"version":"1.0.0","status":"400","action":"ValidationError","userMessage":"fix it"});
        let no_status =
            json!({"version":"1.0.0","action":"ValidationError","userMessage":"fix it"});
        assert!(matches!(
            read_connector_answer("PostAttributeCollection", answer(400, good.clone())),
            ConnectorAnswer::Validation { .. }
        ));
        assert!(matches!(
            read_connector_answer("PostAttributeCollection", answer(400, string_status)),
            ConnectorAnswer::Validation { .. }
        ));
        for (step, status, body) in [
            ("PostAttributeCollection", 200, good.clone()),
            ("PostFederationSignup", 400, good.clone()),
            ("PreTokenIssuance", 400, good),
            ("PostAttributeCollection", 400, no_status),
        ] {
            assert!(
                matches!(
                    read_connector_answer(step, answer(status, body.clone())),
                    ConnectorAnswer::Invalid(_)
                ),
                "{step} {status} {body}"
            );
        }
    }

    #[test]
    fn wrong_versions_nulls_and_non_json_are_invalid() {
        for body in [
            json!({"version":"1.0","action":"Continue"}),
            json!({"action":"Continue"}),
            json!({"version":"1.0.0","action":"Continue","extension_X":null}),
            json!({"version":"1.0.0","action":"Proceed"}),
            json!(["not an object"]),
        ] {
            assert!(
                matches!(
                    read_connector_answer("PreTokenIssuance", answer(200, body.clone())),
                    ConnectorAnswer::Invalid(_)
                ),
                "{body}"
            );
        }
        assert!(matches!(
            read_connector_answer(
                "PreTokenIssuance",
                Ok(Answer {
                    status: 200,
                    json: None
                })
            ),
            ConnectorAnswer::Invalid(_)
        ));
        assert!(matches!(
            read_connector_answer(
                "PreTokenIssuance",
                answer(500, json!({"version":"1.0.0","action":"Continue"}))
            ),
            ConnectorAnswer::Invalid(_)
        ));
    }

    #[test]
    fn derived_subjects_are_stable_per_provider_and_address() {
        assert_eq!(
            derived_subject("google.com", "A@x.com"),
            derived_subject("google.com", " a@x.com ")
        );
        assert_ne!(
            derived_subject("google.com", "a@x.com"),
            derived_subject("facebook.com", "a@x.com")
        );
    }
}
