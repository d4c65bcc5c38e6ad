//! The sample custom policies in `policies/` (DESIGN section 6), proven three ways.
//!
//! 1. Every environment of `policies/appsettings.json` renders, and every rendered file validates
//!    against Microsoft's schema with `xmllint` (`../shared/b2c/`, the copy libxml2 compiles).
//!    Without xmllint or the schema the test says loudly that it did not run (and fails under
//!    `CI=true`): it never passes silently.
//! 2. The whole chain B2C would run (the starter pack's base, localization and extensions from
//!    `../shared/b2c/starterpack/`, then the project's rendered files, once per
//!    `AutolinkRestAuth.*` alternative) resolves every reference, and its overrides are legal. The
//!    rules checked, since the schema checks each file alone:
//!    - **chain**: the files form one line from the relying party down to the base through
//!      `BasePolicy` (no stray file, no loop); every `TenantId` is the environment's tenant; each
//!      `PublicPolicyUri` ends with its `PolicyId`; only the leaf has a `RelyingParty`, and it has
//!      one. The upload order in `policies/README.md` is this order.
//!    - **references** resolve to a definition in the same file or a layer below (B2C resolves
//!      against the whole chain of the policy being run): claim types (every
//!      `ClaimTypeReferenceId`, the claim named by a `ClaimsExist`/`ClaimEquals` precondition,
//!      `ElementType="ClaimType"` localized strings), claims transformations, technical profiles
//!      (claims exchanges, validation technical profiles, included profiles, session-management
//!      profiles, the token issuer of `SendClaims`), content definitions (the attribute of a step
//!      and the `ContentDefinitionReferenceId` metadata item), localized resources, client
//!      definitions, user journeys (`DefaultUserJourney`, endpoints), display controls and
//!      predicates; inside a journey, claims-provider selections name a claims exchange of the
//!      next step (`TargetClaimsExchangeId`) or of the same step (`ValidationClaimsExchangeId`),
//!      and a `SignUpTarget` metadata item names a claims exchange of some journey. Claim type ids
//!      compare without regard to case, as B2C does (the starter pack itself says `surName`); all
//!      other ids compare exactly.
//!    - **overrides**: an id defined in a lower layer and again in a higher one is an override and
//!      merges (see `autolink::policies::TechnicalProfile`). An id first defined by an element
//!      that is only an override fragment is the typical typo, so the first definition must be
//!      complete: a technical profile ends with a protocol (its own or included), a claim type
//!      has a `DataType`, a content definition a `LoadUri` and `DataUri`, a claims transformation a
//!      `TransformationMethod`, a user journey its steps. An override never changes a claim
//!      type's `DataType`. No id is defined twice in one file.
//!    - **journeys**: steps are numbered 1..n in document order, exactly one `SendClaims` and it is
//!      last, claims-exchange ids are unique in a journey.
//!    - **claim resolvers**: a technical profile (other than the relying party's) whose claim
//!      default values use a resolver (`{OIDC:ClientId}`, `{Culture:RFC5646}`, ...) sets
//!      `IncludeClaimResolvingInClaimsHandling`; no `{Settings:...}` is left anywhere.
//!    - **REST calls** of the project: an `AuthenticationType` other than `None` with the keys it
//!      needs (Basic: user name and password; ClientCertificate: the certificate; ApiKeyHeader:
//!      one key, named by its header; Bearer: `UseClaimAsBearerToken` naming an input claim),
//!      claims sent in the body, an https service URL outside the Test environment.
//!    - **order of autolink's steps**: on both sign-up pages the validation technical profiles run
//!      credentials, then precheck, then the directory write (an extension's validation profiles
//!      run before the base's); in the journey, credentials come before every autolink call, the
//!      social precheck before the social directory write, the link steps after every directory
//!      write and before the token; the relying party runs that journey and issues the account
//!      number.
//! 3. The REST technical profiles, read from the rendered XML with their includes and overrides,
//!    drive `/b2c/rest/precheck` and `/b2c/rest/link` on the real server with exactly the JSON
//!    B2C would send (their input claims under their partner names, realistic values, resolvers
//!    resolved, default values where the XML gives them), and every output claim they expect comes
//!    back; a business buyer without a customer gets HTTP 409 with a `userMessage`. The server runs
//!    with no email-verifying provider and without treating a missing provider as local, so a
//!    renamed `email`, `emailVerified`, `identityProvider`, `clientId` or `objectId` changes the
//!    answer; `uiLocales`, `givenName` and `surname` show in the message language and the created
//!    customer. Every name sent must also be one that `autolink::api::rest::claims` reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use autolink::api::rest::claims;
use autolink::policies::{
    self, child, children, is_policy, line_of, render_dir, AppSettings, Chain, Environment,
    PolicyFile, TechnicalProfile,
};
use serde_json::{json, Map, Value};

use crate::helpers::*;

// ---------------------------------------------------------------------------------------------
// Rendering and the chain.

fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

fn app_settings() -> AppSettings {
    AppSettings::load(&policies_dir().join(policies::APP_SETTINGS_FILE)).unwrap()
}

/// How B2C may authenticate to autolink: the `AutolinkRestAuth.<Variant>.xml` alternatives.
const AUTH_VARIANTS: [&str; 4] = ["Basic", "Bearer", "ApiKeyHeader", "ClientCertificate"];

/// Renders one environment once per authentication variant, each into its own folder of one
/// temporary folder; the files of every render (the files common to all, once per variant).
fn render(env: &Environment) -> (tempfile::TempDir, Vec<PathBuf>) {
    let out = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for variant in AUTH_VARIANTS {
        let folder = out.path().join(variant);
        let rendered = render_dir(&policies_dir(), &env.name, Some(variant), &folder)
            .unwrap_or_else(|e| panic!("environment {} does not render:\n{e}", env.name));
        assert!(
            !rendered.files.is_empty(),
            "no policy files in {}",
            policies_dir().display()
        );
        for file in rendered.files {
            let common = files
                .iter()
                .any(|f: &PathBuf| f.file_name() == file.file_name());
            if !common || file_name(&file).starts_with(policies::AUTH_VARIANT_PREFIX) {
                files.push(file);
            }
        }
    }
    (out, files)
}

/// The starter pack's base, localization and extensions, with the tenant set as an engineer sets
/// it (its own relying party, SignUpOrSignin.xml, is not part of the project's chain).
fn starter_pack(tenant: &str) -> Option<Vec<PolicyFile>> {
    let dir = shared_b2c_dir()?.join("starterpack/SocialAndLocalAccounts");
    let files = [
        "TrustFrameworkBase.xml",
        "TrustFrameworkLocalization.xml",
        "TrustFrameworkExtensions.xml",
    ];
    let mut out = Vec::new();
    for name in files {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).ok()?;
        let text = text.replace("yourtenant.onmicrosoft.com", tenant);
        out.push(PolicyFile::parse(&path, text).unwrap());
    }
    Some(out)
}

