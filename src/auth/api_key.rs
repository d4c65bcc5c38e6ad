//! The API key header (`ApiKeyHeader` in custom policies, e.g. `x-functions-key`). Several keys
//! may be valid at once so a key can be rotated without downtime. Only hashes are kept.

use actix_web::http::header::HeaderName;

use super::{hash_secret, HashedSecret};
use crate::config::ApiKeySettings;

/// The configured API keys.
pub struct ApiKeys {
    header: HeaderName,
    keys: Vec<HashedSecret>,
}

impl ApiKeys {
    /// From the configuration: hashes as given, clear keys hashed now.
    pub fn from_settings(settings: &ApiKeySettings) -> Result<ApiKeys, String> {
        let header = HeaderName::from_bytes(settings.header.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("{:?} is not a valid header name", settings.header))?;
        let mut hashes = settings.key_hashes.clone();
        for key in &settings.keys {
            hashes.push(hash_secret(key)?);
        }
        let keys = hashes
            .into_iter()
            .map(HashedSecret::new)
            .collect::<Result<_, _>>()?;
        Ok(ApiKeys { header, keys })
    }

    /// The header that carries the key.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Fast path: whether this key was verified before.
    pub fn verified_before(&self, presented: &str) -> bool {
        self.keys.iter().fold(false, |found, key| {
            found | key.verified_before(presented.as_bytes())
        })
    }

    /// Full check against every key (argon2 on a cache miss; blocking).
    pub fn verify(&self, presented: &str) -> bool {
        let bytes = presented.as_bytes();
        self.keys
            .iter()
            .fold(false, |found, key| found | key.verify(bytes, bytes, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_any_configured_key_and_refuses_others() {
        let keys = ApiKeys::from_settings(&ApiKeySettings {
            header: "X-Functions-Key".into(),
            key_hashes: vec![hash_secret("old-key").unwrap()],
            keys: vec!["new-key".into()],
        })
        .unwrap();
        assert_eq!(keys.header().as_str(), "x-functions-key");
        assert!(keys.verify("old-key"));
        assert!(keys.verify("new-key"));
        assert!(!keys.verify("other"));
        assert!(keys.verified_before("new-key"));
        assert!(!keys.verified_before("other"));
    }
}
