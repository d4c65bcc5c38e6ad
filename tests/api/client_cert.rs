//! Client certificates over real TLS (the server terminates TLS with rustls) and through App
//! Service's `X-ARR-ClientCert` header: accepted certificates need no other credentials; refused
//! ones get a 401 with a JSON reason, never a failed handshake.

use std::path::PathBuf;
use std::time::Duration;

use autolink::config::{ClientCertificateSettings, Settings, TlsSettings};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use crate::helpers::*;

/// A certificate with its key.
pub(crate) struct Issued {
    pub(crate) cert: rcgen::Certificate,
    pub(crate) key: KeyPair,
}

impl Issued {
    /// Certificate and key PEM, as `reqwest::Identity::from_pem` wants them.
    fn identity(&self) -> reqwest::Identity {
        let pem = format!("{}{}", self.cert.pem(), self.key.serialize_pem());
        reqwest::Identity::from_pem(pem.as_bytes()).unwrap()
    }

    /// The SHA-1 thumbprint as `aa:bb:...` (lower case, colons).
    fn sha1_with_colons(&self) -> String {
        Sha1::digest(self.cert.der().as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The SHA-256 thumbprint, upper-case hex.
    fn sha256(&self) -> String {
        use sha2::Sha256;
        Sha256::digest(self.cert.der().as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    /// The `X-ARR-ClientCert` value: base64 of the DER.
    fn arr_header(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.cert.der().as_ref())
    }
}

pub(crate) fn ca(name: &str) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let cert = params.self_signed(&key).unwrap();
    Issued { cert, key }
}

/// A client certificate valid from `from` to `to` (January 1st), signed by `issuer` or
/// self-signed.
pub(crate) fn client(name: &str, issuer: Option<&Issued>, from: i32, to: i32) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    let cert = match issuer {
        Some(ca) => params.signed_by(&key, &ca.cert, &ca.key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    Issued { cert, key }
}

/// The certificates of one test, written to a temporary directory.
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) server_ca: Issued,
    pub(crate) client_ca: Issued,
    tls: TlsSettings,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let server_ca = ca("Test Server CA");
        let client_ca = ca("Test Client CA");
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "autolink test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let server = params
            .signed_by(&key, &server_ca.cert, &server_ca.key)
            .unwrap();
        let cert_file = dir.path().join("server.pem");
        let key_file = dir.path().join("server.key");
        std::fs::write(&cert_file, server.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Pki {
            dir,
            server_ca,
            client_ca,
            tls: TlsSettings {
                cert_file,
                key_file,
            },
        }
    }

    /// Writes a CA certificate and returns its path.
    pub(crate) fn ca_file(&self, name: &str, ca: &Issued) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, ca.cert.pem()).unwrap();
        path
    }

    /// A client trusting the server CA, presenting `identity` when given.
    fn client(&self, identity: Option<&Issued>) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.server_ca.cert.pem().as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .timeout(Duration::from_secs(30));
        if let Some(issued) = identity {
            builder = builder.identity(issued.identity());
        }
        builder.build().unwrap()
    }
}

/// Serves HTTPS with the test PKI and `[auth.client_certificate]` as given; Basic stays
/// configured (the test settings), as it would during a migration.
pub(crate) async fn spawn_tls(pki: &Pki, certs: ClientCertificateSettings) -> (TestApp, String) {
    let tls = pki.tls.clone();
    spawn_with_https(move |settings| {
        settings.tls = Some(tls);
        settings.auth.client_certificate = Some(certs);
    })
    .await
}

async fn spawn_with_https(change: impl FnOnce(&mut Settings)) -> (TestApp, String) {
    let app = spawn_app_with(change).await;
    let address = https_address(&app);
    (app, address)
}

/// The helpers build `http://127.0.0.1:PORT`; the same port serves HTTPS here.
fn https_address(app: &TestApp) -> String {
    let rest = app
        .address
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("unexpected address {}", app.address));
    format!("https://{rest}")
}

fn connector_body() -> Value {
    json!({
        "email": "a@example.com",
        "step": "PostAttributeCollection",
        "client_id": B2C_CLIENT
    })
}

