use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::config::{ClientCertificateSettings, TlsSettings};

use super::client_cert::hex;
use super::*;

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
