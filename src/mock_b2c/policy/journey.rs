//! The relying party's user journey as the policies write it: its orchestration steps with their
//! preconditions, and the directory reads and claims transformations the mock runs after the
//! directory (a returning social user's email and provider, read before the link step).
//!
//! The mock does not run every step: the pages, the providers and the directory writes are its
//! own. From the step of `Autolink-AcquireCredentials` on, it runs each step whose technical
//! profile it knows (autolink's REST calls, and directory reads of the project's layers) when the
//! step's preconditions say so, in the journey's order: a step removed from or reordered in the
//! XML changes what the mock does.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::policies::{child, children, is_policy, parse_xml, Chain};

/// One orchestration step: its technical profiles and preconditions.
#[derive(Debug, Clone)]
pub struct JourneyStep {
    pub order: u32,
    pub profiles: Vec<String>,
    preconditions: Vec<Precondition>,
}

#[derive(Debug, Clone)]
struct Precondition {
    /// `ClaimsExist` or `ClaimEquals`.
    kind: String,
    /// `ExecuteActionsIf`: the action is taken when the condition has this value.
    execute_if: bool,
    values: Vec<String>,
    /// Only `SkipThisOrchestrationStep` exists in the schema.
    skips: bool,
}

impl JourneyStep {
    /// Whether B2C skips this step on this claims bag. A claim exists when it has a value; a
    /// `ClaimEquals` on a missing claim is false.
    pub fn skipped(&self, bag: &BTreeMap<String, Value>) -> bool {
        self.preconditions.iter().any(|p| {
            let claim = p.values.first().and_then(|c| present(bag, c));
            let holds = match p.kind.as_str() {
                "ClaimsExist" => claim.is_some(),
                "ClaimEquals" => match (claim, p.values.get(1)) {
                    (Some(Value::String(v)), Some(want)) => v == want,
                    (Some(Value::Bool(v)), Some(want)) => v.to_string() == *want,
                    _ => false,
                },
                // A precondition the mock does not know: the step runs, as it would if the
                // condition were false; the policy tests name such a precondition.
                _ => return false,
            };
            p.skips && holds == p.execute_if
        })
    }
}

/// A claim with a value (claim type ids compare without regard to case, as in B2C).
fn present<'a>(bag: &'a BTreeMap<String, Value>, claim: &str) -> Option<&'a Value> {
    bag.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(claim))
        .map(|(_, v)| v)
        .filter(|v| match v {
            Value::Null => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        })
}

/// The steps of the journey the relying party runs (`DefaultUserJourney`), from the highest
/// layer that defines it.
pub fn relying_party_journey(chain: &Chain) -> Result<Vec<JourneyStep>, String> {
    let leaf = chain.leaf().ok_or("the policies are empty")?;
    let doc = parse_xml(&leaf.path, &leaf.text).map_err(|e| e.to_string())?;
    let journey_id = doc
        .descendants()
        .find(|n| is_policy(n, "DefaultUserJourney"))
        .and_then(|n| n.attribute("ReferenceId"))
        .ok_or("the relying party names no DefaultUserJourney")?
        .to_string();
    for layer in chain.layers.iter().rev() {
        let doc = parse_xml(&layer.path, &layer.text).map_err(|e| e.to_string())?;
        let Some(journey) = doc
            .descendants()
            .find(|n| is_policy(n, "UserJourney") && n.attribute("Id") == Some(&journey_id))
        else {
            continue;
        };
        let Some(steps) = child(journey, "OrchestrationSteps") else {
            continue;
        };
        let mut out = Vec::new();
        for step in children(steps, "OrchestrationStep") {
            let preconditions = child(step, "Preconditions")
                .map(|p| {
                    children(p, "Precondition")
                        .map(|p| Precondition {
                            kind: p.attribute("Type").unwrap_or_default().to_string(),
                            execute_if: p.attribute("ExecuteActionsIf") == Some("true"),
                            values: children(p, "Value")
                                .map(|v| v.text().unwrap_or_default().trim().to_string())
                                .collect(),
                            skips: child(p, "Action").and_then(|a| a.text()).map(str::trim)
                                == Some("SkipThisOrchestrationStep"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(JourneyStep {
                order: step
                    .attribute("Order")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or_default(),
                profiles: step
                    .descendants()
                    .filter(|n| is_policy(n, "ClaimsExchange"))
                    .filter_map(|n| n.attribute("TechnicalProfileReferenceId"))
                    .map(str::to_string)
                    .collect(),
                preconditions,
            });
        }
        return Ok(out);
    }
    Err(format!("no layer defines the user journey {journey_id}"))
}

/// A claims transformation: its method and its claims by transformation claim type.
#[derive(Debug, Clone)]
pub struct Transformation {
    method: String,
    inputs: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
}

/// Every claims transformation the project's layers define, by id.
pub fn transformations(chain: &Chain) -> Result<BTreeMap<String, Transformation>, String> {
    let mut all = BTreeMap::new();
    for layer in &chain.layers {
        let doc = parse_xml(&layer.path, &layer.text).map_err(|e| e.to_string())?;
        for node in doc
            .descendants()
            .filter(|n| is_policy(n, "ClaimsTransformation"))
        {
            let claims = |list: &str| -> Vec<(String, String)> {
                child(node, list)
                    .map(|l| {
                        l.children()
                            .filter(|c| c.is_element())
                            .filter_map(|c| {
                                Some((
                                    c.attribute("ClaimTypeReferenceId")?.to_string(),
                                    c.attribute("TransformationClaimType")?.to_string(),
                                ))
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if let Some(id) = node.attribute("Id") {
                all.insert(
                    id.to_string(),
                    Transformation {
                        method: node
                            .attribute("TransformationMethod")
                            .unwrap_or_default()
                            .to_string(),
                        inputs: claims("InputClaims"),
                        outputs: claims("OutputClaims"),
                    },
                );
            }
        }
    }
    Ok(all)
}

impl Transformation {
    /// Runs the transformation on the bag, as B2C documents its method. A method the mock does
    /// not implement is an error, never a silent no-op.
    pub fn apply(&self, id: &str, bag: &mut BTreeMap<String, Value>) -> Result<(), String> {
        let input = |name: &str| {
            self.inputs
                .iter()
                .find(|(_, t)| t == name)
                .and_then(|(c, _)| present(bag, c))
                .cloned()
        };
        let output = |name: &str| {
            self.outputs
                .iter()
                .find(|(_, t)| t == name)
                .map(|(c, _)| c.clone())
        };
        let (claim, value) = match self.method.as_str() {
            // "Gets the first item from the provided string collection."
            "GetSingleItemFromStringCollection" => (
                output("extractedItem"),
                input("collection").and_then(|c| c.as_array()?.first().cloned()),
            ),
            // The issuers of a user's social identities, as a string collection.
            "GetIdentityProvidersFromAlternativeSecurityIdCollectionTransformation" => (
                output("identityProvidersCollection"),
                input("alternativeSecurityIdCollection").and_then(|c| {
                    let issuers: Vec<Value> = c
                        .as_array()?
                        .iter()
                        .filter_map(|id| id.get("issuer").cloned())
                        .collect();
                    Some(json!(issuers))
                }),
            ),
            other => {
                return Err(format!(
                    "the mock does not run the claims transformation {id} ({other})"
                ))
            }
        };
        let claim = claim.ok_or_else(|| format!("{id} has no output claim"))?;
        // Without an input value there is no output (the claim stays absent).
        if let Some(value) = value {
            bag.insert(claim, value);
        }
        Ok(())
    }
}
