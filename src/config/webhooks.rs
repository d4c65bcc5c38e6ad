//! `[[webhooks]]` and `[webhook_delivery]`: the store's endpoints that are told what changed
//! (src/webhooks/), signed as the Standard Webhooks specification says.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::webhooks::{EventType, Secret};

/// `[[webhooks]]`: one endpoint of the store.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where events are POSTed: `https://...`, or `http://` to a loopback address.
    pub url: String,
    /// `whsec_` and the base64 of 24 to 64 random bytes (the Standard Webhooks format).
    pub secret: String,
    /// The event types sent to this endpoint; all of them when absent.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Time an attempt has, connection and answer included, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Seconds to wait before each attempt after the first; when the last one fails too, the
    /// delivery is `failed`.
    #[serde(default = "default_retry_schedule")]
    pub retry_schedule_s: Vec<u64>,
    /// Put the full email in the events' `data` (off: no email leaves autolink).
    #[serde(default)]
    pub include_email: bool,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .field("timeout_ms", &self.timeout_ms)
            .field("retry_schedule_s", &self.retry_schedule_s)
            .field("include_email", &self.include_email)
            .finish()
    }
}

/// Default time of an attempt, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// Longest time of an attempt accepted, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 60_000;
/// Most retries a schedule may have.
pub const MAX_RETRIES: usize = 30;
/// Longest wait of a schedule's entry, in seconds (a week).
pub const MAX_RETRY_WAIT_S: u64 = 7 * 24 * 3600;

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn default_retry_schedule() -> Vec<u64> {
    vec![5, 300, 1800, 7200, 18000, 36000, 36000]
}

impl WebhookSettings {
    /// The event types this endpoint receives.
    pub fn event_types(&self) -> Vec<EventType> {
        match &self.events {
            None => EventType::ALL.to_vec(),
            Some(names) => names.iter().filter_map(|n| EventType::parse(n)).collect(),
        }
    }

    fn check(&self, index: usize, seen: &mut Vec<String>) -> Result<(), ConfigError> {
        let key = |name: &str| format!("webhooks[{index}].{name}");
        let invalid = |name: &str, why: &str| ConfigError::Invalid(format!("{}: {why}", key(name)));
        check_url(&self.url).map_err(|why| invalid("url", &why))?;
        if seen.contains(&self.url) {
            return Err(invalid("url", "is configured twice"));
        }
        seen.push(self.url.clone());
        Secret::parse(&self.secret).map_err(|why| invalid("secret", why))?;
        if let Some(names) = &self.events {
            if names.is_empty() {
                return Err(invalid(
                    "events",
                    "is empty (leave it out to receive every event)",
                ));
            }
            for name in names {
                if EventType::parse(name).is_none() {
                    let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                    return Err(invalid(
                        "events",
                        &format!("unknown event {name:?} (known: {})", known.join(", ")),
                    ));
                }
            }
        }
        if !(100..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(invalid(
                "timeout_ms",
                &format!("must be between 100 and {MAX_TIMEOUT_MS}"),
            ));
        }
        if self.retry_schedule_s.len() > MAX_RETRIES {
            return Err(invalid(
                "retry_schedule_s",
                &format!("has more than {MAX_RETRIES} entries"),
            ));
        }
        if self.retry_schedule_s.iter().any(|s| *s > MAX_RETRY_WAIT_S) {
            return Err(invalid(
                "retry_schedule_s",
                &format!("has a wait longer than {MAX_RETRY_WAIT_S} s"),
            ));
        }
        Ok(())
    }
}

/// `https://...`, or `http://` to a loopback address (127.0.0.0/8, `::1`, `localhost`); no
/// user name or password in the URL.
fn check_url(raw: &str) -> Result<(), String> {
    use reqwest::Url;
    let url = Url::parse(raw).map_err(|e| format!("is not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold a user name or password".into());
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => return Err("has no host".into()),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("must be https (http only to a loopback address)".into()),
        other => Err(format!("must be https, not {other}")),
    }
}

