//! The sample custom policies in `policies/` (DESIGN section 6).
//!
//! - Rendering (`autolink policies render`): the policy files carry placeholders in the convention
//!   of the Azure AD B2C Visual Studio Code extension, `{Settings:Tenant}` and `{Settings:Name}`,
//!   with one value per environment in `policies/appsettings.json`
//!   (`{"Environments":[{"Name":..,"Production":..,"Tenant":..,"PolicySettings":{..}}]}`).
//!   Unlike the extension, a placeholder without a value is an error that names the file and
//!   line, values are XML-escaped, and every rendered file must be well-formed XML; in an
//!   environment marked `Production`, REST service URLs must be `https://` and `DebugMode` off.
//! - Reading a chain ([`Chain`]): B2C layers policy files through `BasePolicy`; a technical profile
//!   is the sum of its definitions in every layer and of the profile it includes. [`Chain`] puts
//!   the files in order and computes that sum ([`TechnicalProfile`]), so tests (and the mock B2C)
//!   see a REST call exactly as B2C would make it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// The namespace of custom-policy XML.
pub const POLICY_NAMESPACE: &str = "http://schemas.microsoft.com/online/cpim/schemas/2013/06";

/// The settings file's name inside the policies folder.
pub const APP_SETTINGS_FILE: &str = "appsettings.json";

/// The placeholder prefix (`{Settings:Name}`).
const PLACEHOLDER_PREFIX: &str = "{Settings:";

/// A problem with the policies, their settings, or their rendering.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A problem in a file, at a line when known.
    #[error("{location}: {message}")]
    At {
        /// Where.
        location: Location,
        /// What.
        message: String,
    },
    /// The environment is not in the settings file.
    #[error("environment {name:?} is not in {} (environments: {})", path.display(), known.join(", "))]
    UnknownEnvironment {
        /// The name asked for.
        name: String,
        /// The settings file.
        path: PathBuf,
        /// The names it has.
        known: Vec<String>,
    },
    /// Several problems, each on its own line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Many(Vec<PolicyError>),
}

impl PolicyError {
    fn at(path: &Path, line: Option<u32>, message: impl Into<String>) -> PolicyError {
        PolicyError::At {
            location: Location {
                path: path.to_path_buf(),
                line,
            },
            message: message.into(),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> PolicyError {
        PolicyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// One error, or all of them.
    fn collect(mut errors: Vec<PolicyError>) -> Result<(), PolicyError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(PolicyError::Many(errors)),
        }
    }
}

/// A file and, when known, a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// The line.
    pub line: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// `appsettings.json`, in the B2C Visual Studio Code extension's format. Unknown keys are
/// allowed (the extension's own `EnvironmentsFolder` and the like).
#[derive(Debug, Clone, Deserialize)]
pub struct AppSettings {
    /// One entry per environment (tenant).
    #[serde(rename = "Environments")]
    pub environments: Vec<Environment>,
}

/// One environment: a B2C tenant and the values of its placeholders.
#[derive(Debug, Clone, Deserialize)]
pub struct Environment {
    /// The name given to `--env`.
    #[serde(rename = "Name")]
    pub name: String,
    /// A production tenant: rendering refuses plain-http service URLs and REST debug mode.
    #[serde(rename = "Production", default)]
    pub production: bool,
    /// The tenant (`fabrikam.onmicrosoft.com`), the value of `{Settings:Tenant}`.
    #[serde(rename = "Tenant")]
    pub tenant: String,
    /// The values of the other placeholders, `{Settings:<key>}`.
    #[serde(rename = "PolicySettings", default)]
    pub policy_settings: BTreeMap<String, Value>,
}

impl AppSettings {
    /// Reads and parses a settings file.
    pub fn load(path: &Path) -> Result<AppSettings, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Parses settings text; `path` is only for messages.
    pub fn parse(path: &Path, text: &str) -> Result<AppSettings, PolicyError> {
        let settings: AppSettings = serde_json::from_str(text.trim_start_matches('\u{feff}'))
            .map_err(|e| {
                PolicyError::at(
                    path,
                    u32::try_from(e.line()).ok(),
                    format!("not valid settings: {e}"),
                )
            })?;
        let mut seen = Vec::new();
        for env in &settings.environments {
            if env.name.trim().is_empty() {
                return Err(PolicyError::at(path, None, "an environment has no Name"));
            }
            if seen.contains(&env.name) {
                return Err(PolicyError::at(
                    path,
                    None,
                    format!("environment {:?} appears twice", env.name),
                ));
            }
            seen.push(env.name.clone());
        }
        Ok(settings)
    }

    /// The environment called `name`.
    pub fn environment(&self, path: &Path, name: &str) -> Result<&Environment, PolicyError> {
        self.environments
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| PolicyError::UnknownEnvironment {
                name: name.to_string(),
                path: path.to_path_buf(),
                known: self.environments.iter().map(|e| e.name.clone()).collect(),
            })
    }
}

