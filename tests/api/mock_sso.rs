//! Returning users and B2C's session in the mock (issue 16, points 1 and 8): a social user who
//! was never linked signs in again, with and without single sign-on, and the custom policy's
//! link step gets the email and provider that its directory read (`policies/`) finds; B2C's
//! session cookie signs a browser in again without a page unless `prompt=login`; a form page
//! submitted again after Back never runs a finished journey twice.

use autolink::mock_b2c::directory::User;
use autolink::mock_b2c::{AccountKind, JourneyKind, JourneyRequest, MockB2c, Outcome};
use serde_json::{json, Value};

use crate::helpers::*;

const REDIRECT: &str = "http://localhost:5000/signin-oidc";

async fn mock(service: &str) -> MockB2c {
    let mut settings = mock_settings();
    settings.applications = vec![web_store(vec![REDIRECT.into()])];
    start_mock(settings, service).await
}

/// A social account written to the directory without autolink (signed up before it was
/// deployed): the provider's email in the directory, no link.
fn existing_social_user(mock: &MockB2c, provider: &str, subject: &str, email: &str) -> User {
    let user = User {
        object_id: uuid::Uuid::new_v4().to_string(),
        sign_in_email: None,
        password_hash: None,
        provider: Some(provider.into()),
        provider_subject: Some(subject.into()),
        email: email.into(),
        email_verified: None,
        given_name: Some("Rita".into()),
        surname: Some("Return".into()),
        external_tenant: None,
    };
    mock.tenant()
        .directory
        .create(user)
        .unwrap()
        .expect("a new directory user")
}

fn social_sign_in(provider: &str, subject: &str, email: &str, sso: bool) -> JourneyRequest {
    JourneyRequest {
        policy: Some(CUSTOM_POLICY.into()),
        client_id: B2C_CLIENT.into(),
        kind: JourneyKind::SignIn,
        account: AccountKind::Social,
        email: email.into(),
        password: None,
        provider: Some(provider.into()),
        provider_subject: Some(subject.into()),
        email_verified: None,
        complete_email_verification: true,
        given_name: None,
        surname: None,
        ui_locales: None,
        nonce: None,
        redirect_uri: None,
        state: None,
        single_sign_on: sso,
        external_id: false,
        payload: None,
    }
}

/// The body the link step sent.
fn link_request(result: &autolink::mock_b2c::JourneyResult) -> Value {
    result
        .calls
        .iter()
        .find(|c| c.name == "REST-Autolink-Link-Social")
        .map(|c| c.request.clone())
        .unwrap_or_else(|| panic!("no social link step: {result:?}"))
}

#[actix_web::test]
async fn a_social_user_never_linked_is_linked_on_a_sign_in_with_and_without_single_sign_on() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "RET-1,USRT,person,false,rita@example.com,Rita,Return",
        "RET-2,USRT,person,false,ravi@example.com,Ravi,Return",
    ]));
    let mock = mock(&app.address).await;

    // Single sign-on: the provider is not asked, so nothing the request says about the email
    // reaches autolink; the directory read finds the email and the provider.
    let rita = existing_social_user(&mock, "google.com", "g-rita", "rita@example.com");
    let result = mock
        .run(social_sign_in(
            "google.com",
            "g-rita",
            "not.asked@example.com",
            true,
        ))
        .await
        .unwrap();
    assert_eq!(result.outcome, Outcome::Token, "{result:?}");
    assert_eq!(result.account_number(), Some("RET-1"), "{result:?}");
    let sent = link_request(&result);
    assert_eq!(sent["email"], "rita@example.com", "{sent}");
    assert_eq!(sent["identityProvider"], "google.com", "{sent}");
    assert_eq!(sent["objectId"], rita.object_id.as_str(), "{sent}");
    assert!(
        sent.get("emailVerified").is_none(),
        "nothing stored: {sent}"
    );
    let links = app.links_of("RET-1");
    assert_eq!(links.len(), 1, "{links:?}");
    assert_eq!(links[0].subject, rita.object_id);

    // A new session: the provider answers again and its email is sent; the directory read is
    // not needed.
    let ravi = existing_social_user(&mock, "google.com", "g-ravi", "ravi@example.com");
    let result = mock
        .run(social_sign_in(
            "google.com",
            "g-ravi",
            "ravi@example.com",
            false,
        ))
        .await
        .unwrap();
    assert_eq!(result.account_number(), Some("RET-2"), "{result:?}");
    let sent = link_request(&result);
    assert_eq!(sent["emailVerified"], true, "the provider's answer: {sent}");
    assert_eq!(app.links_of("RET-2")[0].subject, ravi.object_id);

    // Signing in again resolves the link.
    let again = mock
        .run(social_sign_in(
            "google.com",
            "g-rita",
            "x@example.com",
            true,
        ))
        .await
        .unwrap();
    assert_eq!(again.account_number(), Some("RET-1"), "{again:?}");
}

