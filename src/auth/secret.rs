//! How secrets are kept: the two hash forms autolink accepts, and how each is checked.
//!
//! - **argon2id** (`$argon2id$...`, from `autolink hash-secret`) for secrets a person chose: a
//!   password hash makes a stolen configuration or database expensive to turn back into the
//!   secret. Checking one costs tens of milliseconds and `m` KiB of memory, so checks run on the
//!   bounded pool of [`super::argon2_pool`].
//! - **keyed SHA-256** (`$hmac-sha256$<salt>$<digest>`: HMAC-SHA256 of the secret under a random
//!   16-byte salt, both in unpadded base64) for the 256-bit random secrets autolink generates
//!   itself (`autolink generate-secret`, the credentials of the first start). Such a secret
//!   cannot be guessed, so a slow hash adds nothing; this is the usual form for high-entropy API
//!   keys, and it is checked in microseconds with a constant-time comparison.
//!
//! A secret given in clear in the configuration (`password`, `token`, `keys`, for development)
//! is kept in memory in the keyed form under a fresh salt; its clear value is not kept.

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// PHC identifier of the keyed SHA-256 form.
pub const KEYED_SHA256_ID: &str = "hmac-sha256";
/// Largest argon2 memory cost accepted in a configured hash, in KiB (256 MiB): each of the
/// pool's threads keeps a block this large, so an absurd hash must not start the server.
pub const MAX_ARGON2_M_COST_KIB: u32 = 256 * 1024;
/// Largest argon2 time cost accepted in a configured hash.
pub const MAX_ARGON2_T_COST: u32 = 16;
/// Largest argon2 parallelism accepted in a configured hash.
pub const MAX_ARGON2_P_COST: u32 = 16;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// A parsed secret hash.
#[derive(Clone)]
pub enum SecretHash {
    /// An argon2 hash: what a check needs, decoded once.
    Argon2(Argon2Hash),
    /// HMAC-SHA256 of the secret under `salt`.
    KeyedSha256 {
        /// The HMAC key, random per secret.
        salt: Vec<u8>,
        /// The expected HMAC.
        digest: [u8; 32],
    },
}

/// An argon2 hash decoded for checking: parameters, salt and expected output.
#[derive(Clone)]
pub struct Argon2Hash {
    pub(crate) algorithm: Algorithm,
    pub(crate) version: Version,
    pub(crate) params: Params,
    pub(crate) salt: Vec<u8>,
    pub(crate) expected: Vec<u8>,
}

impl Argon2Hash {
    /// Memory the check needs, in KiB.
    pub fn memory_kib(&self) -> u32 {
        self.params.m_cost()
    }
}

impl SecretHash {
    /// Parses a stored or configured hash (`$argon2id$...` or `$hmac-sha256$...`).
    pub fn parse(text: &str) -> Result<SecretHash, String> {
        let hash =
            PasswordHash::new(text).map_err(|e| format!("not a valid password hash: {e}"))?;
        let (Some(salt), Some(output)) = (hash.salt, hash.hash) else {
            return Err("not a valid password hash: no salt or no hash".into());
        };
        let mut salt_buf = [0u8; 64];
        let salt = salt
            .decode_b64(&mut salt_buf)
            .map_err(|e| format!("not a valid password hash: salt: {e}"))?
            .to_vec();
        if hash.algorithm.as_str() == KEYED_SHA256_ID {
            if hash.version.is_some() || hash.params.iter().next().is_some() {
                return Err(format!("a {KEYED_SHA256_ID} hash takes no parameters"));
            }
            let digest: [u8; 32] = output
                .as_bytes()
                .try_into()
                .map_err(|_| format!("a {KEYED_SHA256_ID} digest is 32 bytes"))?;
            if salt.len() < 16 {
                return Err(format!("a {KEYED_SHA256_ID} salt is at least 16 bytes"));
            }
            return Ok(SecretHash::KeyedSha256 { salt, digest });
        }
        let algorithm = Algorithm::try_from(hash.algorithm)
            .map_err(|_| format!("unknown hash algorithm {:?}", hash.algorithm.as_str()))?;
        let version = match hash.version {
            Some(v) => Version::try_from(v).map_err(|e| format!("argon2 version: {e}"))?,
            None => Version::default(),
        };
        let params = Params::try_from(&hash).map_err(|e| format!("argon2 parameters: {e}"))?;
        if params.m_cost() > MAX_ARGON2_M_COST_KIB
            || params.t_cost() > MAX_ARGON2_T_COST
            || params.p_cost() > MAX_ARGON2_P_COST
        {
            return Err(format!(
                "argon2 parameters beyond what autolink accepts (m <= {MAX_ARGON2_M_COST_KIB}, \
                 t <= {MAX_ARGON2_T_COST}, p <= {MAX_ARGON2_P_COST})"
            ));
        }
        Ok(SecretHash::Argon2(Argon2Hash {
            algorithm,
            version,
            params,
            salt,
            expected: output.as_bytes().to_vec(),
        }))
    }

