//! Custom policy: the technical profiles of the project's journey, run as B2C runs them.

use std::collections::BTreeMap;

use serde_json::json;

use crate::mock_b2c::directory::User;
use crate::mock_b2c::policy::ProfileOutcome;
use crate::mock_b2c::types::Outcome;

use super::{Bag, Journey, Step};

/// `authenticationSource` of a local and of a social sign-in (the starter pack's values).
const LOCAL: &str = "localAccountAuthentication";
const SOCIAL: &str = "socialIdpAuthentication";

/// A social account's `alternativeSecurityId` (the issuer and the person's id there).
fn alternative_id(user: &User) -> String {
    json!({
        "issuer": user.provider.as_deref().unwrap_or_default(),
        "issuerUserId": user.provider_subject.as_deref().unwrap_or_default(),
    })
    .to_string()
}

/// A user's directory attributes by claim type, as the starter pack's directory technical
/// profiles read them: a social sign-up stored the provider's email in `otherMails`
/// (`CreateOtherMailsFromEmail`) and its identity in `alternativeSecurityIds`; a local account
/// has `signInNames.emailAddress`.
fn directory_attributes(user: &User) -> Bag {
    let mut attributes = Bag::new();
    attributes.insert("objectId".into(), json!(user.object_id));
    if let (Some(provider), Some(subject)) = (&user.provider, &user.provider_subject) {
        attributes.insert("otherMails".into(), json!([user.email]));
        attributes.insert(
            "alternativeSecurityIds".into(),
            json!([{ "issuer": provider, "issuerUserId": subject }]),
        );
    }
    if let Some(email) = &user.sign_in_email {
        attributes.insert("signInNames.emailAddress".into(), json!(email));
    }
    insert_names(&mut attributes, user);
    attributes
}

/// The user's names, as the directory and the pages hold them.
fn insert_names(bag: &mut Bag, user: &User) {
    if let Some(g) = &user.given_name {
        bag.insert("givenName".into(), json!(g));
    }
    if let Some(s) = &user.surname {
        bag.insert("surname".into(), json!(s));
    }
    if let Some(n) = user.display_name() {
        bag.insert("displayName".into(), json!(n));
    }
}

impl Journey<'_> {
    /// The claims of the sign-up page or the directory: email, names, provider.
    pub(super) fn page_bag(&self, user: &User) -> Bag {
        let mut bag = Bag::new();
        bag.insert("email".into(), json!(user.email));
        insert_names(&mut bag, user);
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

    /// The bag after a sign-in or sign-up that ran the page or the provider: what they output,
    /// the object id, and how the account signed in.
    pub(super) fn signed_in_bag(&self, user: &User) -> Bag {
        let mut bag = self.page_bag(user);
        bag.insert("objectId".into(), json!(user.object_id));
        match (&user.sign_in_email, &user.provider) {
            (_, Some(_)) => {
                // The provider's technical profile: its CreateAlternativeSecurityId output, and
                // authenticationSource as the starter pack's Facebook-OAUTH sets it when the
                // project's layers do not define the provider.
                bag.insert("alternativeSecurityId".into(), json!(alternative_id(user)));
                bag.entry("authenticationSource".into())
                    .or_insert_with(|| json!(SOCIAL));
            }
            (Some(email), None) => {
                // SelfAsserted-LocalAccountSignin-Email (or the sign-up's directory write), then
                // the journey's AAD-UserReadUsingObjectId.
                bag.insert("signInNames.emailAddress".into(), json!(email));
                bag.insert("authenticationSource".into(), json!(LOCAL));
            }
            (None, None) => {}
        }
        bag
    }

    /// The bag under single sign-on: the claims B2C's session restores (the starter pack's
    /// `SM-AAD` for a local sign-in: objectId, signInName, authenticationSource; `SM-SocialLogin`
    /// for a provider: alternativeSecurityId only), then the starter pack's directory reads of
    /// the journey (a local account's `AAD-UserReadUsingObjectId`, a social account's
    /// `AAD-UserReadUsingAlternativeSecurityId-NoError`). No provider was asked: no email,
    /// emailVerified or identityProvider from it.
    pub(super) fn session_bag(&self, user: &User) -> Bag {
        let mut bag = Bag::new();
        bag.insert("objectId".into(), json!(user.object_id));
        match &user.sign_in_email {
            Some(email) if user.provider.is_none() => {
                bag.insert("signInName".into(), json!(email));
                bag.insert("authenticationSource".into(), json!(LOCAL));
                bag.insert("signInNames.emailAddress".into(), json!(email));
            }
            _ => {
                bag.insert("alternativeSecurityId".into(), json!(alternative_id(user)));
                bag.insert("otherMails".into(), json!([user.email]));
            }
        }
        insert_names(&mut bag, user);
        bag
    }

    /// The journey's steps after the directory, as its XML says: each step whose preconditions
    /// let it run, in order; autolink's REST calls and the project's directory reads run, the
    /// starter pack's own steps are the mock's directory.
    pub(super) async fn steps_after_directory(&mut self, user: &User, bag: &mut Bag) -> Step<()> {
        let Some(policies) = self.policies.clone() else {
            return self.stop(Outcome::Error, "no policy", None);
        };
        let attributes = directory_attributes(user);
        for step in policies.steps_after_directory() {
            if step.skipped(bag) {
                continue;
            }
            for id in &step.profiles {
                if policies.is_directory_read(id) {
                    if let Err(why) = policies.read_directory(id, &attributes, bag) {
                        log::warn!("mock B2C: step {}: {why}", step.order);
                        return self.stop(Outcome::Error, &why, None);
                    }
                } else if policies.knows(id) {
                    if let Step::Stop = self.profile(id, bag, false).await {
                        return Step::Stop;
                    }
                }
            }
        }
        Step::Go(())
    }

    /// Submits a sign-up page: its validation technical profiles run in order, and the first
    /// refusal stays on the form.
    pub(super) async fn validate_page(&mut self, page: &str, bag: &mut Bag) -> Step<()> {
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
    pub(super) async fn profile(&mut self, id: &str, bag: &mut Bag, on_page: bool) -> Step<()> {
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
