//! Rendering (`autolink policies render`): the placeholders of every policy file replaced by
//! one environment's values, XML-escaped, and the files written to the output folder.
//!
//! The `AutolinkRestAuth.<Variant>.xml` files are alternatives that share one policy id: B2C's
//! bulk upload of a folder holding several would keep whichever came last. Only the chosen one
//! is rendered (`--auth`, else the environment's `AutolinkRestAuth` setting, else `Basic`), other
//! variants left in the output folder by an earlier render are removed, and a render whose files
//! would share a policy id is refused.

use std::path::{Path, PathBuf};

use super::checks::check_rendered;
use super::settings::{AppSettings, Environment};
use super::{PolicyError, APP_SETTINGS_FILE, PLACEHOLDER_PREFIX};

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

/// The prefix of the files that are alternatives of one another: `AutolinkRestAuth.<Variant>.xml`.
pub const AUTH_VARIANT_PREFIX: &str = "AutolinkRestAuth.";

/// The environment setting that names the authentication variant rendered by default.
pub const AUTH_VARIANT_SETTING: &str = "AutolinkRestAuth";

/// The variant rendered when neither `--auth` nor the environment names one.
pub const DEFAULT_AUTH_VARIANT: &str = "Basic";

/// What `render_dir` wrote.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The environment.
    pub environment: String,
    /// The authentication variant rendered (`Basic`, `Bearer`, ...).
    pub auth: String,
    /// The files written, in name order.
    pub files: Vec<PathBuf>,
    /// Files of other authentication variants that an earlier render had left in the output
    /// folder, removed.
    pub removed: Vec<PathBuf>,
}

/// The variant of an `AutolinkRestAuth.<Variant>.xml` file, `None` for any other file.
fn auth_variant(path: &Path) -> Option<&str> {
    let name = path.file_name()?.to_str()?;
    let variant = name.strip_prefix(AUTH_VARIANT_PREFIX)?;
    let dot = variant.len().checked_sub(4)?;
    variant
        .get(dot..)
        .filter(|x| x.eq_ignore_ascii_case(".xml"))
        .map(|_| &variant[..dot])
        .filter(|v| !v.is_empty())
}

/// The variant to render: `asked`, else the environment's setting, else the default; it must be
/// one of `available`.
fn chosen_variant(
    policies_dir: &Path,
    env: &Environment,
    asked: Option<&str>,
    available: &[&str],
) -> Result<String, PolicyError> {
    let chosen = match asked {
        Some(asked) => asked.to_string(),
        None => match env.policy_settings.get(AUTH_VARIANT_SETTING) {
            None => DEFAULT_AUTH_VARIANT.to_string(),
            Some(_) => env
                .value(AUTH_VARIANT_SETTING)
                .map_err(|message| PolicyError::at(policies_dir, None, message))?,
        },
    };
    match available.iter().find(|v| v.eq_ignore_ascii_case(&chosen)) {
        Some(found) => Ok(found.to_string()),
        None => Err(PolicyError::at(
            policies_dir,
            None,
            format!(
                "no authentication variant {chosen:?} ({AUTH_VARIANT_PREFIX}{chosen}.xml); \
                 the folder has: {}",
                available.join(", ")
            ),
        )),
    }
}

/// Refuses rendered files that share a `PolicyId` (B2C would keep only one of them).
fn check_unique_policy_ids(rendered: &[(&PathBuf, String)]) -> Result<(), PolicyError> {
    let mut seen: Vec<(String, &PathBuf)> = Vec::new();
    let mut errors = Vec::new();
    for (path, text) in rendered {
        let doc = super::parse_xml(path, text)?;
        let Some(id) = doc.root_element().attribute("PolicyId") else {
            continue;
        };
        match seen
            .iter()
            .find(|(other, _)| other.eq_ignore_ascii_case(id))
        {
            Some((_, first)) => errors.push(PolicyError::at(
                path,
                None,
                format!(
                    "PolicyId {id:?} is also the policy id of {}: B2C would keep only one",
                    first.display()
                ),
            )),
            None => seen.push((id.to_string(), path)),
        }
    }
    PolicyError::collect(errors)
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

/// Renders the policy files of `policies_dir` for environment `env_name` (from
/// `policies_dir/appsettings.json`) into `out_dir`, under the same names: every file but the
/// `AutolinkRestAuth.<Variant>.xml` alternatives other than the one chosen (`auth`, else the
/// environment's `AutolinkRestAuth` setting, else `Basic`). Nothing is written unless every file
/// renders, passes [`check_rendered`], and no two share a `PolicyId`.
pub fn render_dir(
    policies_dir: &Path,
    env_name: &str,
    auth: Option<&str>,
    out_dir: &Path,
) -> Result<Rendered, PolicyError> {
    let settings_path = policies_dir.join(APP_SETTINGS_FILE);
    let settings = AppSettings::load(&settings_path)?;
    let env = settings.environment(&settings_path, env_name)?;
    let mut files = policy_files(policies_dir)?;
    let available: Vec<&str> = files.iter().filter_map(|f| auth_variant(f)).collect();
    let chosen = if available.is_empty() {
        match auth {
            Some(asked) => {
                return Err(PolicyError::at(
                    policies_dir,
                    None,
                    format!("--auth {asked}: the folder has no {AUTH_VARIANT_PREFIX}*.xml file"),
                ))
            }
            None => String::new(),
        }
    } else {
        chosen_variant(policies_dir, env, auth, &available)?
    };
    files.retain(|f| auth_variant(f).is_none_or(|v| v == chosen));
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
    check_unique_policy_ids(&rendered)?;
    std::fs::create_dir_all(out_dir).map_err(|e| PolicyError::io(out_dir, e))?;
    let mut removed = Vec::new();
    for stale in policy_files(out_dir)? {
        if auth_variant(&stale).is_some_and(|v| v != chosen) {
            std::fs::remove_file(&stale).map_err(|e| PolicyError::io(&stale, e))?;
            removed.push(stale);
        }
    }
    let mut written = Vec::new();
    for (source, text) in rendered {
        let name = source.file_name().unwrap_or(source.as_os_str());
        let target = out_dir.join(name);
        std::fs::write(&target, text).map_err(|e| PolicyError::io(&target, e))?;
        written.push(target);
    }
    Ok(Rendered {
        environment: env.name.clone(),
        auth: chosen,
        files: written,
        removed,
    })
}