#[actix_web::test]
async fn a_directory_email_of_a_provider_that_does_not_verify_email_never_links() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "FB-1,USRT,person,false,fiona@example.com,Fiona,Book",
    ]));
    let mock = mock(&app.address).await;
    existing_social_user(&mock, "facebook.com", "fb-fiona", "fiona@example.com");
    let result = mock
        .run(social_sign_in(
            "facebook.com",
            "fb-fiona",
            "fiona@example.com",
            true,
        ))
        .await
        .unwrap();
    let sent = link_request(&result);
    assert_eq!(sent["identityProvider"], "facebook.com", "{sent}");
    assert_ne!(result.outcome, Outcome::Token, "{result:?}");
    assert_eq!(
        result.code.as_deref(),
        Some("EmailNotVerified"),
        "{result:?}"
    );
    assert!(app.links_of("FB-1").is_empty());
}

// ---------------------------------------------------------------------------------------------
// Over HTTP, as a browser: B2C's session cookie, and Back after a POST.

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `GET authorize` with the browser's cookie (if any) and extra parameters.
async fn authorize(
    client: &reqwest::Client,
    mock: &MockB2c,
    policy: &str,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut query = vec![
        ("client_id", B2C_CLIENT),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "openid"),
        ("state", "s-1"),
    ];
    query.extend_from_slice(extra);
    let mut request = client.get(mock.authorize_url(policy)).query(&query);
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    request.send().await.unwrap()
}

/// The interaction id of a sign-in page.
fn interaction_of(page: &str) -> String {
    let after = page
        .split("/mock/ui/")
        .nth(1)
        .unwrap_or_else(|| panic!("not a sign-in page: {page}"));
    after.split('/').next().unwrap().to_string()
}

/// The session cookie a response sets, as a `Cookie` header value.
fn session_cookie(response: &reqwest::Response, tenant: &str) -> String {
    let name = format!("x-ms-cpim-sso:{tenant}_0=");
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&name))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie {name}: {response:?}"))
        .to_string()
}

/// The code of a redirect to the application, redeemed: the ID token's claims.
async fn redeem(client: &reqwest::Client, mock: &MockB2c, policy: &str, location: &str) -> Value {
    assert!(location.starts_with(REDIRECT), "{location}");
    assert!(location.contains("state=s-1"), "{location}");
    let code = location
        .split("code=")
        .nth(1)
        .and_then(|c| c.split('&').next())
        .unwrap_or_else(|| panic!("no code: {location}"));
    let code = form_urlencoded::parse(format!("c={code}").as_bytes())
        .next()
        .unwrap()
        .1
        .to_string();
    let answer: Value = client
        .post(mock.token_url(policy))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("client_id", B2C_CLIENT),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token: {answer}"));
    jwt_payload(token)
}

fn location(response: &reqwest::Response) -> String {
    assert_eq!(response.status().as_u16(), 302, "{response:?}");
    response.headers()["location"].to_str().unwrap().to_string()
}

