//! Authentication of callers: B2C's connector credentials and the administrators' token.
//!
//! Secrets are kept only as hashes ([`secret`]): argon2id for secrets a person chose, a keyed
//! SHA-256 for the 256-bit random secrets autolink generates. A successful check is remembered
//! as an HMAC of the presented credentials under a key that lives only in this process; later
//! calls compare that HMAC in constant time, so the argon2 cost is paid once per secret. The
//! argon2 checks themselves run on a bounded pool ([`argon2_pool`]), and failed checks are
//! remembered and throttled per client ([`gate`]).

pub mod api_key;
pub mod argon2_pool;
pub mod bootstrap;
pub mod fetch;
pub mod gate;
pub mod graph;
pub mod oidc;
pub mod secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine as _;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use self::argon2_pool::{Argon2Pool, Busy};
pub use self::secret::{generate_secret, hash_generated_secret, hash_secret, SecretHash};

/// Distinct credentials remembered after verification (a rotation needs two).
const CACHE_SIZE: usize = 4;

/// The result of one check, shared with the requests that waited for it.
type Shared = watch::Receiver<Option<Result<bool, Busy>>>;

/// A secret checked against its hash, with a cache of recent successes.
pub struct HashedSecret {
    hash: SecretHash,
    /// The argon2 form, shared with the pool's jobs.
    argon2: Option<Arc<secret::Argon2Hash>>,
    /// Per-process HMAC key for the cache.
    cache_key: [u8; 32],
    cache: RwLock<Vec<[u8; 32]>>,
    /// argon2 checks in progress, by fingerprint of what was presented: the same credentials
    /// arriving many times at once (B2C's burst after a restart) cost one check, not many.
    in_flight: Mutex<HashMap<[u8; 32], Shared>>,
}

impl HashedSecret {
    /// Wraps a stored or configured hash; fails when it is not one autolink can check.
    pub fn new(hash: String) -> Result<Self, String> {
        Ok(Self::from_hash(SecretHash::parse(&hash)?))
    }

    /// A secret given in clear (development configuration), kept only in keyed form.
    pub fn from_clear(secret: &str) -> Self {
        Self::from_hash(SecretHash::keyed(secret.as_bytes()))
    }

