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

use std::fmt;
use std::path::{Path, PathBuf};

mod chain;
mod checks;
mod profile;
mod render;
mod settings;
mod xml;

pub use self::chain::{Chain, PolicyFile};
pub use self::checks::check_rendered;
pub use self::profile::{ClaimRef, TechnicalProfile};
pub use self::render::{
    policy_files, render_dir, render_text, Rendered, AUTH_VARIANT_PREFIX, AUTH_VARIANT_SETTING,
    DEFAULT_AUTH_VARIANT,
};
pub use self::settings::{AppSettings, Environment};
pub use self::xml::{child, children, is_policy, line_of, parse_xml};

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

#[cfg(test)]
mod tests;
