//! Fetching OpenID discovery documents and key sets, with the limits of DESIGN section 3.
//!
//! - Only `https` URLs are fetched, except for loopback hosts (`127.0.0.0/8`, `::1`,
//!   `localhost`), where plain `http` is allowed for tests and the mock B2C. Loopback requests
//!   never go through a proxy.
//! - Redirects are never followed: a `3xx` answer is an error, like any other non-`2xx` status.
//! - Every fetch stops at the configured time limit (connection, headers and body together).
//! - The body is read chunk by chunk and abandoned as soon as it exceeds the size limit, whatever
//!   `Content-Length` announced; an announced length above the limit is refused before reading.
//! - Error messages name the URL and the failure, never the response body.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::redirect::Policy;
use reqwest::Url;
use serde::de::DeserializeOwned;

use crate::config::OidcFetchSettings;

/// Why a document could not be fetched. Messages never include the response body.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL does not parse.
    #[error("invalid URL")]
    InvalidUrl,
    /// The URL is not `https` (plain `http` is allowed only for loopback hosts).
    #[error("refusing to fetch {url}: only https is allowed (http only for loopback hosts)")]
    InsecureUrl {
        /// The refused URL.
        url: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The time limit passed before the whole document arrived.
    #[error("fetching {url} took longer than {timeout_ms} ms")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit, in milliseconds.
        timeout_ms: u64,
    },
    /// The server could not be reached or the exchange failed.
    #[error("fetching {url} failed: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// What failed (from the HTTP client, without the body).
        reason: String,
    },
    /// The server answered with a redirect, which is never followed.
    #[error(
        "fetching {url}: the server answered with a redirect ({status}), which is not followed"
    )]
    Redirect {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The server answered with another status than 2xx.
    #[error("fetching {url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The document is larger than the limit.
    #[error("fetching {url}: the document is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// The document is not the expected JSON. Only the position is reported, not the content.
    #[error(
        "fetching {url}: not the expected JSON document \
         ({kind} error at line {line}, column {column})"
    )]
    Parse {
        /// The URL.
        url: String,
        /// `syntax`, `data` (wrong shape) or `eof`.
        kind: &'static str,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
}

/// Fetches JSON documents over HTTP within the `[oidc]` limits. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// For remote hosts: uses the system proxy settings.
    client: reqwest::Client,
    /// For loopback hosts: never proxied.
    loopback_client: reqwest::Client,
    timeout: Duration,
    max_bytes: usize,
    cache_ttl: Duration,
    min_refetch_interval: Duration,
}

impl Fetcher {
    /// Builds the HTTP clients (no redirects, the configured time limit) and keeps the cache
    /// settings for the providers that use this fetcher.
    pub fn new(settings: &OidcFetchSettings) -> Result<Fetcher, FetchError> {
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let builder = || {
            reqwest::Client::builder()
                .redirect(Policy::none())
                .timeout(timeout)
                .connect_timeout(timeout)
                .user_agent(concat!("autolink/", env!("CARGO_PKG_VERSION")))
        };
        let client = builder()
            .build()
            .map_err(|e| FetchError::Client(e.to_string()))?;
        let loopback_client = builder()
            .no_proxy()
            .build()
            .map_err(|e| FetchError::Client(e.to_string()))?;
        Ok(Fetcher {
            client,
            loopback_client,
            timeout,
            max_bytes: settings.max_document_bytes,
            cache_ttl: Duration::from_secs(settings.cache_ttl_s),
            min_refetch_interval: Duration::from_secs(settings.min_refetch_interval_s),
        })
    }

    /// The time limit of one fetch.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The largest document accepted, in bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// How long discovery documents and key sets stay fresh (`[oidc] cache_ttl_s`).
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    /// Least time between two key-set refetches caused by unknown key ids
    /// (`[oidc] min_refetch_interval_s`).
    pub fn min_refetch_interval(&self) -> Duration {
        self.min_refetch_interval
    }

