//! The External ID user flow's pages over HTTP (what a browser posts): email and one-time code,
//! Google, the attribute page with the submit extension's validation error and block page, and
//! the redirect with a code the store redeems.

use serde_json::{json, Value};

use crate::helpers::B2C_CLIENT;
use crate::mock_external_id_support::*;
use crate::mock_setup::jwt_payload;

struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
        }
    }

    /// The authorize request: the first page and its interaction id.
    async fn authorize(&self) -> (String, String) {
        let url = format!(
            "{}/ciam/{EXT_TENANT_ID}/oauth2/v2.0/authorize?client_id={B2C_CLIENT}&redirect_uri={}&response_type=code&scope=openid&state=s-1&nonce=n-1",
            self.base,
            form_urlencoded::byte_serialize(EXT_REDIRECT.as_bytes()).collect::<String>()
        );
        let page = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let id = between(&page, "/mock/ciam/", "/email");
        (id, page)
    }

    async fn post(
        &self,
        id: &str,
        step: &str,
        form: &[(&str, &str)],
    ) -> (u16, String, Option<String>) {
        let response = self
            .http
            .post(format!("{}/mock/ciam/{id}/{step}", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        (status, response.text().await.unwrap(), location)
    }

    /// Email and code: the attribute page.
    async fn prove_email(&self, id: &str, email: &str) -> String {
        let (_, page, _) = self.post(id, "email", &[("email", email)]).await;
        let code = between(&page, "id=\"mailbox-code\">", "<");
        let (_, wrong, _) = self
            .post(id, "code", &[("email", email), ("code", "x")])
            .await;
        assert!(wrong.contains("That code is incorrect"), "{wrong}");
        let (_, page, _) = self
            .post(id, "code", &[("email", email), ("code", &code)])
            .await;
        assert!(page.contains("id=\"signup-email\""), "{page}");
        page
    }
}

fn between(text: &str, start: &str, end: &str) -> String {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in {text}"))
        + start.len();
    let len = text[from..].find(end).unwrap();
    text[from..from + len].to_string()
}

/// The code of a redirect to the store, after checking the state came back.
fn code_of(location: &str) -> String {
    assert!(location.starts_with(EXT_REDIRECT), "{location}");
    assert!(location.contains("state=s-1"), "{location}");
    between(&format!("{location}&"), "code=", "&")
}

async fn redeem(base: &str, code: &str) -> Value {
    let code = form_urlencoded::parse(format!("c={code}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let response = reqwest::Client::new()
        .post(format!("{base}/ciam/{EXT_TENANT_ID}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", B2C_CLIENT),
            ("redirect_uri", EXT_REDIRECT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    jwt_payload(body["id_token"].as_str().unwrap())
}

#[tokio::test]
async fn pages_sign_up_with_an_email_code_ends_with_a_code_for_the_store() {
    let receiver = Receiver::start().await;
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let browser = Browser::new(&mock.base_url());
    let (id, _) = browser.authorize().await;
    browser.prove_email(&id, "page@example.com").await;
    let (status, page, location) = browser
        .post(
            &id,
            "attributes",
            &[("given_name", "Paige"), ("surname", "Turner")],
        )
        .await;
    assert_eq!(status, 302, "{page}");
    let claims = redeem(&mock.base_url(), &code_of(&location.unwrap())).await;
    assert_eq!(claims["customerAccountNumber"], "C-RECEIVER");
    assert_eq!(claims["given_name"], "Paige");
    assert_eq!(claims["nonce"], "n-1");
    let submit = &receiver.received_on(SUBMIT_PATH)[0].body;
    assert_eq!(
        submit["data"]["userSignUpInfo"]["identities"][0]["issuerAssignedId"],
        "page@example.com"
    );
    // The page is used up.
    let (status, _, _) = browser
        .post(&id, "attributes", &[("given_name", "Again")])
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn pages_show_the_form_again_with_the_messages_of_a_validation_error() {
    let receiver = Receiver::start().await;
    receiver.script(
        SUBMIT_PATH,
        vec![Reply::json(submit_answer(json!({
            "@odata.type": "microsoft.graph.attributeCollectionSubmit.showValidationError",
            "message": "Please fix the below errors to proceed.",
            "attributeErrors": {"givenName": "Too short", "email": "Unknown address"}
        })))],
    );
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let browser = Browser::new(&mock.base_url());
    let (id, _) = browser.authorize().await;
    browser.prove_email(&id, "fix@example.com").await;
    let (status, page, _) = browser
        .post(&id, "attributes", &[("given_name", "F")])
        .await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"validation-message\""), "{page}");
    assert!(
        page.contains("Please fix the below errors to proceed."),
        "{page}"
    );
    assert_eq!(
        between(&page, "id=\"error-givenName\" class=\"message\">", "<"),
        "Too short"
    );
    assert_eq!(
        between(&page, "id=\"error-email\" class=\"message\">", "<"),
        "Unknown address"
    );
    assert!(mock.tenant().directory.all().is_empty());
    // Corrected and sent again: the same session, so the same correlation id.
    let (status, page, _) = browser
        .post(&id, "attributes", &[("given_name", "Fixed")])
        .await;
    assert_eq!(status, 302, "{page}");
    let submits = receiver.received_on(SUBMIT_PATH);
    let correlation =
        |i: usize| submits[i].body["data"]["authenticationContext"]["correlationId"].clone();
    assert_eq!(correlation(0), correlation(1));
}

#[tokio::test]
async fn pages_end_on_the_block_page_and_a_google_sign_up_sends_its_identity() {
    let receiver = Receiver::start().await;
    receiver.script(
        SUBMIT_PATH,
        vec![Reply::json(submit_answer(json!({
            "@odata.type": "microsoft.graph.attributeCollectionSubmit.showBlockPage",
            "title": "Not possible", "message": "Ask the store."
        })))],
    );
    let mock = start_external_id_mock(&receiver.url, |_| {}).await;
    let browser = Browser::new(&mock.base_url());
    let (id, _) = browser.authorize().await;
    let (_, page, _) = browser.post(&id, "google", &[]).await;
    assert!(page.contains("Google"), "{page}");
    let (_, page, _) = browser
        .post(
            &id,
            "google/continue",
            &[("email", "gee@gmail.com"), ("given_name", "Gee")],
        )
        .await;
    assert!(
        page.contains("value=\"Gee\""),
        "the names come from Google: {page}"
    );
    let (_, page, _) = browser
        .post(&id, "attributes", &[("given_name", "Gee")])
        .await;
    assert_eq!(
        between(&page, "id=\"block-message\" class=\"message\">", "<"),
        "Ask the store."
    );
    assert_eq!(between(&page, "id=\"block-title\">", "<"), "Not possible");
    let submit = &receiver.received_on(SUBMIT_PATH)[0].body;
    assert_eq!(
        submit["data"]["userSignUpInfo"]["identities"][0]["issuer"],
        "google.com"
    );
    assert!(mock.tenant().directory.all().is_empty());
}
