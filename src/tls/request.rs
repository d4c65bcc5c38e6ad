//! A request's client certificate: the one presented in the handshake, or the
//! `X-ARR-ClientCert` header of Azure App Service when it is trusted.

use actix_web::HttpRequest;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::client_cert::{CertError, ClientCertPolicy, VerifiedClient};
use super::handshake::PeerCertificates;
use super::ARR_CLIENT_CERT_HEADER;

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
