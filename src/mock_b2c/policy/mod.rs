//! Custom-policy mode: the project's policy files, rendered for an environment, and the RESTful
//! technical profiles run from what they say (service URL, `SendClaimsIn`, authentication type and
//! keys, input claims with defaults and claim resolvers, output claims with partner names).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::policies::{self, AppSettings, Chain, PolicyFile, TechnicalProfile};

use super::config::CustomPolicySettings;

mod journey;
mod rest_call;

pub use journey::JourneyStep;

/// The journey's orchestration steps that call out (`AutolinkSignUpOrSignIn`, steps 6, 9, 11).
pub const STEP_PROFILES: [&str; 3] = [
    "Autolink-AcquireCredentials",
    "REST-Autolink-Link-Local",
    "REST-Autolink-Link-Social",
];

/// The sign-up pages whose validation technical profiles run when the form is submitted.
pub const LOCAL_SIGN_UP_PAGE: &str = "LocalAccountSignUpWithLogonEmail";
pub const SOCIAL_SIGN_UP_PAGE: &str = "SelfAsserted-Social";

/// The relying party's technical profile: what goes into the token.
pub const RELYING_PARTY_PROFILE: &str = "PolicyProfile";

/// B2C's message when a REST call fails and the profile names none.
const REQUEST_FAILED: &str = "There was an error while processing your request.";

/// The claims' names in an OpenID Connect token when the relying party gives no partner claim
/// type (the starter pack's `DefaultPartnerClaimTypes` for the OpenIdConnect protocol).
const OIDC_NAMES: [(&str, &str); 7] = [
    ("displayName", "name"),
    ("givenName", "given_name"),
    ("surname", "family_name"),
    ("email", "email"),
    ("identityProvider", "idp"),
    ("tenantId", "tid"),
    ("objectId", "oid"),
];

/// What a technical profile ended with.
#[derive(Debug)]
pub enum ProfileOutcome {
    Done,
    /// HTTP 409 with a valid error body.
    Refused {
        message: String,
        code: Option<String>,
    },
    /// No answer, or one B2C does not accept.
    Failed {
        message: String,
    },
}

/// The rendered chain and the profiles the journey uses.
pub struct PolicySet {
    chain: Chain,
    profiles: BTreeMap<String, TechnicalProfile>,
    /// The validation technical profiles of each sign-up page, in order.
    validations: BTreeMap<String, Vec<String>>,
    relying_party: TechnicalProfile,
    settings: CustomPolicySettings,
    /// The relying party's journey, in order.
    steps: Vec<JourneyStep>,
    /// The claims transformations of the project's layers.
    transformations: BTreeMap<String, journey::Transformation>,
}

