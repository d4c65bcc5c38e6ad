//! Reading JSON request bodies, for B2C's endpoints and the admin API alike: one deadline for the
//! whole body, a size limit, and one strict parser.
//!
//! The deadline (`[limits] body_timeout_ms`) runs from the moment the handler starts reading,
//! that is once the request is authenticated; a body that has not arrived whole by then, whether
//! it never comes or trickles, gets 408 and the connection is closed. Nothing has been parsed, so
//! nothing is written.
//!
//! The parser refuses a key given twice in one object, at any depth of the document, before the
//! typed parse: serde would otherwise keep the last of two values for a map (`emailVerified`
//! `false` then `true`), refuse a duplicate of a known field of a struct and ignore a duplicate of
//! an unknown one, so the same document would mean different things at different endpoints.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::{header, ConnectionType};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::errors::ErrorBody;

/// Why a body could not be read (before any parsing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Over the limit.
    #[error("the body is larger than the limit")]
    TooLarge,
    /// The body did not arrive, whole, before the deadline.
    #[error("the body did not arrive within {} ms", .0.as_millis())]
    TimedOut(Duration),
    /// The connection failed while reading.
    #[error("the body could not be read: {0}")]
    Broken(String),
}

/// Why a body is not the JSON expected. The display form names no value the caller sent (serde's
/// messages may quote one, an email for instance), only where the fault is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON.
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// Text after the JSON value.
    TrailingText,
    /// A key appears twice in one object.
    DuplicateKey {
        /// Where: `email`, `identities[0].signInType`.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// JSON, but not of the expected shape.
    Shape {
        /// The field at fault (a JSON path), or `body` for the document as a whole.
        field: String,
        /// serde's message without its position; it may quote a value: never log it at info
        /// level, never send it to B2C.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::Syntax { line, column } => {
                write!(f, "not valid JSON (line {line} column {column})")
            }
            JsonError::TrailingText => write!(f, "text after the JSON value"),
            JsonError::DuplicateKey { line, column, .. } => write!(
                f,
                "a key is given more than once in one object (line {line} column {column})"
            ),
            JsonError::Shape { line, column, .. } => write!(
                f,
                "not a JSON object of the expected shape (line {line} column {column})"
            ),
        }
    }
}

/// Reads the whole body, at most `limit` bytes, before `timeout` has passed since the call.
pub async fn read_bytes(
    payload: &mut web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<web::BytesMut, ReadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = web::BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
            Err(_) => return Err(ReadError::TimedOut(timeout)),
            Ok(None) => return Ok(body),
            Ok(Some(chunk)) => chunk.map_err(|e| ReadError::Broken(e.to_string()))?,
        };
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
}

/// The unread rest of a body whose time ran out, to be held by the 408 answer
/// ([`UnreadBody::hold`]). actix-http closes the connection after an answer when the request's
/// body is still held, unread, as the answer's last byte is written; once the body is dropped it
/// would instead read the rest of a chunked body to its end first, which a client that stopped
/// sending never reaches, and the connection would stay open.
pub struct UnreadBody(RefCell<Option<web::Payload>>);

impl UnreadBody {
    /// Keeps `payload` for the answer.
    pub fn new(payload: web::Payload) -> UnreadBody {
        UnreadBody(RefCell::new(Some(payload)))
    }

    /// `response`, marked as the last answer on its connection, whose body holds the unread
    /// request body until it has been written.
    pub fn hold(&self, response: HttpResponse) -> HttpResponse {
        let unread = self.0.borrow_mut().take();
        response.map_body(|head, body| {
            head.set_connection_type(ConnectionType::Close);
            BoxBody::new(Holding {
                body,
                _unread: unread,
            })
        })
    }
}

impl fmt::Debug for UnreadBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnreadBody")
    }
}

/// An answer's body that holds the request's unread body until the answer is written.
struct Holding {
    body: BoxBody,
    _unread: Option<web::Payload>,
}

impl MessageBody for Holding {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}