/// Posts to the connector WITHOUT Basic credentials; returns the status and the JSON body.
async fn post_connector(
    client: &reqwest::Client,
    address: &str,
    arr_header: Option<&str>,
) -> (u16, Value) {
    let mut request = client
        .post(format!("{address}/b2c/api-connector"))
        .json(&connector_body());
    if let Some(value) = arr_header {
        request = request.header("X-ARR-ClientCert", value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed (handshake?): {e:?}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("answer is not JSON ({status}): {text}"));
    (status, body)
}

fn assert_accepted(status: u16, body: &Value) {
    assert_continue(status, body);
}

/// A 401 with a JSON reason that names the certificate problem.
fn assert_refused(status: u16, body: &Value, reason_contains: &str) {
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(reason_contains),
        "the reason should mention {reason_contains:?}: {body}"
    );
}

fn cas(files: Vec<PathBuf>) -> ClientCertificateSettings {
    ClientCertificateSettings {
        ca_files: files,
        ..Default::default()
    }
}

fn pins(thumbprints: Vec<String>) -> ClientCertificateSettings {
    ClientCertificateSettings {
        thumbprints,
        ..Default::default()
    }
}

#[tokio::test]
async fn healthz_over_tls_needs_no_client_certificate() {
    let pki = Pki::new();
    let ca_file = pki.ca_file("client-ca.pem", &pki.client_ca);
    let (_app, address) = spawn_tls(&pki, cas(vec![ca_file])).await;
    let response = pki
        .client(None)
        .get(format!("{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Basic callers still connect and are accepted without a certificate.
    let response = pki
        .client(None)
        .post(format!("{address}/b2c/api-connector"))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(&connector_body())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_accepted(status, &body);
}

#[tokio::test]
async fn tls_without_client_authentication_serves_https() {
    let pki = Pki::new();
    let tls = pki.tls.clone();
    let (app, address) = spawn_with_https(move |s| s.tls = Some(tls)).await;
    let response = pki
        .client(None)
        .get(format!("{address}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Plain HTTP on the TLS port does not get an answer.
    assert!(app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true));
}

#[tokio::test]
async fn ca_signed_client_certificate_is_accepted_without_basic_credentials() {
    let pki = Pki::new();
    let ca_file = pki.ca_file("client-ca.pem", &pki.client_ca);
    let (_app, address) = spawn_tls(&pki, cas(vec![ca_file])).await;
    let cert = client("b2c-connector", Some(&pki.client_ca), 2020, 2090);
    let (status, body) = post_connector(&pki.client(Some(&cert)), &address, None).await;
    assert_accepted(status, &body);
}

#[tokio::test]
async fn no_client_certificate_and_no_credentials_is_401_json() {
    let pki = Pki::new();
    let ca_file = pki.ca_file("client-ca.pem", &pki.client_ca);
    let (_app, address) = spawn_tls(&pki, cas(vec![ca_file])).await;
    let (status, body) = post_connector(&pki.client(None), &address, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn certificate_from_an_unknown_ca_is_401_json_not_a_handshake_failure() {
    let pki = Pki::new();
    let ca_file = pki.ca_file("client-ca.pem", &pki.client_ca);
    let (_app, address) = spawn_tls(&pki, cas(vec![ca_file])).await;
    let stranger_ca = ca("Somebody Else's CA");
    let cert = client("intruder", Some(&stranger_ca), 2020, 2090);
    let (status, body) = post_connector(&pki.client(Some(&cert)), &address, None).await;
    assert_refused(status, &body, "certificate");
}

#[tokio::test]
async fn expired_client_certificate_is_401_json() {
    let pki = Pki::new();
    let ca_file = pki.ca_file("client-ca.pem", &pki.client_ca);
    let (_app, address) = spawn_tls(&pki, cas(vec![ca_file])).await;
    let cert = client("old", Some(&pki.client_ca), 2020, 2021);
    let (status, body) = post_connector(&pki.client(Some(&cert)), &address, None).await;
    assert_refused(status, &body, "expired");
}

#[tokio::test]
async fn two_cas_during_rotation_both_work() {
    let pki = Pki::new();
    let new_ca = ca("Test Client CA 2");
    let old_file = pki.ca_file("client-ca-old.pem", &pki.client_ca);
    let new_file = pki.ca_file("client-ca-new.pem", &new_ca);
    let (_app, address) = spawn_tls(&pki, cas(vec![old_file, new_file])).await;
    for issuer in [&pki.client_ca, &new_ca] {
        let cert = client("b2c-connector", Some(issuer), 2020, 2090);
        let (status, body) = post_connector(&pki.client(Some(&cert)), &address, None).await;
        assert_accepted(status, &body);
    }
}

#[tokio::test]
async fn pinned_thumbprint_is_accepted() {
    let pki = Pki::new();
    let pinned = client("pinned", None, 2020, 2090);
    let (_app, address) = spawn_tls(&pki, pins(vec![pinned.sha1_with_colons()])).await;
    let (status, body) = post_connector(&pki.client(Some(&pinned)), &address, None).await;
    assert_accepted(status, &body);
    let other = client("not pinned", None, 2020, 2090);
    let (status, body) = post_connector(&pki.client(Some(&other)), &address, None).await;
    assert_refused(status, &body, "certificate");
}

#[tokio::test]
async fn two_pins_during_rotation_both_work() {
    let pki = Pki::new();
    let old = client("old", None, 2020, 2090);
    let new = client("new", None, 2020, 2090);
    let settings = pins(vec![old.sha1_with_colons().to_uppercase(), new.sha256()]);
    let (_app, address) = spawn_tls(&pki, settings).await;
    for cert in [&old, &new] {
        let (status, body) = post_connector(&pki.client(Some(cert)), &address, None).await;
        assert_accepted(status, &body);
    }
}

#[tokio::test]
async fn pinned_but_expired_is_401_json() {
    let pki = Pki::new();
    let pinned = client("pinned", None, 2020, 2021);
    let (_app, address) = spawn_tls(&pki, pins(vec![pinned.sha1_with_colons()])).await;
    let (status, body) = post_connector(&pki.client(Some(&pinned)), &address, None).await;
    assert_refused(status, &body, "expired");
}

#[tokio::test]
async fn arr_header_is_trusted_when_configured() {
    let pki = Pki::new();
    let ca_file = pki.ca_file("client-ca.pem", &pki.client_ca);
    let app = spawn_app_with(move |settings| {
        settings.auth.client_certificate = Some(ClientCertificateSettings {
            ca_files: vec![ca_file],
            thumbprints: Vec::new(),
            trust_arr_header: true,
        });
    })
    .await;
    assert!(app.address.starts_with("http://"));
    let good = client("b2c-connector", Some(&pki.client_ca), 2020, 2090);
    let (status, body) = post_connector(&app.client, &app.address, Some(&good.arr_header())).await;
    assert_accepted(status, &body);
    // PEM form, as some front ends forward it.
    let pem = good.cert.pem().replace('\n', "");
    let (status, body) = post_connector(&app.client, &app.address, Some(&pem)).await;
    assert_accepted(status, &body);

    let stranger_ca = ca("Somebody Else's CA");
    let bad = client("intruder", Some(&stranger_ca), 2020, 2090);
    let (status, body) = post_connector(&app.client, &app.address, Some(&bad.arr_header())).await;
    assert_refused(status, &body, "certificate");
    let (status, body) = post_connector(&app.client, &app.address, Some("garbage!")).await;
    assert_refused(status, &body, "certificate");
}

#[tokio::test]
async fn arr_header_is_ignored_when_not_trusted() {
    let pki = Pki::new();
    let ca_file = pki.ca_file("client-ca.pem", &pki.client_ca);
    // Without trust_arr_header the client certificate type needs TLS.
    let (_app, address) = spawn_tls(&pki, cas(vec![ca_file])).await;
    let good = client("b2c-connector", Some(&pki.client_ca), 2020, 2090);
    let (status, body) =
        post_connector(&pki.client(None), &address, Some(&good.arr_header())).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized", "{body}");
}
