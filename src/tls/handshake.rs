//! The TLS server: its rustls configuration from the certificate and key files, a handshake that
//! asks for a client certificate without deciding trust, and the presented chain kept with the
//! connection.

use std::any::Any;
use std::path::Path;
use std::sync::Arc;

use actix_web::dev::Extensions;
use anyhow::Context;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::config::TlsSettings;

/// Builds the rustls server configuration from the certificate chain and key files.
///
/// When `request_client_certs` is true the server asks for a client certificate, optionally:
/// a presented chain is accepted by the handshake if the client proves possession of its key,
/// and its trust is decided per request by [`ClientCertPolicy`](super::ClientCertPolicy).
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
pub(super) fn load_certificates(
    path: &Path,
    what: &str,
) -> anyhow::Result<Vec<CertificateDer<'static>>> {
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