impl PolicySet {
    /// Renders the policy files for the environment, with the service's URL and the mock's own
    /// token endpoint in place of the environment's, and reads the profiles.
    pub fn load(
        settings: &CustomPolicySettings,
        service_url: &str,
        token_endpoint: &str,
    ) -> Result<PolicySet, String> {
        let dir = &settings.dir;
        let app_settings =
            AppSettings::load(&dir.join(policies::APP_SETTINGS_FILE)).map_err(|e| e.to_string())?;
        let mut env = app_settings
            .environment(
                &dir.join(policies::APP_SETTINGS_FILE),
                &settings.environment,
            )
            .map_err(|e| e.to_string())?
            .clone();
        env.policy_settings.insert(
            "AutolinkServiceUrl".into(),
            Value::String(service_url.trim_end_matches('/').to_string()),
        );
        env.policy_settings.insert(
            "AutolinkTokenEndpoint".into(),
            Value::String(token_endpoint.to_string()),
        );
        let names = [
            format!("AutolinkRestAuth.{}.xml", settings.rest_auth),
            "AutolinkExtensions.xml".to_string(),
            "AutolinkSignUpOrSignin.xml".to_string(),
        ];
        let mut files = Vec::new();
        for name in &names {
            let path = dir.join(name);
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let rendered = policies::render_text(&path, &text, &env).map_err(|e| e.to_string())?;
            files.push(PolicyFile::parse(&path, rendered).map_err(|e| e.to_string())?);
        }
        let chain = Chain::above_missing_base(files).map_err(|e| e.to_string())?;
        let mut validations = BTreeMap::new();
        let mut needed: Vec<String> = STEP_PROFILES.iter().map(|s| s.to_string()).collect();
        for page in [LOCAL_SIGN_UP_PAGE, SOCIAL_SIGN_UP_PAGE] {
            // The project's layers add their validation profiles to the starter pack's pages;
            // the starter pack's own (the directory write) are the mock's directory.
            let list = chain
                .technical_profile(page)
                .map_err(|e| e.to_string())?
                .map(|tp| tp.validation_technical_profiles)
                .unwrap_or_default();
            needed.extend(list.iter().cloned());
            validations.insert(page.to_string(), list);
        }
        let steps = journey::relying_party_journey(&chain)?;
        // The directory reads the project's layers define in the journey (the starter pack's
        // own are the mock's directory). Their include (AAD-Common, the directory's protocol) is
        // in the starter pack, so they are read as their own definitions say.
        let mut profiles = BTreeMap::new();
        for step in &steps {
            for id in &step.profiles {
                let own = chain.own_technical_profile(id).map_err(|e| e.to_string())?;
                if let Some(tp) = own.filter(|tp| tp.metadata("Operation") == Some("Read")) {
                    profiles.insert(id.clone(), tp);
                }
            }
        }
        let transformations = journey::transformations(&chain)?;
        for id in &needed {
            let id = id.as_str();
            let profile = chain
                .technical_profile(id)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("the policies define no technical profile {id}"))?;
            profiles.insert(id.to_string(), profile);
        }
        let relying_party = chain
            .technical_profile(RELYING_PARTY_PROFILE)
            .map_err(|e| e.to_string())?
            .ok_or("the policies have no relying party technical profile PolicyProfile")?;
        Ok(PolicySet {
            chain,
            profiles,
            validations,
            relying_party,
            settings: settings.clone(),
            steps,
            transformations,
        })
    }

    /// The journey's steps from autolink's credentials step on (after the sign-in or sign-up
    /// and the directory), in order, without the token step.
    pub fn steps_after_directory(&self) -> Vec<JourneyStep> {
        self.steps
            .iter()
            .skip_while(|s| !s.profiles.iter().any(|p| p == STEP_PROFILES[0]))
            .filter(|s| !s.profiles.is_empty())
            .cloned()
            .collect()
    }

    /// Whether the mock knows technical profile `id` (it runs it when its step runs).
    pub fn knows(&self, id: &str) -> bool {
        self.profiles.contains_key(id)
    }

    /// Whether `id` is a directory read of the project's layers.
    pub fn is_directory_read(&self, id: &str) -> bool {
        self.profiles
            .get(id)
            .is_some_and(|tp| tp.metadata("Operation") == Some("Read"))
    }

    /// Runs directory read `id`: its output claims from the user's directory attributes (by
    /// claim type), then its output claims transformations.
    pub fn read_directory(
        &self,
        id: &str,
        attributes: &BTreeMap<String, Value>,
        bag: &mut BTreeMap<String, Value>,
    ) -> Result<(), String> {
        let tp = self
            .profiles
            .get(id)
            .ok_or_else(|| format!("no technical profile {id}"))?;
        for claim in &tp.input_claims {
            if claim.required && !bag.contains_key(&claim.claim_type) {
                return Err(format!("{id}: the claim {} is missing", claim.claim_type));
            }
        }
        for claim in &tp.output_claims {
            if let Some(value) = attributes.get(&claim.claim_type) {
                bag.insert(claim.claim_type.clone(), value.clone());
            }
        }
        for t in &tp.output_claims_transformations {
            let transformation = self
                .transformations
                .get(t)
                .ok_or_else(|| format!("{id}: no claims transformation {t}"))?;
            transformation.apply(t, bag)?;
        }
        Ok(())
    }

    /// The validation technical profiles a sign-up page runs, in order.
    pub fn validations(&self, page: &str) -> Vec<String> {
        self.validations.get(page).cloned().unwrap_or_default()
    }

    fn data_type(&self, claim: &str) -> String {
        self.chain
            .claim_data_type(claim)
            .ok()
            .flatten()
            .unwrap_or_else(|| "string".into())
    }

    /// The claims a social provider's technical profile puts in the bag: the profile in the
    /// policies whose `identityProvider` output defaults to `provider` (Google), mapping what the
    /// simulated provider returns through its partner claim types; a provider defined only in
    /// the starter pack (Facebook) maps as the starter pack does, without `emailVerified`.
    pub fn provider_claims(
        &self,
        provider: &str,
        subject: &str,
        email: &str,
        email_verified: Option<bool>,
        given_name: Option<&str>,
        surname: Option<&str>,
    ) -> Vec<(String, Value)> {
        let mut returned = Map::new();
        returned.insert("sub".into(), json!(subject));
        returned.insert("id".into(), json!(subject));
        returned.insert("email".into(), json!(email));
        if let Some(v) = email_verified {
            returned.insert("email_verified".into(), json!(v));
        }
        if let Some(g) = given_name {
            returned.insert("given_name".into(), json!(g));
            returned.insert("first_name".into(), json!(g));
        }
        if let Some(s) = surname {
            returned.insert("family_name".into(), json!(s));
            returned.insert("last_name".into(), json!(s));
        }
        let profile = self.chain.technical_profile_ids().ok().and_then(|ids| {
            ids.into_iter()
                .filter_map(|id| self.chain.technical_profile(&id).ok().flatten())
                .find(|tp| {
                    tp.output_claims.iter().any(|c| {
                        c.claim_type == "identityProvider"
                            && c.default_value.as_deref() == Some(provider)
                    })
                })
        });
        let mut out = Vec::new();
        match profile {
            Some(tp) => {
                for claim in &tp.output_claims {
                    let value = if claim.always_use_default_value {
                        claim.default_value.clone().map(Value::String)
                    } else {
                        returned
                            .get(claim.partner_name())
                            .cloned()
                            .or_else(|| claim.default_value.clone().map(Value::String))
                    };
                    if let Some(value) = value {
                        out.push((claim.claim_type.clone(), value));
                    }
                }
            }
            None => {
                out.push(("issuerUserId".into(), json!(subject)));
                out.push(("email".into(), json!(email)));
                out.push(("identityProvider".into(), json!(provider)));
            }
        }
        out
    }

    /// The ID token's claims, as the relying party's output claims say.
    pub fn token_claims(
        &self,
        bag: &BTreeMap<String, Value>,
        tenant_id: &str,
    ) -> Map<String, Value> {
        let mut claims = Map::new();
        for claim in &self.relying_party.output_claims {
            let value = if claim.always_use_default_value {
                claim
                    .default_value
                    .as_deref()
                    .map(|d| Value::String(d.replace("{Policy:TenantObjectId}", tenant_id)))
            } else {
                bag.get(&claim.claim_type).cloned()
            };
            let Some(value) = value else { continue };
            let name = claim.partner_claim_type.clone().unwrap_or_else(|| {
                OIDC_NAMES
                    .iter()
                    .find(|(c, _)| *c == claim.claim_type)
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_else(|| claim.claim_type.clone())
            });
            claims.insert(name, value);
        }
        claims
    }
}

#[cfg(test)]
mod tests;