/// `[webhook_delivery]`: how this instance delivers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookDeliverySettings {
    /// Delivered rows are deleted this many seconds after their delivery (the events stay, for
    /// the feed).
    pub keep_delivered_s: u64,
    /// How often the outbox is read for deliveries that are due (events written by this
    /// instance are sent at once; this is for retries and for other instances' events), in
    /// milliseconds.
    pub poll_ms: u64,
    /// Most attempts under way at once in this instance.
    pub max_in_flight: usize,
}

impl Default for WebhookDeliverySettings {
    fn default() -> Self {
        Self {
            keep_delivered_s: 7 * 24 * 3600,
            poll_ms: 1000,
            max_in_flight: 16,
        }
    }
}

/// Checks every `[[webhooks]]` and `[webhook_delivery]`.
pub fn check(
    webhooks: &[WebhookSettings],
    delivery: &WebhookDeliverySettings,
) -> Result<(), ConfigError> {
    let mut seen = Vec::new();
    for (index, webhook) in webhooks.iter().enumerate() {
        webhook.check(index, &mut seen)?;
    }
    if !(50..=60_000).contains(&delivery.poll_ms) {
        return Err(ConfigError::Invalid(
            "webhook_delivery.poll_ms must be between 50 and 60000".into(),
        ));
    }
    if !(1..=256).contains(&delivery.max_in_flight) {
        return Err(ConfigError::Invalid(
            "webhook_delivery.max_in_flight must be between 1 and 256".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: &str, secret: &str) -> WebhookSettings {
        WebhookSettings {
            url: url.into(),
            secret: secret.into(),
            events: None,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            retry_schedule_s: default_retry_schedule(),
            include_email: false,
        }
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn error(webhooks: &[WebhookSettings]) -> String {
        check(webhooks, &WebhookDeliverySettings::default())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn https_and_loopback_http_are_accepted() {
        for url in [
            "https://store.example/hooks/autolink",
            "http://127.0.0.1:9000/hooks",
            "http://[::1]:9000/",
            "http://localhost:8000/x",
        ] {
            check(&[webhook(url, SECRET)], &WebhookDeliverySettings::default())
                .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn bad_urls_name_the_key() {
        for url in [
            "http://store.example/hooks",
            "ftp://127.0.0.1/x",
            "not a url",
            "https://user:pw@store.example/",
            "http://10.0.0.1/x",
        ] {
            let message = error(&[webhook(url, SECRET)]);
            assert!(message.contains("webhooks[0].url"), "{url}: {message}");
        }
        let twice = error(&[
            webhook("https://a.example/", SECRET),
            webhook("https://a.example/", SECRET),
        ]);
        assert!(twice.contains("webhooks[1].url"), "{twice}");
    }

    #[test]
    fn bad_secrets_name_the_key_and_never_show_the_secret() {
        for secret in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_",
            "whsec_c2hvcnQ=",
            "whsec_!!!notbase64!!!",
        ] {
            let message = error(&[webhook("https://a.example/", secret)]);
            assert!(message.contains("webhooks[0].secret"), "{message}");
            let value = secret.trim_start_matches("whsec_");
            assert!(value.is_empty() || !message.contains(value), "{message}");
        }
        let debug = format!("{:?}", webhook("https://a.example/", SECRET));
        assert!(!debug.contains(SECRET), "{debug}");
    }

    #[test]
    fn unknown_events_and_bad_limits_name_the_key() {
        let mut w = webhook("https://a.example/", SECRET);
        w.events = Some(vec!["identity.linked".into(), "customer.deleted".into()]);
        let message = error(&[w]);
        assert!(
            message.contains("webhooks[0].events") && message.contains("customer.deleted"),
            "{message}"
        );
        let mut w = webhook("https://a.example/", SECRET);
        w.timeout_ms = 0;
        assert!(error(&[w]).contains("webhooks[0].timeout_ms"));
        let mut w = webhook("https://a.example/", SECRET);
        w.retry_schedule_s = vec![MAX_RETRY_WAIT_S + 1];
        assert!(error(&[w]).contains("webhooks[0].retry_schedule_s"));
    }
}
