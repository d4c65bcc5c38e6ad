//! Emails holding invisible or control characters are refused as `InvalidEmail` at every way in,
//! before any trimming or IDNA mapping could fold them into an existing customer's address.

use std::process::Command;

use autolink::import::{self, Format, ImportError, OnError};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::mock_issuer::*;

/// The existing customer every variant would otherwise reach.
const ANA: &str = "ana@example.com";
const ANA_ACCOUNT: &str = "ANA-1";

/// One address per character class, each of which folded into `ana@example.com` (or was stored
/// as a new customer) before the rule refused them.
const VARIANTS: &[(&str, &str)] = &[
    ("bidi override in the domain", "ana@exam\u{202e}ple.com"),
    ("bidi isolate in the local part", "ana\u{2066}@example.com"),
    ("zero-width space in the domain", "ana@exam\u{200b}ple.com"),
    (
        "zero-width joiner in the local part",
        "an\u{200d}a@example.com",
    ),
    ("byte-order mark at the end", "ana@example.com\u{feff}"),
    ("soft hyphen in the domain", "ana@exam\u{ad}ple.com"),
    ("noncharacter U+FFFE at the end", "ana@example.com\u{fffe}"),
    ("noncharacter U+FDD0", "an\u{fdd0}a@example.com"),
    ("noncharacter of plane 1", "ana\u{1ffff}@example.com"),
    ("C0 control", "ana\u{7}@example.com"),
    ("C1 control at the end", "ana@example.com\u{85}"),
    (
        "variation selector in the domain",
        "ana@exam\u{fe0f}ple.com",
    ),
    ("tag character at the end", "ana@example.com\u{e0041}"),
];

async fn admin_call(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, format!("{}{path}", app.address))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn rest(app: &TestApp, path: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}{path}", app.address))
        .basic_auth(CONNECTOR_USER, Some(CONNECTOR_PASSWORD))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn v1_link(app: &TestApp, token: &str) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/v1/link", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn assert_invalid_field(case: &str, status: u16, body: &Value, field: &str) {
    assert_eq!(status, 400, "{case}: {body}");
    assert_eq!(body["error"], "invalid_field", "{case}: {body}");
    assert_eq!(body["field"], field, "{case}: {body}");
}

fn assert_rest_invalid_email(case: &str, status: u16, body: &Value) {
    assert_eq!(status, 409, "{case}: {body}");
    assert_eq!(body["status"], 409, "{case}: {body}");
    assert_eq!(body["code"], "InvalidEmail", "{case}: {body}");
}

/// Nothing but the imported customer exists, with its email, and nothing is linked.
async fn assert_nothing_written(app: &TestApp, case: &str) {
    assert_eq!(app.customer_count(), 1, "{case}: a customer was created");
    assert_eq!(app.active_links(), 0, "{case}: an identity was linked");
    let ana = app.customers_with_email(ANA);
    assert_eq!(ana.len(), 1, "{case}");
    assert_eq!(ana[0].primary_email.as_deref(), Some(ANA), "{case}");
    let (status, prospects) = admin_call(app, Method::GET, "/admin/v1/prospects", None).await;
    assert_eq!(status, 200, "{prospects}");
    assert_eq!(
        prospects["items"].as_array().map(Vec::len),
        Some(0),
        "{case}: a prospect was recorded"
    );
}

#[tokio::test]
async fn emails_with_invisible_or_control_characters_are_refused_at_every_entry_point() {
    let issuer = MockIssuer::start().await;
    let app = spawn_app_with(crate::relying_party::with_relying_party(&issuer)).await;
    app.import_csv(&csv(&[&format!(
        "{ANA_ACCOUNT},USRT,person,false,{ANA},Ana,Existing"
    )]));

    // The clean address reaches the customer through the read-only entry points, so every
    // refusal below is the character's doing.
    let (status, body) = rest(
        &app,
        "/b2c/rest/precheck",
        &json!({"email": ANA, "identityProvider": "local", "clientId": B2C_CLIENT}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["autoLinkOutcome"], "WouldLink");
    let (status, body) = admin_call(
        &app,
        Method::POST,
        "/admin/v1/preview",
        Some(json!({"channel": "fabrikam-web", "email": ANA})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "WouldLink", "{body}");

    for (index, (case, email)) in VARIANTS.iter().enumerate() {
        let object_id = format!("00000000-0000-4000-8000-{index:012}");

        // User-flow API connector, at each of its steps.
        let (status, body) = app
            .connector(&attribute_collection(email, B2C_CLIENT))
            .await;
        assert_validation_error(status, &body, "InvalidEmail");
        let (status, body) = app
            .connector(&federation_signup(email, "google.com", B2C_CLIENT))
            .await;
        assert_block(status, &body, "InvalidEmail");
        let (status, body) = app
            .connector(&token_step(email, &object_id, local_identity(), B2C_CLIENT))
            .await;
        assert_continue(status, &body);
        assert_eq!(body["extension_AutoLinkError"], "InvalidEmail", "{case}");
        assert!(
            body.get("extension_CustomerAccountNumber").is_none(),
            "{case}: {body}"
        );

        // Custom-policy REST profiles, local and with a provider that verifies email.
        let claims = json!({"email": email, "identityProvider": "local", "clientId": B2C_CLIENT});
        let (status, body) = rest(&app, "/b2c/rest/precheck", &claims).await;
        assert_rest_invalid_email(case, status, &body);
        let claims = json!({
            "email": email, "emailVerified": true, "identityProvider": "google.com",
            "objectId": object_id, "clientId": B2C_CLIENT
        });
        let (status, body) = rest(&app, "/b2c/rest/link", &claims).await;
        assert_rest_invalid_email(case, status, &body);

        // The relying-party call, with the address in either email claim.
        for claim in ["emails", "email"] {
            let value = if claim == "emails" {
                json!([email])
            } else {
                json!(email)
            };
            let token = issuer
                .b2c_id_token(B2C_POLICY, B2C_CLIENT)
                .without("emails")
                .claim("sub", object_id.as_str())
                .claim(claim, value)
                .signed_by(key(1));
            let (status, body) = v1_link(&app, &token).await;
            assert_eq!(status, 400, "{case} in {claim}: {body}");
            assert_eq!(body["code"], "InvalidEmail", "{case} in {claim}: {body}");
        }

        // The admin API.
        let (status, body) = admin_call(
            &app,
            Method::POST,
            "/admin/v1/customers",
            Some(json!({"legalEntity": "USRT", "partyType": "person", "primaryEmail": email})),
        )
        .await;
        assert_invalid_field(case, status, &body, "primaryEmail");
        let (status, body) = admin_call(
            &app,
            Method::PATCH,
            &format!("/admin/v1/customers/{ANA_ACCOUNT}"),
            Some(json!({"primaryEmail": email})),
        )
        .await;
        assert_invalid_field(case, status, &body, "primaryEmail");
        let (status, body) = admin_call(
            &app,
            Method::POST,
            "/admin/v1/preview",
            Some(json!({"channel": "fabrikam-web", "email": email})),
        )
        .await;
        assert_invalid_field(case, status, &body, "email");
        let query: String = form_urlencoded_email(email);
        let (status, body) = admin_call(
            &app,
            Method::GET,
            &format!("/admin/v1/customers?{query}"),
            None,
        )
        .await;
        assert_invalid_field(case, status, &body, "email");
        let (status, body) = admin_call(
            &app,
            Method::POST,
            "/admin/v1/prospects",
            Some(json!({"email": email, "companyName": "Contoso", "legalEntity": "USRT"})),
        )
        .await;
        assert_invalid_field(case, status, &body, "email");

        assert_nothing_written(&app, case).await;
    }
}

/// `email=<address>` for a query string.
fn form_urlencoded_email(email: &str) -> String {
    let mut query = String::from("email=");
    for byte in email.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            query.push(byte as char);
        } else {
            query.push_str(&format!("%{byte:02X}"));
        }
    }
    query
}

