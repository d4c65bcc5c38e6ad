//! The `webhook-signature` header of the Standard Webhooks specification: `v1,` and the base64 of
//! the HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`, keyed with the secret's bytes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::auth::secret::hmac_sha256;

/// The prefix of a secret.
const PREFIX: &str = "whsec_";

/// A webhook's secret: the bytes behind `whsec_...`. Never printed.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// `whsec_` followed by the base64 of 24 to 64 bytes. The message never holds the secret.
    pub fn parse(raw: &str) -> Result<Secret, &'static str> {
        const SHAPE: &str = "must be whsec_ followed by the base64 of 24 to 64 random bytes";
        let encoded = raw.trim().strip_prefix(PREFIX).ok_or(SHAPE)?;
        let bytes = STANDARD.decode(encoded).map_err(|_| SHAPE)?;
        if !(24..=64).contains(&bytes.len()) {
            return Err(SHAPE);
        }
        Ok(Secret(bytes))
    }
}

/// The `webhook-signature` value of one attempt.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(id.len() + 24 + body.len());
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(hmac_sha256(&secret.0, &signed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference libraries (the same secret, id, timestamp
    /// and body give this signature in every one of them).
    #[test]
    fn signs_the_specifications_example() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_outside_the_format_are_refused() {
        assert!(Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        // 16 bytes: too short.
        assert!(Secret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAA==").is_err());
        let long = format!("whsec_{}", STANDARD.encode([7u8; 65]));
        assert!(Secret::parse(&long).is_err());
        assert!(!format!(
            "{:?}",
            Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
        )
        .contains("MfKQ"));
    }
}