impl Environment {
    /// The value of `{Settings:<name>}`, or why there is none. Strings, numbers and booleans
    /// are values; an empty string, null, a list or an object is not.
    pub fn value(&self, name: &str) -> Result<String, String> {
        let missing = || {
            format!(
                "{{Settings:{name}}} has no value in environment {:?}",
                self.name
            )
        };
        if name == "Tenant" {
            let tenant = self.tenant.trim();
            return if tenant.is_empty() {
                Err(missing())
            } else {
                Ok(tenant.to_string())
            };
        }
        match self.policy_settings.get(name) {
            None | Some(Value::Null) => Err(missing()),
            Some(Value::String(s)) if s.trim().is_empty() => Err(format!(
                "{{Settings:{name}}} is empty in environment {:?}",
                self.name
            )),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Array(_) | Value::Object(_)) => Err(format!(
                "{{Settings:{name}}} in environment {:?} is not a string, number or boolean",
                self.name
            )),
        }
    }
}

/// Escapes text for XML content and attribute values.
fn xml_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn is_placeholder_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Replaces every `{Settings:Name}` in `text` with the environment's value (XML-escaped).
/// Every placeholder without a value, and every malformed one, is reported with its line;
/// `path` is only for messages.
pub fn render_text(path: &Path, text: &str, env: &Environment) -> Result<String, PolicyError> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = u32::try_from(index + 1).ok();
        let mut rest = line;
        while let Some(start) = rest.find(PLACEHOLDER_PREFIX) {
            out.push_str(&rest[..start]);
            let after = &rest[start + PLACEHOLDER_PREFIX.len()..];
            match after.find('}') {
                Some(end) if is_placeholder_name(&after[..end]) => {
                    match env.value(&after[..end]) {
                        Ok(value) => out.push_str(&xml_escape(&value)),
                        Err(message) => errors.push(PolicyError::at(path, line_no, message)),
                    }
                    rest = &after[end + 1..];
                }
                _ => {
                    let shown: String = after.chars().take(40).collect();
                    errors.push(PolicyError::at(
                        path,
                        line_no,
                        format!(
                            "malformed placeholder {PLACEHOLDER_PREFIX}{}",
                            shown.trim_end()
                        ),
                    ));
                    out.push_str(PLACEHOLDER_PREFIX);
                    rest = after;
                }
            }
        }
        out.push_str(rest);
    }
    PolicyError::collect(errors)?;
    Ok(out)
}

/// Checks a rendered file: well-formed XML, a `TrustFrameworkPolicy` root, and, in a production
/// environment, only `https://` service URLs and no REST or policy debug mode.
pub fn check_rendered(path: &Path, text: &str, env: &Environment) -> Result<(), PolicyError> {
    let doc = parse_xml(path, text)?;
    let root = doc.root_element();
    if root.tag_name().name() != "TrustFrameworkPolicy"
        || root.tag_name().namespace() != Some(POLICY_NAMESPACE)
    {
        return Err(PolicyError::at(
            path,
            Some(line_of(&doc, root)),
            "the root element is not a TrustFrameworkPolicy",
        ));
    }
    if !env.production {
        return Ok(());
    }
    let mut errors = Vec::new();
    if root
        .attribute("DeploymentMode")
        .is_some_and(|m| m.eq_ignore_ascii_case("Development"))
    {
        errors.push(PolicyError::at(
            path,
            Some(line_of(&doc, root)),
            format!(
                "DeploymentMode=\"Development\" in production environment {:?}",
                env.name
            ),
        ));
    }
    for item in doc.descendants().filter(|n| is_policy(n, "Item")) {
        let value = item.text().unwrap_or("").trim();
        match item.attribute("Key") {
            Some("ServiceUrl") if !value.starts_with("https://") => {
                errors.push(PolicyError::at(
                    path,
                    Some(line_of(&doc, item)),
                    format!(
                        "ServiceUrl {value:?} is not https:// in production environment {:?}",
                        env.name
                    ),
                ));
            }
            Some("DebugMode") if value.eq_ignore_ascii_case("true") => {
                errors.push(PolicyError::at(
                    path,
                    Some(line_of(&doc, item)),
                    format!("DebugMode is true in production environment {:?}", env.name),
                ));
            }
            _ => {}
        }
    }
    PolicyError::collect(errors)
}

/// What `render_dir` wrote.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The environment.
    pub environment: String,
    /// The files written, in name order.
    pub files: Vec<PathBuf>,
}

/// The policy files of a folder: its `*.xml` files (not sub-folders), in name order.
pub fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| PolicyError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| PolicyError::io(dir, e))?.path();
        if path.is_file()
            && path
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("xml"))
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Renders every policy file of `policies_dir` for environment `env_name` (from
/// `policies_dir/appsettings.json`) into `out_dir`, under the same names. Nothing is written
/// unless every file renders and passes [`check_rendered`].
pub fn render_dir(
    policies_dir: &Path,
    env_name: &str,
    out_dir: &Path,
) -> Result<Rendered, PolicyError> {
    let settings_path = policies_dir.join(APP_SETTINGS_FILE);
    let settings = AppSettings::load(&settings_path)?;
    let env = settings.environment(&settings_path, env_name)?;
    let files = policy_files(policies_dir)?;
    if files.is_empty() {
        return Err(PolicyError::at(
            policies_dir,
            None,
            "no policy files (*.xml) in this folder",
        ));
    }
    if let (Ok(a), Ok(b)) = (policies_dir.canonicalize(), out_dir.canonicalize()) {
        if a == b {
            return Err(PolicyError::at(
                out_dir,
                None,
                "the output folder is the policies folder; rendering would overwrite the sources",
            ));
        }
    }
    let mut rendered = Vec::new();
    let mut errors = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::io(path, e))?;
        match render_text(path, &text, env).and_then(|out| {
            check_rendered(path, &out, env)?;
            Ok(out)
        }) {
            Ok(out) => rendered.push((path, out)),
            Err(PolicyError::Many(many)) => errors.extend(many),
            Err(error) => errors.push(error),
        }
    }
    PolicyError::collect(errors)?;
    std::fs::create_dir_all(out_dir).map_err(|e| PolicyError::io(out_dir, e))?;
    let mut written = Vec::new();
    for (source, text) in rendered {
        let name = source.file_name().unwrap_or(source.as_os_str());
        let target = out_dir.join(name);
        std::fs::write(&target, text).map_err(|e| PolicyError::io(&target, e))?;
        written.push(target);
    }
    Ok(Rendered {
        environment: env.name.clone(),
        files: written,
    })
}

