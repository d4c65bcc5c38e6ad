//! The browser tests: headless Chromium, driven through chromedriver (WebDriver) with fantoccini,
//! clicks through the mock B2C's pages from the mock's demo relying parties, exactly as a person
//! would. The journeys run the user flow `B2C_1_signup_signin`, whose API connector calls the real
//! service; the demos show the account number the ID token carries.
//!
//! - `consumer`: the store at `/demo` (the B2C channel): a new shopper's sign-up creates a
//!   customer; "Change e-mail" after a code was sent makes the account for the second address.
//! - `business`: the business store at `/demo-business` (the B2B channel): a buyer the store
//!   registered is linked to that customer; an address without a business account is refused on
//!   B2C's pages, and "Change e-mail" leads on to the registered one.
//! - `external_id`: the store at `/demo-external-id` on the mock's External ID tenant: a known
//!   shopper signs up with an email one-time code and is linked through autolink's `/entra/...`
//!   endpoints.
//!
//! This file holds what they share: the mock with both demo applications, the service trusting
//! it, chromedriver and the browser, and the steps of the pages.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Without them each test says loudly that it did not
//! run, and fails under `CI=true`.

mod business;
mod consumer;
mod external_id;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autolink::config::RelyingPartySettings;
use autolink::mock_b2c::{MockB2c, MockSettings};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Map};

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const PASSWORD: &str = "Br0wser!-Passw0rd-for-tests";
/// How long one page may take to show what the test waits for (journeys call the service).
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// What a demo's callback page shows when a sign-in came back, and what B2C's pages show when
/// it did not.
const AFTER_SUBMIT: &str =
    "#account-number, #no-account-number, #error-message, #block-message, #validation-message";

/// A port nothing listens on right now (the mock's redirect URI must name its port before it
/// starts).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The mock tenant: the user flow, the web store's application whose redirect URI is the demo's
/// callback on the mock itself, and the business store's application for `/demo-business`.
fn browser_settings(port: u16) -> MockSettings {
    let base = format!("http://127.0.0.1:{port}");
    let mut settings = mock_settings();
    settings.bind = format!("127.0.0.1:{port}");
    settings.custom_policy_id = None;
    settings.custom_policy = None;
    settings.applications = demo_stores(&base);
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

/// Waits for an element, failing with what the page shows instead. A look that fails while the
/// page navigates (chromedriver answers "aborted by navigation", which fantoccini's wait does not
/// retry) is made again, within the same time limit.
async fn wait_for(browser: &Client, css: &str) -> fantoccini::elements::Element {
    let started = Instant::now();
    loop {
        let left = PAGE_TIMEOUT.saturating_sub(started.elapsed());
        match browser
            .wait()
            .at_most(left)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => return element,
            Err(e) if e.to_string().contains("aborted by navigation") && !left.is_zero() => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no {css} ({e}); the browser is {}", shown(browser).await),
        }
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
    // A page's script may replace the field between finding and typing (a stale element): find
    // it again, a few times.
    let mut tries = 0;
    loop {
        let field = wait_for(browser, css).await;
        let typed = match field.clear().await {
            Ok(()) => field.send_keys(text).await,
            Err(e) => Err(e),
        };
        match typed {
            Ok(()) => return,
            Err(e) if tries < 3 && e.to_string().contains("stale element") => tries += 1,
            Err(e) => panic!("cannot type into {css}: {e}"),
        }
    }
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

/// One browser test's world: the service, the mock B2C calling it, and a browser.
struct Journey {
    app: TestApp,
    mock: MockB2c,
    browser: Client,
    driver: Chromedriver,
    _profile: tempfile::TempDir,
}

impl Journey {
    /// Starts the mock, the service trusting its issuer (which also accepts the mock's ID tokens
    /// on `POST /v1/link`), chromedriver and Chromium. Without Chromium or chromedriver it says
    /// that `test` did not run (failing under `CI=true`) and gives nothing.
    async fn start(test: &str) -> Option<Journey> {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            if !Path::new(path).exists() {
                cannot_run(
                    test,
                    &format!("{path} is missing (apt-get install -y chromium chromium-driver; .ci/run installs {package})"),
                );
                return None;
            }
        }
        // The mock first (its issuer names its port), then the service.
        let mock = start_mock().await;
        let issuer = mock.issuer();
        let discovery = mock.discovery_url(USER_FLOW);
        let app = spawn_app_with(|s| {
            s.tenant_issuer = issuer;
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
        Some(Journey {
            app,
            mock,
            browser,
            driver,
            _profile: profile,
        })
    }

    /// Opens a demo store (`demo`, `demo-business`), checks its name, and follows its sign-in
    /// link to B2C's sign-in page.
    async fn sign_in_from(&self, demo: &str, name: &str) {
        self.browser
            .goto(&format!("{}/{demo}", self.mock.base_url()))
            .await
            .unwrap();
        assert_eq!(text_of(&self.browser, "h1").await, name);
        click(&self.browser, "#sign-in").await;
        wait_for(&self.browser, "#signup-link").await;
    }

    /// On B2C's sign-up page: types the address, sends a code, and reads it from the mock's
    /// mailbox on the page, which must be the mailbox of that address.
    async fn send_code(&self, email: &str) -> String {
        type_into(&self.browser, "#email", email).await;
        click(&self.browser, "#send-code").await;
        let code = text_of(&self.browser, "#mailbox-code").await;
        let mailbox = text_of(&self.browser, ".mailbox").await;
        assert!(
            mailbox.starts_with(&format!("Mock mailbox of {email}:")),
            "the page shows another mailbox: {mailbox}"
        );
        assert!(!code.is_empty(), "no code: {}", shown(&self.browser).await);
        code
    }

    /// Fills in the rest of the sign-up form, creates the account, and waits for what follows:
    /// the demo's page, or B2C's page with a message.
    async fn create_account(&self, code: &str, given_name: &str, surname: &str) {
        type_into(&self.browser, "#verification-code", code).await;
        type_into(&self.browser, "#password", PASSWORD).await;
        type_into(&self.browser, "#given-name", given_name).await;
        type_into(&self.browser, "#surname", surname).await;
        click(&self.browser, "#create").await;
        wait_for(&self.browser, AFTER_SUBMIT).await;
    }

    /// The path of the page the browser shows.
    async fn path(&self) -> String {
        self.browser.current_url().await.unwrap().path().to_string()
    }

    /// The account number the demo shows; fails with the page when it shows none.
    async fn account_number(&self) -> String {
        match self.browser.find(Locator::Id("account-number")).await {
            Ok(element) => element.text().await.unwrap().trim().to_string(),
            Err(_) => panic!(
                "the demo shows no account number; the browser is {}",
                shown(&self.browser).await
            ),
        }
    }

    /// A claim of the ID token, as the demo's table shows it.
    async fn claim(&self, name: &str) -> String {
        text_of(&self.browser, &format!("td[data-claim=\"{name}\"]")).await
    }

    /// Closes the browser and stops chromedriver and the mock.
    async fn finish(self) {
        self.browser.close().await.unwrap();
        drop(self.driver);
        self.mock.stop();
    }
}
