//! Reading B2C's JSON bodies: content type, size limit, shape. Shared by every B2C wire format.

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

/// Why a request could not be read (for the log line; the caller sees `InvalidRequest`).
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// Not `application/json` (or `+json`).
    #[error("the content type is not application/json")]
    ContentType,
    /// Over the configured limit.
    #[error("the body is larger than the limit")]
    TooLarge,
    /// The connection failed while reading.
    #[error("the body could not be read: {0}")]
    Body(String),
    /// Not JSON, or not the expected shape.
    #[error("the body is not a JSON object of the expected shape: {0}")]
    Json(String),
}

/// Whether the request says its body is JSON (`application/json`, `*/*+json`, any parameters).
pub fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
}

/// Reads the body up to `limit` bytes and parses it. The body is never logged: serde's messages
/// may quote values (an email), so only the error's position is kept.
pub async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<T, Unreadable> {
    if !is_json(req) {
        return Err(Unreadable::ContentType);
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Unreadable::Body(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(Unreadable::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| {
        Unreadable::Json(format!(
            "{:?} at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}