// ---------------------------------------------------------------------------------------------
// Reading a chain of policy files.

/// Parses XML the way B2C accepts it (a byte-order mark is allowed).
pub fn parse_xml<'a>(path: &Path, text: &'a str) -> Result<roxmltree::Document<'a>, PolicyError> {
    roxmltree::Document::parse(text.trim_start_matches('\u{feff}'))
        .map_err(|e| PolicyError::at(path, Some(e.pos().row), format!("not well-formed XML: {e}")))
}

/// The 1-based line of a node. (Lines count from the text after a byte-order mark, which is
/// on the first line, so they are the file's lines.)
pub fn line_of(doc: &roxmltree::Document<'_>, node: roxmltree::Node<'_, '_>) -> u32 {
    doc.text_pos_at(node.range().start).row
}

/// True for an element of the policy namespace with this local name.
pub fn is_policy(node: &roxmltree::Node<'_, '_>, name: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == name
        && node.tag_name().namespace() == Some(POLICY_NAMESPACE)
}

/// The first child element of the policy namespace with this name.
pub fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|n| is_policy(n, name))
}

/// Child elements of the policy namespace with this name.
pub fn children<'a, 'i: 'a>(
    node: roxmltree::Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    node.children().filter(move |n| is_policy(n, name))
}

/// One policy file: its text and the identity B2C gives it.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// `PolicyId`.
    pub policy_id: String,
    /// `TenantId` of the root element.
    pub tenant_id: String,
    /// `BasePolicy/PolicyId`, when it has a base.
    pub base_policy: Option<String>,
    /// `BasePolicy/TenantId`, when it has a base.
    pub base_tenant: Option<String>,
}

impl PolicyFile {
    /// Reads a policy file.
    pub fn read(path: &Path) -> Result<PolicyFile, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::io(path, e))?;
        Self::parse(path, text)
    }

    /// Parses a policy's text; `path` is only for messages.
    pub fn parse(path: &Path, text: String) -> Result<PolicyFile, PolicyError> {
        let (policy_id, tenant_id, base_policy, base_tenant) = {
            let doc = parse_xml(path, &text)?;
            let root = doc.root_element();
            if !is_policy(&root, "TrustFrameworkPolicy") {
                return Err(PolicyError::at(
                    path,
                    Some(line_of(&doc, root)),
                    "the root element is not a TrustFrameworkPolicy",
                ));
            }
            let policy_id = root
                .attribute("PolicyId")
                .ok_or_else(|| PolicyError::at(path, Some(1), "no PolicyId"))?
                .to_string();
            let tenant_id = root.attribute("TenantId").unwrap_or("").to_string();
            let base = child(root, "BasePolicy");
            let text_of = |name: &str| {
                base.and_then(|b| child(b, name))
                    .and_then(|n| n.text())
                    .map(|t| t.trim().to_string())
            };
            (
                policy_id,
                tenant_id,
                text_of("PolicyId"),
                text_of("TenantId"),
            )
        };
        Ok(PolicyFile {
            path: path.to_path_buf(),
            text,
            policy_id,
            tenant_id,
            base_policy,
            base_tenant,
        })
    }
}

/// Policy files layered through `BasePolicy`, root first: the order B2C needs them uploaded in,
/// and the order in which later layers override earlier ones.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Root (no base) first, leaf (usually the relying party) last.
    pub layers: Vec<PolicyFile>,
}

/// A claim as a technical profile uses it (`InputClaim`, `OutputClaim`, `PersistedClaim`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef {
    /// `ClaimTypeReferenceId`.
    pub claim_type: String,
    /// `PartnerClaimType`: the name on the wire, when it differs from the claim type.
    pub partner_claim_type: Option<String>,
    /// `DefaultValue`.
    pub default_value: Option<String>,
    /// `AlwaysUseDefaultValue`.
    pub always_use_default_value: bool,
    /// `Required`.
    pub required: bool,
}

impl ClaimRef {
    /// The name on the wire: the partner claim type, or else the claim type.
    pub fn partner_name(&self) -> &str {
        self.partner_claim_type
            .as_deref()
            .unwrap_or(&self.claim_type)
    }

    fn from_node(node: roxmltree::Node<'_, '_>) -> Option<ClaimRef> {
        Some(ClaimRef {
            claim_type: node.attribute("ClaimTypeReferenceId")?.to_string(),
            partner_claim_type: node.attribute("PartnerClaimType").map(str::to_string),
            default_value: node.attribute("DefaultValue").map(str::to_string),
            always_use_default_value: node.attribute("AlwaysUseDefaultValue") == Some("true"),
            required: node.attribute("Required") == Some("true"),
        })
    }
}

