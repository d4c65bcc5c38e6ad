use serde_json::json;

use super::*;

fn answer(status: u16, content_type: &str, body: Value) -> Result<Answer, NoAnswer> {
    Ok(Answer {
        status,
        body_len: body.to_string().len(),
        json: Some(body),
        content_type: Some(content_type.into()),
    })
}

fn submit(action: Value) -> Value {
    json!({"data": {
        "@odata.type": "microsoft.graph.onAttributeCollectionSubmitResponseData",
        "actions": [action]
    }})
}

fn token(action: Value) -> Value {
    json!({"data": {
        "@odata.type": "microsoft.graph.onTokenIssuanceStartResponseData",
        "actions": [action]
    }})
}

fn code_of<T: std::fmt::Debug>(got: Result<T, ExtensionError>) -> u32 {
    got.expect_err("Entra refuses this answer").code
}

#[test]
fn submit_actions_are_read() {
    let cont = submit(
        json!({"@odata.type": "microsoft.graph.attributeCollectionSubmit.continueWithDefaultBehavior"}),
    );
    assert_eq!(
        read_submit(answer(200, "application/json; charset=utf-8", cont)),
        Ok(SubmitAction::Continue {
            attributes: Map::new()
        })
    );
    let validation = submit(json!({
        "@odata.type": "microsoft.graph.attributeCollectionSubmit.showValidationError",
        "message": "Fix it", "attributeErrors": {"email": "Unknown"}
    }));
    match read_submit(answer(200, "application/json", validation)) {
        Ok(SubmitAction::ValidationError {
            message,
            attribute_errors,
        }) => {
            assert_eq!(message.as_deref(), Some("Fix it"));
            assert_eq!(attribute_errors["email"], "Unknown");
        }
        other => panic!("{other:?}"),
    }
    let block = submit(
        json!({"@odata.type": "microsoft.graph.attributeCollectionSubmit.showBlockPage", "title": "No"}),
    );
    assert_eq!(
        read_submit(answer(200, "application/json", block)),
        Ok(SubmitAction::BlockPage {
            title: Some("No".into()),
            message: DEFAULT_BLOCK_MESSAGE.into()
        })
    );
}

#[test]
fn answers_entra_refuses_get_their_error_codes() {
    let cont = submit(
        json!({"@odata.type": "microsoft.graph.attributeCollectionSubmit.continueWithDefaultBehavior"}),
    );
    // A validation error with HTTP 400, as a B2C connector would send it.
    assert_eq!(
        code_of(read_submit(answer(400, "application/json", cont.clone()))),
        1003002
    );
    assert_eq!(
        code_of(read_submit(answer(200, "text/plain", cont.clone()))),
        1003006
    );
    let empty = Ok(Answer {
        status: 200,
        json: None,
        content_type: Some("application/json".into()),
        body_len: 0,
    });
    assert_eq!(code_of(read_submit(empty)), 1003009);
    let two = json!({"data": {
        "@odata.type": "microsoft.graph.onAttributeCollectionSubmitResponseData",
        "actions": [
            {"@odata.type": "microsoft.graph.attributeCollectionSubmit.continueWithDefaultBehavior"},
            {"@odata.type": "microsoft.graph.attributeCollectionSubmit.continueWithDefaultBehavior"}
        ]
    }});
    assert_eq!(
        code_of(read_submit(answer(200, "application/json", two))),
        1003010
    );
    let token_action = submit(
        json!({"@odata.type": "microsoft.graph.tokenIssuanceStart.provideClaimsForToken", "claims": {}}),
    );
    assert_eq!(
        code_of(read_submit(answer(200, "application/json", token_action))),
        1003012
    );
    let wrong_data = token(
        json!({"@odata.type": "microsoft.graph.attributeCollectionSubmit.continueWithDefaultBehavior"}),
    );
    assert_eq!(
        code_of(read_submit(answer(200, "application/json", wrong_data))),
        1003003
    );
    let timed_out = Err(NoAnswer {
        timed_out: true,
        message: "late".into(),
    });
    assert_eq!(code_of(read_submit(timed_out)), 1003005);
    let refused = Err(NoAnswer {
        timed_out: false,
        message: "refused".into(),
    });
    assert_eq!(code_of(read_submit(refused)), 1003027);
}

#[test]
fn token_claims_are_strings_within_three_kilobytes() {
    let ok = token(json!({
        "@odata.type": "microsoft.graph.tokenIssuanceStart.provideClaimsForToken",
        "claims": {"customerAccountNumber": "C1", "roles": ["a", "b"]}
    }));
    let claims = read_token_issuance(answer(200, "application/json", ok)).unwrap();
    assert_eq!(claims["customerAccountNumber"], "C1");
    let null = token(json!({
        "@odata.type": "microsoft.graph.tokenIssuanceStart.provideClaimsForToken", "claims": null
    }));
    assert_eq!(
        code_of(read_token_issuance(answer(200, "application/json", null))),
        1003007
    );
    let boolean = token(json!({
        "@odata.type": "microsoft.graph.tokenIssuanceStart.provideClaimsForToken",
        "claims": {"linked": true}
    }));
    assert_eq!(
        code_of(read_token_issuance(answer(
            200,
            "application/json",
            boolean
        ))),
        1003003
    );
    let empty_key = token(json!({
        "@odata.type": "microsoft.graph.tokenIssuanceStart.provideClaimsForToken",
        "claims": {"": "x"}
    }));
    assert_eq!(
        code_of(read_token_issuance(answer(
            200,
            "application/json",
            empty_key
        ))),
        1003026
    );
    let big = token(json!({
        "@odata.type": "microsoft.graph.tokenIssuanceStart.provideClaimsForToken",
        "claims": {"big": "x".repeat(MAX_CLAIMS_BYTES)}
    }));
    assert_eq!(
        code_of(read_token_issuance(answer(200, "application/json", big))),
        1003025
    );
    let pascal = token(json!({
        "@odata.type": "microsoft.graph.tokenIssuanceStart.ProvideClaimsForToken", "claims": {}
    }));
    assert_eq!(
        code_of(read_token_issuance(answer(200, "application/json", pascal))),
        1003012
    );
}
