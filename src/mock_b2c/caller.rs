//! How B2C calls the service: one HTTP POST with a time limit, sent again after a time-out or a
//! failed connection (user flows: once; custom policies: twice), each attempt recorded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::types::CallRecord;

/// Credentials for one call.
#[derive(Debug, Clone)]
pub enum Credentials {
    None,
    Basic {
        username: String,
        password: String,
    },
    ApiKey {
        header: String,
        key: String,
    },
    Bearer(String),
    ClientCertificate {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

/// What is sent: JSON (`SendClaimsIn=Body`, and the API connector) or a form.
#[derive(Debug, Clone)]
pub enum Payload {
    Json(Value),
    Form(Vec<(String, String)>),
}

impl Payload {
    fn as_record(&self) -> Value {
        match self {
            Payload::Json(v) => v.clone(),
            Payload::Form(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ),
        }
    }
}

/// An answer that arrived.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// The body as JSON, or `None` when it is not JSON.
    pub json: Option<Value>,
    /// The `Content-Type` header, when there is one.
    pub content_type: Option<String>,
    /// The body's length in bytes.
    pub body_len: usize,
}

/// No answer after every attempt.
#[derive(Debug, Clone)]
pub struct NoAnswer {
    pub timed_out: bool,
    pub message: String,
}

/// The HTTP side of B2C.
pub struct Caller {
    timeout: Duration,
    retries: u32,
    ca: Option<reqwest::Certificate>,
    plain: reqwest::Client,
    with_certificate: Mutex<HashMap<(PathBuf, PathBuf), reqwest::Client>>,
}

impl Caller {
    pub fn new(
        timeout: Duration,
        retries: u32,
        ca_file: Option<&std::path::Path>,
    ) -> anyhow::Result<Caller> {
        let ca = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("reading the CA file {}", path.display()))?;
                Some(reqwest::Certificate::from_pem(&pem).context("the CA file is not PEM")?)
            }
            None => None,
        };
        let plain = Self::builder(ca.as_ref()).build()?;
        Ok(Caller {
            timeout,
            retries,
            ca,
            plain,
            with_certificate: Mutex::new(HashMap::new()),
        })
    }

    fn builder(ca: Option<&reqwest::Certificate>) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .use_rustls_tls();
        if let Some(ca) = ca {
            builder = builder.add_root_certificate(ca.clone());
        }
        builder
    }

    fn client(&self, credentials: &Credentials) -> anyhow::Result<reqwest::Client> {
        let Credentials::ClientCertificate {
            cert_file,
            key_file,
        } = credentials
        else {
            return Ok(self.plain.clone());
        };
        let key = (cert_file.clone(), key_file.clone());
        let mut cache = self
            .with_certificate
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(client) = cache.get(&key) {
            return Ok(client.clone());
        }
        let mut pem = std::fs::read(cert_file)
            .with_context(|| format!("reading the client certificate {}", cert_file.display()))?;
        pem.push(b'\n');
        pem.extend(
            std::fs::read(key_file)
                .with_context(|| format!("reading the client key {}", key_file.display()))?,
        );
        let identity =
            reqwest::Identity::from_pem(&pem).context("the client certificate or key is bad")?;
        let client = Self::builder(self.ca.as_ref()).identity(identity).build()?;
        cache.insert(key, client.clone());
        Ok(client)
    }

    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Posts `payload` to `url`, retrying after a time-out or a connection failure. Every
    /// attempt is appended to `records`.
    pub async fn post(
        &self,
        name: &str,
        step: Option<&str>,
        url: &str,
        payload: &Payload,
        credentials: &Credentials,
        records: &mut Vec<CallRecord>,
    ) -> Result<Answer, NoAnswer> {
        let client = self.client(credentials).map_err(|e| NoAnswer {
            timed_out: false,
            message: format!("{e:#}"),
        })?;
        let mut last = NoAnswer {
            timed_out: false,
            message: "not called".into(),
        };
        for attempt in 1..=self.retries + 1 {
            let mut record = CallRecord {
                name: name.to_string(),
                url: url.to_string(),
                step: step.map(str::to_string),
                attempt,
                request: payload.as_record(),
                status: None,
                response: None,
                error: None,
            };
            let mut request = client.post(url).timeout(self.timeout);
            request = match payload {
                Payload::Json(body) => request.json(body),
                Payload::Form(fields) => request.form(fields),
            };
            request = match credentials {
                Credentials::None | Credentials::ClientCertificate { .. } => request,
                Credentials::Basic { username, password } => {
                    request.basic_auth(username, Some(password))
                }
                Credentials::ApiKey { header, key } => request.header(header.as_str(), key),
                Credentials::Bearer(token) => request.bearer_auth(token),
            };
            let sent = async {
                let response = request.send().await?;
                let status = response.status().as_u16();
                let content_type = response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let bytes = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, content_type, bytes))
            }
            .await;
            match sent {
                Ok((status, content_type, bytes)) => {
                    let json: Option<Value> = serde_json::from_slice(&bytes).ok();
                    record.status = Some(status);
                    record.response = Some(json.clone().unwrap_or_else(|| {
                        Value::String(String::from_utf8_lossy(&bytes).into_owned())
                    }));
                    records.push(record);
                    return Ok(Answer {
                        status,
                        json,
                        content_type,
                        body_len: bytes.len(),
                    });
                }
                Err(e) => {
                    let timed_out = e.is_timeout();
                    let message = if timed_out {
                        format!("no answer within {} ms", self.timeout.as_millis())
                    } else {
                        format!("the call failed: {}", error_chain(&e))
                    };
                    record.error = Some(message.clone());
                    records.push(record);
                    last = NoAnswer { timed_out, message };
                }
            }
        }
        Err(last)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
