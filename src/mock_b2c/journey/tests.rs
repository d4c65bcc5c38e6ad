use serde_json::json;

use super::*;
use crate::mock_b2c::caller::{Answer, NoAnswer};

fn answer(status: u16, body: Value) -> Result<Answer, NoAnswer> {
    Ok(Answer {
        status,
        json: Some(body),
        content_type: Some("application/json".into()),
        body_len: 1,
    })
}

#[test]
fn continue_answers_carry_their_claims() {
    let got = read_connector_answer(
        "PreTokenIssuance",
        answer(
            200,
            json!({"version":"1.0.0","action":"Continue","extension_CustomerAccountNumber":"C1"}),
        ),
    );
    let ConnectorAnswer::Continue(claims) = got else {
        panic!("{got:?}")
    };
    assert_eq!(claims["extension_CustomerAccountNumber"], "C1");
    assert!(!claims.contains_key("version"));
}

#[test]
fn a_block_page_is_not_accepted_at_the_token_step() {
    let body = json!({"version":"1.0.0","action":"ShowBlockPage","userMessage":"no"});
    assert!(matches!(
        read_connector_answer("PostFederationSignup", answer(200, body.clone())),
        ConnectorAnswer::Block { .. }
    ));
    assert!(matches!(
        read_connector_answer("PreTokenIssuance", answer(200, body)),
        ConnectorAnswer::Invalid(_)
    ));
}

#[test]
fn validation_errors_need_http_400_status_400_and_the_right_step() {
    let good =
        json!({"version":"1.0.0","status":400,"action":"ValidationError","userMessage":"fix it"});
    let string_status =
        json!({"version":"1.0.0","status":"400","action":"ValidationError","userMessage":"fix it"});
    let no_status = json!({"version":"1.0.0","action":"ValidationError","userMessage":"fix it"});
    assert!(matches!(
        read_connector_answer("PostAttributeCollection", answer(400, good.clone())),
        ConnectorAnswer::Validation { .. }
    ));
    assert!(matches!(
        read_connector_answer("PostAttributeCollection", answer(400, string_status)),
        ConnectorAnswer::Validation { .. }
    ));
    for (step, status, body) in [
        ("PostAttributeCollection", 200, good.clone()),
        ("PostFederationSignup", 400, good.clone()),
        ("PreTokenIssuance", 400, good),
        ("PostAttributeCollection", 400, no_status),
    ] {
        assert!(
            matches!(
                read_connector_answer(step, answer(status, body.clone())),
                ConnectorAnswer::Invalid(_)
            ),
            "{step} {status} {body}"
        );
    }
}

#[test]
fn any_version_string_is_taken_as_b2c_documents_it() {
    // "version: String, Required: Yes, the version of your API": not a fixed value.
    for version in ["1.0.0", "1.0.1", "2"] {
        let body = json!({"version": version, "action": "Continue", "extension_X": "x"});
        assert!(
            matches!(
                read_connector_answer("PreTokenIssuance", answer(200, body.clone())),
                ConnectorAnswer::Continue(_)
            ),
            "{body}"
        );
    }
}

#[test]
fn missing_versions_nulls_and_non_json_are_invalid() {
    for body in [
        json!({"version":"","action":"Continue"}),
        json!({"version":1,"action":"Continue"}),
        json!({"action":"Continue"}),
        json!({"version":"1.0.0","action":"Continue","extension_X":null}),
        json!({"version":"1.0.0","action":"Proceed"}),
        json!(["not an object"]),
    ] {
        assert!(
            matches!(
                read_connector_answer("PreTokenIssuance", answer(200, body.clone())),
                ConnectorAnswer::Invalid(_)
            ),
            "{body}"
        );
    }
    assert!(matches!(
        read_connector_answer(
            "PreTokenIssuance",
            Ok(Answer {
                status: 200,
                json: None,
                content_type: None,
                body_len: 0,
            })
        ),
        ConnectorAnswer::Invalid(_)
    ));
    assert!(matches!(
        read_connector_answer(
            "PreTokenIssuance",
            answer(500, json!({"version":"1.0.0","action":"Continue"}))
        ),
        ConnectorAnswer::Invalid(_)
    ));
}

#[test]
fn derived_subjects_are_stable_per_provider_and_address() {
    assert_eq!(
        derived_subject("google.com", "A@x.com"),
        derived_subject("google.com", " a@x.com ")
    );
    assert_ne!(
        derived_subject("google.com", "a@x.com"),
        derived_subject("facebook.com", "a@x.com")
    );
}
