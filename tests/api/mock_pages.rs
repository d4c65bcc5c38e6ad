//! The mock B2C's sign-up page and its mailbox, over HTTP as a browser posts them: the page shows
//! and checks the code of the address typed on it (whatever another tab sent), a wrong code gets
//! B2C's message and a limit of attempts, an expired code B2C's message, an over-long address is
//! refused before a code is sent, "Change e-mail" leads back to the address, and a social
//! sign-up's refusal is shown on B2C's page, not on the provider's.

use std::time::Duration;

use autolink::mock_b2c::MockB2c;

use crate::helpers::*;

const REDIRECT: &str = "http://localhost:5000/signin-oidc";

async fn mock(lifetime_s: Option<u64>, service: &str) -> MockB2c {
    let mut settings = mock_settings();
    settings.verification_code_lifetime_s = lifetime_s;
    settings.applications = vec![web_store(vec![REDIRECT.into()])];
    start_mock(settings, service).await
}

/// A browser without redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Opens the user flow's sign-in page; the interaction's id, from its "Sign up now" link.
async fn start(client: &reqwest::Client, mock: &MockB2c) -> String {
    start_on(client, mock, USER_FLOW).await
}

async fn start_on(client: &reqwest::Client, mock: &MockB2c, policy: &str) -> String {
    let page = client
        .get(format!(
            "{}/{}/{policy}/oauth2/v2.0/authorize",
            mock.base_url(),
            mock.tenant().settings.tenant
        ))
        .query(&[
            ("client_id", B2C_CLIENT),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let after = page
        .split("/mock/ui/")
        .nth(1)
        .unwrap_or_else(|| panic!("no sign-up link: {page}"));
    after.split('/').next().unwrap().to_string()
}

async fn post(client: &reqwest::Client, url: String, form: &[(&str, &str)]) -> (u16, String) {
    let response = client.post(url).form(form).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The code the page's mailbox shows, and the address it names.
fn mailbox(page: &str) -> Option<(String, String)> {
    let of = page.split("Mock mailbox of ").nth(1)?.split(':').next()?;
    let code = page
        .split("<span id=\"mailbox-code\">")
        .nth(1)?
        .split('<')
        .next()?;
    Some((of.to_string(), code.to_string()))
}

#[actix_web::test]
async fn the_page_checks_the_code_of_the_address_typed_with_b2c_s_messages_and_a_limit() {
    let app = spawn_app().await;
    let mock = mock(None, &app.address).await;
    let client = browser();
    let id = start(&client, &mock).await;
    let base = format!("{}/mock/ui/{id}", mock.base_url());

    // Two tabs of one sign-up, two addresses: each page shows its own address's code.
    let (_, page_a) = post(
        &client,
        format!("{base}/signup/code"),
        &[("email", "ann@example.com")],
    )
    .await;
    let (_, page_b) = post(
        &client,
        format!("{base}/signup/code"),
        &[("email", "bob@example.com")],
    )
    .await;
    let (of_a, code_a) = mailbox(&page_a).unwrap();
    let (of_b, code_b) = mailbox(&page_b).unwrap();
    assert_eq!(
        (of_a.as_str(), of_b.as_str()),
        ("ann@example.com", "bob@example.com")
    );
    assert!(page_a.contains("id=\"change-email\"") && page_a.contains("Change e-mail"));
    assert!(
        page_a.contains("signup?email=ann%40example.com"),
        "{page_a}"
    );
    let change = client
        .get(format!("{base}/signup?email=ann%40example.com"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(change.contains("value=\"ann@example.com\"") && change.contains("send-code"));

    // Ann's form with Bob's code: incorrect, and Ann's mailbox is what the page shows again.
    let wrong = if code_a == code_b {
        "000000x"
    } else {
        code_b.as_str()
    };
    let sign_up = |code: String| {
        let url = format!("{base}/signup");
        let client = client.clone();
        async move {
            post(
                &client,
                url,
                &[
                    ("email", "ann@example.com"),
                    ("verification_code", code.as_str()),
                    ("password", "Passw0rd!"),
                    ("given_name", "Ann"),
                    ("surname", "Example"),
                ],
            )
            .await
        }
    };
    let (status, page) = sign_up(wrong.to_string()).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("That code is incorrect. Please try again."),
        "{page}"
    );
    assert_eq!(
        mailbox(&page),
        Some(("ann@example.com".into(), code_a.clone()))
    );
    let (_, page) = sign_up("123".into()).await;
    assert!(
        page.contains("That code is incorrect. Please try again."),
        "{page}"
    );
    // The third wrong code voids it: even the right one is refused until a new code is sent.
    let (_, page) = sign_up("456".into()).await;
    assert!(
        page.contains("ve made too many incorrect attempts. Please try again later."),
        "{page}"
    );
    assert_eq!(mailbox(&page), None);
    let (_, page) = sign_up(code_a.clone()).await;
    assert!(
        page.contains("Verification is necessary. Please click Send button."),
        "{page}"
    );
    assert_eq!(app.customer_count(), 0);

    // A new code, typed right: the account is made and the browser goes back to the store.
    let (_, page) = post(
        &client,
        format!("{base}/signup/code"),
        &[("email", "ann@example.com")],
    )
    .await;
    let (_, code) = mailbox(&page).unwrap();
    let (status, _) = sign_up(code).await;
    assert_eq!(status, 302);
    assert_eq!(app.customer_count(), 1);

    // An address longer than an address can be is refused before any code is sent (on a new
    // sign-up: this one is finished).
    let id = start(&client, &mock).await;
    let base = format!("{}/mock/ui/{id}", mock.base_url());
    let long = format!("{}@example.com", "a".repeat(250));
    let (_, page) = post(
        &client,
        format!("{base}/signup/code"),
        &[("email", long.as_str())],
    )
    .await;
    assert!(
        page.contains("Please enter a valid email address."),
        "{page}"
    );
    assert_eq!(mailbox(&page), None);
    mock.stop();
}

#[actix_web::test]
async fn an_expired_code_gets_b2c_s_message() {
    let app = spawn_app().await;
    let mock = mock(Some(1), &app.address).await;
    let client = browser();
    let id = start(&client, &mock).await;
    let base = format!("{}/mock/ui/{id}", mock.base_url());
    let (_, page) = post(
        &client,
        format!("{base}/signup/code"),
        &[("email", "eve@example.com")],
    )
    .await;
    let (_, code) = mailbox(&page).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, page) = post(
        &client,
        format!("{base}/signup"),
        &[
            ("email", "eve@example.com"),
            ("verification_code", code.as_str()),
        ],
    )
    .await;
    assert!(
        page.contains("That code is expired. Please request a new code."),
        "{page}"
    );
    assert_eq!(app.customer_count(), 0);
    mock.stop();
}

#[actix_web::test]
async fn a_custom_policy_social_refusal_is_shown_on_b2c_s_page_not_the_provider_s() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "POS-1,USRT,person,false,two@example.com,T,One",
        "POS-2,USRT,person,false,two@example.com,T,Two",
    ]));
    let mock = mock(None, &app.address).await;
    let client = browser();
    let id = start_on(&client, &mock, CUSTOM_POLICY).await;
    let (status, page) = post(
        &client,
        format!(
            "{}/mock/ui/{id}/provider/google.com/continue",
            mock.base_url()
        ),
        &[
            ("email", "two@example.com"),
            ("email_verified", "true"),
            ("given_name", "Tess"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.contains("<title>Sign up</title>"), "{page}");
    assert!(
        !page.contains("(simulated)"),
        "shown on the provider's page: {page}"
    );
    assert!(page.contains("id=\"validation-message\""), "{page}");
    assert!(
        page.contains("<span id=\"social-email\">two@example.com</span>"),
        "{page}"
    );
    assert!(page.contains("value=\"Tess\""), "{page}");
    assert_eq!(app.customer_count(), 2);
    assert_eq!(app.active_links(), 0);
    mock.stop();
}

/// The business store's demo application: its own page at `/demo-business`, signing in with the
/// business application's client id (the consumer store's stays at `/demo`).
#[actix_web::test]
async fn the_business_store_has_its_own_demo_application() {
    // The redirect URIs name the mock's own address: a free port is chosen first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut settings = mock_settings();
    settings.bind = format!("127.0.0.1:{port}");
    settings.applications = demo_stores(&base);
    let mock = MockB2c::start(settings).await.unwrap();
    let client = browser();
    for (path, name, client_id) in [
        ("demo", "Demo store", B2C_CLIENT),
        ("demo-business", "Demo business store", B2B_CLIENT),
    ] {
        let page = client
            .get(format!("{base}/{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains(&format!("<h1>{name}</h1>")), "{page}");
        assert!(page.contains(&format!("<title>{name}</title>")), "{page}");
        assert!(
            page.contains(&format!("<code>{client_id}</code>")),
            "{page}"
        );
        let login = client
            .get(format!("{base}/{path}/login?policy={USER_FLOW}"))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status().as_u16(), 302, "{path}");
        let location = login.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.contains(&format!("client_id={client_id}")),
            "{location}"
        );
        let callback = format!("{base}/{path}/callback");
        let encoded: String = url_encoded(&callback);
        assert!(
            location.contains(&encoded),
            "{location} does not name {callback}"
        );
    }
    mock.stop();
}

fn url_encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
