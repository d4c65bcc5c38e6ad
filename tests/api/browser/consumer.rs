//! The consumer store at `/demo`, on the B2C channel: a new shopper's sign-up creates a customer,
//! and "Change e-mail" on B2C's sign-up page makes the account for the address typed last.

use fantoccini::Locator;
use serde_json::Value;

use super::*;

#[actix_web::test]
async fn a_shopper_signs_up_in_the_browser_and_gets_a_customer_account() {
    let Some(journey) = Journey::start(
        "browser::consumer::a_shopper_signs_up_in_the_browser_and_gets_a_customer_account",
    )
    .await
    else {
        return;
    };
    let (app, browser) = (&journey.app, &journey.browser);
    let email = format!("shopper-{}@example.com", uuid::Uuid::new_v4().simple());

    // The store's start page, B2C's sign-in page: no account yet, sign up.
    journey.sign_in_from("demo", "Demo store").await;
    click(browser, "#signup-link").await;
    let code = journey.send_code(&email).await;
    journey.create_account(&code, "Pat", "Browser").await;

    // Back at the store, with the token's account number.
    let page = shown(browser).await;
    let number = journey.account_number().await;
    assert_eq!(text_of(browser, "#outcome").await, "Created", "{page}");
    assert_eq!(text_of(browser, "#store").await, "Demo store", "{page}");

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
        journey.mock.issuer(),
        "the link names the tenant's issuer"
    );

    // The store's return call with the ID token: the identity is already linked.
    click(browser, "#link").await;
    let status = text_of(browser, "#link-status").await;
    let result = text_of(browser, "#link-result").await;
    assert_eq!(status, "200", "POST /v1/link answered: {result}");
    let answer: Value = serde_json::from_str(&result)
        .unwrap_or_else(|e| panic!("#link-result is not JSON ({e}): {result}"));
    assert_eq!(answer["customerAccountNumber"], number.as_str(), "{answer}");
    assert_eq!(answer["outcome"], "AlreadyLinked", "{answer}");
    assert_eq!(app.active_links(), 1);

    journey.finish().await;
}

/// B2C's "Change e-mail" after a code was sent and typed: the page goes back to the address, a
/// new code goes to the new address, and the B2C account, the customer and the link are the new
/// address's; nothing is made for the first one.
#[actix_web::test]
async fn a_shopper_changes_the_e_mail_after_a_code_and_the_account_is_the_new_address_s() {
    let Some(journey) = Journey::start(
        "browser::consumer::a_shopper_changes_the_e_mail_after_a_code_and_the_account_is_the_new_address_s",
    )
    .await
    else {
        return;
    };
    let (app, browser) = (&journey.app, &journey.browser);
    let first = "first-address@example.com";
    let second = "second-address@example.com";

    journey.sign_in_from("demo", "Demo store").await;
    click(browser, "#signup-link").await;
    let first_code = journey.send_code(first).await;
    type_into(browser, "#verification-code", &first_code).await;

    // "Change e-mail": the address again, filled in with the first one, and no code field.
    click(browser, "#change-email").await;
    let field = wait_for(browser, "#email").await;
    assert_eq!(
        field.prop("value").await.unwrap().as_deref(),
        Some(first),
        "{}",
        shown(browser).await
    );
    assert!(
        browser
            .find(Locator::Id("verification-code"))
            .await
            .is_err(),
        "the code field is still there: {}",
        shown(browser).await
    );
    let second_code = journey.send_code(second).await;
    journey.create_account(&second_code, "Sam", "Second").await;

    let page = shown(browser).await;
    let number = journey.account_number().await;
    assert_eq!(text_of(browser, "#outcome").await, "Created", "{page}");
    let emails = journey.claim("emails").await;
    assert!(
        emails.contains(second) && !emails.contains(first),
        "the token's emails: {emails}"
    );

    // The service: one customer, the second address's, linked to the B2C account of that address.
    let customers = app.customers_with_email(second);
    assert_eq!(customers.len(), 1, "one customer for {second}: {page}");
    assert_eq!(customers[0].account_number, number, "{page}");
    assert!(app.customers_with_email(first).is_empty(), "{page}");
    assert_eq!(app.customer_count(), 1);
    let directory = &journey.mock.tenant().directory;
    assert!(directory.local(first).is_none(), "{:?}", directory.all());
    let user = directory
        .local(second)
        .unwrap_or_else(|| panic!("no B2C account for {second}: {:?}", directory.all()));
    let links = app.links_of(&number);
    assert_eq!(links.len(), 1, "one link for {number}");
    assert_eq!(links[0].subject, user.object_id);

    journey.finish().await;
}
