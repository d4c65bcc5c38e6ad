//! The custom policy's journey for a returning social user (issue 16, point 1), checked on the
//! rendered policies over Microsoft's starter pack: before the social link step, a directory read
//! runs for a social account that has no email in its claims bag (single sign-on, where B2C does
//! not call the provider and its session keeps only `alternativeSecurityId`), and what it reads
//! (with its claims transformations) gives the link step's `email` and `identityProvider`. The
//! claims bags are built from the chain itself: the session profile's persisted claims, the
//! starter pack's directory reads and the provider's output claims.

use std::collections::{BTreeMap, BTreeSet};

use autolink::policies::{self, child, children, is_policy, Chain, TechnicalProfile};

use crate::helpers::cannot_run;
use crate::policies::test_chain;

struct Step {
    profiles: Vec<String>,
    /// (type, ExecuteActionsIf, values)
    preconditions: Vec<(String, bool, Vec<String>)>,
}

impl Step {
    fn runs(&self, bag: &BTreeMap<String, String>) -> bool {
        !self.preconditions.iter().any(|(kind, execute_if, values)| {
            let value = bag.get(&values[0]);
            let holds = match kind.as_str() {
                "ClaimsExist" => value.is_some(),
                "ClaimEquals" => value == values.get(1),
                other => panic!("a precondition this test does not know: {other}"),
            };
            holds == *execute_if
        })
    }
}

fn journey(chain: &Chain, id: &str) -> Vec<Step> {
    for layer in chain.layers.iter().rev() {
        let doc = policies::parse_xml(&layer.path, &layer.text).unwrap();
        let Some(journey) = doc
            .descendants()
            .find(|n| is_policy(n, "UserJourney") && n.attribute("Id") == Some(id))
        else {
            continue;
        };
        let steps = child(journey, "OrchestrationSteps").unwrap();
        return children(steps, "OrchestrationStep")
            .map(|s| Step {
                profiles: s
                    .descendants()
                    .filter(|n| is_policy(n, "ClaimsExchange"))
                    .filter_map(|n| n.attribute("TechnicalProfileReferenceId"))
                    .map(str::to_string)
                    .collect(),
                preconditions: s
                    .descendants()
                    .filter(|n| is_policy(n, "Precondition"))
                    .map(|p| {
                        (
                            p.attribute("Type").unwrap().to_string(),
                            p.attribute("ExecuteActionsIf") == Some("true"),
                            children(p, "Value")
                                .map(|v| v.text().unwrap().trim().to_string())
                                .collect(),
                        )
                    })
                    .collect(),
            })
            .collect();
    }
    panic!("no journey {id}");
}

