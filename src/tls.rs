//! TLS termination (rustls, ring provider) and client-certificate authentication.
//!
//! The server may ask clients for a certificate during the handshake, but the handshake never
//! decides trust: it only checks that the client holds the key of the certificate it presents.
//! Callers without a certificate (HTTP Basic, API key, Bearer) still connect. Trust is decided per
//! request by [`ClientCertPolicy::verify`], so that an unknown issuer or an expired certificate is
//! answered with an HTTP 401 and a JSON reason instead of a failed handshake that B2C reports
//! only as "could not connect".
//!
//! A certificate is accepted when its leaf matches a pinned thumbprint and is within its validity
//! period, or when its chain verifies to one of the configured CA roots for client
//! authentication. Several pins and several CAs may be configured at once, for rotation.
//!
//! Behind Azure App Service, TLS ends at the front end, which forwards the client certificate in
//! the `X-ARR-ClientCert` header; [`authenticate`] reads it only when `trust_arr_header` is on.

use std::any::Any;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use actix_web::dev::Extensions;
use actix_web::HttpRequest;
use anyhow::Context;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor, UnixTime};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::config::{ClientCertificateSettings, TlsSettings};

/// The header in which Azure App Service forwards the client certificate (base64 DER).
pub const ARR_CLIENT_CERT_HEADER: &str = "x-arr-clientcert";

/// Builds the rustls server configuration from the certificate chain and key files.
///
/// When `request_client_certs` is true the server asks for a client certificate, optionally:
/// a presented chain is accepted by the handshake if the client proves possession of its key,
/// and its trust is decided per request by [`ClientCertPolicy`].
pub fn server_config(
    tls: &TlsSettings,
    request_client_certs: bool,
) -> anyhow::Result<ServerConfig> {
    let chain = load_certificates(&tls.cert_file, "TLS certificate")?;
    let key = load_private_key(&tls.key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS: no usable protocol version")?;
    let builder = if request_client_certs {
        builder.with_client_cert_verifier(Arc::new(RequestClientCertificate { algorithms }))
    } else {
        builder.with_no_client_auth()
    };
    builder.with_single_cert(chain, key).map_err(|e| {
        anyhow::anyhow!(
            "TLS: cannot use the key in {} with the certificate in {}: {e}",
            tls.key_file.display(),
            tls.cert_file.display()
        )
    })
}

/// Reads every `CERTIFICATE` section of a PEM file; fails when there is none.
fn load_certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{what} file {} is not valid PEM: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{what} file {} holds no PEM CERTIFICATE",
        path.display()
    );
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
fn load_private_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read TLS key file {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "TLS key file {} holds no unencrypted private key (PEM PRIVATE KEY, RSA PRIVATE KEY \
             or EC PRIVATE KEY)",
            path.display()
        ),
        other => anyhow::anyhow!("TLS key file {} is not valid PEM: {other}", path.display()),
    })
}

/// Asks for a client certificate without requiring one, and without judging its issuer: checks
/// only the handshake signatures (possession of the key).
#[derive(Debug)]
struct RequestClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for RequestClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: clients send the certificate they have, and pinned self-signed certificates
        // have no issuer to hint at.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Trust is decided per request (ClientCertPolicy), so refusals are 401s with a reason.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The certificate chain a client presented in the TLS handshake (leaf first), in connection
/// data.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Vec<CertificateDer<'static>>);

/// The TLS stream type of actix-web's rustls 0.23 listener.
type RustlsStream = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;