    /// Parses `url` and checks that it may be fetched: `https`, or `http` to a loopback host.
    /// Returns whether the host is a loopback host.
    pub fn check_url(url: &str) -> Result<(Url, bool), FetchError> {
        let parsed = Url::parse(url).map_err(|_| FetchError::InvalidUrl)?;
        let loopback = is_loopback(&parsed);
        match parsed.scheme() {
            "https" if parsed.host().is_some() => Ok((parsed, loopback)),
            "http" if loopback => Ok((parsed, loopback)),
            _ => Err(FetchError::InsecureUrl {
                url: redact(&parsed),
            }),
        }
    }

    /// Fetches `url` and deserializes the JSON body.
    pub async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let (parsed, loopback) = Self::check_url(url)?;
        let shown = redact(&parsed);
        let body = match tokio::time::timeout(
            self.timeout,
            self.get_bytes(parsed, loopback, &shown),
        )
        .await
        {
            Ok(body) => body?,
            Err(_) => {
                return Err(FetchError::Timeout {
                    url: shown,
                    timeout_ms: duration_ms(self.timeout),
                })
            }
        };
        serde_json::from_slice(&body).map_err(|e| FetchError::Parse {
            url: shown,
            kind: match e.classify() {
                serde_json::error::Category::Io => "io",
                serde_json::error::Category::Syntax => "syntax",
                serde_json::error::Category::Data => "data",
                serde_json::error::Category::Eof => "eof",
            },
            line: e.line(),
            column: e.column(),
        })
    }

    async fn get_bytes(
        &self,
        url: Url,
        loopback: bool,
        shown: &str,
    ) -> Result<Vec<u8>, FetchError> {
        let client = if loopback {
            &self.loopback_client
        } else {
            &self.client
        };
        let mut response = client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.request_error(e, shown))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect {
                url: shown.to_string(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: shown.to_string(),
                status: status.as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: shown.to_string(),
            limit: self.max_bytes,
        };
        let announced = response.content_length();
        if announced.is_some_and(|len| len > self.max_bytes as u64) {
            return Err(too_large());
        }
        // The announced length only sizes the first allocation, within the limit.
        let mut body = Vec::with_capacity(
            announced
                .and_then(|len| usize::try_from(len).ok())
                .unwrap_or(0)
                .min(self.max_bytes),
        );
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.request_error(e, shown))?
        {
            if body.len().saturating_add(chunk.len()) > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn request_error(&self, error: reqwest::Error, shown: &str) -> FetchError {
        if error.is_timeout() {
            return FetchError::Timeout {
                url: shown.to_string(),
                timeout_ms: duration_ms(self.timeout),
            };
        }
        // reqwest's messages name the URL (we already do) and the cause, never the body.
        let error = error.without_url();
        let mut reason = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        FetchError::Request {
            url: shown.to_string(),
            reason,
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether the URL's host is `localhost` or a loopback address.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

/// The URL without user information, for messages.
fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_is_allowed() {
        assert!(Fetcher::check_url("https://login.microsoftonline.com/x").is_ok());
        assert!(Fetcher::check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(Fetcher::check_url("http://127.1.2.3/x").is_ok());
        assert!(Fetcher::check_url("http://[::1]:99/x").is_ok());
        assert!(Fetcher::check_url("http://localhost/x").is_ok());
        assert!(Fetcher::check_url("http://LOCALHOST./x").is_ok());
        assert!(matches!(
            Fetcher::check_url("http://login.microsoftonline.com/x"),
            Err(FetchError::InsecureUrl { .. })
        ));
        assert!(matches!(
            Fetcher::check_url("http://10.0.0.1/x"),
            Err(FetchError::InsecureUrl { .. })
        ));
        assert!(matches!(
            Fetcher::check_url("http://localhost.example.com/x"),
            Err(FetchError::InsecureUrl { .. })
        ));
        assert!(matches!(
            Fetcher::check_url("file:///etc/passwd"),
            Err(FetchError::InsecureUrl { .. })
        ));
        assert!(matches!(
            Fetcher::check_url("not a url"),
            Err(FetchError::InvalidUrl)
        ));
    }
}
