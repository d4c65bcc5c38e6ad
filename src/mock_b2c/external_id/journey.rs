//! The External ID tenant's sign-up-or-sign-in user flow, as the driver runs it: email with a
//! one-time code or Google, the attribute page (given name, surname) and its submit extension,
//! the new user in the directory, the token-issuance extension, and the ID token.
//!
//! External ID has one combined flow: an address (or a Google identity) the directory knows
//! signs in, a new one signs up; `kind` is not read. Token issuance runs on both.

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::answers::{self, ExtensionError, SubmitAction};
use super::endpoints::code_policy;
use super::extension::{self, Context, Event, SignUpInfo};
use super::{ExternalId, PayloadVariant};
use crate::mock_b2c::directory::User;
use crate::mock_b2c::journey::token::issue_id_token;
use crate::mock_b2c::journey::{
    derived_subject, BadJourney, DIRECTORY_DOWN, USER_EXISTS, VERIFY_FIRST,
};
use crate::mock_b2c::keys::b64;
use crate::mock_b2c::types::{AccountKind, JourneyRequest, JourneyResult, Outcome};
use crate::mock_b2c::Tenant;

/// What the person sees when an extension call fails: Entra shows no detail (the code is only in
/// the sign-in logs) and sends the application an error.
pub const EXTENSION_FAILED: &str =
    "Something went wrong. AADSTS1100001: the custom authentication extension failed.";

/// Runs one External ID journey.
pub async fn run(tenant: &Tenant, request: JourneyRequest) -> Result<JourneyResult, BadJourney> {
    let ext = tenant.external_id.as_ref().ok_or_else(|| {
        BadJourney("the mock has no External ID tenant (the [external_id] settings)".into())
    })?;
    let app = tenant
        .settings
        .applications
        .iter()
        .find(|a| a.client_id == request.client_id)
        .ok_or_else(|| {
            BadJourney(format!(
                "no application with client id {} is registered in the tenant",
                request.client_id
            ))
        })?;
    if let Some(uri) = &request.redirect_uri {
        tenant
            .check_redirect(&request.client_id, uri)
            .map_err(BadJourney)?;
    }
    let email = request.email.trim().to_string();
    if email.is_empty() {
        return Err(BadJourney("email is required".into()));
    }
    let federated = match request.account {
        AccountKind::Local => None,
        AccountKind::Social => {
            let name = request
                .provider
                .clone()
                .unwrap_or_else(|| "google.com".into());
            if !tenant.settings.providers.iter().any(|p| p.name == name) {
                return Err(BadJourney(format!("unknown identity provider {name}")));
            }
            let subject = request
                .provider_subject
                .clone()
                .unwrap_or_else(|| derived_subject(&name, &email));
            Some((name, subject))
        }
    };
    let context = Context {
        correlation_id: uuid::Uuid::new_v4().to_string(),
        client_id: app.client_id.clone(),
        client_name: app.name.clone().unwrap_or_else(|| app.client_id.clone()),
        locale: request
            .ui_locales
            .clone()
            .unwrap_or_else(|| "en-us".into())
            .to_lowercase(),
    };
    let info = SignUpInfo {
        email,
        given_name: request.given_name.clone(),
        surname: request.surname.clone(),
        federated,
    };
    let mut journey = Journey {
        tenant,
        ext,
        variant: request.payload.unwrap_or(ext.settings.payload),
        request: &request,
        context,
        result: JourneyResult::new(Outcome::Error),
    };
    journey.run(info).await;
    Ok(journey.result)
}

/// Where the sign-up stands after the submit extension.
pub enum Submitted {
    /// Go on with these (possibly overwritten) page values.
    Continue(SignUpInfo),
    /// The form again, with the messages.
    Form {
        message: Option<String>,
        attribute_errors: Map<String, Value>,
    },
    /// The journey is over (block page or error), `result` says how.
    Ended,
}

pub(crate) struct Journey<'a> {
    pub tenant: &'a Tenant,
    pub ext: &'a ExternalId,
    pub variant: PayloadVariant,
    pub request: &'a JourneyRequest,
    pub context: Context,
    pub result: JourneyResult,
}

