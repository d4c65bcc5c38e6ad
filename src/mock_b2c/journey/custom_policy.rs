//! Custom policy: the technical profiles of the project's journey, run as B2C runs them.

use std::collections::BTreeMap;

use serde_json::json;

use crate::mock_b2c::directory::User;
use crate::mock_b2c::policy::ProfileOutcome;
use crate::mock_b2c::types::Outcome;

use super::{Bag, Journey, Step};

impl Journey<'_> {
    /// The claims of the sign-up page or the directory: email, names, provider.
    pub(super) fn page_bag(&self, user: &User) -> Bag {
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
