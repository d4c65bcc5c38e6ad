//! Custom-policy mode: the project's policy files, rendered for an environment, and the RESTful
//! technical profiles run from what they say (service URL, `SendClaimsIn`, authentication type and
//! keys, input claims with defaults and claim resolvers, output claims with partner names).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::caller::{Answer, Credentials, NoAnswer, Payload};
use super::config::CustomPolicySettings;
use super::types::CallRecord;
use super::Tenant;
use crate::policies::{self, AppSettings, Chain, ClaimRef, PolicyFile, TechnicalProfile};

/// The journey's orchestration steps that call out (`AutolinkSignUpOrSignIn`, steps 6, 9, 10).
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
        let mut profiles = BTreeMap::new();
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
        })
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

    /// Runs technical profile `id` on the bag.
    pub async fn run(
        &self,
        id: &str,
        bag: &mut BTreeMap<String, Value>,
        context: &BTreeMap<&'static str, String>,
        tenant: &Tenant,
        records: &mut Vec<CallRecord>,
    ) -> ProfileOutcome {
        let Some(tp) = self.profiles.get(id) else {
            return ProfileOutcome::Failed {
                message: format!("no technical profile {id}"),
            };
        };
        let resolving = tp.metadata("IncludeClaimResolvingInClaimsHandling") == Some("true");
        let resolve = |text: &str| -> String {
            if !resolving {
                return text.to_string();
            }
            let mut out = text.to_string();
            for (name, value) in context {
                out = out.replace(&format!("{{{name}}}"), value);
            }
            out
        };
        let failed_message = tp
            .metadata("DefaultUserMessageIfRequestFailed")
            .unwrap_or(REQUEST_FAILED)
            .to_string();
        if !tp.is_restful() {
            // A claims transformation profile: only its output claims' defaults.
            for claim in &tp.output_claims {
                if let Some(d) = &claim.default_value {
                    bag.insert(claim.claim_type.clone(), Value::String(resolve(d)));
                }
            }
            return ProfileOutcome::Done;
        }
        let Some(url) = tp.metadata("ServiceUrl") else {
            return ProfileOutcome::Failed {
                message: format!("{id} has no ServiceUrl"),
            };
        };
        let inputs = self.inputs(&tp.input_claims, bag, &resolve);
        let payload = match tp.metadata("SendClaimsIn").unwrap_or("Body") {
            "Body" => Payload::Json(Value::Object(inputs)),
            "Form" => Payload::Form(
                inputs
                    .into_iter()
                    .map(|(k, v)| {
                        let text = match v {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        (k, text)
                    })
                    .collect(),
            ),
            other => {
                return ProfileOutcome::Failed {
                    message: format!("{id}: SendClaimsIn {other} is not supported by the mock"),
                }
            }
        };
        let credentials = match self.credentials(tp, bag) {
            Ok(c) => c,
            Err(message) => return ProfileOutcome::Failed { message },
        };
        let answer = tenant
            .policy_caller
            .post(id, None, url, &payload, &credentials, records)
            .await;
        self.read_answer(tp, answer, bag, &failed_message)
    }

    fn inputs(
        &self,
        claims: &[ClaimRef],
        bag: &BTreeMap<String, Value>,
        resolve: &dyn Fn(&str) -> String,
    ) -> Map<String, Value> {
        let mut out = Map::new();
        for claim in claims {
            let value = if claim.always_use_default_value {
                claim
                    .default_value
                    .as_deref()
                    .map(|d| Value::String(resolve(d)))
            } else {
                bag.get(&claim.claim_type).cloned().or_else(|| {
                    claim
                        .default_value
                        .as_deref()
                        .map(|d| Value::String(resolve(d)))
                })
            };
            // Claims without a value are left out.
            let Some(value) = value else { continue };
            let typed = match (self.data_type(&claim.claim_type).as_str(), &value) {
                ("boolean", Value::String(s)) => match s.as_str() {
                    "true" | "True" => Value::Bool(true),
                    "false" | "False" => Value::Bool(false),
                    _ => value,
                },
                ("string", Value::Bool(b)) => {
                    Value::String(if *b { "true" } else { "false" }.into())
                }
                _ => value,
            };
            out.insert(claim.partner_name().to_string(), typed);
        }
        out
    }

    fn key(&self, tp: &TechnicalProfile, key_id: &str) -> Result<String, String> {
        let storage = tp
            .cryptographic_keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, storage)| storage.clone())
            .ok_or_else(|| format!("{} has no cryptographic key {key_id}", tp.id))?;
        self.settings
            .policy_keys
            .get(&storage)
            .cloned()
            .ok_or_else(|| format!("the policy key {storage} is not configured in the mock"))
    }

    fn credentials(
        &self,
        tp: &TechnicalProfile,
        bag: &BTreeMap<String, Value>,
    ) -> Result<Credentials, String> {
        match tp.metadata("AuthenticationType").unwrap_or("None") {
            "None" => Ok(Credentials::None),
            "Basic" => Ok(Credentials::Basic {
                username: self.key(tp, "BasicAuthenticationUsername")?,
                password: self.key(tp, "BasicAuthenticationPassword")?,
            }),
            "ApiKeyHeader" => {
                let (header, _) = tp
                    .cryptographic_keys
                    .first()
                    .ok_or_else(|| format!("{} has no API key", tp.id))?;
                Ok(Credentials::ApiKey {
                    header: header.clone(),
                    key: self.key(tp, header)?,
                })
            }
            "Bearer" => {
                let token = match tp.metadata("UseClaimAsBearerToken") {
                    Some(claim) => bag
                        .get(claim)
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| format!("{}: the claim {claim} has no token", tp.id))?,
                    None => self.key(tp, "BearerAuthenticationToken")?,
                };
                Ok(Credentials::Bearer(token))
            }
            "ClientCertificate" => {
                let files = self.key(tp, "ClientCertificate")?;
                let (cert, key) = files.split_once('|').ok_or(
                    "the ClientCertificate policy key must be CERT_FILE|KEY_FILE (PEM) in the mock",
                )?;
                Ok(Credentials::ClientCertificate {
                    cert_file: Path::new(cert).to_path_buf(),
                    key_file: Path::new(key).to_path_buf(),
                })
            }
            other => Err(format!("{}: AuthenticationType {other} is unknown", tp.id)),
        }
    }

    /// B2C's reading of a REST answer: 200 with a JSON object of output claims (no null
    /// values); 409 with `version`, `status` 409 and a `userMessage`; anything else fails.
    fn read_answer(
        &self,
        tp: &TechnicalProfile,
        answer: Result<Answer, NoAnswer>,
        bag: &mut BTreeMap<String, Value>,
        failed_message: &str,
    ) -> ProfileOutcome {
        let answer = match answer {
            Ok(answer) => answer,
            Err(no) => {
                let message = if no.timed_out {
                    tp.metadata("UserMessageIfRequestTimeout")
                        .unwrap_or(failed_message)
                } else {
                    failed_message
                };
                return ProfileOutcome::Failed {
                    message: format!("{message} ({})", no.message),
                };
            }
        };
        let body = match answer.json {
            Some(Value::Object(body)) => body,
            _ => {
                return ProfileOutcome::Failed {
                    message: format!(
                        "{failed_message} ({}: HTTP {} without a JSON object)",
                        tp.id, answer.status
                    ),
                }
            }
        };
        match answer.status {
            200 => {
                for claim in &tp.output_claims {
                    if claim.always_use_default_value {
                        if let Some(d) = &claim.default_value {
                            bag.insert(claim.claim_type.clone(), Value::String(d.clone()));
                        }
                        continue;
                    }
                    match body.get(claim.partner_name()) {
                        Some(Value::Null) => {
                            return ProfileOutcome::Failed {
                                message: format!(
                                    "{failed_message} ({}: the output claim {} is null)",
                                    tp.id,
                                    claim.partner_name()
                                ),
                            }
                        }
                        Some(value) => {
                            bag.insert(claim.claim_type.clone(), value.clone());
                        }
                        None => {
                            if let Some(d) = &claim.default_value {
                                bag.insert(claim.claim_type.clone(), Value::String(d.clone()));
                            } else if claim.required {
                                return ProfileOutcome::Failed {
                                    message: format!(
                                        "{failed_message} ({}: the required output claim {} is missing)",
                                        tp.id,
                                        claim.partner_name()
                                    ),
                                };
                            }
                        }
                    }
                }
                ProfileOutcome::Done
            }
            409 => {
                let version_ok = body.get("version").and_then(Value::as_str).is_some();
                let status_ok = match body.get("status") {
                    Some(Value::Number(n)) => n.as_u64() == Some(409),
                    Some(Value::String(s)) => s == "409",
                    _ => false,
                };
                let null_key = body
                    .iter()
                    .find(|(_, v)| v.is_null())
                    .map(|(k, _)| k.clone());
                match body.get("userMessage").and_then(Value::as_str) {
                    Some(message) if version_ok && status_ok && null_key.is_none() && !message.is_empty() => {
                        ProfileOutcome::Refused {
                            message: message.to_string(),
                            code: body.get("code").and_then(Value::as_str).map(str::to_string),
                        }
                    }
                    _ => ProfileOutcome::Failed {
                        message: format!(
                            "{failed_message} ({}: HTTP 409 without version, status 409 and userMessage, or with a null value)",
                            tp.id
                        ),
                    },
                }
            }
            status => ProfileOutcome::Failed {
                message: format!("{failed_message} ({}: HTTP {status})", tp.id),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rest_auth: &str) -> PolicySet {
        let settings = CustomPolicySettings {
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            environment: "Test".into(),
            rest_auth: rest_auth.into(),
            policy_keys: Default::default(),
        };
        PolicySet::load(
            &settings,
            "http://127.0.0.1:1234/",
            "http://127.0.0.1:1/token",
        )
        .unwrap()
    }

    #[test]
    fn the_sign_up_pages_acquire_credentials_then_precheck() {
        let set = load("Basic");
        assert_eq!(
            set.validations(LOCAL_SIGN_UP_PAGE),
            [
                "Autolink-AcquireCredentials",
                "REST-Autolink-Precheck-Local"
            ]
        );
        assert_eq!(
            set.validations(SOCIAL_SIGN_UP_PAGE),
            [
                "Autolink-AcquireCredentials",
                "REST-Autolink-Precheck-Social"
            ]
        );
        let link = &set.profiles["REST-Autolink-Link-Local"];
        assert_eq!(
            link.metadata("ServiceUrl"),
            Some("http://127.0.0.1:1234/b2c/rest/link")
        );
        assert_eq!(link.metadata("AuthenticationType"), Some("Basic"));
    }

    #[test]
    fn google_maps_email_verified_and_facebook_does_not() {
        let set = load("Basic");
        let google: BTreeMap<String, Value> = set
            .provider_claims("google.com", "g-1", "a@x.com", Some(false), Some("A"), None)
            .into_iter()
            .collect();
        assert_eq!(google["emailVerified"], json!(false));
        assert_eq!(google["identityProvider"], json!("google.com"));
        assert_eq!(google["issuerUserId"], json!("g-1"));
        assert_eq!(google["givenName"], json!("A"));
        let facebook: BTreeMap<String, Value> = set
            .provider_claims("facebook.com", "f-1", "a@x.com", Some(true), None, None)
            .into_iter()
            .collect();
        assert!(!facebook.contains_key("emailVerified"));
        assert_eq!(facebook["identityProvider"], json!("facebook.com"));
    }

    #[test]
    fn the_token_carries_the_relying_partys_output_claims() {
        let set = load("Bearer");
        let bag: BTreeMap<String, Value> = [
            ("objectId", json!("oid-1")),
            ("email", json!("a@x.com")),
            ("customerAccountNumber", json!("C-1")),
            ("autoLinkOutcome", json!("Linked")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let claims = set.token_claims(&bag, "tenant-1");
        assert_eq!(claims["sub"], "oid-1");
        assert_eq!(claims["email"], "a@x.com");
        assert_eq!(claims["tid"], "tenant-1");
        assert_eq!(claims["extension_CustomerAccountNumber"], "C-1");
        assert_eq!(claims["extension_AutoLinkOutcome"], "Linked");
        assert!(
            !claims.contains_key("idp"),
            "no provider for a local account"
        );
    }

    #[test]
    fn inputs_follow_data_types_defaults_and_resolvers() {
        let set = load("Basic");
        let tp = &set.profiles["REST-Autolink-Precheck-Social"];
        let bag: BTreeMap<String, Value> = [
            ("email", json!("a@x.com")),
            ("emailVerified", json!("true")),
            ("identityProvider", json!("google.com")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let resolve = |t: &str| {
            t.replace("{OIDC:ClientId}", "client-1")
                .replace("{Culture:RFC5646}", "fr-FR")
        };
        let inputs = set.inputs(&tp.input_claims, &bag, &resolve);
        assert_eq!(
            inputs["emailVerified"],
            json!(true),
            "a boolean claim is sent as one"
        );
        assert_eq!(inputs["clientId"], "client-1");
        assert_eq!(inputs["uiLocales"], "fr-FR");
        assert!(
            !inputs.contains_key("givenName"),
            "claims without a value are left out"
        );
    }
}
