//! The External ID store at `/demo-external-id`: a shopper the store knows signs up in the browser with an
//! email one-time code on the External ID tenant's pages; the mock calls autolink's two custom
//! authentication extensions as Entra does, and the store shows the account number the ID token
//! carries (`customerAccountNumber`).

use autolink::config::EntraSettings;

use super::*;
use crate::mock_external_id_support::{
    external_id_settings, EVENTS_APP, EXTENSION_APP_ID, EXT_TENANT_ID,
};

/// The world of the test: the mock with its External ID tenant and the store's application,
/// autolink with `[entra]` trusting the mock's tenant, and the browser.
async fn start(test: &str) -> Option<Journey> {
    for path in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(path).exists() {
            cannot_run(
                test,
                &format!("{path} is missing (apt-get install -y chromium chromium-driver)"),
            );
            return None;
        }
    }
    let mut last_error = None;
    let mut mock = None;
    for _ in 0..5 {
        let port = free_port();
        let mut settings = browser_settings(port);
        settings.external_id = Some(external_id_settings());
        // The web store's application also serves the External ID store.
        let store = settings
            .applications
            .iter_mut()
            .find(|a| a.client_id == B2C_CLIENT)
            .expect("the web store's application");
        store
            .redirect_uris
            .push(format!("http://127.0.0.1:{port}/demo-external-id/callback"));
        match MockB2c::start(settings).await {
            Ok(m) => {
                mock = Some(m);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let mock = mock.unwrap_or_else(|| panic!("the mock does not start: {:#}", last_error.unwrap()));
    let app = spawn_app_with(|s| {
        s.entra = Some(EntraSettings {
            tenant_id: EXT_TENANT_ID.into(),
            metadata_url: mock.external_id_discovery_url(),
            issuers: None,
            audiences: vec![EXTENSION_APP_ID.into()],
            authorized_party: EVENTS_APP.into(),
            deadline_ms: 800,
            identity_issuer: None,
            graph: None,
        });
    })
    .await;
    mock.set_service_url(&app.address);
    let profile = tempfile::tempdir().unwrap();
    let mut driver = Chromedriver::start();
    driver.wait_ready().await;
    let browser = browser(&driver, profile.path()).await;
    Some(Journey {
        app,
        mock,
        browser,
        driver,
        _profile: profile,
    })
}

#[actix_web::test]
async fn a_known_shopper_signs_up_with_an_email_code_on_external_id_and_is_linked() {
    let Some(journey) = start(
        "browser::external_id::a_known_shopper_signs_up_with_an_email_code_on_external_id_and_is_linked",
    )
    .await
    else {
        return;
    };
    let (app, browser) = (&journey.app, &journey.browser);
    let email = format!("ciam-{}@example.com", uuid::Uuid::new_v4().simple());
    // The store knows the shopper from its till.
    app.import_csv(&csv(&[&format!(
        "POS-42,USRT,person,false,{email},Cia,Shopper"
    )]));
    browser
        .goto(&format!("{}/demo-external-id", journey.mock.base_url()))
        .await
        .unwrap();
    assert_eq!(text_of(browser, "h1").await, "Demo store (External ID)");
    click(browser, "#sign-in").await;
    type_into(browser, "#email", &email).await;
    click(browser, "#send-code").await;
    let code = text_of(browser, "#mailbox-code").await;
    type_into(browser, "#verification-code", &code).await;
    click(browser, "#verify").await;
    assert_eq!(text_of(browser, "#signup-email").await, email);
    type_into(browser, "#given-name", "Cia").await;
    type_into(browser, "#surname", "Shopper").await;
    click(browser, "#create").await;
    wait_for(browser, AFTER_SUBMIT).await;

    let page = shown(browser).await;
    assert_eq!(journey.path().await, "/demo-external-id/callback", "{page}");
    assert_eq!(journey.account_number().await, "POS-42", "{page}");
    assert_eq!(text_of(browser, "#outcome").await, "Linked", "{page}");
    assert_eq!(
        text_of(browser, "#issuer").await,
        format!("https://{EXT_TENANT_ID}.ciamlogin.com/{EXT_TENANT_ID}/v2.0"),
        "{page}"
    );
    assert_eq!(
        app.customers_with_email(&email).len(),
        1,
        "no second customer: {page}"
    );
    let links = app.links_of("POS-42");
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].issuer, journey.mock.external_id_issuer().unwrap());
    journey.finish().await;
}
