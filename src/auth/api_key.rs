//! The API key header (`ApiKeyHeader` in custom policies, e.g. `x-functions-key`). Several keys
//! may be valid at once so a key can be rotated without downtime. Only hashes are kept.

use actix_web::http::header::HeaderName;

use super::argon2_pool::Busy;
use super::HashedSecret;
use crate::config::ApiKeySettings;

/// The configured API keys.
pub struct ApiKeys {
    header: HeaderName,
    keys: Vec<HashedSecret>,
}

impl ApiKeys {
    /// From the configuration: hashes as given, clear keys kept in keyed form.
    pub fn from_settings(settings: &ApiKeySettings) -> Result<ApiKeys, String> {
        let header = HeaderName::from_bytes(settings.header.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| format!("{:?} is not a valid header name", settings.header))?;
        let mut keys = settings
            .key_hashes
            .iter()
            .map(|hash| HashedSecret::new(hash.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        keys.extend(
            settings
                .keys
                .iter()
                .map(|key| HashedSecret::from_clear(key)),
        );
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

    /// Full check against every key (argon2 on the bounded pool on a cache miss).
    pub async fn verify(&self, presented: &str) -> Result<bool, Busy> {
        let bytes = presented.as_bytes();
        let mut found = false;
        for key in &self.keys {
            found |= key.verify(bytes, bytes, true).await?;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_any_configured_key_and_refuses_others() {
        let generated = crate::auth::generate_secret();
        let keys = ApiKeys::from_settings(&ApiKeySettings {
            header: "X-Functions-Key".into(),
            key_hashes: vec![
                crate::auth::hash_secret("old-key").unwrap(),
                crate::auth::hash_generated_secret(&generated),
            ],
            keys: vec!["new-key".into()],
        })
        .unwrap();
        assert_eq!(keys.header().as_str(), "x-functions-key");
        assert_eq!(keys.verify("old-key").await, Ok(true));
        assert_eq!(keys.verify("new-key").await, Ok(true));
        assert_eq!(keys.verify(&generated).await, Ok(true));
        assert_eq!(keys.verify("other").await, Ok(false));
        assert!(keys.verified_before("new-key"));
        assert!(!keys.verified_before("other"));
    }
}
