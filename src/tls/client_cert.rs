//! Whether a presented client certificate is trusted: a pinned thumbprint, or a chain to a
//! configured CA, within validity; accepted chains remembered for a while.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::config::ClientCertificateSettings;

use super::handshake::load_certificates;

/// A client that presented an accepted certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedClient {
    /// SHA-1 thumbprint of the leaf certificate, upper-case hex without separators (as Azure
    /// shows it).
    pub thumbprint_sha1: String,
    /// Subject distinguished name of the leaf certificate.
    pub subject: String,
}

/// Why a client certificate was refused. The messages are fit for a 401 JSON reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// No certificate was presented (nor forwarded in a trusted header).
    #[error("a client certificate is required")]
    NoCertificate,
    /// The presented bytes are not an X.509 certificate.
    #[error("the client certificate cannot be parsed")]
    Unparseable,
    /// The leaf certificate's validity period has ended.
    #[error("the client certificate has expired")]
    Expired,
    /// The leaf certificate's validity period has not begun.
    #[error("the client certificate is not valid yet")]
    NotYetValid,
    /// Neither pinned nor issued by a configured certificate authority.
    #[error(
        "the client certificate is not issued by a trusted certificate authority and matches no \
         pinned thumbprint"
    )]
    UnknownIssuer,
    /// Refused for another reason (bad signature, wrong key usage, expired issuer, ...).
    #[error("the client certificate is not trusted: {0}")]
    NotTrusted(String),
}

/// Which client certificates are accepted: CA roots and pinned thumbprints.
#[derive(Clone, Debug)]
pub struct ClientCertPolicy {
    roots: Vec<TrustAnchor<'static>>,
    /// Lower-case hex SHA-1 (40 digits) or SHA-256 (64 digits) thumbprints.
    pins: Vec<String>,
    pub(super) trust_arr_header: bool,
    algorithms: WebPkiSupportedAlgorithms,
    /// Chains accepted recently, by SHA-256 of their DER: B2C presents the same certificate on
    /// every call, and checking the chain's signatures each time would cost more than the rest
    /// of the request. See [`ClientCertPolicy::verify_cached`].
    accepted: Arc<RwLock<HashMap<[u8; 32], AcceptedChain>>>,
}

/// A chain accepted by [`ClientCertPolicy::verify`], and until when that answer may be reused.
#[derive(Clone, Debug)]
struct AcceptedChain {
    client: VerifiedClient,
    not_before: i64,
    reuse_until: i64,
}

/// Longest reuse of a chain's verification, in seconds: an intermediate that expires, or a
/// configuration change, is noticed within this time (the leaf's own validity is never exceeded).
const ACCEPTED_CHAIN_TTL_S: i64 = 300;
/// Chains remembered at most.
const ACCEPTED_CHAINS_MAX: usize = 256;

impl ClientCertPolicy {
    /// Loads the CA files (PEM, each may hold several certificates) and normalises the pinned
    /// thumbprints. Fails, naming the file or entry, on anything unusable.
    pub fn from_settings(settings: &ClientCertificateSettings) -> anyhow::Result<Self> {
        let mut pins = Vec::with_capacity(settings.thumbprints.len());
        for (i, raw) in settings.thumbprints.iter().enumerate() {
            let pin = normalize_thumbprint(raw).ok_or_else(|| {
                anyhow::anyhow!(
                    "auth.client_certificate.thumbprints[{i}] is not a hex SHA-1 (40 digits) or \
                     SHA-256 (64 digits) thumbprint"
                )
            })?;
            pins.push(pin);
        }
        let mut roots = Vec::new();
        for path in &settings.ca_files {
            let certs = load_certificates(path, "client CA")?;
            for (n, cert) in certs.iter().enumerate() {
                let anchor = webpki::anchor_from_trusted_cert(cert).map_err(|e| {
                    anyhow::anyhow!(
                        "client CA file {}: certificate {} is not usable as a trust anchor: {e}",
                        path.display(),
                        n + 1
                    )
                })?;
                warn_if_expired(path, n, cert);
                roots.push(anchor.to_owned());
            }
        }
        anyhow::ensure!(
            !roots.is_empty() || !pins.is_empty(),
            "auth.client_certificate needs ca_files or thumbprints"
        );
        Ok(ClientCertPolicy {
            roots,
            pins,
            trust_arr_header: settings.trust_arr_header,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            accepted: Arc::default(),
        })
    }

