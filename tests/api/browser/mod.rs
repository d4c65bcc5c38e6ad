//! The browser test: headless Chromium, driven through chromedriver (WebDriver) with fantoccini,
//! signs up on the mock B2C's pages from the mock's demo relying party, exactly as a person would
//! click through them. The journey runs the user flow `B2C_1_signup_signin`, whose API connector
//! calls the real service: a new shopper's local sign-up creates a customer, and the demo shows
//! the account number the ID token carries. The demo then sends the token to `POST /v1/link`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Without them the test says loudly that it did not
//! run, and fails under `CI=true`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autolink::config::RelyingPartySettings;
use autolink::mock_b2c::{Application, MockB2c, MockSettings};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Map, Value};

use crate::helpers::*;

const TEST: &str = "browser::a_shopper_signs_up_in_the_browser_and_gets_a_customer_account";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const PASSWORD: &str = "Br0wser!-Passw0rd-for-tests";
/// How long one page may take to show what the test waits for (journeys call the service).
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// A port nothing listens on right now (the mock's redirect URI must name its port before it
/// starts).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The mock tenant: the user flow, and the web store's application whose redirect URI is the
/// demo's callback on the mock itself.
fn browser_settings(port: u16) -> MockSettings {
    let mut settings = mock_settings();
    settings.bind = format!("127.0.0.1:{port}");
    settings.custom_policy_id = None;
    settings.custom_policy = None;
    settings.applications = vec![Application {
        client_id: B2C_CLIENT.into(),
        redirect_uris: vec![format!("http://127.0.0.1:{port}/demo/callback")],
        client_secret: None,
        name: Some("Fabrikam web store".into()),
    }];
    settings
}

/// Starts the mock on a free port (trying again if another process took the port meanwhile).
async fn start_mock() -> MockB2c {
    let mut last_error = None;
    for _ in 0..5 {
        match MockB2c::start(browser_settings(free_port())).await {
            Ok(mock) => return mock,
            Err(e) => last_error = Some(e),
        }
    }
    panic!("the mock B2C does not start: {:#}", last_error.unwrap());
}