#[actix_web::test]
async fn b2c_s_session_cookie_signs_a_social_user_in_again_and_the_link_step_runs() {
    let app = spawn_app().await;
    app.import_csv(&csv(&[
        "SSO-1,USRT,person,false,sol@example.com,Sol,Session",
    ]));
    let mock = mock(&app.address).await;
    let tenant = mock.tenant().settings.tenant.clone();
    let client = browser();

    // The first sign-in: the page, the simulated Google, linked.
    let page = authorize(&client, &mock, CUSTOM_POLICY, None, &[])
        .await
        .text()
        .await
        .unwrap();
    let id = interaction_of(&page);
    let first = client
        .post(format!(
            "{}/mock/ui/{id}/provider/google.com/continue",
            mock.base_url()
        ))
        .form(&[("email", "sol@example.com"), ("email_verified", "true")])
        .send()
        .await
        .unwrap();
    let cookie = session_cookie(&first, &tenant);
    let claims = redeem(&client, &mock, CUSTOM_POLICY, &location(&first)).await;
    assert_eq!(claims["extension_CustomerAccountNumber"], "SSO-1");

    // An administrator undoes the link: the next sign-in must link again, which needs the email.
    let (_, links) = admin_get(&app, "/admin/v1/links?accountNumber=SSO-1").await;
    let link = links["items"][0]["id"].as_i64().unwrap();
    let unlinked = app
        .client
        .post(format!("{}/admin/v1/links/{link}/unlink", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"reason": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unlinked.status().as_u16(), 200);

    // Single sign-on: no page, straight back to the application, linked again from the
    // directory's email.
    let sso = authorize(&client, &mock, CUSTOM_POLICY, Some(&cookie), &[]).await;
    let claims = redeem(&client, &mock, CUSTOM_POLICY, &location(&sso)).await;
    assert_eq!(
        claims["extension_CustomerAccountNumber"], "SSO-1",
        "{claims}"
    );
    assert_eq!(claims["extension_AutoLinkOutcome"], "Linked", "{claims}");
    assert_eq!(app.active_links(), 1);

    // prompt=login shows the page; another policy has no session.
    let login = authorize(
        &client,
        &mock,
        CUSTOM_POLICY,
        Some(&cookie),
        &[("prompt", "login")],
    )
    .await;
    assert_eq!(login.status().as_u16(), 200);
    assert!(login.text().await.unwrap().contains("id=\"signup-link\""));
    let other = authorize(&client, &mock, USER_FLOW, Some(&cookie), &[]).await;
    assert_eq!(other.status().as_u16(), 200);
}

#[actix_web::test]
async fn b2c_s_session_cookie_signs_a_local_user_in_again_in_both_modes() {
    let app = spawn_app().await;
    app.import_csv(&csv(&["LOC-1,USRT,person,false,lou@example.com,Lou,Cal"]));
    let mock = mock(&app.address).await;
    let tenant = mock.tenant().settings.tenant.clone();
    for policy in [USER_FLOW, CUSTOM_POLICY] {
        let client = browser();
        let email = format!("lou+{}@example.com", policy.len());
        let mut sign_up = local_request(policy, &email);
        sign_up.kind = JourneyKind::SignUp;
        assert_eq!(mock.run(sign_up).await.unwrap().outcome, Outcome::Token);

        let page = authorize(&client, &mock, policy, None, &[])
            .await
            .text()
            .await
            .unwrap();
        let id = interaction_of(&page);
        let signed_in = client
            .post(format!("{}/mock/ui/{id}/signin", mock.base_url()))
            .form(&[("email", email.as_str()), ("password", "Passw0rd!")])
            .send()
            .await
            .unwrap();
        let cookie = session_cookie(&signed_in, &tenant);
        let first = redeem(&client, &mock, policy, &location(&signed_in)).await;

        let sso = authorize(&client, &mock, policy, Some(&cookie), &[]).await;
        let again = redeem(&client, &mock, policy, &location(&sso)).await;
        assert_eq!(again["sub"], first["sub"], "[{policy}]");
        assert!(
            again["extension_CustomerAccountNumber"].is_string(),
            "[{policy}] the token step ran: {again}"
        );
        assert_eq!(
            again["extension_CustomerAccountNumber"], first["extension_CustomerAccountNumber"],
            "[{policy}]"
        );
    }
}

fn local_request(policy: &str, email: &str) -> JourneyRequest {
    let mut request = social_sign_in("google.com", "unused", email, false);
    request.policy = Some(policy.into());
    request.account = AccountKind::Local;
    request.provider = None;
    request.provider_subject = None;
    request.password = Some("Passw0rd!".into());
    request
}

async fn admin_get(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[actix_web::test]
async fn a_form_submitted_again_after_back_gets_a_page_not_a_second_journey() {
    let app = spawn_app().await;
    let mock = mock(&app.address).await;
    let client = browser();
    let page = authorize(&client, &mock, USER_FLOW, None, &[])
        .await
        .text()
        .await
        .unwrap();
    let id = interaction_of(&page);
    let base = format!("{}/mock/ui/{id}", mock.base_url());

    // Within the journey, Back to the first form and "Send verification code" again: a new
    // code on the page, and the sign-up goes on with it.
    let post = |url: String, form: Vec<(&'static str, String)>| {
        let client = client.clone();
        async move { client.post(url).form(&form).send().await.unwrap() }
    };
    let email = "back@example.com".to_string();
    let first = post(
        format!("{base}/signup/code"),
        vec![("email", email.clone())],
    )
    .await;
    assert_eq!(first.status().as_u16(), 200);
    let again = post(
        format!("{base}/signup/code"),
        vec![("email", email.clone())],
    )
    .await
    .text()
    .await
    .unwrap();
    let code = again
        .split("<span id=\"mailbox-code\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or_else(|| panic!("no code: {again}"))
        .to_string();
    let create = vec![
        ("email", email.clone()),
        ("verification_code", code),
        ("password", "Passw0rd!".to_string()),
        ("given_name", "Bea".to_string()),
        ("surname", "Back".to_string()),
    ];
    let created = post(format!("{base}/signup"), create.clone()).await;
    assert_eq!(created.status().as_u16(), 302, "{created:?}");

    // After the journey, Back and "Create" again, or the sign-in form again: a page that says
    // so, not a second journey, an error or a redirect with a spent state.
    for (url, form) in [
        (format!("{base}/signup"), create),
        (
            format!("{base}/signin"),
            vec![("email", email.clone()), ("password", "Passw0rd!".into())],
        ),
        (
            format!("{base}/signup/code"),
            vec![("email", email.clone())],
        ),
    ] {
        let response = post(url.clone(), form).await;
        assert_eq!(response.status().as_u16(), 200, "{url}");
        let text = response.text().await.unwrap();
        assert!(text.contains("id=\"journey-complete\""), "{url}: {text}");
    }
    assert_eq!(
        mock.tenant()
            .directory
            .all()
            .iter()
            .filter(|u| u.email == email)
            .count(),
        1
    );
}