/// A technical profile as B2C runs it: the sum of its definitions in every layer (lower layers
/// first, higher layers override) on top of the profile it includes.
///
/// Merge rules: `Protocol`, `DisplayName`, the include and the session-management profile are
/// replaced by a later definition; metadata items merge by `Key`, keys by `Id`, claims by claim
/// type (ignoring case, as B2C does), replaced in place or appended; claims transformations are
/// appended once each; validation technical profiles of a later definition run *before* the
/// earlier ones (B2C puts an extension's validation profiles at the top of the base's list).
#[derive(Debug, Clone, Default)]
pub struct TechnicalProfile {
    /// `Id`.
    pub id: String,
    /// `DisplayName`.
    pub display_name: Option<String>,
    /// `Protocol/@Name`.
    pub protocol: Option<String>,
    /// `Protocol/@Handler`.
    pub handler: Option<String>,
    /// `Metadata/Item`: key and value, in order.
    pub metadata: Vec<(String, String)>,
    /// `CryptographicKeys/Key`: id and storage reference id.
    pub cryptographic_keys: Vec<(String, String)>,
    /// `InputClaimsTransformations`.
    pub input_claims_transformations: Vec<String>,
    /// `InputClaims`.
    pub input_claims: Vec<ClaimRef>,
    /// `PersistedClaims`.
    pub persisted_claims: Vec<ClaimRef>,
    /// `OutputClaims`.
    pub output_claims: Vec<ClaimRef>,
    /// `OutputClaimsTransformations`.
    pub output_claims_transformations: Vec<String>,
    /// `ValidationTechnicalProfiles`, in the order they run.
    pub validation_technical_profiles: Vec<String>,
    /// `IncludeTechnicalProfile` of its own definitions (not of what it includes).
    pub include: Option<String>,
    /// `UseTechnicalProfileForSessionManagement`.
    pub session_management: Option<String>,
    /// The policies that define it, lowest first (not counting what it includes).
    pub defined_in: Vec<String>,
}

impl TechnicalProfile {
    /// A metadata item.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The RESTful provider's handler marks a REST call.
    pub fn is_restful(&self) -> bool {
        self.handler
            .as_deref()
            .is_some_and(|h| h.starts_with("Web.TPEngine.Providers.RestfulProvider"))
    }

    fn merge_claims(into: &mut Vec<ClaimRef>, from: Vec<ClaimRef>) {
        for claim in from {
            match into
                .iter_mut()
                .find(|c| c.claim_type.eq_ignore_ascii_case(&claim.claim_type))
            {
                Some(existing) => *existing = claim,
                None => into.push(claim),
            }
        }
    }

    fn merge_pairs(into: &mut Vec<(String, String)>, from: Vec<(String, String)>) {
        for (key, value) in from {
            match into.iter_mut().find(|(k, _)| *k == key) {
                Some(existing) => existing.1 = value,
                None => into.push((key, value)),
            }
        }
    }

    fn merge_list(into: &mut Vec<String>, from: Vec<String>) {
        for item in from {
            if !into.contains(&item) {
                into.push(item);
            }
        }
    }

    /// Applies one definition (`node`, a `TechnicalProfile` element) on top of this one.
    fn apply(&mut self, node: roxmltree::Node<'_, '_>) {
        let claims = |list: &str, item: &str| -> Vec<ClaimRef> {
            child(node, list)
                .map(|l| children(l, item).filter_map(ClaimRef::from_node).collect())
                .unwrap_or_default()
        };
        let references = |list: &str, item: &str| -> Vec<String> {
            children(node, list)
                .flat_map(|l| children(l, item))
                .filter_map(|n| n.attribute("ReferenceId").map(str::to_string))
                .collect()
        };
        if let Some(name) = child(node, "DisplayName").and_then(|n| n.text()) {
            self.display_name = Some(name.trim().to_string());
        }
        if let Some(protocol) = child(node, "Protocol") {
            self.protocol = protocol.attribute("Name").map(str::to_string);
            self.handler = protocol.attribute("Handler").map(str::to_string);
        }
        if let Some(metadata) = child(node, "Metadata") {
            let items = children(metadata, "Item")
                .filter_map(|n| {
                    Some((
                        n.attribute("Key")?.to_string(),
                        n.text().unwrap_or("").trim().to_string(),
                    ))
                })
                .collect();
            Self::merge_pairs(&mut self.metadata, items);
        }
        if let Some(keys) = child(node, "CryptographicKeys") {
            let keys = children(keys, "Key")
                .filter_map(|n| {
                    Some((
                        n.attribute("Id")?.to_string(),
                        n.attribute("StorageReferenceId").unwrap_or("").to_string(),
                    ))
                })
                .collect();
            Self::merge_pairs(&mut self.cryptographic_keys, keys);
        }
        Self::merge_list(
            &mut self.input_claims_transformations,
            references("InputClaimsTransformations", "InputClaimsTransformation"),
        );
        Self::merge_claims(&mut self.input_claims, claims("InputClaims", "InputClaim"));
        Self::merge_claims(
            &mut self.persisted_claims,
            claims("PersistedClaims", "PersistedClaim"),
        );
        Self::merge_claims(
            &mut self.output_claims,
            claims("OutputClaims", "OutputClaim"),
        );
        Self::merge_list(
            &mut self.output_claims_transformations,
            references("OutputClaimsTransformations", "OutputClaimsTransformation"),
        );
        let mut validation =
            references("ValidationTechnicalProfiles", "ValidationTechnicalProfile");
        if !validation.is_empty() {
            for earlier in std::mem::take(&mut self.validation_technical_profiles) {
                if !validation.contains(&earlier) {
                    validation.push(earlier);
                }
            }
            self.validation_technical_profiles = validation;
        }
        if let Some(id) =
            child(node, "IncludeTechnicalProfile").and_then(|n| n.attribute("ReferenceId"))
        {
            self.include = Some(id.to_string());
        }
        if let Some(id) = child(node, "UseTechnicalProfileForSessionManagement")
            .and_then(|n| n.attribute("ReferenceId"))
        {
            self.session_management = Some(id.to_string());
        }
    }
}