/// One chain per alternative: the project's files that share a policy id
/// (`AutolinkRestAuth.*.xml`) are alternatives, and each chain takes one of them.
fn chains(tenant: &str, rendered: &[PathBuf]) -> Option<Vec<(String, Chain)>> {
    let starter = starter_pack(tenant)?;
    let ours: Vec<PolicyFile> = rendered
        .iter()
        .map(|p| PolicyFile::read(p).unwrap())
        .collect();
    let mut by_id: BTreeMap<String, Vec<PolicyFile>> = BTreeMap::new();
    for file in ours {
        by_id.entry(file.policy_id.clone()).or_default().push(file);
    }
    let (alternatives, fixed): (Vec<_>, Vec<_>) = by_id.into_values().partition(|f| f.len() > 1);
    assert!(
        alternatives.len() <= 1,
        "only one policy may come in alternatives"
    );
    let fixed: Vec<PolicyFile> = fixed.into_iter().flatten().collect();
    let choices = alternatives.into_iter().next().unwrap_or_default();
    let choices: Vec<Option<PolicyFile>> = if choices.is_empty() {
        vec![None]
    } else {
        choices.into_iter().map(Some).collect()
    };
    let mut out = Vec::new();
    for choice in choices {
        let mut files = starter.clone();
        files.extend(fixed.iter().cloned());
        let name = choice
            .as_ref()
            .map(|c| file_name(&c.path))
            .unwrap_or_else(|| "(no alternatives)".into());
        files.extend(choice);
        let chain = Chain::from_files(files)
            .unwrap_or_else(|e| panic!("the chain with {name} is broken: {e}"));
        out.push((name, chain));
    }
    Some(out)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn xmllint_and_schema() -> Result<PathBuf, String> {
    let schema = shared_b2c_dir()
        .map(|d| d.join("TrustFrameworkPolicy_0.3.0.0.xmllint.xsd"))
        .filter(|p| p.is_file())
        .ok_or("the schema ../shared/b2c/TrustFrameworkPolicy_0.3.0.0.xmllint.xsd is missing")?;
    match Command::new("xmllint").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(schema),
        _ => Err("xmllint is not installed (Debian package libxml2-utils)".into()),
    }
}

#[test]
fn every_environment_renders_and_every_rendered_file_validates_against_microsofts_schema() {
    let test =
        "every_environment_renders_and_every_rendered_file_validates_against_microsofts_schema";
    let schema = match xmllint_and_schema() {
        Ok(schema) => schema,
        Err(why) => return cannot_run(test, &why),
    };
    let settings = app_settings();
    assert!(!settings.environments.is_empty());
    let mut validated = 0;
    for env in &settings.environments {
        let (_dir, files) = render(env);
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(
                !text.contains("{Settings:"),
                "{}: a placeholder is left",
                file.display()
            );
            let out = Command::new("xmllint")
                .arg("--noout")
                .arg("--schema")
                .arg(&schema)
                .arg(file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{} (environment {}) does not validate:\n{}",
                file_name(file),
                env.name,
                String::from_utf8_lossy(&out.stderr)
            );
            validated += 1;
        }
    }
    // Three environments of six files each, at least.
    assert!(validated >= 18, "only {validated} files validated");
}

/// The policy ids of rendered files, by file name.
fn policy_ids(files: &[PathBuf]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|p| (file_name(p), PolicyFile::read(p).unwrap().policy_id))
        .collect()
}

#[test]
fn one_render_holds_one_authentication_variant_and_no_policy_id_twice() {
    let env = app_settings()
        .environments
        .into_iter()
        .find(|e| e.name == "Test")
        .expect("a Test environment in policies/appsettings.json");
    let out = tempfile::tempdir().unwrap();
    let variants_in = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = policies::policy_files(dir)
            .unwrap()
            .iter()
            .map(|p| file_name(p))
            .filter(|n| n.starts_with(policies::AUTH_VARIANT_PREFIX))
            .collect();
        names.sort();
        names
    };
    let unique = |files: &[PathBuf]| {
        let ids = policy_ids(files);
        let mut seen = BTreeSet::new();
        for (name, id) in &ids {
            assert!(
                seen.insert(id.to_ascii_lowercase()),
                "{name}: {id} twice in {ids:?}"
            );
        }
    };

    // By default, the environment's setting (else Basic).
    let rendered = render_dir(&policies_dir(), &env.name, None, out.path()).unwrap();
    let default = match env.policy_settings.get(policies::AUTH_VARIANT_SETTING) {
        Some(v) => v.as_str().unwrap().to_string(),
        None => policies::DEFAULT_AUTH_VARIANT.to_string(),
    };
    assert_eq!(rendered.auth, default);
    assert_eq!(
        variants_in(out.path()),
        vec![format!("{}{default}.xml", policies::AUTH_VARIANT_PREFIX)]
    );
    unique(&rendered.files);

    // Another variant into the same folder: the earlier one is removed, as bulk upload would
    // otherwise keep whichever file came last.
    let rendered = render_dir(&policies_dir(), &env.name, Some("bearer"), out.path()).unwrap();
    assert_eq!(rendered.auth, "Bearer");
    assert_eq!(variants_in(out.path()), vec!["AutolinkRestAuth.Bearer.xml"]);
    assert_eq!(
        rendered
            .removed
            .iter()
            .map(|p| file_name(p))
            .collect::<Vec<_>>(),
        vec![format!("{}{default}.xml", policies::AUTH_VARIANT_PREFIX)]
    );
    unique(&policies::policy_files(out.path()).unwrap());

    let error = render_dir(&policies_dir(), &env.name, Some("Kerberos"), out.path())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no authentication variant \"Kerberos\"")
            && error.contains("ApiKeyHeader, Basic, Bearer, ClientCertificate"),
        "{error}"
    );

    // The environment's setting chooses when --auth is not given.
    let dir = tempfile::tempdir().unwrap();
    for file in policies::policy_files(&policies_dir()).unwrap() {
        std::fs::copy(&file, dir.path().join(file_name(&file))).unwrap();
    }
    let settings = std::fs::read_to_string(policies_dir().join("appsettings.json")).unwrap();
    let mut settings: Value = serde_json::from_str(&settings).unwrap();
    for env in settings["Environments"].as_array_mut().unwrap() {
        env["PolicySettings"][policies::AUTH_VARIANT_SETTING] = Value::from("ClientCertificate");
    }
    std::fs::write(
        dir.path().join("appsettings.json"),
        serde_json::to_string_pretty(&settings).unwrap(),
    )
    .unwrap();
    let rendered = render_dir(dir.path(), &env.name, None, &dir.path().join("out")).unwrap();
    assert_eq!(rendered.auth, "ClientCertificate");
    assert_eq!(
        variants_in(&dir.path().join("out")),
        vec!["AutolinkRestAuth.ClientCertificate.xml"]
    );

    // Two files of one policy id that are not variants: refused, nothing written.
    std::fs::copy(
        dir.path().join("AutolinkExtensions.xml"),
        dir.path().join("AutolinkExtensionsCopy.xml"),
    )
    .unwrap();
    let fresh = dir.path().join("fresh");
    let error = render_dir(dir.path(), &env.name, None, &fresh)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("AutolinkExtensionsCopy.xml") && error.contains("B2C would keep only one"),
        "{error}"
    );
    assert!(!fresh.exists());
}