impl Journey<'_> {
    fn tenant_id(&self) -> &str {
        &self.ext.settings.tenant_id
    }

    async fn run(&mut self, info: SignUpInfo) {
        if info.federated.is_none() && !self.request.complete_email_verification {
            // The code page: without the code the flow goes no further.
            self.end(Outcome::ValidationError, VERIFY_FIRST);
            return;
        }
        if let Some(user) = self.existing(&info) {
            self.result.object_id = Some(user.object_id.clone());
            self.token_issuance(&user).await;
            return;
        }
        match self.submit(info).await {
            Submitted::Continue(info) => {
                if let Some(user) = self.create(&info) {
                    self.token_issuance(&user).await;
                }
            }
            Submitted::Form {
                message,
                attribute_errors,
            } => {
                self.result.outcome = Outcome::ValidationError;
                self.result.message = message;
                self.result.attribute_errors = Some(attribute_errors);
            }
            Submitted::Ended => {}
        }
    }

    /// The directory's user for this sign-in, if the tenant has one.
    pub fn existing(&self, info: &SignUpInfo) -> Option<User> {
        let tid = Some(self.tenant_id());
        match &info.federated {
            Some((provider, subject)) => self.tenant.directory.social_in(tid, provider, subject),
            None => self.tenant.directory.local_in(tid, &info.email),
        }
    }

    fn end(&mut self, outcome: Outcome, message: &str) {
        self.result.outcome = outcome;
        self.result.message = Some(message.to_string());
    }

    fn failed(&mut self, error: ExtensionError) {
        log::info!(
            "mock External ID: the extension call failed: {} {} ({})",
            error.code,
            error.name,
            error.detail
        );
        self.end(Outcome::Error, EXTENSION_FAILED);
        self.result.extension_error = Some(error);
    }

    /// The attribute page was submitted: calls the submit extension and reads its answer.
    pub async fn submit(&mut self, mut info: SignUpInfo) -> Submitted {
        let payload = extension::submit_payload(self.ext, &self.variant, &self.context, &info);
        let url = self.ext.submit_url(&self.tenant.service_url());
        let answer = self
            .ext
            .call(
                &self.tenant.key,
                Event::AttributeCollectionSubmit,
                &url,
                payload,
                &mut self.result.calls,
            )
            .await;
        match answers::read_submit(answer) {
            Ok(SubmitAction::Continue { attributes }) => {
                // modifyAttributeValues overwrites values on the form only.
                if let Some(v) = attributes.get("givenName").and_then(Value::as_str) {
                    info.given_name = Some(v.to_string());
                }
                if let Some(v) = attributes.get("surname").and_then(Value::as_str) {
                    info.surname = Some(v.to_string());
                }
                Submitted::Continue(info)
            }
            Ok(SubmitAction::ValidationError {
                message,
                attribute_errors,
            }) => Submitted::Form {
                message,
                attribute_errors,
            },
            Ok(SubmitAction::BlockPage { title, message }) => {
                self.end(Outcome::BlockPage, &message);
                self.result.title = title;
                Submitted::Ended
            }
            Err(error) => {
                self.failed(error);
                Submitted::Ended
            }
        }
    }

    /// Writes the new user with a new object id; `None` when the journey ended.
    pub fn create(&mut self, info: &SignUpInfo) -> Option<User> {
        let user = User {
            object_id: uuid::Uuid::new_v4().to_string(),
            sign_in_email: info.federated.is_none().then(|| info.email.clone()),
            password_hash: None,
            provider: info.federated.as_ref().map(|f| f.0.clone()),
            provider_subject: info.federated.as_ref().map(|f| f.1.clone()),
            email: info.email.clone(),
            email_verified: None,
            given_name: info.given_name.clone(),
            surname: info.surname.clone(),
            external_tenant: Some(self.tenant_id().to_string()),
        };
        match self.tenant.directory.create(user) {
            Ok(Some(user)) => {
                self.result.account_created = true;
                self.result.object_id = Some(user.object_id.clone());
                Some(user)
            }
            Ok(None) => {
                self.end(Outcome::ValidationError, USER_EXISTS);
                None
            }
            Err(error) => {
                log::warn!("mock External ID: {error}");
                self.end(Outcome::Error, DIRECTORY_DOWN);
                None
            }
        }
    }

    /// Calls the token-issuance extension, then issues the ID token with the mapped claims.
    pub async fn token_issuance(&mut self, user: &User) {
        let mut context = self.context.clone();
        if !self.variant.share_correlation_id {
            context.correlation_id = uuid::Uuid::new_v4().to_string();
        }
        let payload = extension::token_issuance_payload(self.ext, &context, user);
        let url = self.ext.token_issuance_url(&self.tenant.service_url());
        let answer = self
            .ext
            .call(
                &self.tenant.key,
                Event::TokenIssuanceStart,
                &url,
                payload,
                &mut self.result.calls,
            )
            .await;
        let provided = match answers::read_token_issuance(answer) {
            Ok(claims) => claims,
            Err(error) => return self.failed(error),
        };
        // autolink's refusal at this step: no claim for the token, but the driver shows it.
        if let Some(code) = provided.get("autoLinkError").and_then(Value::as_str) {
            self.result.code = Some(code.to_string());
        }
        let mut claims = self.id_token_claims(user);
        for name in &self.ext.settings.token_claims {
            if let Some(value) = provided.get(name) {
                claims.insert(name.clone(), value.clone());
            }
        }
        self.issue(claims);
    }

    /// The ID token's own claims: issuer, audience, the user (`sub` is pairwise per
    /// application, as Entra's v2.0 tokens have it; `oid` is the object id).
    fn id_token_claims(&self, user: &User) -> Map<String, Value> {
        let now = chrono::Utc::now().timestamp();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.ext.issuer()));
        claims.insert("aud".into(), json!(self.request.client_id));
        let pairwise = Sha256::digest(format!(
            "{}\n{}\n{}",
            self.tenant_id(),
            self.request.client_id,
            user.object_id
        ));
        claims.insert("sub".into(), json!(b64(&pairwise)));
        claims.insert("oid".into(), json!(user.object_id));
        claims.insert("tid".into(), json!(self.tenant_id()));
        claims.insert("ver".into(), json!("2.0"));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now + 3600));
        claims.insert("email".into(), json!(user.email));
        claims.insert("preferred_username".into(), json!(user.email));
        if let Some(name) = user.display_name() {
            claims.insert("name".into(), json!(name));
        }
        if let Some(g) = &user.given_name {
            claims.insert("given_name".into(), json!(g));
        }
        if let Some(s) = &user.surname {
            claims.insert("family_name".into(), json!(s));
        }
        if let Some(provider) = &user.provider {
            claims.insert("idp".into(), json!(provider));
        }
        if let Some(nonce) = &self.request.nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        claims
    }

    fn issue(&mut self, claims: Map<String, Value>) {
        let policy = code_policy(self.tenant_id());
        let (tenant, request) = (self.tenant, self.request);
        issue_id_token(tenant, request, &mut self.result, &policy, false, claims);
    }
}