/// A claims transformation's input and output claim types.
fn transformation(chain: &Chain, id: &str) -> (Vec<String>, Vec<String>) {
    for layer in &chain.layers {
        let doc = policies::parse_xml(&layer.path, &layer.text).unwrap();
        if let Some(t) = doc
            .descendants()
            .find(|n| is_policy(n, "ClaimsTransformation") && n.attribute("Id") == Some(id))
        {
            let claims = |list: &str| -> Vec<String> {
                child(t, list)
                    .map(|l| {
                        l.children()
                            .filter_map(|c| c.attribute("ClaimTypeReferenceId"))
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            return (claims("InputClaims"), claims("OutputClaims"));
        }
    }
    panic!("no claims transformation {id}");
}

fn profile(chain: &Chain, id: &str) -> TechnicalProfile {
    chain
        .technical_profile(id)
        .unwrap()
        .unwrap_or_else(|| panic!("no technical profile {id}"))
}

/// The claims a technical profile puts in the bag: its output claims (with their default values),
/// then what its output claims transformations make of the bag.
fn run(chain: &Chain, id: &str, bag: &mut BTreeMap<String, String>) -> BTreeSet<String> {
    let tp = profile(chain, id);
    let mut made = BTreeSet::new();
    for claim in &tp.output_claims {
        let value = claim.default_value.clone().unwrap_or_else(|| "x".into());
        bag.insert(claim.claim_type.clone(), value);
        made.insert(claim.claim_type.clone());
    }
    for t in &tp.output_claims_transformations {
        let (inputs, outputs) = transformation(chain, t);
        if inputs.iter().all(|c| bag.contains_key(c)) {
            for c in outputs {
                bag.insert(c.clone(), "x".into());
                made.insert(c);
            }
        }
    }
    made
}

#[test]
fn a_returning_social_user_s_email_and_provider_are_read_from_the_directory_before_the_link() {
    let test =
        "a_returning_social_user_s_email_and_provider_are_read_from_the_directory_before_the_link";
    let Some((_env, chain, _dir)) = test_chain("AutolinkRestAuth.Basic.xml") else {
        return cannot_run(test, "the starter pack is missing");
    };
    let steps = journey(&chain, "AutolinkSignUpOrSignIn");
    let link = steps
        .iter()
        .position(|s| s.profiles.iter().any(|p| p == "REST-Autolink-Link-Social"))
        .expect("a social link step");

    // Single sign-on of a social account: the session's persisted claims (SM-SocialLogin, the
    // provider's session) and the starter pack's read by alternativeSecurityId.
    let session = profile(&chain, "SM-SocialLogin");
    let mut sso: BTreeMap<String, String> = session
        .persisted_claims
        .iter()
        .map(|c| (c.claim_type.clone(), "x".into()))
        .collect();
    run(
        &chain,
        "AAD-UserReadUsingAlternativeSecurityId-NoError",
        &mut sso,
    );
    assert!(!sso.contains_key("email"), "{sso:?}");
    // A new session: the provider answered too.
    let mut fresh = sso.clone();
    run(&chain, "Google-OIDC", &mut fresh);
    // A local account's single sign-on: SM-AAD's claims, authenticationSource local.
    let mut local: BTreeMap<String, String> = profile(&chain, "SM-AAD")
        .persisted_claims
        .iter()
        .map(|c| (c.claim_type.clone(), "x".into()))
        .collect();
    local.insert(
        "authenticationSource".into(),
        "localAccountAuthentication".into(),
    );
    run(&chain, "AAD-UserReadUsingObjectId", &mut local);

    // The project's directory reads before the link step (the starter pack's own ran above).
    let reads: Vec<(usize, String)> = steps[..link]
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.profiles.iter().map(move |p| (i, p.clone())))
        .filter(|(_, p)| {
            let tp = profile(&chain, p);
            tp.metadata("Operation") == Some("Read")
                && tp
                    .handler
                    .as_deref()
                    .is_some_and(|h| h.contains("AzureActiveDirectoryProvider"))
                && tp.input_claims.iter().any(|c| c.claim_type == "objectId")
                && tp
                    .defined_in
                    .iter()
                    .any(|l| l.starts_with("B2C_1A_Autolink"))
        })
        .collect();
    let mut bag = sso.clone();
    let mut made = BTreeSet::new();
    for (i, id) in &reads {
        if steps[*i].runs(&bag) {
            made.extend(run(&chain, id, &mut bag));
        }
    }
    assert!(
        steps[link].runs(&bag),
        "the social link step does not run under single sign-on"
    );
    let tp = profile(&chain, "REST-Autolink-Link-Social");
    for partner in ["email", "identityProvider"] {
        let input = tp
            .input_claims
            .iter()
            .find(|c| c.partner_name() == partner)
            .unwrap_or_else(|| panic!("the link step sends no {partner}"));
        assert!(
            made.contains(&input.claim_type),
            "under single sign-on no directory read before the link step gives {} \
             (reads: {reads:?}, made: {made:?})",
            input.claim_type
        );
    }
    // The email it reads is the one the social sign-up persisted.
    let write = profile(&chain, "AAD-UserWriteUsingAlternativeSecurityId");
    assert!(write
        .persisted_claims
        .iter()
        .any(|c| c.claim_type == "otherMails"));
    assert!(made.contains("otherMails"), "{made:?}");
    // Never without a provider: autolink would take the call for a local account's.
    let idp = tp
        .input_claims
        .iter()
        .find(|c| c.partner_name() == "identityProvider")
        .unwrap();
    assert!(
        idp.default_value
            .as_deref()
            .is_some_and(|d| !d.eq_ignore_ascii_case("local")),
        "{idp:?}"
    );

    // The read runs only when it is needed: not when the provider gave the email, not for a
    // local account; the link steps run for their own kind of account.
    for (i, id) in &reads {
        assert!(
            !steps[*i].runs(&fresh),
            "{id} runs although the provider gave the email"
        );
        assert!(!steps[*i].runs(&local), "{id} runs for a local account");
    }
    assert!(steps[link].runs(&fresh));
    assert!(!steps[link].runs(&local));
    let link_local = steps
        .iter()
        .find(|s| s.profiles.iter().any(|p| p == "REST-Autolink-Link-Local"))
        .unwrap();
    assert!(link_local.runs(&local) && !link_local.runs(&sso) && !link_local.runs(&fresh));
}