/// The answer to a B2C request whose body did not arrive in time: 408 `{"error", "message"}` (the
/// shape of the B2C endpoints' 401), and the connection is closed, so what is left of the body
/// is never read. B2C treats any status but its own answers as a failed call and retries it.
pub fn timed_out(timeout: Duration, unread: &UnreadBody) -> HttpResponse {
    unread.hold(HttpResponse::RequestTimeout().json(ErrorBody::new(
        "request_timeout",
        ReadError::TimedOut(timeout).to_string(),
    )))
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

/// The one JSON parser of request bodies: refuses a key given twice in one object at any depth
/// (a first pass over the document, as deep as serde_json's recursion limit allows), then parses
/// into `T`, naming the field at fault.
pub fn parse_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    // Every body autolink reads is a JSON object; serde would also read a struct from an array
    // of its fields in order.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(JsonError::Shape {
            field: "body".into(),
            message: "must be a JSON object".into(),
            line: 1,
            column: 1,
        });
    }
    check_unique_keys(bytes)?;
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (line, column) = (inner.line(), inner.column());
        if inner.is_syntax() || inner.is_eof() {
            return JsonError::Syntax { line, column };
        }
        let message = strip_position(&inner.to_string());
        // At the top level (no path, or inside an array) the field is the one serde quotes
        // (`missing field `email``, `unknown field `colour``), else the body as a whole.
        let top_level = path == "." || path.is_empty() || path.starts_with('[');
        let names_a_field =
            message.starts_with("missing field") || message.starts_with("unknown field");
        let field = match quoted_field(&message) {
            Some(name) if top_level && names_a_field => name.to_string(),
            _ if top_level => "body".to_string(),
            _ => path,
        };
        JsonError::Shape {
            field,
            message,
            line,
            column,
        }
    })?;
    deserializer.end().map_err(|_| JsonError::TrailingText)?;
    Ok(value)
}

/// The first pass of [`parse_strict`]: the document is one JSON value, and no object in it has a
/// key twice. Keys compare after unescaping (`"a"` and `"\u0061"` are the same key, as serde
/// sees them).
fn check_unique_keys(bytes: &[u8]) -> Result<(), JsonError> {
    let mut state = Walk::default();
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    if let Err(e) = (Check { state: &mut state }).deserialize(&mut deserializer) {
        let (line, column) = (e.line(), e.column());
        if state.duplicate {
            return Err(JsonError::DuplicateKey {
                path: state.path(),
                line,
                column,
            });
        }
        return Err(JsonError::Syntax { line, column });
    }
    deserializer.end().map_err(|_| JsonError::TrailingText)
}

/// Where the walk is, and whether it stopped at a duplicate key.
#[derive(Default)]
struct Walk<'de> {
    path: Vec<Segment<'de>>,
    duplicate: bool,
}

enum Segment<'de> {
    Key(Cow<'de, str>),
    Index(usize),
}

impl Walk<'_> {
    /// The path as serde_path_to_error writes it: `identities[0].signInType`.
    fn path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Index(index) => out.push_str(&format!("[{index}]")),
            }
        }
        out
    }
}

/// Walks one value, checking every object in it.
struct Check<'a, 'de> {
    state: &'a mut Walk<'de>,
}

impl<'de> DeserializeSeed<'de> for Check<'_, 'de> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            self.state.path.push(Segment::Index(index));
            let more = seq.next_element_seed(Check {
                state: &mut *self.state,
            })?;
            self.state.path.pop();
            if more.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(Key)? {
            if seen.contains(&key) {
                self.state.path.push(Segment::Key(key));
                self.state.duplicate = true;
                return Err(de::Error::custom("a key is given more than once"));
            }
            seen.insert(key.clone());
            self.state.path.push(Segment::Key(key));
            map.next_value_seed(Check {
                state: &mut *self.state,
            })?;
            self.state.path.pop();
        }
        Ok(())
    }
}

/// An object's key, borrowed from the document when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_string()))
    }
}

/// The field serde names in backticks (`missing field `email``, `unknown field `x``).
fn quoted_field(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// serde_json ends its messages with the position; the field is named instead.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// Why a B2C request could not be read (for the log line and the developer message; the caller
/// sees `InvalidRequest`, or [`timed_out`]).
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// Not `application/json` (or `+json`).
    #[error("the content type is not application/json")]
    ContentType,
    /// Over the limit, or cut off.
    #[error(transparent)]
    Read(ReadError),
    /// The body did not arrive in time: answer [`timed_out`].
    #[error("the body did not arrive within {} ms", .0.as_millis())]
    TimedOut(Duration, UnreadBody),
    /// Not JSON, a key twice, or not the expected shape.
    #[error("the body was refused: {0}")]
    Json(JsonError),
}

