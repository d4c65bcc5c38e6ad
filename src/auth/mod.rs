//! Authentication of callers: B2C's connector credentials and the administrators' token.
//!
//! Secrets are kept only as argon2id hashes. Verifying argon2 on every call would cost tens of
//! milliseconds, so a successful verification is remembered as an HMAC of the presented
//! credentials under a key that lives only in this process; later calls compare that HMAC in
//! constant time.

pub mod api_key;
pub mod bootstrap;
pub mod fetch;
pub mod oidc;

use std::sync::RwLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Distinct credentials remembered after verification (a rotation needs two).
const CACHE_SIZE: usize = 4;

/// Hashes a secret with argon2id and a random salt (PHC string).
pub fn hash_secret(secret: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A random secret: 32 bytes, URL-safe base64 without padding.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A secret checked against its hash, with a cache of recent successes.
pub struct HashedSecret {
    /// PHC hash, parsed at verification time (the parsed form borrows the string).
    hash: String,
    /// Per-process HMAC key for the cache.
    cache_key: [u8; 32],
    cache: RwLock<Vec<[u8; 32]>>,
    /// Held during an argon2 verification. Each one takes 19 MiB; without this, the burst of
    /// concurrent first calls after a start (or a flood of wrong passwords) would run dozens at
    /// once, and the allocator keeps that memory. The waiters then find the cache filled.
    slow_path: std::sync::Mutex<()>,
}

impl HashedSecret {
    /// Wraps a PHC hash; fails when it is not one argon2 can check.
    pub fn new(hash: String) -> Result<Self, String> {
        PasswordHash::new(&hash).map_err(|e| format!("not a valid password hash: {e}"))?;
        let mut cache_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut cache_key);
        Ok(Self {
            hash,
            cache_key,
            cache: RwLock::new(Vec::new()),
            slow_path: std::sync::Mutex::new(()),
        })
    }

    fn fingerprint(&self, presented: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length; new_from_slice cannot fail for Hmac<Sha256>.
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.cache_key) {
            Ok(mac) => mac,
            Err(_) => return [0u8; 32],
        };
        mac.update(presented);
        mac.finalize().into_bytes().into()
    }

    /// Whether these credentials were verified before (fast; constant time per entry).
    /// `cache_input` is everything the caller presented (for Basic: user name and password).
    pub fn verified_before(&self, cache_input: &[u8]) -> bool {
        let fingerprint = self.fingerprint(cache_input);
        let cache = match self.cache.read() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache.iter().fold(false, |found, known| {
            found | bool::from(known.ct_eq(&fingerprint))
        })
    }

    /// Checks `secret` against the hash (argon2, slow; call from a blocking thread) unless
    /// `cache_input` was verified before. A success is remembered when `remember` is true.
    pub fn verify(&self, secret: &[u8], cache_input: &[u8], remember: bool) -> bool {
        if self.verified_before(cache_input) {
            return true;
        }
        let _one_at_a_time = match self.slow_path.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if self.verified_before(cache_input) {
            return true;
        }
        let Ok(hash) = PasswordHash::new(&self.hash) else {
            return false;
        };
        if Argon2::default().verify_password(secret, &hash).is_err() {
            return false;
        }
        if remember {
            let fingerprint = self.fingerprint(cache_input);
            let mut cache = match self.cache.write() {
                Ok(cache) => cache,
                Err(poisoned) => poisoned.into_inner(),
            };
            if cache.len() >= CACHE_SIZE {
                cache.remove(0);
            }
            cache.push(fingerprint);
        }
        true
    }
}

/// HTTP Basic credentials of one caller.
pub struct BasicCredentials {
    username: String,
    password: HashedSecret,
}

impl BasicCredentials {
    /// From a user name and a PHC password hash.
    pub fn new(username: String, password_hash: String) -> Result<Self, String> {
        Ok(Self {
            username,
            password: HashedSecret::new(password_hash)?,
        })
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The presented credentials as the cache sees them: user name and password together, so a
    /// right password with a wrong user name never hits the cache.
    fn presented(username: &str, password: &str) -> Vec<u8> {
        let mut presented = Vec::with_capacity(username.len() + password.len() + 1);
        presented.extend_from_slice(username.as_bytes());
        presented.push(0);
        presented.extend_from_slice(password.as_bytes());
        presented
    }

    fn username_matches(&self, username: &str) -> bool {
        bool::from(self.username.as_bytes().ct_eq(username.as_bytes()))
    }

    /// Fast path: true when these exact credentials were verified before.
    pub fn verified_before(&self, username: &str, password: &str) -> bool {
        self.username_matches(username)
            & self
                .password
                .verified_before(&Self::presented(username, password))
    }

    /// Full check (argon2 on a cache miss). Blocking: call from a blocking thread. The password
    /// is checked even when the user name is wrong, so timing does not tell which was wrong.
    pub fn verify(&self, username: &str, password: &str) -> bool {
        let user_ok = self.username_matches(username);
        let presented = Self::presented(username, password);
        let password_ok = self
            .password
            .verify(password.as_bytes(), &presented, user_ok);
        user_ok & password_ok
    }
}

/// Parses an `Authorization: Basic ...` value into user name and password.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> BasicCredentials {
        BasicCredentials::new("b2c".into(), hash_secret("s3cret").unwrap()).unwrap()
    }

    #[test]
    fn verifies_the_right_credentials_and_remembers_them() {
        let creds = creds();
        assert!(!creds.verified_before("b2c", "s3cret"));
        assert!(creds.verify("b2c", "s3cret"));
        assert!(creds.verified_before("b2c", "s3cret"));
    }

    #[test]
    fn refuses_a_wrong_password_or_user_name() {
        let creds = creds();
        assert!(!creds.verify("b2c", "wrong"));
        assert!(!creds.verify("other", "s3cret"));
        assert!(creds.verify("b2c", "s3cret"));
        assert!(!creds.verified_before("other", "s3cret"));
        assert!(!creds.verified_before("b2c", "s3cret "));
    }

    #[test]
    fn parses_basic_headers() {
        assert_eq!(
            parse_basic("Basic YjJjOnMzY3JldA=="),
            Some(("b2c".into(), "s3cret".into()))
        );
        assert_eq!(
            parse_basic("basic YjJjOnMzOmNyZXQ="),
            Some(("b2c".into(), "s3:cret".into()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic YjJj"), None);
    }

    #[test]
    fn stores_only_an_argon2id_hash() {
        let hash = hash_secret("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("s3cret"));
    }

    #[test]
    fn rejects_a_hash_that_is_not_a_hash() {
        assert!(HashedSecret::new("plain-password".into()).is_err());
    }
}