    /// [`ClientCertPolicy::verify`], reusing the answer for a chain accepted within the last
    /// [`ACCEPTED_CHAIN_TTL_S`] seconds and not past its leaf's `notAfter`. Refusals are never
    /// remembered.
    pub fn verify_cached(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<VerifiedClient, CertError> {
        let mut hasher = Sha256::new();
        for cert in chain {
            hasher.update((cert.as_ref().len() as u64).to_be_bytes());
            hasher.update(cert.as_ref());
        }
        let key: [u8; 32] = hasher.finalize().into();
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        {
            let accepted = self.accepted.read().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = accepted.get(&key) {
                if entry.not_before <= now_secs && now_secs <= entry.reuse_until {
                    return Ok(entry.client.clone());
                }
            }
        }
        let client = self.verify(chain, now)?;
        let leaf = chain.first().ok_or(CertError::NoCertificate)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|_| CertError::Unparseable)?;
        let validity = parsed.validity();
        let entry = AcceptedChain {
            client: client.clone(),
            not_before: validity.not_before.timestamp(),
            reuse_until: validity
                .not_after
                .timestamp()
                .min(now_secs.saturating_add(ACCEPTED_CHAIN_TTL_S)),
        };
        let mut accepted = self.accepted.write().unwrap_or_else(|p| p.into_inner());
        if accepted.len() >= ACCEPTED_CHAINS_MAX {
            accepted.retain(|_, e| now_secs <= e.reuse_until);
            if accepted.len() >= ACCEPTED_CHAINS_MAX {
                accepted.clear();
            }
        }
        accepted.insert(key, entry);
        Ok(client)
    }

    /// Whether the `X-ARR-ClientCert` header is read when the connection carries no certificate.
    pub fn trust_arr_header(&self) -> bool {
        self.trust_arr_header
    }

    /// Decides whether `chain` (leaf first, then intermediates) is accepted at `now`.
    pub fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<VerifiedClient, CertError> {
        let leaf = chain.first().ok_or(CertError::NoCertificate)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|_| CertError::Unparseable)?;
        let validity = parsed.validity();
        let now_secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now_secs < validity.not_before.timestamp() {
            return Err(CertError::NotYetValid);
        }
        if now_secs > validity.not_after.timestamp() {
            return Err(CertError::Expired);
        }
        let sha1 = hex(&Sha1::digest(leaf.as_ref()));
        let client = VerifiedClient {
            thumbprint_sha1: sha1.to_ascii_uppercase(),
            subject: parsed.subject().to_string(),
        };
        if self.pins.contains(&sha1) {
            return Ok(client);
        }
        if self.pins.iter().any(|pin| pin.len() == 64) {
            let sha256 = hex(&Sha256::digest(leaf.as_ref()));
            if self.pins.contains(&sha256) {
                return Ok(client);
            }
        }
        if self.roots.is_empty() {
            return Err(CertError::UnknownIssuer);
        }
        let end_entity =
            webpki::EndEntityCert::try_from(leaf).map_err(|_| CertError::Unparseable)?;
        end_entity
            .verify_for_usage(
                self.algorithms.all,
                &self.roots,
                &chain[1..],
                now,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map(|_| client)
            .map_err(|e| match e {
                webpki::Error::UnknownIssuer => CertError::UnknownIssuer,
                // The leaf's own validity was checked above: this is an issuer's.
                webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
                    CertError::NotTrusted(
                        "a certificate of its chain is outside its validity period".into(),
                    )
                }
                webpki::Error::BadDer | webpki::Error::BadDerTime => CertError::Unparseable,
                other => CertError::NotTrusted(format!("{other:?}")),
            })
    }
}

fn warn_if_expired(path: &Path, index: usize, cert: &CertificateDer<'_>) {
    if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) {
        let now = i64::try_from(UnixTime::now().as_secs()).unwrap_or(i64::MAX);
        if parsed.validity().not_after.timestamp() < now {
            log::warn!(
                "client CA file {}: certificate {} ({}) has expired",
                path.display(),
                index + 1,
                parsed.subject()
            );
        }
    }
}

/// Lower-case hex without separators, when `raw` is a SHA-1 or SHA-256 thumbprint. Ignores case,
/// colons, whitespace and the invisible marks that copying from Windows certificate dialogs adds.
fn normalize_thumbprint(raw: &str) -> Option<String> {
    let hex: String = raw
        .chars()
        .filter(|c| {
            !(*c == ':' || c.is_whitespace() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{feff}'))
        })
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let is_hex = hex.chars().all(|c| c.is_ascii_hexdigit());
    (is_hex && (hex.len() == 40 || hex.len() == 64)).then_some(hex)
}

pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
