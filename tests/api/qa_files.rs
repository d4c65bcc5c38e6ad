//! The QA files of the README's "QA" section: the two configuration files load as the two
//! programs load them, and the sample customers give every row of the decision table (DESIGN
//! section 1) on both channels, as the README's table says.

use std::path::{Path, PathBuf};

use crate::helpers::*;

fn qa(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("qa").join(name)
}

#[test]
fn the_qa_configuration_files_load() {
    let text = std::fs::read_to_string(qa("mock-b2c.toml")).unwrap();
    let mock: autolink::mock_b2c::MockSettings = toml::from_str(&text).unwrap();
    assert_eq!(
        mock.directory_file.as_deref(),
        Some(Path::new("mock-b2c-directory.db"))
    );
    // Each store has its demo application: the consumer store at /demo, the business store
    // at /demo-business.
    for (client, callback) in [
        ("00000000-0000-0000-0000-00000000d3e0", "/demo/callback"),
        (
            "00000000-0000-0000-0000-0000000000b2",
            "/demo-business/callback",
        ),
    ] {
        let app = mock
            .applications
            .iter()
            .find(|a| a.client_id == client)
            .unwrap();
        assert!(
            app.redirect_uris.iter().any(|r| r.ends_with(callback)),
            "{client}: {:?}",
            app.redirect_uris
        );
    }
    // The External ID tenant, and autolink trusting it (its discovery document and Graph).
    let ext = mock.external_id.as_ref().expect("the External ID tenant");
    let settings = autolink::config::Settings::load(Some(&qa("autolink.toml"))).unwrap();
    let entra = settings.entra.as_ref().expect("[entra]");
    assert_eq!(entra.tenant_id, ext.tenant_id);
    assert_eq!(
        entra.audiences.as_slice(),
        std::slice::from_ref(&ext.extension_app_id)
    );
    assert!(entra
        .metadata_url()
        .contains(&format!("/ciam/{}/", ext.tenant_id)));
    let graph = entra.graph.as_ref().expect("[entra.graph]");
    assert_eq!(
        (&graph.client_id, &graph.client_secret),
        (&ext.graph_client_id, &ext.graph_client_secret)
    );
    // The sample customers are written for the channels of the QA configuration.
    let entities: Vec<(&str, String)> = settings
        .channels
        .iter()
        .map(|c| (c.legal_entity.as_str(), format!("{:?}", c.customer_type)))
        .collect();
    assert!(entities.contains(&("USRT", "B2C".into())), "{entities:?}");
    assert!(entities.contains(&("USRT", "B2B".into())), "{entities:?}");
}

/// What the sign-up check answers for `email` on the channel of `client`: the outcome, or the
/// refusal's code.
async fn decided(app: &TestApp, email: &str, client: &str) -> String {
    let (status, body) = app.connector(&attribute_collection(email, client)).await;
    match body["action"].as_str() {
        Some("Continue") => {
            // The token step says what the check allowed: link or create.
            let token = token_step(
                email,
                &format!("oid-{email}-{client}"),
                local_identity(),
                client,
            );
            let (_, answer) = app.connector(&token).await;
            match (
                answer["extension_AutoLinkOutcome"].as_str(),
                answer["extension_CustomerAccountNumber"].as_str(),
            ) {
                (Some("Linked"), Some(number)) => format!("Linked {number}"),
                (Some(outcome), Some(_)) => outcome.to_string(),
                _ => format!("token step: {answer}"),
            }
        }
        _ => body["code"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{status} {body}")),
    }
}

#[tokio::test]
async fn the_sample_customers_cover_the_decision_table_on_both_channels() {
    let app = spawn_app().await;
    app.import_csv(&std::fs::read_to_string(qa("customers.csv")).unwrap());
    const MULTIPLE: &str =
        "Microsoft_Dynamics_Commerce_Runtime_MultipleCustomerAccountsFoundWithSameEmailAddress";
    const NOT_FOUND: &str = "Microsoft_Dynamics_CommerceIdentityNotFound";
    let cases = [
        // Consumer channel.
        ("one.b2c@example.com", B2C_CLIENT, "Linked QA-C-100"),
        ("twice.b2c@example.com", B2C_CLIENT, MULTIPLE),
        ("other.entity@example.com", B2C_CLIENT, "Created"),
        ("org.only@example.com", B2C_CLIENT, "Created"),
        ("one.b2b@example.com", B2C_CLIENT, "Linked QA-B-100"),
        ("twice.b2b@example.com", B2C_CLIENT, MULTIPLE),
        ("not.b2b@example.com", B2C_CLIENT, "Linked QA-B-300"),
        ("new.shopper@example.com", B2C_CLIENT, "Created"),
        // Business channel.
        ("one.b2c@example.com", B2B_CLIENT, NOT_FOUND),
        ("twice.b2c@example.com", B2B_CLIENT, NOT_FOUND),
        ("other.entity@example.com", B2B_CLIENT, NOT_FOUND),
        ("org.only@example.com", B2B_CLIENT, NOT_FOUND),
        ("one.b2b@example.com", B2B_CLIENT, "Linked QA-B-100"),
        ("twice.b2b@example.com", B2B_CLIENT, MULTIPLE),
        ("not.b2b@example.com", B2B_CLIENT, NOT_FOUND),
        ("nobody@example.com", B2B_CLIENT, NOT_FOUND),
    ];
    let mut wrong = Vec::new();
    for (email, client, expected) in cases {
        let got = decided(&app, email, client).await;
        if got != expected {
            wrong.push(format!(
                "{email} on {client}: expected {expected}, got {got}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The README's table lists every sample customer's email.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for (email, _, _) in cases {
        assert!(
            readme.contains(email),
            "the README's QA table lacks {email}"
        );
    }
}