/// `HttpServer::on_connect` callback: stores the client's certificate chain, when it presented
/// one, as [`PeerCertificates`] in the connection data.
pub fn on_connect(conn: &dyn Any, ext: &mut Extensions) {
    if let Some(stream) = conn.downcast_ref::<RustlsStream>() {
        let (_, session) = stream.get_ref();
        if let Some(chain) = session.peer_certificates() {
            if !chain.is_empty() {
                ext.insert(PeerCertificates(chain.to_vec()));
            }
        }
    }
}

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
    trust_arr_header: bool,
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

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Decodes the `X-ARR-ClientCert` header: the base64 of the DER certificate, or the same wrapped
/// in PEM armour (with or without line breaks). Surrounding whitespace is ignored.
pub fn certificate_from_arr_header(value: &str) -> Result<CertificateDer<'static>, CertError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut text = value.trim();
    if let Some(rest) = text.strip_prefix(BEGIN) {
        text = rest
            .trim_end()
            .strip_suffix(END)
            .ok_or(CertError::Unparseable)?;
    }
    let base64: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if base64.is_empty() {
        return Err(CertError::NoCertificate);
    }
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let der = LENIENT
        .decode(base64.as_bytes())
        .map_err(|_| CertError::Unparseable)?;
    x509_parser::parse_x509_certificate(&der).map_err(|_| CertError::Unparseable)?;
    Ok(CertificateDer::from(der))
}