/// The technical profiles of a policy document (those under `ClaimsProviders`, and the relying
/// party's).
fn technical_profile_nodes<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    doc.descendants().filter(|n| {
        is_policy(n, "TechnicalProfile")
            && n.parent().is_some_and(|p| {
                is_policy(&p, "TechnicalProfiles") || is_policy(&p, "RelyingParty")
            })
    })
}

impl Chain {
    /// Reads policy files and orders them (see [`Chain::from_files`]).
    pub fn read(paths: &[PathBuf]) -> Result<Chain, PolicyError> {
        let files = paths
            .iter()
            .map(|p| PolicyFile::read(p))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_files(files)
    }

    /// Orders policy files into one chain, root first. Every file must be part of it: exactly one
    /// file is no other file's base (the leaf), each `BasePolicy` names a file of the set, policy
    /// ids are unique, and there is no cycle.
    pub fn from_files(files: Vec<PolicyFile>) -> Result<Chain, PolicyError> {
        Self::ordered(files, false)
    }

    /// Like [`Chain::from_files`], but the root may sit on a base policy that is not among the
    /// files (the project's layers without Microsoft's starter pack below them). What the
    /// missing layers define is unknown to such a chain.
    pub fn above_missing_base(files: Vec<PolicyFile>) -> Result<Chain, PolicyError> {
        Self::ordered(files, true)
    }

    fn ordered(files: Vec<PolicyFile>, open_root: bool) -> Result<Chain, PolicyError> {
        for (i, file) in files.iter().enumerate() {
            if let Some(other) = files[..i].iter().find(|f| f.policy_id == file.policy_id) {
                return Err(PolicyError::at(
                    &file.path,
                    None,
                    format!(
                        "policy id {} is also the id of {}",
                        file.policy_id,
                        other.path.display()
                    ),
                ));
            }
        }
        let leaves: Vec<&PolicyFile> = files
            .iter()
            .filter(|f| {
                !files
                    .iter()
                    .any(|g| g.base_policy.as_deref() == Some(f.policy_id.as_str()))
            })
            .collect();
        let leaf = match leaves.as_slice() {
            [leaf] => (*leaf).clone(),
            _ => {
                let names: Vec<String> = leaves.iter().map(|f| f.policy_id.clone()).collect();
                return Err(PolicyError::At {
                    location: Location {
                        path: files.first().map(|f| f.path.clone()).unwrap_or_default(),
                        line: None,
                    },
                    message: format!(
                        "the files do not form one chain: {} policies are no other's base ({})",
                        names.len(),
                        names.join(", ")
                    ),
                });
            }
        };
        let mut layers = vec![leaf];
        while let Some(base) = layers.last().and_then(|l| l.base_policy.clone()) {
            let Some(file) = files.iter().find(|f| f.policy_id == base) else {
                if open_root {
                    break;
                }
                let top = layers.last().map(|l| l.path.clone()).unwrap_or_default();
                return Err(PolicyError::at(
                    &top,
                    None,
                    format!("its base policy {base} is not among the files"),
                ));
            };
            if layers.iter().any(|l| l.policy_id == base) || layers.len() > files.len() {
                return Err(PolicyError::at(
                    &file.path,
                    None,
                    format!("the chain of base policies loops through {base}"),
                ));
            }
            layers.push(file.clone());
        }
        if layers.len() != files.len() {
            let unused: Vec<String> = files
                .iter()
                .filter(|f| !layers.iter().any(|l| l.policy_id == f.policy_id))
                .map(|f| f.path.display().to_string())
                .collect();
            return Err(PolicyError::at(
                &layers[0].path,
                None,
                format!("files outside the chain: {}", unused.join(", ")),
            ));
        }
        layers.reverse();
        Ok(Chain { layers })
    }

    /// The `DataType` of a claim type declared in the chain (`string`, `boolean`, ...), the
    /// highest layer winning; `None` when no layer declares it.
    pub fn claim_data_type(&self, id: &str) -> Result<Option<String>, PolicyError> {
        let mut found = None;
        for layer in &self.layers {
            let doc = parse_xml(&layer.path, &layer.text)?;
            for node in doc.descendants().filter(|n| {
                is_policy(n, "ClaimType")
                    && n.attribute("Id") == Some(id)
                    && n.parent().is_some_and(|p| is_policy(&p, "ClaimsSchema"))
            }) {
                if let Some(t) = child(node, "DataType").and_then(|d| d.text()) {
                    found = Some(t.trim().to_string());
                }
            }
        }
        Ok(found)
    }

