//! `appsettings.json`: the environments (tenants) and the values of their placeholders.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::PolicyError;

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
