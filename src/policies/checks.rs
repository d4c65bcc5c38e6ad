//! What a rendered file must be: well-formed policy XML, and in a production environment only
//! `https://` service URLs and no debug mode.

use std::path::Path;

use super::settings::Environment;
use super::xml::{is_policy, line_of, parse_xml};
use super::{PolicyError, POLICY_NAMESPACE};

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
