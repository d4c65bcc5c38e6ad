//! An extension's answer read as Entra reads it: HTTP 200, `application/json`, `data` of the
//! event's response type with exactly one action of the event's type. Anything else fails the
//! sign-in with the error code Entra records in its sign-in logs ("Troubleshoot your custom
//! authentication extension", table 1.6 of the contracts file).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::extension::Event;
use crate::mock_b2c::caller::{Answer, NoAnswer};

/// The total size of the claims a token-issuance answer may provide (keys and values).
pub const MAX_CLAIMS_BYTES: usize = 3 * 1024;

/// Entra's default block-page text when `showBlockPage` has no `message`.
pub const DEFAULT_BLOCK_MESSAGE: &str =
    "You are not permitted to sign up. Please contact the owner of the application/website.";

/// Why Entra rejected a call: its code and name, and the mock's detail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionError {
    pub code: u32,
    pub name: String,
    pub detail: String,
}

fn fail(code: u32, name: &str, detail: impl Into<String>) -> ExtensionError {
    ExtensionError {
        code,
        name: name.into(),
        detail: detail.into(),
    }
}

/// What a submit answer asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitAction {
    /// Go on (with the values `modifyAttributeValues` overwrote, if any).
    Continue { attributes: Map<String, Value> },
    /// Show the form again with a page message and messages per attribute.
    ValidationError {
        message: Option<String>,
        attribute_errors: Map<String, Value>,
    },
    /// End the sign-up on a block page.
    BlockPage {
        title: Option<String>,
        message: String,
    },
}

/// What a token-issuance answer provides: the claims.
pub type ProvidedClaims = Map<String, Value>;

/// The checks shared by every event; the one action.
fn the_action(
    event: Event,
    answer: Result<Answer, NoAnswer>,
) -> Result<Map<String, Value>, ExtensionError> {
    let answer = match answer {
        Ok(answer) => answer,
        Err(no) if no.timed_out => {
            return Err(fail(1003005, "CustomExtensionTimedOut", no.message))
        }
        Err(no) => return Err(fail(1003027, "CustomExtensionConnectionError", no.message)),
    };
    if answer.status != 200 {
        return Err(fail(
            1003002,
            "CustomExtensionInvalidHTTPStatus",
            format!("HTTP {}", answer.status),
        ));
    }
    if answer.body_len == 0 {
        return Err(fail(1003009, "CustomExtensionEmptyResponse", "no body"));
    }
    let json_type = answer
        .content_type
        .as_deref()
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(fail(
            1003006,
            "CustomExtensionInvalidResponseContentType",
            format!("Content-Type {:?}", answer.content_type),
        ));
    }
    let invalid = |why: &str| fail(1003003, "CustomExtensionInvalidResponseBody", why);
    let Some(Value::Object(body)) = answer.json else {
        return Err(invalid("the body is not a JSON object"));
    };
    let data = body
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("no data object"))?;
    if data.get("@odata.type").and_then(Value::as_str) != Some(event.response_data_type()) {
        return Err(invalid(&format!(
            "data.@odata.type is not {}",
            event.response_data_type()
        )));
    }
    let actions = data
        .get("actions")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no actions array"))?;
    if actions.len() != 1 {
        return Err(fail(
            1003010,
            "CustomExtensionInvalidNumberOfActions",
            format!("{} actions", actions.len()),
        ));
    }
    actions[0]
        .as_object()
        .cloned()
        .ok_or_else(|| invalid("the action is not an object"))
}

