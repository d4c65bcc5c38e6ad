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

mod client_cert;
mod handshake;
mod request;

pub use self::client_cert::{CertError, ClientCertPolicy, VerifiedClient};
pub use self::handshake::{on_connect, server_config, PeerCertificates};
pub use self::request::{authenticate, certificate_from_arr_header};

/// The header in which Azure App Service forwards the client certificate (base64 DER).
pub const ARR_CLIENT_CERT_HEADER: &str = "x-arr-clientcert";

#[cfg(test)]
mod tests;