/// chromedriver, killed with its browser when dropped (also when the test fails).
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start() -> Chromedriver {
        use std::os::unix::process::CommandExt;
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that the browsers it starts go with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        Chromedriver { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until chromedriver answers `/status`.
    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            if let Ok(response) = http.get(format!("{}/status", self.url())).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver does not answer on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any browser it left behind.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Headless Chromium with a fresh profile, driven through chromedriver.
async fn browser(driver: &Chromedriver, profile: &Path) -> Client {
    let mut capabilities = Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // fantoccini's TLS stack brings a second rustls crypto provider; the process needs a default
    // (the project's own configurations name theirs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    ClientBuilder::rustls()
        .unwrap_or_else(|e| panic!("the WebDriver client cannot be built: {e}"))
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .unwrap_or_else(|e| panic!("chromedriver does not start Chromium: {e}"))
}

/// What the browser shows, for failure messages (the URL without its query, which may hold an
/// authorization code).
async fn shown(browser: &Client) -> String {
    let url = browser
        .current_url()
        .await
        .map(|mut u| {
            u.set_query(None);
            u.to_string()
        })
        .unwrap_or_default();
    let text = match browser.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    format!("at {url}:\n{text}")
}

/// Waits for an element, failing with what the page shows instead.
async fn wait_for(browser: &Client, css: &str) -> fantoccini::elements::Element {
    match browser
        .wait()
        .at_most(PAGE_TIMEOUT)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(e) => panic!("no {css} ({e}); the browser is {}", shown(browser).await),
    }
}

async fn click(browser: &Client, css: &str) {
    wait_for(browser, css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let field = wait_for(browser, css).await;
    field.clear().await.unwrap();
    field
        .send_keys(text)
        .await
        .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
}

async fn text_of(browser: &Client, css: &str) -> String {
    wait_for(browser, css)
        .await
        .text()
        .await
        .unwrap_or_else(|e| panic!("cannot read {css}: {e}"))
        .trim()
        .to_string()
}

#[actix_web::test]
async fn a_shopper_signs_up_in_the_browser_and_gets_a_customer_account() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        if !Path::new(path).exists() {
            cannot_run(
                TEST,
                &format!("{path} is missing (apt-get install -y chromium chromium-driver; .ci/run installs {package})"),
            );
            return;
        }
    }

    // The mock first (its issuer names its port), then the service trusting that issuer, which
    // also accepts the mock's ID tokens on POST /v1/link.
    let mock = start_mock().await;
    let issuer = mock.issuer();
    let discovery = mock.discovery_url(USER_FLOW);
    let app = spawn_app_with(|s| {
        s.tenant_issuer = issuer.clone();
        s.relying_party = Some(RelyingPartySettings {
            metadata_urls: vec![discovery],
        });
    })
    .await;
    mock.set_service_url(&app.address);

    let profile = tempfile::tempdir().unwrap();
    let mut driver = Chromedriver::start();
    driver.wait_ready().await;
    let browser = browser(&driver, profile.path()).await;

    let email = format!("shopper-{}@example.com", uuid::Uuid::new_v4().simple());

    // The store's start page: sign in with the user flow.
    browser
        .goto(&format!("{}/demo", mock.base_url()))
        .await
        .unwrap();
    click(&browser, "#sign-in").await;

    // B2C's sign-in page: no account yet, sign up.
    click(&browser, "#signup-link").await;
    type_into(&browser, "#email", &email).await;
    click(&browser, "#send-code").await;
    let code = text_of(&browser, "#mailbox-code").await;
    assert!(
        !code.is_empty(),
        "no code in the mailbox: {}",
        shown(&browser).await
    );
    type_into(&browser, "#verification-code", &code).await;
    type_into(&browser, "#password", PASSWORD).await;
    type_into(&browser, "#given-name", "Pat").await;
    type_into(&browser, "#surname", "Browser").await;
    click(&browser, "#create").await;

    // Back at the store, with the token's account number.
    wait_for(
        &browser,
        "#account-number, #no-account-number, #error-message, #block-message, #validation-message",
    )
    .await;
    let page = shown(&browser).await;
    let number = match browser.find(Locator::Id("account-number")).await {
        Ok(element) => element.text().await.unwrap().trim().to_string(),
        Err(_) => panic!("the demo shows no account number; the browser is {page}"),
    };
    assert_eq!(text_of(&browser, "#outcome").await, "Created", "{page}");

    // The customer the service created for the new shopper is the one in the token.
    let customers = app.customers_with_email(&email);
    assert_eq!(customers.len(), 1, "one customer for {email}: {page}");
    let customer = &customers[0];
    assert_eq!(customer.account_number, number, "{page}");
    assert_eq!(customer.origin, "autolink");
    assert!(!customer.is_b2b);
    assert_eq!(customer.first_name.as_deref(), Some("Pat"));
    assert_eq!(customer.last_name.as_deref(), Some("Browser"));
    let links = app.links_of(&number);
    assert_eq!(links.len(), 1, "one link for {number}");
    assert_eq!(
        links[0].issuer,
        mock.issuer(),
        "the link names the tenant's issuer"
    );

    // The store's return call with the ID token: the identity is already linked.
    click(&browser, "#link").await;
    let status = text_of(&browser, "#link-status").await;
    let result = text_of(&browser, "#link-result").await;
    assert_eq!(status, "200", "POST /v1/link answered: {result}");
    let answer: Value = serde_json::from_str(&result)
        .unwrap_or_else(|e| panic!("#link-result is not JSON ({e}): {result}"));
    assert_eq!(answer["customerAccountNumber"], number.as_str(), "{answer}");
    assert_eq!(answer["outcome"], "AlreadyLinked", "{answer}");
    assert_eq!(app.active_links(), 1);

    browser.close().await.unwrap();
    drop(driver);
    mock.stop();
}
