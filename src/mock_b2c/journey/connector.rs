//! User flows: the API connector's request body, the call, and its answer read as B2C reads it.

use serde_json::{json, Map, Value};

use crate::mock_b2c::caller::{Answer, NoAnswer, Payload};
use crate::mock_b2c::directory::User;
use crate::mock_b2c::types::Outcome;

use super::{Journey, Step, CONNECTOR_FAILED};

impl Journey<'_> {
    /// The request body B2C sends at `step` (claims without a value are left out).
    pub(super) fn connector_body(&self, step: &str, user: &User, object_id: Option<&str>) -> Value {
        let mut body = Map::new();
        body.insert("email".into(), json!(user.email));
        // A local account that does not exist yet has no identities; later it signs in with
        // its email, and a social account always has its provider's identity.
        let identities = match (&user.provider, &user.provider_subject, object_id) {
            (Some(p), Some(s), _) => Some(json!([{
                "signInType": "federated",
                "issuer": p,
                "issuerAssignedId": s,
            }])),
            (None, _, Some(_)) => user.sign_in_email.as_ref().map(|e| {
                json!([{
                    "signInType": "emailAddress",
                    "issuer": self.tenant.settings.tenant,
                    "issuerAssignedId": e,
                }])
            }),
            _ => None,
        };
        if let Some(identities) = identities {
            body.insert("identities".into(), identities);
        }
        if let Some(name) = user.display_name() {
            body.insert("displayName".into(), json!(name));
        }
        if let Some(g) = &user.given_name {
            body.insert("givenName".into(), json!(g));
        }
        if let Some(s) = &user.surname {
            body.insert("surname".into(), json!(s));
        }
        if let Some(id) = object_id {
            body.insert("objectId".into(), json!(id));
        }
        body.insert("step".into(), json!(step));
        body.insert("client_id".into(), json!(self.request.client_id));
        body.insert("ui_locales".into(), json!(self.ui_locales()));
        Value::Object(body)
    }

    /// Calls the API connector and reads its answer as B2C does at `step`.
    pub(super) async fn connector(&mut self, step: &str, body: Value) -> Step<Map<String, Value>> {
        let url = format!("{}/b2c/api-connector", self.tenant.service_url());
        let credentials = match self
            .tenant
            .credentials(&self.tenant.settings.connector_auth)
            .await
        {
            Ok(c) => c,
            Err(e) => return self.stop(Outcome::Error, &e, None).map_never(),
        };
        let answer = self
            .tenant
            .user_flow_caller
            .post(
                "api-connector",
                Some(step),
                &url,
                &Payload::Json(body),
                &credentials,
                &mut self.result.calls,
            )
            .await;
        match read_connector_answer(step, answer) {
            ConnectorAnswer::Continue(claims) => Step::Go(claims),
            ConnectorAnswer::Block { message, code } => {
                self.stop(Outcome::BlockPage, &message, code).map_never()
            }
            ConnectorAnswer::Validation { message, code } => self
                .stop(Outcome::ValidationError, &message, code)
                .map_never(),
            ConnectorAnswer::Invalid(why) => {
                self.stop(Outcome::Error, CONNECTOR_FAILED, None);
                self.result.message = Some(format!("{CONNECTOR_FAILED} ({why})"));
                Step::Stop
            }
        }
    }
}

/// How B2C reads an API connector's answer.
#[derive(Debug, PartialEq)]
pub enum ConnectorAnswer {
    Continue(Map<String, Value>),
    Block {
        message: String,
        code: Option<String>,
    },
    Validation {
        message: String,
        code: Option<String>,
    },
    /// Not an answer B2C accepts at this step: its error page.
    Invalid(String),
}

/// Reads an answer as B2C does: a `version` string ("Required: Yes", any value: "the version of
/// your API", Microsoft's API connector reference; its examples all say `1.0.0`); continue and
/// block with HTTP 200; a validation error with HTTP 400 and `status` 400 (number or string),
/// only after attribute collection; a block page not at the token step.
pub fn read_connector_answer(step: &str, answer: Result<Answer, NoAnswer>) -> ConnectorAnswer {
    let answer = match answer {
        Ok(answer) => answer,
        Err(no) => return ConnectorAnswer::Invalid(no.message),
    };
    let Some(Value::Object(body)) = answer.json else {
        return ConnectorAnswer::Invalid(format!("HTTP {} without a JSON object", answer.status));
    };
    if body
        .get("version")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return ConnectorAnswer::Invalid(format!("HTTP {}: no version", answer.status));
    }
    let message = body
        .get("userMessage")
        .and_then(Value::as_str)
        .map(str::to_string);
    let code = body.get("code").and_then(Value::as_str).map(str::to_string);
    let action = body.get("action").and_then(Value::as_str).unwrap_or("");
    let token_step = matches!(step, "PreTokenIssuance" | "PreTokenApplicationClaims");
    match (answer.status, action) {
        (200, "Continue") => {
            let mut claims = body.clone();
            claims.remove("version");
            claims.remove("action");
            if let Some((name, _)) = claims.iter().find(|(_, v)| v.is_null()) {
                return ConnectorAnswer::Invalid(format!("claim {name} is null"));
            }
            ConnectorAnswer::Continue(claims)
        }
        (200, "ShowBlockPage") if !token_step => match message {
            Some(message) if !message.is_empty() => ConnectorAnswer::Block { message, code },
            _ => ConnectorAnswer::Invalid("a block page without userMessage".into()),
        },
        (400, "ValidationError") if step == "PostAttributeCollection" => {
            let status_ok = match body.get("status") {
                Some(Value::Number(n)) => n.as_u64() == Some(400),
                Some(Value::String(s)) => s == "400",
                _ => false,
            };
            match message {
                Some(message) if status_ok && !message.is_empty() => {
                    ConnectorAnswer::Validation { message, code }
                }
                _ => ConnectorAnswer::Invalid(
                    "a validation error needs status 400 and a userMessage".into(),
                ),
            }
        }
        (status, action) => ConnectorAnswer::Invalid(format!(
            "HTTP {status} with action {action:?} is not allowed at {step}"
        )),
    }
}