    fn from_hash(hash: SecretHash) -> Self {
        let mut cache_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut cache_key);
        let argon2 = match &hash {
            SecretHash::Argon2(a) => Some(Arc::new(a.clone())),
            SecretHash::KeyedSha256 { .. } => None,
        };
        Self {
            hash,
            argon2,
            cache_key,
            cache: RwLock::new(Vec::new()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Whether checking this secret costs argon2 (a secret a person chose).
    pub fn is_password_hash(&self) -> bool {
        self.argon2.is_some()
    }

    fn fingerprint(&self, presented: &[u8]) -> [u8; 32] {
        secret::hmac_sha256(&self.cache_key, presented)
    }

    /// Whether these credentials were verified before (fast; constant time per entry).
    /// `cache_input` is everything the caller presented (for Basic: user name and password).
    pub fn verified_before(&self, cache_input: &[u8]) -> bool {
        self.known(&self.fingerprint(cache_input))
    }

    fn known(&self, fingerprint: &[u8; 32]) -> bool {
        let cache = match self.cache.read() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        cache.iter().fold(false, |found, known| {
            found | bool::from(known.ct_eq(fingerprint))
        })
    }

    fn remember(&self, fingerprint: [u8; 32]) {
        let mut cache = match self.cache.write() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        if cache.len() >= CACHE_SIZE {
            cache.remove(0);
        }
        cache.push(fingerprint);
    }

    /// Checks `secret` against the hash unless `cache_input` was verified before. A success is
    /// remembered when `remember` is true. argon2 runs on the process's bounded pool:
    /// `Err(Busy)` when it is saturated (the check did not run).
    pub async fn verify(
        &self,
        secret: &[u8],
        cache_input: &[u8],
        remember: bool,
    ) -> Result<bool, Busy> {
        let fingerprint = self.fingerprint(cache_input);
        if self.known(&fingerprint) {
            return Ok(true);
        }
        let Some(argon2) = &self.argon2 else {
            let ok = self.hash.check_keyed(secret).unwrap_or(false);
            if ok && remember {
                self.remember(fingerprint);
            }
            return Ok(ok);
        };
        loop {
            let leader = {
                let mut in_flight = lock(&self.in_flight);
                match in_flight.get(&fingerprint) {
                    Some(shared) => Err(shared.clone()),
                    None => {
                        let (sender, receiver) = watch::channel(None);
                        in_flight.insert(fingerprint, receiver);
                        Ok(sender)
                    }
                }
            };
            match leader {
                Err(mut shared) => match shared.wait_for(Option::is_some).await {
                    Ok(result) => return (*result).unwrap_or(Err(Busy)),
                    // The leading request went away before its check ended: try again.
                    Err(_) => continue,
                },
                Ok(sender) => {
                    // Removes the entry however this ends, a dropped request included.
                    let _entry = InFlightEntry {
                        map: &self.in_flight,
                        fingerprint,
                    };
                    if self.known(&fingerprint) {
                        return Ok(true);
                    }
                    let result = Argon2Pool::global().check(argon2.clone(), secret).await;
                    if result == Ok(true) && remember {
                        self.remember(fingerprint);
                    }
                    let _ = sender.send(Some(result));
                    return result;
                }
            }
        }
    }
}

struct InFlightEntry<'a> {
    map: &'a Mutex<HashMap<[u8; 32], Shared>>,
    fingerprint: [u8; 32],
}

impl Drop for InFlightEntry<'_> {
    fn drop(&mut self) {
        lock(self.map).remove(&self.fingerprint);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// HTTP Basic credentials of one caller.
pub struct BasicCredentials {
    username: String,
    password: HashedSecret,
}

impl BasicCredentials {
    /// From a user name and a stored or configured password hash.
    pub fn new(username: String, password_hash: String) -> Result<Self, String> {
        Ok(Self::with_secret(
            username,
            HashedSecret::new(password_hash)?,
        ))
    }

    /// From a user name and a checked secret.
    pub fn with_secret(username: String, password: HashedSecret) -> Self {
        Self { username, password }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The presented credentials as the caches see them: user name and password together, so a
    /// right password with a wrong user name never hits the cache.
    pub fn presented(username: &str, password: &str) -> Vec<u8> {
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

    /// Full check (argon2 on the bounded pool on a cache miss). The password is checked even
    /// when the user name is wrong, so timing does not tell which was wrong.
    pub async fn verify(&self, username: &str, password: &str) -> Result<bool, Busy> {
        let user_ok = self.username_matches(username);
        let presented = Self::presented(username, password);
        let password_ok = self
            .password
            .verify(password.as_bytes(), &presented, user_ok)
            .await?;
        Ok(user_ok & password_ok)
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

    #[tokio::test]
    async fn verifies_the_right_credentials_and_remembers_them() {
        let creds = creds();
        assert!(!creds.verified_before("b2c", "s3cret"));
        assert_eq!(creds.verify("b2c", "s3cret").await, Ok(true));
        assert!(creds.verified_before("b2c", "s3cret"));
    }

    #[tokio::test]
    async fn refuses_a_wrong_password_or_user_name() {
        let creds = creds();
        assert_eq!(creds.verify("b2c", "wrong").await, Ok(false));
        assert_eq!(creds.verify("other", "s3cret").await, Ok(false));
        assert_eq!(creds.verify("b2c", "s3cret").await, Ok(true));
        assert!(!creds.verified_before("other", "s3cret"));
        assert!(!creds.verified_before("b2c", "s3cret "));
    }

    #[tokio::test]
    async fn many_identical_checks_at_once_cost_one_argon2_check() {
        // More identical requests than the pool's queue holds: without sharing one check, some
        // would be refused as Busy.
        let creds = Arc::new(creds());
        let checks = (0..64).map(|_| {
            let creds = creds.clone();
            tokio::spawn(async move { creds.verify("b2c", "s3cret").await })
        });
        for result in futures_util::future::join_all(checks).await {
            assert_eq!(result.unwrap(), Ok(true));
        }
        assert!(lock(&creds.password.in_flight).is_empty());
    }

    #[tokio::test]
    async fn generated_and_clear_secrets_are_checked_without_argon2() {
        let secret = generate_secret();
        let generated = HashedSecret::new(hash_generated_secret(&secret)).unwrap();
        assert!(!generated.is_password_hash());
        assert_eq!(
            generated
                .verify(secret.as_bytes(), secret.as_bytes(), true)
                .await,
            Ok(true)
        );
        assert!(generated.verified_before(secret.as_bytes()));
        assert_eq!(generated.verify(b"x", b"x", true).await, Ok(false));
        let clear = HashedSecret::from_clear("dev");
        assert!(!clear.is_password_hash());
        assert_eq!(clear.verify(b"dev", b"dev", false).await, Ok(true));
        assert!(!clear.verified_before(b"dev"));
        assert!(creds().password.is_password_hash());
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
    fn rejects_a_hash_that_is_not_a_hash() {
        assert!(HashedSecret::new("plain-password".into()).is_err());
    }
}
