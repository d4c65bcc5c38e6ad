//! The tenant's token signing key: RS256, published as a JWK set.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// An RSA key pair and its key id.
pub struct SigningKey {
    kid: String,
    signer: rsa::pkcs1v15::SigningKey<Sha256>,
    verifier: rsa::pkcs1v15::VerifyingKey<Sha256>,
    jwk: Value,
}

impl SigningKey {
    /// Reads a PEM key (PKCS#8 or PKCS#1).
    pub fn from_file(path: &Path) -> anyhow::Result<SigningKey> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("reading the signing key {}", path.display()))?;
        let key = RsaPrivateKey::from_pkcs8_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
            .with_context(|| format!("{} is not an RSA private key in PEM", path.display()))?;
        Ok(Self::from_key(key))
    }

    /// A new 2048-bit key.
    pub fn generate() -> anyhow::Result<SigningKey> {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .context("generating the signing key")?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: RsaPrivateKey) -> SigningKey {
        let public = key.to_public_key();
        let n = public.n().to_bytes_be();
        let e = public.e().to_bytes_be();
        // The key id is a digest of the public key, as stable as the key.
        let kid = b64(&Sha256::digest([n.as_slice(), e.as_slice()].concat())[..16]);
        let jwk = json!({
            "kid": kid,
            "use": "sig",
            "kty": "RSA",
            "alg": "RS256",
            "e": b64(&e),
            "n": b64(&n),
        });
        SigningKey {
            kid,
            verifier: rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public),
            signer: rsa::pkcs1v15::SigningKey::<Sha256>::new(key),
            jwk,
        }
    }

    /// The JWK set to publish.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk.clone()] })
    }

    /// A signed JWT (RS256) with these claims.
    pub fn sign(&self, claims: &Map<String, Value>) -> String {
        let header = json!({ "typ": "JWT", "alg": "RS256", "kid": self.kid });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(Value::Object(claims.clone()).to_string().as_bytes())
        );
        let signature = self.signer.sign(input.as_bytes()).to_vec();
        format!("{input}.{}", b64(&signature))
    }

    /// The claims of a JWT this key signed (RS256, this key's id), or `None`.
    pub fn verify(&self, token: &str) -> Option<Map<String, Value>> {
        let decode = |part: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        };
        let (input, signature) = token.rsplit_once('.')?;
        let (header, payload) = input.split_once('.')?;
        let header: Value = serde_json::from_slice(&decode(header)?).ok()?;
        if header.get("alg")? != "RS256" || header.get("kid")? != self.kid.as_str() {
            return None;
        }
        let signature = rsa::pkcs1v15::Signature::try_from(decode(signature)?.as_slice()).ok()?;
        self.verifier.verify(input.as_bytes(), &signature).ok()?;
        serde_json::from_slice(&decode(payload)?).ok()
    }
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
