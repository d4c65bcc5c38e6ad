//! The admin API's one error type, mapped once to HTTP: `{"error", "field", "message"}` with 400
//! for a bad field, 404 for an unknown id, 409 for a conflict, 415 for a body that is not JSON,
//! 413 for a body over the limit, 408 for a body that did not arrive in time, and 503 when the
//! database failed. Nothing a caller sends is
//! answered with a 500; the cause of a 503 is logged, never shown.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::de::DeserializeOwned;

use crate::admin::AdminError;
use crate::api::body::{self, JsonError, ReadError, UnreadBody};
pub use crate::api::errors::ErrorBody;
use crate::api::AppState;
use crate::config::LimitSettings;

/// Largest admin request body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An admin request that failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What the operation said.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// A body that does not say it is JSON.
    #[error("the body must be JSON (content-type: application/json)")]
    UnsupportedMediaType,
    /// A body over [`MAX_BODY_BYTES`].
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// The body did not arrive within `[limits] body_timeout_ms`.
    #[error("the body did not arrive within {} ms", .0.as_millis())]
    RequestTimeout(Duration, UnreadBody),
    /// The database did not answer in time, or a worker failed.
    #[error("the service is unavailable; nothing was changed; try again")]
    Unavailable,
}

impl ApiError {
    fn body(&self) -> (StatusCode, ErrorBody) {
        let body = |error: &str, field: Option<&str>, message: String| ErrorBody {
            error: error.to_string(),
            field: field.map(str::to_string),
            message,
        };
        match self {
            ApiError::Admin(AdminError::Invalid { field, message }) => (
                StatusCode::BAD_REQUEST,
                body("invalid_field", Some(field), format!("{field}: {message}")),
            ),
            ApiError::Admin(AdminError::NotFound { field, message }) => (
                StatusCode::NOT_FOUND,
                body("not_found", Some(field), message.clone()),
            ),
            ApiError::Admin(AdminError::Conflict {
                code,
                field,
                message,
            }) => (StatusCode::CONFLICT, body(code, *field, message.clone())),
            // A race lost to a concurrent change of the same record.
            ApiError::Admin(AdminError::Storage(e)) if e.is_unique_violation() => (
                StatusCode::CONFLICT,
                body(
                    "conflict",
                    None,
                    "a concurrent change conflicts with this one; read and try again".into(),
                ),
            ),
            ApiError::Admin(AdminError::Storage(_)) | ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                body(
                    "unavailable",
                    None,
                    "the database is unavailable; nothing was changed; try again".into(),
                ),
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                body(
                    "unsupported_media_type",
                    Some("content-type"),
                    self.to_string(),
                ),
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                body("payload_too_large", Some("body"), self.to_string()),
            ),
            ApiError::RequestTimeout(..) => (
                StatusCode::REQUEST_TIMEOUT,
                body("request_timeout", Some("body"), self.to_string()),
            ),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.body().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, body) = self.body();
        if let ApiError::Admin(AdminError::Storage(cause)) = self {
            log::warn!("admin request failed in storage: {cause}");
        }
        let response = HttpResponse::build(status).json(body);
        match self {
            // What is left of the body is never read: the connection is closed after the answer.
            ApiError::RequestTimeout(_, unread) => unread.hold(response),
            _ => response,
        }
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`], within `[limits] body_timeout_ms`, with the
/// one body parser of the service ([`crate::api::body`]). An empty body reads as `{}`, so
/// operations whose fields are all optional need none. A field of the wrong type, a missing or an unknown field, or a key given
/// twice in one object (at any depth) is a 400 naming the field.
pub async fn read_body<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: actix_web::web::Payload,
) -> Result<T, ApiError> {
    let timeout = req
        .app_data::<actix_web::web::Data<AppState>>()
        .map_or_else(
            // Without the server's state (never in the server), the setting's default.
            || Duration::from_millis(LimitSettings::default().body_timeout_ms),
            |state| state.body_timeout,
        );
    let read = body::read_bytes(&mut payload, MAX_BODY_BYTES, timeout).await;
    let body = read.map_err(|e| match e {
        ReadError::TooLarge => ApiError::PayloadTooLarge,
        ReadError::TimedOut(limit) => ApiError::RequestTimeout(limit, UnreadBody::new(payload)),
        ReadError::Broken(_) => AdminError::invalid("body", "could not be read").into(),
    })?;
    let bytes: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        if !body::is_json(req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        &body
    };
    parse_json(bytes)
}

/// Parses JSON with the one body parser, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    body::parse_strict(bytes).map_err(|e| {
        ApiError::from(match e {
            JsonError::Syntax { line, column } => AdminError::invalid(
                "body",
                format!("is not valid JSON (line {line} column {column})"),
            ),
            JsonError::TrailingText => AdminError::invalid("body", "has text after the JSON value"),
            JsonError::DuplicateKey { path, .. } => {
                AdminError::invalid(&path, "is given more than once in the same object")
            }
            JsonError::Shape { field, message, .. } => AdminError::invalid(&field, message),
        })
    })
}

/// The query string of a request, taken apart. Each parameter may appear once; a parameter the
/// endpoint does not know is a 400 naming it.
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Parses a query string.
    pub fn parse(req: &HttpRequest) -> Result<QueryParams, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(req.query_string().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (index, (name, _)) in pairs.iter().enumerate() {
            if pairs[..index].iter().any(|(other, _)| other == name) {
                return Err(AdminError::invalid(name, "is given more than once").into());
            }
        }
        Ok(QueryParams { pairs })
    }

    /// Takes a parameter.
    pub fn take(&mut self, name: &str) -> Option<String> {
        let index = self.pairs.iter().position(|(k, _)| k == name)?;
        Some(self.pairs.remove(index).1)
    }

    /// Refuses the parameters nobody took.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.pairs.first() {
            Some((name, _)) => {
                Err(AdminError::invalid(name, "is not a parameter of this endpoint").into())
            }
            None => Ok(()),
        }
    }
}

/// A path parameter (always present when the route matched).
pub fn path_param(req: &HttpRequest, name: &'static str) -> Result<String, ApiError> {
    req.match_info()
        .get(name)
        .map(str::to_string)
        .ok_or_else(|| AdminError::invalid(name, "is missing").into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::customers::NewCustomerRequest;

    fn field_of(json: &str) -> String {
        match parse_json::<NewCustomerRequest>(json.as_bytes()) {
            Err(ApiError::Admin(AdminError::Invalid { field, .. })) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field_of(r#"{"isB2b": "yes"}"#), "isB2b");
        assert_eq!(field_of(r#"{"colour": "blue"}"#), "colour");
        assert_eq!(field_of(r#"{"legalEntity": 3}"#), "legalEntity");
        assert_eq!(field_of(r#"{"legalEntity": "#), "body");
        assert_eq!(field_of(r#"[1, 2]"#), "body");
        assert_eq!(field_of(r#"{} {}"#), "body");
        assert_eq!(field_of(r#" [null, null, "USRT"]"#), "body");
    }

    #[test]
    fn a_key_given_twice_names_the_key() {
        assert_eq!(
            field_of(r#"{"legalEntity": "USRT", "legalEntity": "DEMF"}"#),
            "legalEntity"
        );
        assert_eq!(field_of(r#"{"colour": 1, "colour": 2}"#), "colour");
    }
}
