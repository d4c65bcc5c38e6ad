//! Rendering (`autolink policies render`): the placeholders of every policy file replaced by
//! one environment's values, XML-escaped, and the files written to the output folder.

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