#[tokio::test]
async fn an_import_with_an_invisible_character_in_an_email_is_rejected_unless_bad_rows_are_skipped()
{
    let app = spawn_app().await;
    let mut rows = vec![format!(
        "{ANA_ACCOUNT},USRT,person,false,{ANA},Ana,Existing"
    )];
    for (index, (_, email)) in VARIANTS.iter().enumerate() {
        rows.push(format!("BAD-{index},USRT,person,false,{email},Bad,Row"));
    }
    let text = csv(&rows.iter().map(String::as_str).collect::<Vec<_>>());
    let jsonl: String = std::iter::once((ANA_ACCOUNT.to_string(), ANA))
        .chain(
            VARIANTS
                .iter()
                .enumerate()
                .map(|(index, (_, email))| (format!("BAD-{index}"), *email)),
        )
        .map(|(account, email)| {
            format!(
                "{}\n",
                json!({"account_number": account, "legal_entity": "USRT", "party_type": "person",
                       "is_b2b": false, "primary_email": email})
            )
        })
        .collect();

    for (format, file) in [
        (Format::Csv, text.as_str()),
        (Format::Jsonl, jsonl.as_str()),
    ] {
        let error = import::import_reader(app.db(), file.as_bytes(), format, OnError::RejectFile)
            .unwrap_err();
        let ImportError::Rejected(report) = error else {
            panic!("{format:?}: expected a rejection, got {error}")
        };
        assert_eq!(
            report.errors.len(),
            VARIANTS.len(),
            "{format:?}: {:?}",
            report.errors
        );
        for error in &report.errors {
            assert!(
                error.reason.contains("primary_email") && error.reason.contains("invisible"),
                "{format:?}: {error:?}"
            );
        }
        assert_eq!(
            app.customer_count(),
            0,
            "{format:?}: nothing of a rejected file"
        );
    }

    // Through the command, on the same database: the file is refused, then imported without the
    // bad rows under --skip-invalid.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("customers.csv");
    std::fs::write(&path, &text).unwrap();
    let command = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_autolink"));
        command
            .current_dir(dir.path())
            .env("RUST_LOG", "warn")
            .env_remove("AUTOLINK_CONFIG")
            .env("AUTOLINK_DATABASE_URL", &app.db.url);
        command
    };
    let output = command()
        .args(["customers", "import"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(app.customer_count(), 0);
    let output = command()
        .args(["customers", "import", "--skip-invalid"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("1 inserted"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} skipped", VARIANTS.len())),
        "{stdout}"
    );
    assert_eq!(app.customer_count(), 1);
    assert_eq!(app.customers_with_email(ANA).len(), 1);

    // The command's preview and customer creation use the same rule.
    for (case, email) in VARIANTS {
        let output = command()
            .args(["preview", "--channel", "web", "--email", email])
            .output()
            .unwrap();
        let answer: Value =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{case}: {output:?}"));
        assert_eq!(answer["code"], "InvalidEmail", "{case}: {answer}");
        let output = command()
            .args([
                "customers",
                "create",
                "--legal-entity",
                "USRT",
                "--party-type",
                "person",
                "--email",
                email,
            ])
            .output()
            .unwrap();
        assert!(!output.status.success(), "{case}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("invisible"), "{case}: {stderr}");
    }
    assert_eq!(app.customer_count(), 1);
}