/// Reads a B2C body: JSON content type, at most `limit` bytes, within `timeout`, parsed by
/// [`parse_strict`]. The body is never logged.
pub async fn read_json<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<T, Unreadable> {
    if !is_json(req) {
        return Err(Unreadable::ContentType);
    }
    let body = match read_bytes(&mut payload, limit, timeout).await {
        Ok(body) => body,
        Err(ReadError::TimedOut(limit)) => {
            return Err(Unreadable::TimedOut(limit, UnreadBody::new(payload)))
        }
        Err(e) => return Err(Unreadable::Read(e)),
    };
    parse_strict(&body).map_err(Unreadable::Json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{Map, Value};

    fn duplicate_path(json: &str) -> Option<String> {
        match parse_strict::<Value>(json.as_bytes()) {
            Err(JsonError::DuplicateKey { path, .. }) => Some(path),
            _ => None,
        }
    }

    #[test]
    fn a_key_given_twice_at_any_depth_is_refused_with_its_path() {
        assert_eq!(
            duplicate_path(r#"{"emailVerified": false, "emailVerified": true}"#).as_deref(),
            Some("emailVerified")
        );
        assert_eq!(
            duplicate_path(
                r#"{"identities": [{"signInType": "federated"}, {"issuer": "a", "x": 1, "issuer": "b"}]}"#
            )
            .as_deref(),
            Some("identities[1].issuer")
        );
        assert_eq!(
            duplicate_path(r#"{"x": [[{"a": {"b": 1, "b": 1}}]]}"#).as_deref(),
            Some("x[0][0].a.b")
        );
        // An escaped spelling is the same key.
        assert_eq!(
            duplicate_path(r#"{"email": "a@b.c", "\u0065mail": "x@y.z"}"#).as_deref(),
            Some("email")
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused_before_serde_reads_a_struct_from_an_array() {
        #[derive(Debug, Deserialize)]
        struct Pair {
            #[allow(dead_code)]
            a: Option<String>,
            #[allow(dead_code)]
            b: Option<String>,
        }
        assert!(matches!(
            parse_strict::<Pair>(br#" [null, "x"]"#),
            Err(JsonError::Shape { field, .. }) if field == "body"
        ));
    }

    #[test]
    fn the_same_key_in_different_objects_is_fine() {
        let value: Value =
            parse_strict(br#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}], "c": {"b": {"a": 3}}}"#)
                .unwrap();
        assert_eq!(value["b"][1]["a"], 2);
    }

    #[test]
    fn every_target_type_gets_the_same_refusal() {
        #[derive(Debug, Deserialize)]
        struct Known {
            #[allow(dead_code)]
            email: Option<String>,
        }
        let twice_unknown = br#"{"email": "a@b.c", "other": 1, "other": 2}"#;
        assert!(matches!(
            parse_strict::<Known>(twice_unknown),
            Err(JsonError::DuplicateKey { .. })
        ));
        assert!(matches!(
            parse_strict::<Map<String, Value>>(br#"{"a": 1, "a": 2}"#),
            Err(JsonError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn nesting_beyond_the_recursion_limit_is_refused_not_a_crash() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse_strict::<Value>(deep.as_bytes()),
            Err(JsonError::Syntax { .. })
        ));
        let deep = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
        assert!(parse_strict::<Value>(deep.as_bytes()).is_err());
    }

    #[test]
    fn syntax_errors_and_trailing_text_are_told_apart() {
        assert!(matches!(
            parse_strict::<Value>(br#"{"a": "#),
            Err(JsonError::Syntax { line: 1, .. })
        ));
        assert_eq!(
            parse_strict::<Value>(b"{} {}"),
            Err(JsonError::TrailingText)
        );
    }

    #[test]
    fn the_display_form_never_quotes_a_value() {
        let error =
            parse_strict::<std::collections::HashMap<String, u32>>(br#"{"x": "ana@example.com"}"#)
                .unwrap_err();
        let JsonError::Shape { message, .. } = &error else {
            panic!("{error:?}")
        };
        assert!(message.contains("ana@example.com"), "{message}");
        assert!(!error.to_string().contains("ana"), "{error}");
        let error =
            parse_strict::<Value>(br#"{"ana@example.com": 1, "ana@example.com": 2}"#).unwrap_err();
        assert!(!error.to_string().contains("ana"), "{error}");
    }
}
