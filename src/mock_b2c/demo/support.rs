//! Small helpers: claims as text, form bodies, ids, bounded maps and bodies, error texts.

use std::collections::HashMap;
use std::time::Instant;

use openidconnect::core::CoreErrorResponseType;
use openidconnect::StandardErrorResponse;
use rand::RngCore;
use serde_json::Value;

use super::{HttpError, MAX_BODY_BYTES, MAX_ENTRIES};

/// A claim as text: strings as they are, anything else as JSON.
pub(super) fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `application/x-www-form-urlencoded` pairs; the first of a repeated name wins.
pub(super) fn parse_pairs(input: &[u8]) -> HashMap<String, String> {
    let mut pairs = HashMap::new();
    for (name, value) in form_urlencoded::parse(input) {
        pairs
            .entry(name.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    pairs
}

/// 32 random bytes, base64url.
pub(super) fn random_id() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Drops the oldest entries so that one more fits under [`MAX_ENTRIES`].
pub(super) fn trim_oldest<T>(map: &mut HashMap<String, T>, created: impl Fn(&T) -> Instant) {
    while map.len() >= MAX_ENTRIES {
        let oldest = map
            .iter()
            .min_by_key(|(_, v)| created(v))
            .map(|(k, _)| k.clone());
        match oldest {
            Some(key) => {
                map.remove(&key);
            }
            None => break,
        }
    }
}

/// Reads an answer's body up to [`MAX_BODY_BYTES`].
pub(super) async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(format!("the answer is larger than {MAX_BODY_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| without_url(&e))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("the answer is larger than {MAX_BODY_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error's message and causes, without its URL (the caller names the URL).
pub(super) fn without_url(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// An error and its causes on one line.
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A token request's failure, with the provider's error code and description when it sent one.
pub(super) fn token_error(
    error: &openidconnect::RequestTokenError<
        HttpError,
        StandardErrorResponse<CoreErrorResponseType>,
    >,
) -> String {
    match error {
        openidconnect::RequestTokenError::ServerResponse(answer) => {
            let mut text = answer.error().to_string();
            if let Some(description) = answer.error_description() {
                text.push_str(": ");
                text.push_str(description);
            }
            text
        }
        openidconnect::RequestTokenError::Parse(e, _) => {
            format!("the token response is not valid: {e}")
        }
        other => error_chain(other),
    }
}