    /// The keyed form of a secret given in clear, under a fresh salt.
    pub fn keyed(secret: &[u8]) -> SecretHash {
        let mut salt = vec![0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let digest = hmac_sha256(&salt, secret);
        SecretHash::KeyedSha256 { salt, digest }
    }

    /// Checks a keyed hash at once; `None` for an argon2 hash (which needs the pool).
    pub fn check_keyed(&self, presented: &[u8]) -> Option<bool> {
        match self {
            SecretHash::KeyedSha256 { salt, digest } => {
                Some(bool::from(hmac_sha256(salt, presented).ct_eq(digest)))
            }
            SecretHash::Argon2(_) => None,
        }
    }
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; new_from_slice cannot fail for Hmac<Sha256>.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0u8; 32];
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Hashes a secret a person chose with argon2id and a random salt (PHC string).
pub fn hash_secret(secret: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The keyed SHA-256 hash of a random secret autolink generated (PHC-style string).
pub fn hash_generated_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let digest = hmac_sha256(&salt, secret.as_bytes());
    format!(
        "${KEYED_SHA256_ID}${}${}",
        B64.encode(salt),
        B64.encode(digest)
    )
}

/// A random secret: 32 bytes (256 bits), URL-safe base64 without padding.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hashes_parse_with_their_parameters() {
        let hash = hash_secret("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("s3cret"));
        match SecretHash::parse(&hash).unwrap() {
            SecretHash::Argon2(a) => {
                assert_eq!(a.memory_kib(), Params::DEFAULT_M_COST);
                assert_eq!(a.expected.len(), 32);
                assert_eq!(a.salt.len(), 16);
            }
            SecretHash::KeyedSha256 { .. } => panic!("argon2 parsed as keyed"),
        }
    }

    #[test]
    fn generated_secrets_are_256_bits_and_keyed_hashes_check_them() {
        let secret = generate_secret();
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&secret)
                .unwrap()
                .len(),
            32
        );
        let text = hash_generated_secret(&secret);
        assert!(text.starts_with("$hmac-sha256$"), "{text}");
        assert!(!text.contains(&secret));
        let hash = SecretHash::parse(&text).unwrap();
        assert_eq!(hash.check_keyed(secret.as_bytes()), Some(true));
        assert_eq!(hash.check_keyed(b"other"), Some(false));
        // Two hashes of one secret differ (fresh salt) and both check it.
        let again = hash_generated_secret(&secret);
        assert_ne!(text, again);
        let again = SecretHash::parse(&again).unwrap();
        assert_eq!(again.check_keyed(secret.as_bytes()), Some(true));
    }

    #[test]
    fn clear_secrets_are_kept_only_in_keyed_form() {
        let hash = SecretHash::keyed(b"dev-password");
        assert_eq!(hash.check_keyed(b"dev-password"), Some(true));
        assert_eq!(hash.check_keyed(b"dev-password "), Some(false));
    }

    #[test]
    fn refuses_what_is_not_a_usable_hash() {
        assert!(SecretHash::parse("plain-password").is_err());
        assert!(SecretHash::parse("$md5$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA").is_err());
        // A keyed hash with a short digest, or with parameters.
        assert!(SecretHash::parse("$hmac-sha256$c2FsdHNhbHRzYWx0c2FsdA$aGFzaA").is_err());
        // Absurd argon2 costs would make every pool thread keep gigabytes.
        let huge = "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$\
                    ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0MDE";
        let error = SecretHash::parse(huge).err().unwrap();
        assert!(error.contains("beyond"), "{error}");
    }
}