    /// The leaf policy (usually the relying party).
    pub fn leaf(&self) -> Option<&PolicyFile> {
        self.layers.last()
    }

    /// Every technical profile id defined anywhere in the chain, in first-definition order.
    pub fn technical_profile_ids(&self) -> Result<Vec<String>, PolicyError> {
        let mut ids: Vec<String> = Vec::new();
        for layer in &self.layers {
            let doc = parse_xml(&layer.path, &layer.text)?;
            for node in technical_profile_nodes(&doc) {
                if let Some(id) = node.attribute("Id") {
                    if !ids.iter().any(|i| i == id) {
                        ids.push(id.to_string());
                    }
                }
            }
        }
        Ok(ids)
    }

    /// The technical profile `id` as B2C runs it, or `None` when no layer defines it. An include
    /// that does not resolve, or loops, is an error.
    pub fn technical_profile(&self, id: &str) -> Result<Option<TechnicalProfile>, PolicyError> {
        self.technical_profile_within(id, &mut Vec::new())
    }

    fn technical_profile_within(
        &self,
        id: &str,
        including: &mut Vec<String>,
    ) -> Result<Option<TechnicalProfile>, PolicyError> {
        // Its own definitions, lowest layer first, to find the include.
        let mut own = TechnicalProfile {
            id: id.to_string(),
            ..TechnicalProfile::default()
        };
        let mut docs = Vec::new();
        for layer in &self.layers {
            docs.push((layer, parse_xml(&layer.path, &layer.text)?));
        }
        for (layer, doc) in &docs {
            for node in technical_profile_nodes(doc).filter(|n| n.attribute("Id") == Some(id)) {
                own.apply(node);
                if own.defined_in.last() != Some(&layer.policy_id) {
                    own.defined_in.push(layer.policy_id.clone());
                }
            }
        }
        if own.defined_in.is_empty() {
            return Ok(None);
        }
        let Some(include) = own.include.clone() else {
            return Ok(Some(own));
        };
        if including.contains(&include) || include == id {
            return Err(PolicyError::at(
                &self.layers[0].path,
                None,
                format!("technical profile {id} includes {include}, which includes it again"),
            ));
        }
        including.push(id.to_string());
        let base = self.technical_profile_within(&include, including)?;
        including.pop();
        let Some(mut merged) = base else {
            return Err(PolicyError::at(
                &self.layers[0].path,
                None,
                format!("technical profile {id} includes {include}, which no layer defines"),
            ));
        };
        // The included profile is the base; this profile's definitions apply on top of it.
        merged.id = id.to_string();
        merged.display_name = None;
        merged.include = None;
        merged.defined_in = Vec::new();
        for (layer, doc) in &docs {
            for node in technical_profile_nodes(doc).filter(|n| n.attribute("Id") == Some(id)) {
                merged.apply(node);
                if merged.defined_in.last() != Some(&layer.policy_id) {
                    merged.defined_in.push(layer.policy_id.clone());
                }
            }
        }
        Ok(Some(merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        let settings = AppSettings::parse(
            Path::new("appsettings.json"),
            r#"{"Environments":[{"Name":"Test","Production":false,"Tenant":"fabrikam.onmicrosoft.com",
                "PolicySettings":{"Url":"https://a.example/x?a=1&b=<2>","Flag":true,"Port":8080,
                "Empty":"","Null":null,"List":[1]}}]}"#,
        )
        .unwrap();
        settings.environments[0].clone()
    }

    fn message(error: PolicyError) -> String {
        error.to_string()
    }

    #[test]
    fn placeholders_are_replaced_with_escaped_values() {
        let out = render_text(
            Path::new("p.xml"),
            "<a t=\"{Settings:Tenant}\">{Settings:Url}</a>\n<b>{Settings:Flag} {Settings:Port}</b>\n",
            &env(),
        )
        .unwrap();
        assert_eq!(
            out,
            "<a t=\"fabrikam.onmicrosoft.com\">https://a.example/x?a=1&amp;b=&lt;2&gt;</a>\n<b>true 8080</b>\n"
        );
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        let text = "<?xml version=\"1.0\"?>\n<a>{OIDC:ClientId} {Culture:RFC5646}</a>";
        assert_eq!(render_text(Path::new("p.xml"), text, &env()).unwrap(), text);
    }

    #[test]
    fn a_placeholder_without_a_value_names_the_file_and_line() {
        let error = render_text(
            Path::new("policies/X.xml"),
            "<a>\n<b>{Settings:Missing}</b>\n</a>",
            &env(),
        )
        .unwrap_err();
        let text = message(error);
        assert!(text.starts_with("policies/X.xml:2: "), "{text}");
        assert!(
            text.contains("{Settings:Missing} has no value in environment \"Test\""),
            "{text}"
        );
    }

    #[test]
    fn empty_null_and_structured_values_are_errors_not_empty_strings() {
        for (name, expected) in [
            ("Empty", "is empty"),
            ("Null", "has no value"),
            ("List", "not a string, number or boolean"),
        ] {
            let text = format!("<a>{{Settings:{name}}}</a>");
            let error = message(render_text(Path::new("p.xml"), &text, &env()).unwrap_err());
            assert!(error.contains(expected), "{name}: {error}");
        }
    }

    #[test]
    fn every_missing_placeholder_is_reported_at_once() {
        let error = render_text(
            Path::new("p.xml"),
            "{Settings:One}\n\n{Settings:Two} {Settings:Tenant}\n",
            &env(),
        )
        .unwrap_err();
        let text = message(error);
        assert!(text.contains("p.xml:1: {Settings:One}"), "{text}");
        assert!(text.contains("p.xml:3: {Settings:Two}"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        for text in [
            "<a>{Settings:</a>",
            "<a>{Settings:has space}</a>",
            "{Settings:}",
        ] {
            let error = message(render_text(Path::new("p.xml"), text, &env()).unwrap_err());
            assert!(error.contains("p.xml:1: malformed placeholder"), "{error}");
        }
    }

    #[test]
    fn an_empty_tenant_is_an_error() {
        let mut env = env();
        env.tenant = " ".into();
        let error =
            message(render_text(Path::new("p.xml"), "{Settings:Tenant}", &env).unwrap_err());
        assert!(error.contains("{Settings:Tenant} has no value"), "{error}");
    }

    #[test]
    fn an_unknown_environment_lists_the_known_ones() {
        let settings = AppSettings::parse(
            Path::new("policies/appsettings.json"),
            r#"{"Environments":[{"Name":"Test","Tenant":"t"},{"Name":"Production","Tenant":"p"}]}"#,
        )
        .unwrap();
        let error = settings
            .environment(Path::new("policies/appsettings.json"), "Prod")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment \"Prod\" is not in policies/appsettings.json (environments: Test, Production)"
        );
    }

    #[test]
    fn settings_errors_name_the_file_and_line() {
        let error = AppSettings::parse(
            Path::new("s.json"),
            "{\n\"Environments\": [\n{\"Name\": 1}]}",
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("s.json:3: not valid settings"),
            "{error}"
        );
        let error = AppSettings::parse(
            Path::new("s.json"),
            r#"{"Environments":[{"Name":"A","Tenant":"t"},{"Name":"A","Tenant":"u"}]}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("appears twice"), "{error}");
    }

    const POLICY_HEAD: &str = r#"<TrustFrameworkPolicy xmlns="http://schemas.microsoft.com/online/cpim/schemas/2013/06" PolicySchemaVersion="0.3.0.0" TenantId="t" PolicyId="P">"#;

    #[test]
    fn production_refuses_plain_http_and_debug_mode() {
        let text = format!(
            "{POLICY_HEAD}\n<Item Key=\"ServiceUrl\">http://x/b2c/rest/link</Item>\n<Item Key=\"DebugMode\">true</Item>\n</TrustFrameworkPolicy>"
        );
        let mut env = env();
        assert!(check_rendered(Path::new("p.xml"), &text, &env).is_ok());
        env.production = true;
        let error = message(check_rendered(Path::new("p.xml"), &text, &env).unwrap_err());
        assert!(
            error.contains("p.xml:2: ServiceUrl \"http://x/b2c/rest/link\" is not https://"),
            "{error}"
        );
        assert!(error.contains("p.xml:3: DebugMode is true"), "{error}");
    }

    #[test]
    fn rendered_files_must_be_well_formed_policies() {
        let error =
            message(check_rendered(Path::new("p.xml"), "<a>\n<b></a>", &env()).unwrap_err());
        assert!(error.starts_with("p.xml:2: not well-formed XML"), "{error}");
        let error = message(check_rendered(Path::new("p.xml"), "<a/>", &env()).unwrap_err());
        assert!(error.contains("not a TrustFrameworkPolicy"), "{error}");
    }

    #[test]
    fn render_dir_writes_nothing_when_a_file_fails() {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(
            policies.join(APP_SETTINGS_FILE),
            r#"{"Environments":[{"Name":"Test","Tenant":"fabrikam.onmicrosoft.com","PolicySettings":{}}]}"#,
        )
        .unwrap();
        let good = format!("{POLICY_HEAD}</TrustFrameworkPolicy>")
            .replace("\"t\"", "\"{Settings:Tenant}\"");
        std::fs::write(policies.join("A.xml"), &good).unwrap();
        std::fs::write(
            policies.join("B.xml"),
            format!("{POLICY_HEAD}\n{{Settings:Nope}}</TrustFrameworkPolicy>"),
        )
        .unwrap();
        let out = dir.path().join("out");
        let error = message(render_dir(&policies, "Test", &out).unwrap_err());
        assert!(
            error.contains("B.xml:2: {Settings:Nope} has no value"),
            "{error}"
        );
        assert!(!out.exists());

        std::fs::remove_file(policies.join("B.xml")).unwrap();
        let rendered = render_dir(&policies, "Test", &out).unwrap();
        assert_eq!(rendered.files, vec![out.join("A.xml")]);
        let text = std::fs::read_to_string(out.join("A.xml")).unwrap();
        assert!(
            text.contains("TenantId=\"fabrikam.onmicrosoft.com\""),
            "{text}"
        );

        let error = message(render_dir(&policies, "Test", &policies).unwrap_err());
        assert!(error.contains("would overwrite the sources"), "{error}");
        let error = message(render_dir(&policies, "Nope", &out).unwrap_err());
        assert!(error.contains("environment \"Nope\" is not in"), "{error}");
    }

    fn policy(id: &str, base: Option<&str>, body: &str) -> PolicyFile {
        let base = base
            .map(|b| {
                format!("<BasePolicy><TenantId>t</TenantId><PolicyId>{b}</PolicyId></BasePolicy>")
            })
            .unwrap_or_default();
        let text = format!(
            "{}{base}<ClaimsProviders><ClaimsProvider><TechnicalProfiles>{body}</TechnicalProfiles></ClaimsProvider></ClaimsProviders></TrustFrameworkPolicy>",
            POLICY_HEAD.replace("PolicyId=\"P\"", &format!("PolicyId=\"{id}\""))
        );
        PolicyFile::parse(Path::new(&format!("{id}.xml")), text).unwrap()
    }

    #[test]
    fn a_chain_is_ordered_root_first_whatever_the_file_order() {
        let chain = Chain::from_files(vec![
            policy("C", Some("B"), ""),
            policy("A", None, ""),
            policy("B", Some("A"), ""),
        ])
        .unwrap();
        let ids: Vec<&str> = chain.layers.iter().map(|l| l.policy_id.as_str()).collect();
        assert_eq!(ids, ["A", "B", "C"]);
    }

    #[test]
    fn broken_chains_are_errors() {
        let error = message(
            Chain::from_files(vec![policy("A", None, ""), policy("B", Some("Z"), "")]).unwrap_err(),
        );
        assert!(error.contains("do not form one chain"), "{error}");
        let error = message(Chain::from_files(vec![policy("B", Some("Z"), "")]).unwrap_err());
        assert!(
            error.contains("its base policy Z is not among the files"),
            "{error}"
        );
        let error = message(
            Chain::from_files(vec![policy("A", None, ""), policy("A", None, "")]).unwrap_err(),
        );
        assert!(error.contains("policy id A is also the id of"), "{error}");
    }

    #[test]
    fn technical_profiles_merge_across_layers_and_includes() {
        let chain = Chain::from_files(vec![
            policy(
                "Base",
                None,
                r#"<TechnicalProfile Id="Common"><Protocol Name="Proprietary" Handler="Web.TPEngine.Providers.RestfulProvider, Web.TPEngine"/>
                   <Metadata><Item Key="AuthenticationType">Basic</Item><Item Key="SendClaimsIn">Body</Item></Metadata>
                   <InputClaims><InputClaim ClaimTypeReferenceId="clientId" DefaultValue="{OIDC:ClientId}" AlwaysUseDefaultValue="true"/></InputClaims></TechnicalProfile>
                   <TechnicalProfile Id="Page"><ValidationTechnicalProfiles><ValidationTechnicalProfile ReferenceId="Write"/></ValidationTechnicalProfiles></TechnicalProfile>"#,
            ),
            policy(
                "Ext",
                Some("Base"),
                r#"<TechnicalProfile Id="Call"><Metadata><Item Key="ServiceUrl">https://x/link</Item><Item Key="AuthenticationType">Bearer</Item></Metadata>
                   <InputClaims><InputClaim ClaimTypeReferenceId="signInNames.emailAddress" PartnerClaimType="email"/><InputClaim ClaimTypeReferenceId="ClientID"/></InputClaims>
                   <OutputClaims><OutputClaim ClaimTypeReferenceId="customerAccountNumber"/></OutputClaims>
                   <IncludeTechnicalProfile ReferenceId="Common"/></TechnicalProfile>
                   <TechnicalProfile Id="Page"><ValidationTechnicalProfiles><ValidationTechnicalProfile ReferenceId="Check"/></ValidationTechnicalProfiles></TechnicalProfile>"#,
            ),
        ])
        .unwrap();
        let call = chain.technical_profile("Call").unwrap().unwrap();
        assert!(call.is_restful());
        assert_eq!(call.metadata("AuthenticationType"), Some("Bearer"));
        assert_eq!(call.metadata("SendClaimsIn"), Some("Body"));
        assert_eq!(call.metadata("ServiceUrl"), Some("https://x/link"));
        let sent: Vec<&str> = call
            .input_claims
            .iter()
            .map(ClaimRef::partner_name)
            .collect();
        // ClientID overrides clientId (claim types ignore case) in place.
        assert_eq!(sent, ["ClientID", "email"]);
        assert!(!call.input_claims[0].always_use_default_value);
        assert_eq!(call.defined_in, ["Ext"]);
        let page = chain.technical_profile("Page").unwrap().unwrap();
        assert_eq!(page.validation_technical_profiles, ["Check", "Write"]);
        assert!(chain.technical_profile("Nope").unwrap().is_none());
        assert_eq!(
            chain.technical_profile_ids().unwrap(),
            ["Common", "Page", "Call"]
        );
    }

    #[test]
    fn include_loops_and_dangling_includes_are_errors() {
        let chain = Chain::from_files(vec![policy(
            "Base",
            None,
            r#"<TechnicalProfile Id="A"><IncludeTechnicalProfile ReferenceId="B"/></TechnicalProfile>
               <TechnicalProfile Id="B"><IncludeTechnicalProfile ReferenceId="A"/></TechnicalProfile>
               <TechnicalProfile Id="C"><IncludeTechnicalProfile ReferenceId="Z"/></TechnicalProfile>"#,
        )])
        .unwrap();
        assert!(message(chain.technical_profile("A").unwrap_err()).contains("includes it again"));
        assert!(
            message(chain.technical_profile("C").unwrap_err()).contains("which no layer defines")
        );
    }
}