#[test]
fn a_placeholder_without_a_value_fails_the_render_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for file in policies::policy_files(&policies_dir()).unwrap() {
        std::fs::copy(&file, dir.path().join(file_name(&file))).unwrap();
    }
    let settings = std::fs::read_to_string(policies_dir().join("appsettings.json")).unwrap();
    let mut settings: Value = serde_json::from_str(&settings).unwrap();
    settings["Environments"][0]["PolicySettings"]
        .as_object_mut()
        .unwrap()
        .remove("AutolinkServiceUrl");
    std::fs::write(
        dir.path().join("appsettings.json"),
        serde_json::to_string_pretty(&settings).unwrap(),
    )
    .unwrap();
    let name = settings["Environments"][0]["Name"].as_str().unwrap();
    let error = render_dir(dir.path(), name, None, &dir.path().join("out"))
        .unwrap_err()
        .to_string();
    let source = std::fs::read_to_string(dir.path().join("AutolinkExtensions.xml")).unwrap();
    let line = source
        .lines()
        .position(|l| l.contains("{Settings:AutolinkServiceUrl}"))
        .unwrap()
        + 1;
    assert!(
        error.contains(&format!(
            "AutolinkExtensions.xml:{line}: {{Settings:AutolinkServiceUrl}} has no value"
        )),
        "{error}"
    );
    assert!(!dir.path().join("out").exists());
}

/// Every id defined in the chain, by kind, with the policy of its first definition.
type Definitions = HashMap<&'static str, Vec<Definition>>;

#[derive(Debug, Clone)]
struct Definition {
    id: String,
    policy: String,
}

/// The kinds of element that define an id, and the parent they sit in.
const DEFINING: [(&str, &str); 11] = [
    ("ClaimType", "ClaimsSchema"),
    ("ClaimsTransformation", "ClaimsTransformations"),
    ("ContentDefinition", "ContentDefinitions"),
    ("LocalizedResources", "Localization"),
    ("ClientDefinition", "ClientDefinitions"),
    ("TechnicalProfile", "TechnicalProfiles"),
    ("UserJourney", "UserJourneys"),
    ("SubJourney", "SubJourneys"),
    ("Predicate", "Predicates"),
    ("PredicateValidation", "PredicateValidations"),
    ("DisplayControl", "DisplayControls"),
];