/// The action's name after the event's prefix (matched exactly: Microsoft does not say Entra
/// accepts another case, so the mock does not).
fn action_name(event: Event, action: &Map<String, Value>) -> Result<String, ExtensionError> {
    let odata_type = action
        .get("@odata.type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    odata_type
        .strip_prefix(event.action_prefix())
        .map(str::to_string)
        .ok_or_else(|| {
            fail(
                1003012,
                "CustomExtensionInvalidActionType",
                format!("{odata_type:?} is not an action of {}", event.record_name()),
            )
        })
}

fn optional_string(
    action: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ExtensionError> {
    match action.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(fail(
            1003003,
            "CustomExtensionInvalidResponseBody",
            format!("{name} is not a string"),
        )),
    }
}

/// Reads an `attributeCollectionSubmit` answer.
pub fn read_submit(answer: Result<Answer, NoAnswer>) -> Result<SubmitAction, ExtensionError> {
    let event = Event::AttributeCollectionSubmit;
    let action = the_action(event, answer)?;
    let invalid = |why: &str| fail(1003003, "CustomExtensionInvalidResponseBody", why);
    match action_name(event, &action)?.as_str() {
        "continueWithDefaultBehavior" => Ok(SubmitAction::Continue {
            attributes: Map::new(),
        }),
        "modifyAttributeValues" => {
            let attributes = action
                .get("attributes")
                .and_then(Value::as_object)
                .cloned()
                .ok_or_else(|| invalid("modifyAttributeValues without attributes"))?;
            Ok(SubmitAction::Continue { attributes })
        }
        "showValidationError" => {
            let message = optional_string(&action, "message")?;
            let attribute_errors = match action.get("attributeErrors") {
                None => Map::new(),
                Some(Value::Object(errors)) if errors.values().all(Value::is_string) => {
                    errors.clone()
                }
                Some(_) => return Err(invalid("attributeErrors is not a map of strings")),
            };
            Ok(SubmitAction::ValidationError {
                message,
                attribute_errors,
            })
        }
        "showBlockPage" => Ok(SubmitAction::BlockPage {
            title: optional_string(&action, "title")?,
            message: optional_string(&action, "message")?
                .unwrap_or_else(|| DEFAULT_BLOCK_MESSAGE.into()),
        }),
        other => Err(fail(
            1003012,
            "CustomExtensionInvalidActionType",
            format!("{other:?} is not an action of attributeCollectionSubmit"),
        )),
    }
}

/// Reads a `tokenIssuanceStart` answer: the claims of `provideClaimsForToken` (strings or
/// arrays of strings, non-empty keys, at most 3 KB in all).
pub fn read_token_issuance(
    answer: Result<Answer, NoAnswer>,
) -> Result<ProvidedClaims, ExtensionError> {
    let event = Event::TokenIssuanceStart;
    let action = the_action(event, answer)?;
    let name = action_name(event, &action)?;
    if name != "provideClaimsForToken" {
        return Err(fail(
            1003012,
            "CustomExtensionInvalidActionType",
            format!("{name:?} is not an action of tokenIssuanceStart"),
        ));
    }
    let claims = match action.get("claims") {
        None | Some(Value::Null) => {
            return Err(fail(
                1003007,
                "CustomExtensionNullClaimsResponse",
                "no claims",
            ))
        }
        Some(Value::Object(claims)) => claims.clone(),
        Some(_) => {
            return Err(fail(
                1003003,
                "CustomExtensionInvalidResponseBody",
                "claims is not an object",
            ))
        }
    };
    let mut size = 0;
    for (key, value) in &claims {
        if key.trim().is_empty() {
            return Err(fail(
                1003026,
                "CustomExtensionNullOrEmptyClaimKeyNotSupported",
                "an empty claim name",
            ));
        }
        size += key.len();
        size += match value {
            Value::String(s) => s.len(),
            Value::Array(items) if items.iter().all(Value::is_string) => {
                items.iter().map(|i| i.as_str().map_or(0, str::len)).sum()
            }
            _ => {
                return Err(fail(
                    1003003,
                    "CustomExtensionInvalidResponseBody",
                    format!("claim {key} is neither a string nor an array of strings"),
                ))
            }
        };
    }
    if size > MAX_CLAIMS_BYTES {
        return Err(fail(
            1003025,
            "CustomExtensionResponseClaimsSizeExceeded",
            format!("{size} bytes of claims"),
        ));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests;
