//! A RESTful technical profile run as B2C runs it: input claims (defaults, claim resolvers),
//! the call with the profile's authentication and keys, and the answer's output claims read back.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::mock_b2c::caller::{Answer, Credentials, NoAnswer, Payload};
use crate::mock_b2c::types::CallRecord;
use crate::mock_b2c::Tenant;
use crate::policies::{ClaimRef, TechnicalProfile};

use super::{PolicySet, ProfileOutcome, REQUEST_FAILED};

impl PolicySet {
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

    pub(super) fn inputs(
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
    /// values); an error for the user with HTTP 400 or 409, `version`, `status` (the 2022
    /// RESTful technical profile reference: "an HTTP 4XX error message, such as 400 (bad
    /// request), or 409 (conflict)"; its table says 409, so either is taken) and a `userMessage`;
    /// anything else fails.
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
            400 | 409 => {
                let version_ok = body.get("version").and_then(Value::as_str).is_some();
                let status_ok = match body.get("status") {
                    Some(Value::Number(n)) => matches!(n.as_u64(), Some(400 | 409)),
                    Some(Value::String(s)) => s == "400" || s == "409",
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
                            "{failed_message} ({}: HTTP {} without version, status 400 or 409 and userMessage, or with a null value)",
                            tp.id,
                            answer.status
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