/// Authenticates a request by client certificate: the chain presented in the TLS handshake, or,
/// when there is none and `trust_arr_header` is on, the `X-ARR-ClientCert` header.
pub fn authenticate(
    req: &HttpRequest,
    policy: &ClientCertPolicy,
) -> Result<VerifiedClient, CertError> {
    if let Some(peer) = req.conn_data::<PeerCertificates>() {
        if !peer.0.is_empty() {
            return policy.verify_cached(&peer.0, UnixTime::now());
        }
    }
    if !policy.trust_arr_header {
        return Err(CertError::NoCertificate);
    }
    let mut values = req.headers().get_all(ARR_CLIENT_CERT_HEADER);
    let Some(value) = values.next() else {
        return Err(CertError::NoCertificate);
    };
    if values.next().is_some() {
        return Err(CertError::NotTrusted(
            "several X-ARR-ClientCert headers".into(),
        ));
    }
    let value = value.to_str().map_err(|_| CertError::Unparseable)?;
    let cert = certificate_from_arr_header(value)?;
    policy.verify_cached(std::slice::from_ref(&cert), UnixTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };

    /// 2024-06-01T00:00:00Z.
    fn now() -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(1_717_200_000))
    }

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn client_params(name: &str, from: i32, to: i32) -> CertificateParams {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        params
    }

    fn signed(ca: &Ca, name: &str, from: i32, to: i32) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        client_params(name, from, to)
            .signed_by(&key, &ca.cert, &ca.key)
            .unwrap()
            .der()
            .clone()
    }

    fn self_signed(name: &str, from: i32, to: i32) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        client_params(name, from, to)
            .self_signed(&key)
            .unwrap()
            .der()
            .clone()
    }

    fn write_pem(dir: &tempfile::TempDir, name: &str, pems: &[String]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, pems.concat()).unwrap();
        path
    }

    fn policy_with_cas(cas: &[&Ca]) -> (ClientCertPolicy, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let files = cas
            .iter()
            .enumerate()
            .map(|(i, ca)| write_pem(&dir, &format!("ca{i}.pem"), &[ca.cert.pem()]))
            .collect();
        let settings = ClientCertificateSettings {
            ca_files: files,
            ..Default::default()
        };
        (ClientCertPolicy::from_settings(&settings).unwrap(), dir)
    }

    fn policy_with_pins(pins: &[String]) -> ClientCertPolicy {
        ClientCertPolicy::from_settings(&ClientCertificateSettings {
            thumbprints: pins.to_vec(),
            ..Default::default()
        })
        .unwrap()
    }

    fn sha1_colons_lower(cert: &CertificateDer<'_>) -> String {
        Sha1::digest(cert.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    fn sha256_upper(cert: &CertificateDer<'_>) -> String {
        hex(&Sha256::digest(cert.as_ref())).to_ascii_uppercase()
    }

    #[test]
    fn ca_signed_valid_certificate_is_accepted() {
        let ca = ca("Fabrikam Client CA");
        let (policy, _dir) = policy_with_cas(&[&ca]);
        let cert = signed(&ca, "b2c-connector", 2023, 2030);
        let client = policy.verify(std::slice::from_ref(&cert), now()).unwrap();
        assert!(
            client.subject.contains("b2c-connector"),
            "{}",
            client.subject
        );
        assert_eq!(
            client.thumbprint_sha1,
            hex(&Sha1::digest(cert.as_ref())).to_uppercase()
        );
        assert_eq!(client.thumbprint_sha1.len(), 40);
    }

    #[test]
    fn certificate_through_an_intermediate_is_accepted() {
        let root = ca("Root");
        let inter_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Intermediate");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let inter_cert = params.signed_by(&inter_key, &root.cert, &root.key).unwrap();
        let inter = Ca {
            cert: inter_cert,
            key: inter_key,
        };
        let leaf = signed(&inter, "client", 2023, 2030);
        let (policy, _dir) = policy_with_cas(&[&root]);
        policy
            .verify(&[leaf.clone(), inter.cert.der().clone()], now())
            .unwrap();
        assert_eq!(policy.verify(&[leaf], now()), Err(CertError::UnknownIssuer));
    }

    #[test]
    fn unknown_ca_is_refused() {
        let trusted = ca("Trusted");
        let other = ca("Other");
        let (policy, _dir) = policy_with_cas(&[&trusted]);
        let cert = signed(&other, "intruder", 2023, 2030);
        assert_eq!(policy.verify(&[cert], now()), Err(CertError::UnknownIssuer));
    }

    #[test]
    fn expired_and_not_yet_valid_are_refused() {
        let ca = ca("CA");
        let (policy, _dir) = policy_with_cas(&[&ca]);
        let expired = signed(&ca, "old", 2021, 2022);
        assert_eq!(policy.verify(&[expired], now()), Err(CertError::Expired));
        let future = signed(&ca, "future", 2030, 2035);
        assert_eq!(policy.verify(&[future], now()), Err(CertError::NotYetValid));
    }

    #[test]
    fn server_only_certificate_is_refused() {
        let ca = ca("CA");
        let (policy, _dir) = policy_with_cas(&[&ca]);
        let key = KeyPair::generate().unwrap();
        let mut params = client_params("server", 2023, 2030);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
        assert!(matches!(
            policy.verify(&[cert.der().clone()], now()),
            Err(CertError::NotTrusted(_))
        ));
    }

    #[test]
    fn two_cas_at_once() {
        let old = ca("Old CA");
        let new = ca("New CA");
        let (policy, _dir) = policy_with_cas(&[&old, &new]);
        policy
            .verify(&[signed(&old, "a", 2023, 2030)], now())
            .unwrap();
        policy
            .verify(&[signed(&new, "b", 2023, 2030)], now())
            .unwrap();
        // Several CAs in one file.
        let dir = tempfile::tempdir().unwrap();
        let file = write_pem(&dir, "both.pem", &[old.cert.pem(), new.cert.pem()]);
        let policy = ClientCertPolicy::from_settings(&ClientCertificateSettings {
            ca_files: vec![file],
            ..Default::default()
        })
        .unwrap();
        policy
            .verify(&[signed(&new, "c", 2023, 2030)], now())
            .unwrap();
    }

    #[test]
    fn pinned_sha1_and_sha256_thumbprints_are_accepted() {
        let cert = self_signed("pinned", 2023, 2030);
        let policy = policy_with_pins(&[sha1_colons_lower(&cert)]);
        policy.verify(std::slice::from_ref(&cert), now()).unwrap();
        let policy = policy_with_pins(&[sha256_upper(&cert)]);
        policy.verify(std::slice::from_ref(&cert), now()).unwrap();
        let spaced = format!("\u{200e}{}", sha1_colons_lower(&cert).replace(':', " "));
        policy_with_pins(&[spaced]).verify(&[cert], now()).unwrap();
        let other = self_signed("other", 2023, 2030);
        assert_eq!(
            policy.verify(&[other], now()),
            Err(CertError::UnknownIssuer)
        );
    }

    #[test]
    fn pinned_but_expired_is_refused() {
        let cert = self_signed("pinned", 2020, 2021);
        let policy = policy_with_pins(&[sha1_colons_lower(&cert)]);
        assert_eq!(policy.verify(&[cert], now()), Err(CertError::Expired));
    }

    #[test]
    fn two_pins_at_once() {
        let old = self_signed("old", 2023, 2030);
        let new = self_signed("new", 2023, 2030);
        let policy = policy_with_pins(&[sha1_colons_lower(&old), sha256_upper(&new)]);
        policy.verify(&[old], now()).unwrap();
        policy.verify(&[new], now()).unwrap();
    }

    #[test]
    fn pins_and_cas_together() {
        let ca = ca("CA");
        let pinned = self_signed("pinned", 2023, 2030);
        let dir = tempfile::tempdir().unwrap();
        let file = write_pem(&dir, "ca.pem", &[ca.cert.pem()]);
        let policy = ClientCertPolicy::from_settings(&ClientCertificateSettings {
            ca_files: vec![file],
            thumbprints: vec![sha256_upper(&pinned)],
            trust_arr_header: false,
        })
        .unwrap();
        policy.verify(&[pinned], now()).unwrap();
        policy
            .verify(&[signed(&ca, "x", 2023, 2030)], now())
            .unwrap();
        assert_eq!(
            policy.verify(&[self_signed("y", 2023, 2030)], now()),
            Err(CertError::UnknownIssuer)
        );
    }

    #[test]
    fn bad_settings_are_errors() {
        let bad_pin = ClientCertificateSettings {
            thumbprints: vec!["not-a-thumbprint".into()],
            ..Default::default()
        };
        let error = ClientCertPolicy::from_settings(&bad_pin).unwrap_err();
        assert!(error.to_string().contains("thumbprints[0]"), "{error}");
        let missing = ClientCertificateSettings {
            ca_files: vec!["/nonexistent/ca.pem".into()],
            ..Default::default()
        };
        let error = ClientCertPolicy::from_settings(&missing).unwrap_err();
        assert!(
            format!("{error:#}").contains("/nonexistent/ca.pem"),
            "{error:#}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = write_pem(&dir, "empty.pem", &["nothing here\n".into()]);
        let error = ClientCertPolicy::from_settings(&ClientCertificateSettings {
            ca_files: vec![empty.clone()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("empty.pem"), "{error}");
        assert!(ClientCertPolicy::from_settings(&ClientCertificateSettings::default()).is_err());
    }

    #[test]
    fn empty_chain_and_garbage() {
        let policy = policy_with_pins(&["ab".repeat(20)]);
        assert_eq!(policy.verify(&[], now()), Err(CertError::NoCertificate));
        let garbage = CertificateDer::from(vec![1u8, 2, 3]);
        assert_eq!(
            policy.verify(&[garbage], now()),
            Err(CertError::Unparseable)
        );
    }

    #[test]
    fn arr_header_base64_der_and_pem() {
        let key = KeyPair::generate().unwrap();
        let cert = client_params("arr", 2023, 2030).self_signed(&key).unwrap();
        let der = cert.der().clone();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        assert_eq!(certificate_from_arr_header(&b64).unwrap(), der);
        assert_eq!(
            certificate_from_arr_header(&format!("  {b64}\n")).unwrap(),
            der
        );
        // PEM with line breaks.
        assert_eq!(certificate_from_arr_header(&cert.pem()).unwrap(), der);
        // PEM on one line.
        let one_line = format!("-----BEGIN CERTIFICATE-----{b64}-----END CERTIFICATE-----");
        assert_eq!(certificate_from_arr_header(&one_line).unwrap(), der);
        let spaced = cert.pem().replace('\n', " ");
        assert_eq!(certificate_from_arr_header(&spaced).unwrap(), der);
        // Without padding.
        assert_eq!(
            certificate_from_arr_header(b64.trim_end_matches('=')).unwrap(),
            der
        );
        assert_eq!(
            certificate_from_arr_header("not base64!"),
            Err(CertError::Unparseable)
        );
        assert_eq!(
            certificate_from_arr_header("aGVsbG8="),
            Err(CertError::Unparseable)
        );
        assert_eq!(
            certificate_from_arr_header("  "),
            Err(CertError::NoCertificate)
        );
    }

    #[test]
    fn authenticate_reads_the_arr_header_only_when_trusted() {
        let cert = self_signed("arr", 2020, 2090);
        let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        let pin = sha1_colons_lower(&cert);
        let trusting = ClientCertPolicy::from_settings(&ClientCertificateSettings {
            thumbprints: vec![pin.clone()],
            trust_arr_header: true,
            ..Default::default()
        })
        .unwrap();
        let ignoring = policy_with_pins(&[pin]);
        let req = actix_web::test::TestRequest::default()
            .insert_header(("X-ARR-ClientCert", b64.as_str()))
            .to_http_request();
        let client = authenticate(&req, &trusting).unwrap();
        assert!(client.subject.contains("arr"));
        assert_eq!(authenticate(&req, &ignoring), Err(CertError::NoCertificate));
        let bare = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(
            authenticate(&bare, &trusting),
            Err(CertError::NoCertificate)
        );
        let twice = actix_web::test::TestRequest::default()
            .append_header(("X-ARR-ClientCert", b64.as_str()))
            .append_header(("X-ARR-ClientCert", b64.as_str()))
            .to_http_request();
        assert!(matches!(
            authenticate(&twice, &trusting),
            Err(CertError::NotTrusted(_))
        ));
    }

    #[test]
    fn server_config_loads_pem_files() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = write_pem(&dir, "server.pem", &[cert.pem()]);
        let key_file = write_pem(&dir, "server.key", &[key.serialize_pem()]);
        let tls = TlsSettings {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        };
        server_config(&tls, false).unwrap();
        server_config(&tls, true).unwrap();
        // Errors name the file.
        let swapped = TlsSettings {
            cert_file: key_file.clone(),
            key_file: cert_file.clone(),
        };
        let error = server_config(&swapped, false).unwrap_err();
        assert!(format!("{error:#}").contains("server.key"), "{error:#}");
        let other_key = write_pem(
            &dir,
            "other.key",
            &[KeyPair::generate().unwrap().serialize_pem()],
        );
        let mismatched = TlsSettings {
            cert_file,
            key_file: other_key,
        };
        assert!(server_config(&mismatched, false).is_err());
    }

    #[test]
    fn a_remembered_chain_is_reused_but_never_beyond_the_leafs_validity() {
        let authority = ca("Cache CA");
        let (policy, _dir) = policy_with_cas(&[&authority]);
        let leaf = signed(&authority, "cached-client", 2023, 2030);
        let first = policy
            .verify_cached(std::slice::from_ref(&leaf), now())
            .unwrap();
        let again = policy
            .verify_cached(std::slice::from_ref(&leaf), now())
            .unwrap();
        assert_eq!(first, again);
        // Past the leaf's notAfter the remembered answer is not used: the full check refuses.
        let after = UnixTime::since_unix_epoch(Duration::from_secs(1_900_000_000));
        assert_eq!(
            policy.verify_cached(std::slice::from_ref(&leaf), after),
            Err(CertError::Expired)
        );
        // A refusal is not remembered.
        let stranger = signed(&ca("Other CA"), "stranger", 2023, 2030);
        for _ in 0..2 {
            assert_eq!(
                policy.verify_cached(std::slice::from_ref(&stranger), now()),
                Err(CertError::UnknownIssuer)
            );
        }
    }
}
