//! The mock B2C's directory file: users sign in again after a restart, signing up again with a
//! known email is refused as B2C refuses it (no second account, no second link), passwords are
//! kept only as hashes, and a reset empties the directory.

use std::path::Path;

use autolink::mock_b2c::directory::Directory;
use autolink::mock_b2c::{AccountKind, JourneyKind, JourneyRequest, MockB2c, Outcome};

use crate::helpers::*;

const PASSWORD: &str = "Passw0rd!-kept-as-a-hash";

fn local(kind: JourneyKind, email: &str, password: &str) -> JourneyRequest {
    JourneyRequest {
        policy: Some(USER_FLOW.into()),
        client_id: B2C_CLIENT.into(),
        kind,
        account: AccountKind::Local,
        email: email.into(),
        password: Some(password.into()),
        provider: None,
        provider_subject: None,
        email_verified: None,
        complete_email_verification: true,
        given_name: Some("Rita".into()),
        surname: Some("Restart".into()),
        ui_locales: Some("en-US".into()),
        nonce: None,
        redirect_uri: None,
        state: None,
        single_sign_on: false,
        external_id: false,
        payload: None,
    }
}

/// A mock on the directory file, pointed at the service.
async fn mock_on(file: &Path, service: &str) -> MockB2c {
    let mut settings = mock_settings();
    settings.directory_file = Some(file.to_path_buf());
    settings.applications = vec![web_store(Vec::new())];
    start_mock(settings, service).await
}

#[actix_web::test]
async fn the_directory_survives_a_restart_and_a_second_sign_up_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("directory.db");
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "POS-1,USRT,person,false,rita@example.com,Rita,Restart",
    ]));

    let mock = mock_on(&file, &app.address).await;
    let signed_up = mock
        .run(local(JourneyKind::SignUp, "rita@example.com", PASSWORD))
        .await
        .unwrap();
    assert_eq!(signed_up.outcome, Outcome::Token, "{signed_up:?}");
    assert_eq!(signed_up.account_number(), Some("POS-1"));
    let object_id = signed_up.object_id.clone().unwrap();
    mock.stop();
    drop(mock);

    let stored = std::fs::read(&file).unwrap();
    let stored = String::from_utf8_lossy(&stored);
    assert!(stored.contains(&object_id), "the user is in the file");
    assert!(
        !stored.contains(PASSWORD),
        "the password is kept in the clear"
    );
    assert!(stored.contains("$argon2id$"), "the password's hash is kept");

    // Another process on the same file: the same user, the same link.
    let mock = mock_on(&file, &app.address).await;
    let signed_in = mock
        .run(local(JourneyKind::SignIn, "Rita@Example.com", PASSWORD))
        .await
        .unwrap();
    assert_eq!(signed_in.outcome, Outcome::Token, "{signed_in:?}");
    assert_eq!(signed_in.object_id.as_deref(), Some(object_id.as_str()));
    assert_eq!(signed_in.account_number(), Some("POS-1"));
    let wrong = mock
        .run(local(
            JourneyKind::SignIn,
            "rita@example.com",
            "not-the-password",
        ))
        .await
        .unwrap();
    assert_eq!(wrong.outcome, Outcome::ValidationError, "{wrong:?}");
    let again = mock
        .run(local(JourneyKind::SignUp, "rita@example.com", PASSWORD))
        .await
        .unwrap();
    assert_eq!(again.outcome, Outcome::ValidationError, "{again:?}");
    assert!(
        again
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("already exists"),
        "{again:?}"
    );
    assert_eq!(app.links_of("POS-1").len(), 1);
    assert_eq!(app.active_links(), 1);
    mock.stop();
    drop(mock);

    // A reset empties it.
    Directory::reset(&file).unwrap();
    assert!(!file.exists());
    let mock = mock_on(&file, &app.address).await;
    let gone = mock
        .run(local(JourneyKind::SignIn, "rita@example.com", PASSWORD))
        .await
        .unwrap();
    assert_eq!(gone.outcome, Outcome::ValidationError, "{gone:?}");
    assert!(
        gone.message
            .as_deref()
            .unwrap_or_default()
            .contains("find your account"),
        "{gone:?}"
    );
    mock.stop();
}