fn same_id(kind: &str, a: &str, b: &str) -> bool {
    if kind == "ClaimType" {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// What the chain checks found.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    /// A finding at a line of a file (0: the file as a whole).
    fn add(&mut self, file: &Path, line: u32, message: impl Into<String>) {
        let place = match line {
            0 => file_name(file),
            line => format!("{}:{line}", file_name(file)),
        };
        self.0.push(format!("{place}: {}", message.into()));
    }
}

/// The file of the highest layer that defines a technical profile.
fn defining_file(chain: &Chain, tp: &TechnicalProfile) -> PathBuf {
    let policy = tp.defined_in.last().cloned().unwrap_or_default();
    chain
        .layers
        .iter()
        .find(|l| l.policy_id == policy)
        .map(|l| l.path.clone())
        .unwrap_or_default()
}

/// Checks one chain against the rules in this module's documentation.
fn check_chain(env: &Environment, chain: &Chain, findings: &mut Findings) {
    let docs: Vec<(&PolicyFile, roxmltree::Document<'_>)> = chain
        .layers
        .iter()
        .map(|l| (l, policies::parse_xml(&l.path, &l.text).unwrap()))
        .collect();
    let leaf = chain.layers.len() - 1;

    // Chain structure.
    for (index, (layer, doc)) in docs.iter().enumerate() {
        let root = doc.root_element();
        if layer.tenant_id != env.tenant
            || layer.base_tenant.as_deref().unwrap_or(&env.tenant) != env.tenant
        {
            findings.add(&layer.path, 1, format!("tenant is not {}", env.tenant));
        }
        let uri = root.attribute("PublicPolicyUri").unwrap_or("");
        if !uri.ends_with(&format!("/{}", layer.policy_id)) {
            findings.add(
                &layer.path,
                1,
                format!("PublicPolicyUri {uri} does not end with the policy id"),
            );
        }
        let has_rp = child(root, "RelyingParty").is_some();
        if has_rp != (index == leaf) {
            findings.add(
                &layer.path,
                1,
                if has_rp {
                    "a RelyingParty below the leaf"
                } else {
                    "the leaf has no RelyingParty"
                },
            );
        }
    }

    // Definitions, layer by layer; first definitions must be complete.
    let mut defs: Definitions = HashMap::new();
    for (layer, doc) in &docs {
        let mut in_this_file: HashMap<&str, Vec<String>> = HashMap::new();
        for node in doc.descendants().filter(|n| n.is_element()) {
            let Some(&(kind, _)) = DEFINING.iter().find(|(kind, parent)| {
                is_policy(&node, kind)
                    && node.parent().is_some_and(|p| {
                        is_policy(&p, parent)
                            || (*kind == "TechnicalProfile" && is_policy(&p, "RelyingParty"))
                    })
            }) else {
                continue;
            };
            let Some(id) = node.attribute("Id") else {
                findings.add(
                    &layer.path,
                    line_of(doc, node),
                    format!("a {kind} without Id"),
                );
                continue;
            };
            let seen = in_this_file.entry(kind).or_default();
            if seen.iter().any(|s| same_id(kind, s, id)) {
                findings.add(
                    &layer.path,
                    line_of(doc, node),
                    format!("{kind} {id} is defined twice in this file"),
                );
            }
            seen.push(id.to_string());
            let list = defs.entry(kind).or_default();
            let earlier = list.iter().find(|d| same_id(kind, &d.id, id)).cloned();
            match (kind, earlier) {
                (_, None) => {
                    let complete = match kind {
                        "ClaimType" => child(node, "DataType").is_some(),
                        "ContentDefinition" => {
                            child(node, "LoadUri").is_some() && child(node, "DataUri").is_some()
                        }
                        "ClaimsTransformation" => node.attribute("TransformationMethod").is_some(),
                        "UserJourney" => child(node, "OrchestrationSteps").is_some(),
                        _ => true,
                    };
                    if !complete {
                        findings.add(
                            &layer.path,
                            line_of(doc, node),
                            format!("{kind} {id} overrides nothing below and is incomplete (a misspelt override?)"),
                        );
                    }
                    list.push(Definition {
                        id: id.to_string(),
                        policy: layer.policy_id.clone(),
                    });
                }
                ("ClaimType", Some(first)) => {
                    if let Some(data_type) = child(node, "DataType").and_then(|n| n.text()) {
                        let base_type = docs
                            .iter()
                            .find(|(l, _)| l.policy_id == first.policy)
                            .and_then(|(_, d)| {
                                d.descendants()
                                    .find(|n| {
                                        is_policy(n, "ClaimType")
                                            && n.attribute("Id")
                                                .is_some_and(|i| same_id("ClaimType", i, id))
                                    })
                                    .and_then(|n| child(n, "DataType"))
                                    .and_then(|n| n.text())
                                    .map(str::to_string)
                            });
                        if base_type.as_deref().is_some_and(|t| t != data_type) {
                            findings.add(
                                &layer.path,
                                line_of(doc, node),
                                format!("ClaimType {id} changes its DataType"),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let defined = |kind: &str, id: &str| {
        defs.get(kind)
            .is_some_and(|list| list.iter().any(|d| same_id(kind, &d.id, id)))
    };

    // Every technical profile ends with a protocol (its own or included).
    for id in chain.technical_profile_ids().unwrap() {
        match chain.technical_profile(&id) {
            Ok(Some(tp)) if tp.protocol.is_none() => findings.add(
                &defining_file(chain, &tp),
                0,
                format!(
                    "technical profile {id} (in {}) has no protocol, even through includes",
                    tp.defined_in.join(", ")
                ),
            ),
            Ok(_) => {}
            Err(e) => findings.0.push(e.to_string()),
        }
    }

    // References.
    let mut exchanges_anywhere: BTreeSet<String> = BTreeSet::new();
    for (_, doc) in &docs {
        for ex in doc.descendants().filter(|n| is_policy(n, "ClaimsExchange")) {
            exchanges_anywhere.extend(ex.attribute("Id").map(str::to_string));
        }
    }
    for (layer, doc) in &docs {
        // (kind, id, line, what) of every reference in this file.
        let mut references: Vec<(&str, String, u32, String)> = Vec::new();
        let mut need =
            |kind: &'static str, id: Option<&str>, node: roxmltree::Node<'_, '_>, what: &str| {
                if let Some(id) = id {
                    references.push((kind, id.to_string(), line_of(doc, node), what.to_string()));
                }
            };
        for node in doc.descendants().filter(|n| n.is_element()) {
            let name = node.tag_name().name();
            need(
                "ClaimType",
                node.attribute("ClaimTypeReferenceId"),
                node,
                name,
            );
            match name {
                "InputClaimsTransformation" | "OutputClaimsTransformation" => need(
                    "ClaimsTransformation",
                    node.attribute("ReferenceId"),
                    node,
                    name,
                ),
                "ValidationTechnicalProfile"
                | "IncludeTechnicalProfile"
                | "UseTechnicalProfileForSessionManagement" => need(
                    "TechnicalProfile",
                    node.attribute("ReferenceId"),
                    node,
                    name,
                ),
                "ClaimsExchange" => need(
                    "TechnicalProfile",
                    node.attribute("TechnicalProfileReferenceId"),
                    node,
                    name,
                ),
                "OrchestrationStep" => {
                    need(
                        "TechnicalProfile",
                        node.attribute("CpimIssuerTechnicalProfileReferenceId"),
                        node,
                        "SendClaims issuer",
                    );
                    need(
                        "ContentDefinition",
                        node.attribute("ContentDefinitionReferenceId"),
                        node,
                        name,
                    );
                }
                "Item" => match node.attribute("Key") {
                    Some("ContentDefinitionReferenceId") => need(
                        "ContentDefinition",
                        node.text().map(str::trim),
                        node,
                        "metadata ContentDefinitionReferenceId",
                    ),
                    Some("SignUpTarget") => need(
                        "ClaimsExchange",
                        node.text().map(str::trim),
                        node,
                        "metadata SignUpTarget",
                    ),
                    _ => {}
                },
                "LocalizedResourcesReference" => need(
                    "LocalizedResources",
                    node.attribute("LocalizedResourcesReferenceId"),
                    node,
                    name,
                ),
                "ClientDefinition"
                    if node.parent().is_some_and(|p| is_policy(&p, "UserJourney")) =>
                {
                    need(
                        "ClientDefinition",
                        node.attribute("ReferenceId"),
                        node,
                        name,
                    )
                }
                "DefaultUserJourney" => {
                    need("UserJourney", node.attribute("ReferenceId"), node, name)
                }
                "Endpoint" => need(
                    "UserJourney",
                    node.attribute("UserJourneyReferenceId"),
                    node,
                    name,
                ),
                "Precondition"
                    if matches!(node.attribute("Type"), Some("ClaimsExist" | "ClaimEquals")) =>
                {
                    let claim = children(node, "Value")
                        .next()
                        .and_then(|v| v.text())
                        .map(str::trim);
                    need("ClaimType", claim, node, "precondition on");
                }
                "LocalizedString" if node.attribute("ElementType") == Some("ClaimType") => {
                    need("ClaimType", node.attribute("ElementId"), node, name)
                }
                "DisplayClaim" => need(
                    "DisplayControl",
                    node.attribute("DisplayControlReferenceId"),
                    node,
                    name,
                ),
                "PredicateReference" => need("Predicate", node.attribute("Id"), node, name),
                "PredicateValidationReference" => {
                    need("PredicateValidation", node.attribute("Id"), node, name)
                }
                _ => {}
            }
            if node
                .attribute("DefaultValue")
                .is_some_and(|v| v.contains("{Settings:"))
            {
                need(
                    "placeholder",
                    Some("{Settings:...}"),
                    node,
                    "left in a DefaultValue:",
                );
            }
        }
        for (kind, id, line, what) in references {
            let resolves = match kind {
                "ClaimsExchange" => exchanges_anywhere.contains(&id),
                "placeholder" => false,
                kind => defined(kind, &id),
            };
            if !resolves {
                findings.add(
                    &layer.path,
                    line,
                    format!("{what} {id}: no such {kind} in the chain"),
                );
            }
        }

        // Journeys.
        for journey in doc.descendants().filter(|n| is_policy(n, "UserJourney")) {
            let id = journey.attribute("Id").unwrap_or("?");
            let Some(steps) = child(journey, "OrchestrationSteps") else {
                continue;
            };
            let steps: Vec<_> = children(steps, "OrchestrationStep").collect();
            let mut exchange_ids = BTreeSet::new();
            for (index, step) in steps.iter().enumerate() {
                let order = step
                    .attribute("Order")
                    .and_then(|o| o.parse::<usize>().ok());
                if order != Some(index + 1) {
                    findings.add(
                        &layer.path,
                        line_of(doc, *step),
                        format!("journey {id}: step {} is numbered {order:?}", index + 1),
                    );
                }
                let send_claims = step.attribute("Type") == Some("SendClaims");
                if send_claims != (index + 1 == steps.len()) {
                    findings.add(
                        &layer.path,
                        line_of(doc, *step),
                        format!("journey {id}: SendClaims must be the last step, and only it"),
                    );
                }
                for ex in step
                    .descendants()
                    .filter(|n| is_policy(n, "ClaimsExchange"))
                {
                    let ex_id = ex.attribute("Id").unwrap_or("");
                    if !exchange_ids.insert(ex_id.to_string()) {
                        findings.add(
                            &layer.path,
                            line_of(doc, ex),
                            format!("journey {id}: claims exchange {ex_id} twice"),
                        );
                    }
                }
                let exchanges_of = |s: Option<&roxmltree::Node<'_, '_>>| -> BTreeSet<String> {
                    s.map(|s| {
                        s.descendants()
                            .filter(|n| is_policy(n, "ClaimsExchange"))
                            .filter_map(|n| n.attribute("Id").map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
                };
                for selection in step
                    .descendants()
                    .filter(|n| is_policy(n, "ClaimsProviderSelection"))
                {
                    if let Some(target) = selection.attribute("TargetClaimsExchangeId") {
                        if !exchanges_of(steps.get(index + 1)).contains(target) {
                            findings.add(&layer.path, line_of(doc, selection), format!("journey {id}: selection {target} is not a claims exchange of the next step"));
                        }
                    }
                    if let Some(validation) = selection.attribute("ValidationClaimsExchangeId") {
                        if !exchanges_of(Some(step)).contains(validation) {
                            findings.add(&layer.path, line_of(doc, selection), format!("journey {id}: selection {validation} is not a claims exchange of this step"));
                        }
                    }
                }
            }
        }
    }

    // Claim resolvers, and the project's REST calls.
    let ours: BTreeSet<&str> = chain
        .layers
        .iter()
        .filter(|l| !l.path.to_string_lossy().contains("starterpack"))
        .map(|l| l.policy_id.as_str())
        .collect();
    let rp_ids: BTreeSet<String> = docs[leaf]
        .1
        .descendants()
        .filter(|n| {
            is_policy(n, "TechnicalProfile")
                && n.parent().is_some_and(|p| is_policy(&p, "RelyingParty"))
        })
        .filter_map(|n| n.attribute("Id").map(str::to_string))
        .collect();
    for id in chain.technical_profile_ids().unwrap() {
        let Ok(Some(tp)) = chain.technical_profile(&id) else {
            continue;
        };
        let path = &defining_file(chain, &tp);
        let uses_resolver = tp
            .input_claims
            .iter()
            .chain(&tp.output_claims)
            .chain(&tp.persisted_claims)
            .filter_map(|c| c.default_value.as_deref())
            .any(|v| v.starts_with('{') && v.ends_with('}') && v.contains(':'));
        if uses_resolver
            && !rp_ids.contains(&id)
            && tp.metadata("IncludeClaimResolvingInClaimsHandling") != Some("true")
        {
            findings.add(path, 0, format!("technical profile {id} uses a claim resolver without IncludeClaimResolvingInClaimsHandling"));
        }
        let ours_defines = tp.defined_in.iter().any(|p| ours.contains(p.as_str()));
        if !(tp.is_restful() && ours_defines) || tp.metadata("ServiceUrl").is_none() {
            continue;
        }
        check_rest_auth(env, &tp, path, findings);
    }

    check_autolink_order(chain, findings);
}

/// The REST rules for the project's calls.
fn check_rest_auth(env: &Environment, tp: &TechnicalProfile, path: &Path, findings: &mut Findings) {
    let id = &tp.id;
    let has_key = |key: &str| {
        tp.cryptographic_keys
            .iter()
            .any(|(k, r)| k == key && r.starts_with("B2C_1A_"))
    };
    match tp.metadata("AuthenticationType") {
        Some("Basic") => {
            if !has_key("BasicAuthenticationUsername") || !has_key("BasicAuthenticationPassword") {
                findings.add(path, 0, format!("{id}: Basic without both Basic keys"));
            }
        }
        Some("ClientCertificate") => {
            if !has_key("ClientCertificate") {
                findings.add(
                    path,
                    0,
                    format!("{id}: ClientCertificate without the certificate key"),
                );
            }
        }
        Some("ApiKeyHeader") => {
            if tp.cryptographic_keys.len() != 1
                || !tp.cryptographic_keys[0].1.starts_with("B2C_1A_")
            {
                findings.add(
                    path,
                    0,
                    format!("{id}: ApiKeyHeader needs exactly one key, named by its header"),
                );
            }
        }
        Some("Bearer") => {
            let from_claim = tp
                .metadata("UseClaimAsBearerToken")
                .is_some_and(|c| tp.input_claims.iter().any(|i| i.claim_type == c));
            if !from_claim && !has_key("BearerAuthenticationToken") {
                findings.add(
                    path,
                    0,
                    format!("{id}: Bearer without a token claim among its inputs or a token key"),
                );
            }
        }
        other => findings.add(
            path,
            0,
            format!("{id}: AuthenticationType {other:?} is not allowed for autolink"),
        ),
    }
    let url = tp.metadata("ServiceUrl").unwrap_or("");
    let send_in = tp.metadata("SendClaimsIn");
    let is_autolink = url.contains("/b2c/rest/");
    if is_autolink && send_in != Some("Body") {
        findings.add(
            path,
            0,
            format!("{id}: autolink reads claims from the JSON body (SendClaimsIn=Body)"),
        );
    }
    if env.name != "Test" && !url.starts_with("https://") {
        findings.add(path, 0, format!("{id}: ServiceUrl {url} is not https"));
    }
}

/// The order of autolink's steps on the pages and in the journey.
fn check_autolink_order(chain: &Chain, findings: &mut Findings) {
    let path = chain.layers[chain.layers.len() - 1].path.clone();
    for (page, precheck, write) in [
        (
            "LocalAccountSignUpWithLogonEmail",
            "REST-Autolink-Precheck-Local",
            "AAD-UserWriteUsingLogonEmail",
        ),
        (
            "SelfAsserted-Social",
            "REST-Autolink-Precheck-Social",
            "AAD-UserWriteUsingAlternativeSecurityId",
        ),
    ] {
        let tp = chain.technical_profile(page).unwrap().unwrap();
        let expected = ["Autolink-AcquireCredentials", precheck, write];
        if tp.validation_technical_profiles != expected {
            findings.add(
                &path,
                0,
                format!(
                    "{page} runs {:?}, not {expected:?}",
                    tp.validation_technical_profiles
                ),
            );
        }
    }
    // The relying party's journey, its steps' technical profiles in order.
    let leaf = &chain.layers[chain.layers.len() - 1];
    let doc = policies::parse_xml(&leaf.path, &leaf.text).unwrap();
    let journey_id = doc
        .descendants()
        .find(|n| is_policy(n, "DefaultUserJourney"))
        .and_then(|n| n.attribute("ReferenceId"))
        .unwrap_or("")
        .to_string();
    let rp_outputs: Vec<String> = doc
        .descendants()
        .filter(|n| {
            is_policy(n, "OutputClaim") && n.ancestors().any(|a| is_policy(&a, "RelyingParty"))
        })
        .filter_map(|n| n.attribute("ClaimTypeReferenceId").map(str::to_string))
        .collect();
    if !rp_outputs.iter().any(|c| c == "customerAccountNumber") {
        findings.add(
            &leaf.path,
            0,
            "the relying party does not issue customerAccountNumber",
        );
    }
    let mut steps: Vec<Vec<String>> = Vec::new();
    for layer in chain.layers.iter().rev() {
        let doc = policies::parse_xml(&layer.path, &layer.text).unwrap();
        if let Some(journey) = doc
            .descendants()
            .find(|n| is_policy(n, "UserJourney") && n.attribute("Id") == Some(journey_id.as_str()))
        {
            steps = journey
                .descendants()
                .filter(|n| is_policy(n, "OrchestrationStep"))
                .map(|s| {
                    s.descendants()
                        .filter(|n| is_policy(n, "ClaimsExchange"))
                        .filter_map(|n| {
                            n.attribute("TechnicalProfileReferenceId")
                                .map(str::to_string)
                        })
                        .chain(
                            s.attribute("CpimIssuerTechnicalProfileReferenceId")
                                .map(|_| "(SendClaims)".to_string()),
                        )
                        .collect()
                })
                .collect();
            break;
        }
    }
    let position = |tp: &str| steps.iter().position(|s| s.iter().any(|t| t == tp));
    let writes: Vec<usize> = steps
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            s.iter().any(|t| {
                chain
                    .technical_profile(t)
                    .ok()
                    .flatten()
                    .is_some_and(|tp| tp.metadata("Operation") == Some("Write"))
                    || t == "LocalAccountSignUpWithLogonEmail"
                    || t == "SelfAsserted-Social"
            })
        })
        .map(|(i, _)| i)
        .collect();
    let (
        Some(credentials),
        Some(precheck),
        Some(social_write),
        Some(link_local),
        Some(link_social),
        Some(send),
    ) = (
        position("Autolink-AcquireCredentials"),
        position("REST-Autolink-Precheck-Social"),
        position("AAD-UserWriteUsingAlternativeSecurityId"),
        position("REST-Autolink-Link-Local"),
        position("REST-Autolink-Link-Social"),
        position("(SendClaims)"),
    )
    else {
        findings.add(
            &leaf.path,
            0,
            format!("journey {journey_id} lacks an autolink step: {steps:?}"),
        );
        return;
    };
    let ok = credentials < precheck
        && precheck < social_write
        && writes.iter().all(|w| *w < link_local && *w < link_social)
        && link_local < send
        && link_social < send;
    if !ok {
        findings.add(
            &leaf.path,
            0,
            format!("journey {journey_id}: autolink steps out of order: {steps:?}"),
        );
    }
}

#[test]
fn the_whole_chain_resolves_every_reference_and_overrides_legally() {
    let test = "the_whole_chain_resolves_every_reference_and_overrides_legally";
    let settings = app_settings();
    let mut findings = Findings::default();
    let mut checked = 0;
    for env in &settings.environments {
        let (_dir, files) = render(env);
        let Some(chains) = chains(&env.tenant, &files) else {
            return cannot_run(
                test,
                "the starter pack ../shared/b2c/starterpack/SocialAndLocalAccounts is missing",
            );
        };
        assert_eq!(
            chains.len(),
            4,
            "one chain per AutolinkRestAuth alternative"
        );
        for (variant, chain) in &chains {
            let before = findings.0.len();
            check_chain(env, chain, &mut findings);
            for finding in &mut findings.0[before..] {
                *finding = format!("[{} / {variant}] {finding}", env.name);
            }
            checked += 1;
        }
    }
    assert!(checked >= 12);
    assert!(
        findings.0.is_empty(),
        "{} problems:\n{}",
        findings.0.len(),
        findings.0.join("\n")
    );
}

#[test]
fn every_restful_profile_of_ours_has_a_service_url_even_one_only_included() {
    let test = "every_restful_profile_of_ours_has_a_service_url_even_one_only_included";
    let mut checked = BTreeSet::new();
    let mut missing = Vec::new();
    for env in &app_settings().environments {
        let (_dir, files) = render(env);
        let Some(chains) = chains(&env.tenant, &files) else {
            return cannot_run(test, "the starter pack is missing");
        };
        for (variant, chain) in &chains {
            for layer in chain
                .layers
                .iter()
                .filter(|l| file_name(&l.path).starts_with("Autolink"))
            {
                let doc = policies::parse_xml(&layer.path, &layer.text).unwrap();
                for node in doc
                    .descendants()
                    .filter(|n| is_policy(n, "TechnicalProfile"))
                {
                    let id = node.attribute("Id").unwrap();
                    let tp = chain.technical_profile(id).unwrap().unwrap();
                    if !tp.is_restful() {
                        continue;
                    }
                    checked.insert(id.to_string());
                    if !tp
                        .metadata("ServiceUrl")
                        .is_some_and(|u| u.starts_with("http"))
                    {
                        missing.push(format!("[{} / {variant}] {id}", env.name));
                    }
                }
            }
        }
    }
    for shared in ["REST-Autolink-Auth", "REST-Autolink-Common"] {
        assert!(
            checked.contains(shared),
            "{shared} was not checked: {checked:?}"
        );
    }
    assert!(
        missing.is_empty(),
        "RESTful profiles without a ServiceUrl: {missing:?}"
    );
}

#[test]
fn the_readme_upload_order_is_the_chain_order() {
    let env = &app_settings().environments[0];
    let (_dir, files) = render(env);
    let Some(chains) = chains(&env.tenant, &files) else {
        return cannot_run(
            "the_readme_upload_order_is_the_chain_order",
            "the starter pack is missing",
        );
    };
    let (_, chain) = chains
        .iter()
        .find(|(variant, _)| variant == "AutolinkRestAuth.Basic.xml")
        .expect("the Basic alternative");
    let expected: Vec<String> = chain.layers.iter().map(|l| file_name(&l.path)).collect();
    let readme = std::fs::read_to_string(policies_dir().join("README.md")).unwrap();
    let section = readme
        .split("## Upload order")
        .nth(1)
        .expect("policies/README.md has an \"## Upload order\" section");
    let section = section.split("\n## ").next().unwrap_or("");
    let listed: Vec<String> = section
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .filter_map(|l| {
            l.split(|c: char| c == '`' || c.is_whitespace())
                .find(|w| w.ends_with(".xml"))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(listed, expected, "the README's upload order");
}

// ---------------------------------------------------------------------------------------------
// The REST calls, from the XML to the server.

/// The chain of the Test environment with one authentication alternative.
pub(crate) fn test_chain(variant: &str) -> Option<(Environment, Chain, tempfile::TempDir)> {
    let env = app_settings()
        .environments
        .into_iter()
        .find(|e| e.name == "Test")
        .expect("a Test environment in policies/appsettings.json");
    let (dir, files) = render(&env);
    let (_, chain) = chains(&env.tenant, &files)?
        .into_iter()
        .find(|(v, _)| v == variant)
        .unwrap_or_else(|| panic!("no alternative {variant}"));
    Some((env, chain, dir))
}

/// The project's calls to autolink: RESTful profiles under `/b2c/rest/` that B2C runs (a claims
/// exchange of a journey, or a validation technical profile), not those only included by others.
fn autolink_calls(chain: &Chain) -> Vec<TechnicalProfile> {
    let mut used = BTreeSet::new();
    for layer in &chain.layers {
        let doc = policies::parse_xml(&layer.path, &layer.text).unwrap();
        for node in doc.descendants() {
            if is_policy(&node, "ClaimsExchange") {
                used.extend(
                    node.attribute("TechnicalProfileReferenceId")
                        .map(str::to_string),
                );
            }
            if is_policy(&node, "ValidationTechnicalProfile") {
                used.extend(node.attribute("ReferenceId").map(str::to_string));
            }
        }
    }
    used.iter()
        .filter_map(|id| chain.technical_profile(id).unwrap())
        .filter(|tp| {
            tp.is_restful()
                && tp
                    .metadata("ServiceUrl")
                    .is_some_and(|u| u.contains("/b2c/rest/"))
        })
        .collect()
}

/// The data type of a claim type in the chain.
fn data_type(chain: &Chain, claim_type: &str) -> String {
    for layer in chain.layers.iter().rev() {
        let doc = policies::parse_xml(&layer.path, &layer.text).unwrap();
        let found = doc
            .descendants()
            .find(|n| {
                is_policy(n, "ClaimType")
                    && n.attribute("Id")
                        .is_some_and(|i| i.eq_ignore_ascii_case(claim_type))
            })
            .and_then(|n| child(n, "DataType"))
            .and_then(|n| n.text())
            .map(|t| t.trim().to_string());
        if let Some(found) = found {
            return found;
        }
    }
    panic!("claim type {claim_type} has no DataType in the chain")
}

/// One user at one store: what the claims bag holds when B2C makes the call.
struct Journey {
    client_id: &'static str,
    culture: &'static str,
    /// Claim type (as the policies name it) -> value.
    claims: HashMap<&'static str, Value>,
}

impl Journey {
    fn local(email: &str, client_id: &'static str) -> Journey {
        Journey {
            client_id,
            culture: "en-US",
            claims: HashMap::from([
                ("email", json!(email)),
                ("signInNames.emailAddress", json!(email)),
                ("objectId", json!(uuid::Uuid::new_v4().to_string())),
                ("givenName", json!("Ana")),
                ("surname", json!("García")),
            ]),
        }
    }

    fn google(email: &str, client_id: &'static str) -> Journey {
        let mut journey = Journey::local(email, client_id);
        journey.claims.remove("signInNames.emailAddress");
        journey.claims.insert("emailVerified", json!(true));
        journey
            .claims
            .insert("identityProvider", json!("google.com"));
        journey
    }

    fn resolve(&self, value: &str) -> String {
        match value {
            "{OIDC:ClientId}" => self.client_id.to_string(),
            "{Culture:RFC5646}" => self.culture.to_string(),
            other if other.starts_with('{') && other.ends_with('}') => {
                panic!("the test does not know the claim resolver {other}: teach it")
            }
            other => other.to_string(),
        }
    }

    /// The JSON body B2C sends for this profile: each input claim under its partner name; a value
    /// that must be the default is the default; else the claims bag; else the default; a claim
    /// the bag lacks and that has no default is left out (B2C leaves out claims without value).
    fn body(&self, chain: &Chain, tp: &TechnicalProfile) -> Map<String, Value> {
        let mut body = Map::new();
        for claim in &tp.input_claims {
            let value = if claim.always_use_default_value {
                claim
                    .default_value
                    .as_deref()
                    .map(|v| json!(self.resolve(v)))
            } else {
                self.claims
                    .get(claim.claim_type.as_str())
                    .cloned()
                    .or_else(|| {
                        claim
                            .default_value
                            .as_deref()
                            .map(|v| json!(self.resolve(v)))
                    })
            };
            let Some(value) = value else {
                panic!(
                    "{} sends claim {} and the test has no realistic value for it: add one to Journey",
                    tp.id, claim.claim_type
                )
            };
            let value = match (data_type(chain, &claim.claim_type).as_str(), value) {
                ("boolean", Value::String(s)) => json!(s == "true"),
                (_, value) => value,
            };
            let name = claim.partner_name().to_string();
            assert!(
                body.insert(name.clone(), value).is_none(),
                "{} sends {name} twice",
                tp.id
            );
        }
        body
    }
}

/// The call `tp` makes for `journey`: status and JSON answer.
async fn call(
    app: &TestApp,
    env: &Environment,
    chain: &Chain,
    tp: &TechnicalProfile,
    journey: &Journey,
    auth: &Auth,
) -> (u16, Value) {
    let url = tp.metadata("ServiceUrl").unwrap();
    let base = env.value("AutolinkServiceUrl").unwrap();
    let path = url
        .strip_prefix(base.as_str())
        .unwrap_or_else(|| panic!("{}: ServiceUrl {url} is not under {base}", tp.id));
    assert!(
        path == "/b2c/rest/precheck" || path == "/b2c/rest/link",
        "{}: {path} is not an autolink REST endpoint",
        tp.id
    );
    assert_eq!(tp.metadata("SendClaimsIn"), Some("Body"), "{}", tp.id);
    let body = journey.body(chain, tp);
    let request = app
        .client
        .post(format!("{}{path}", app.address))
        .json(&body);
    let request = match auth {
        Auth::Basic => {
            assert_eq!(
                tp.metadata("AuthenticationType"),
                Some("Basic"),
                "{}",
                tp.id
            );
            request.basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        }
        Auth::ApiKey(key) => {
            assert_eq!(
                tp.metadata("AuthenticationType"),
                Some("ApiKeyHeader"),
                "{}",
                tp.id
            );
            let header = &tp.cryptographic_keys[0].0;
            request.header(header.as_str(), key.as_str())
        }
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{}: answer is not JSON ({status}): {text}", tp.id));
    (status, value)
}

enum Auth {
    Basic,
    ApiKey(String),
}

/// Asserts a 200 that carries every output claim the profile expects, and returns it.
fn assert_outputs(tp: &TechnicalProfile, status: u16, body: &Value) {
    assert_eq!(status, 200, "{}: {body}", tp.id);
    for claim in &tp.output_claims {
        if claim.default_value.is_none() {
            let value = &body[claim.partner_name()];
            assert!(
                value.as_str().is_some_and(|v| !v.is_empty()),
                "{}: output claim {} ({}) did not come back: {body}",
                tp.id,
                claim.claim_type,
                claim.partner_name()
            );
        }
    }
}

fn assert_refused(tp: &TechnicalProfile, status: u16, body: &Value, code: &str) -> String {
    assert_eq!(status, 409, "{}: {body}", tp.id);
    assert_eq!(body["status"], 409, "{}: {body}", tp.id);
    assert_eq!(body["version"], "1.0.0", "{}: {body}", tp.id);
    assert_eq!(body["code"], code, "{}: {body}", tp.id);
    let message = body["userMessage"].as_str().unwrap_or("").to_string();
    assert!(!message.is_empty(), "{}: no userMessage: {body}", tp.id);
    message
}

/// A server where nothing is verified by default: only the claims the policies send (a local
/// account, or the provider's emailVerified) make an email verified.
async fn strict_app(change: impl FnOnce(&mut autolink::config::Settings)) -> TestApp {
    let app = spawn_app_with(|s| {
        s.linking.email_verifying_idps = vec![];
        s.linking.treat_missing_identities_as_local = false;
        change(s);
    })
    .await;
    app.import_csv(&csv(&["B2B-1,USRT,person,true,buyer@contoso.com,B,Uyer"]));
    app
}

fn profile<'a>(calls: &'a [TechnicalProfile], id: &str) -> &'a TechnicalProfile {
    calls
        .iter()
        .find(|tp| tp.id == id)
        .unwrap_or_else(|| panic!("no autolink call {id} in the policies"))
}

#[test]
fn the_policies_send_only_claims_autolink_reads_and_every_claim_it_reads() {
    let Some((_, chain, _dir)) = test_chain("AutolinkRestAuth.Basic.xml") else {
        return cannot_run(
            "the_policies_send_only_claims_autolink_reads_and_every_claim_it_reads",
            "the starter pack is missing",
        );
    };
    let calls = autolink_calls(&chain);
    let mut sent = BTreeSet::new();
    for tp in &calls {
        for claim in &tp.input_claims {
            assert!(
                claims::INPUTS.contains(&claim.partner_name()),
                "{} sends {}, which autolink does not read (src/api/rest.rs claims::INPUTS: {:?})",
                tp.id,
                claim.partner_name(),
                claims::INPUTS
            );
            sent.insert(claim.partner_name().to_string());
        }
        for claim in &tp.output_claims {
            assert!(
                claims::OUTPUTS.contains(&claim.partner_name()),
                "{} expects {}, which autolink does not answer (claims::OUTPUTS: {:?})",
                tp.id,
                claim.partner_name(),
                claims::OUTPUTS
            );
        }
    }
    let read: BTreeSet<String> = claims::INPUTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(sent, read, "claims autolink reads that no policy sends");
    let ids: BTreeSet<&str> = calls.iter().map(|tp| tp.id.as_str()).collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            "REST-Autolink-Link-Local",
            "REST-Autolink-Link-Social",
            "REST-Autolink-Precheck-Local",
            "REST-Autolink-Precheck-Social",
        ])
    );
}

#[tokio::test]
async fn the_rest_profiles_drive_precheck_and_link_with_the_claims_they_send() {
    let Some((env, chain, _dir)) = test_chain("AutolinkRestAuth.Basic.xml") else {
        return cannot_run(
            "the_rest_profiles_drive_precheck_and_link_with_the_claims_they_send",
            "the starter pack is missing",
        );
    };
    let calls = autolink_calls(&chain);
    let precheck_local = profile(&calls, "REST-Autolink-Precheck-Local");
    let link_local = profile(&calls, "REST-Autolink-Link-Local");
    let precheck_social = profile(&calls, "REST-Autolink-Precheck-Social");
    let link_social = profile(&calls, "REST-Autolink-Link-Social");
    let app = strict_app(|_| {}).await;
    let auth = Auth::Basic;

    // A business buyer with a customer record signs up with a local account, then is linked.
    let buyer = Journey::local("buyer@contoso.com", B2B_CLIENT);
    let (status, body) = call(&app, &env, &chain, precheck_local, &buyer, &auth).await;
    assert_outputs(precheck_local, status, &body);
    assert_eq!(body["autoLinkOutcome"], "WouldLink");
    let (status, body) = call(&app, &env, &chain, link_local, &buyer, &auth).await;
    assert_outputs(link_local, status, &body);
    assert_eq!(body["customerAccountNumber"], "B2B-1");
    assert_eq!(body["autoLinkOutcome"], "Linked");
    // Signing in again (the same call) resolves the link.
    let (status, body) = call(&app, &env, &chain, link_local, &buyer, &auth).await;
    assert_outputs(link_local, status, &body);
    assert_eq!(body["autoLinkOutcome"], "AlreadyLinked");

    // A new shopper signs up with Google (email_verified) on the consumer store: a new customer,
    // named from the claims.
    let shopper = Journey::google("new.shopper@example.com", B2C_CLIENT);
    let (status, body) = call(&app, &env, &chain, precheck_social, &shopper, &auth).await;
    assert_outputs(precheck_social, status, &body);
    assert_eq!(body["autoLinkOutcome"], "WouldCreate");
    let (status, body) = call(&app, &env, &chain, link_social, &shopper, &auth).await;
    assert_outputs(link_social, status, &body);
    assert_eq!(body["autoLinkOutcome"], "Created");
    let created = app.customers_with_email("new.shopper@example.com");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].account_number, body["customerAccountNumber"]);
    assert_eq!(created[0].first_name.as_deref(), Some("Ana"));
    assert_eq!(created[0].last_name.as_deref(), Some("García"));

    // The same shopper at the business store, without a business customer: refused on the page,
    // in the user's language.
    let mut stranger = Journey::google("new.shopper@example.com", B2B_CLIENT);
    let (status, body) = call(&app, &env, &chain, precheck_social, &stranger, &auth).await;
    let english = assert_refused(
        precheck_social,
        status,
        &body,
        "Microsoft_Dynamics_CommerceIdentityNotFound",
    );
    stranger.culture = "fr-FR";
    let (status, body) = call(&app, &env, &chain, precheck_social, &stranger, &auth).await;
    let french = assert_refused(
        precheck_social,
        status,
        &body,
        "Microsoft_Dynamics_CommerceIdentityNotFound",
    );
    assert_ne!(english, french, "uiLocales does not reach autolink");

    // A local sign-up at the business store with no customer record: refused before the account
    // exists.
    let nobody = Journey::local("nobody@contoso.com", B2B_CLIENT);
    let (status, body) = call(&app, &env, &chain, precheck_local, &nobody, &auth).await;
    assert_refused(
        precheck_local,
        status,
        &body,
        "Microsoft_Dynamics_CommerceIdentityNotFound",
    );

    // Google saying the email is not verified: refused.
    let mut unverified = Journey::google("unverified@example.com", B2C_CLIENT);
    unverified.claims.insert("emailVerified", json!(false));
    let (status, body) = call(&app, &env, &chain, precheck_social, &unverified, &auth).await;
    assert_refused(precheck_social, status, &body, "EmailNotVerified");
    assert_eq!(app.customers_with_email("unverified@example.com").len(), 0);
}

#[tokio::test]
async fn the_api_key_alternative_reaches_autolink_with_its_header() {
    let Some((env, chain, _dir)) = test_chain("AutolinkRestAuth.ApiKeyHeader.xml") else {
        return cannot_run(
            "the_api_key_alternative_reaches_autolink_with_its_header",
            "the starter pack is missing",
        );
    };
    let calls = autolink_calls(&chain);
    let link_local = profile(&calls, "REST-Autolink-Link-Local");
    let header = link_local.cryptographic_keys[0].0.clone();
    let key = "an-api-key-for-the-policies-test".to_string();
    let app = strict_app(|s| {
        s.auth.basic = None;
        s.auth.api_key = Some(autolink::config::ApiKeySettings {
            header,
            key_hashes: vec![],
            keys: vec![key.clone()],
        });
    })
    .await;
    let buyer = Journey::local("buyer@contoso.com", B2B_CLIENT);
    let (status, body) = call(&app, &env, &chain, link_local, &buyer, &Auth::ApiKey(key)).await;
    assert_outputs(link_local, status, &body);
    assert_eq!(body["customerAccountNumber"], "B2B-1");
    let (status, _) = call(
        &app,
        &env,
        &chain,
        link_local,
        &buyer,
        &Auth::ApiKey("wrong".into()),
    )
    .await;
    assert_eq!(status, 401);
}
