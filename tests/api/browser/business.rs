//! The business store at `/demo-business`, on the B2B channel: a buyer whose email the store
//! registered as a business customer is linked to that customer; an address without a business
//! account is refused on B2C's pages with autolink's message and nothing is linked, and "Change
//! e-mail" leads on to the registered address.

use autolink::domain::Refusal;

use super::*;

/// The business customer, and a consumer record with the same email, which the business channel
/// must not pick.
const BUYER: &str = "buyer@contoso.com";
const BUSINESS_CUSTOMERS: [&str; 2] = [
    "B2B-7,USRT,person,true,buyer@contoso.com,Bea,Buyer",
    "POS-7,USRT,person,false,buyer@contoso.com,Bea,Buyer",
];

/// Checks that the browser is back at the business store with the buyer's customer: the
/// account number B2B-7 from a token for the business application, linked to the B2C account.
async fn assert_signed_in_as_the_buyer(journey: &Journey) {
    let page = shown(&journey.browser).await;
    assert_eq!(journey.path().await, "/demo-business/callback", "{page}");
    assert_eq!(
        text_of(&journey.browser, "#store").await,
        "Demo business store",
        "{page}"
    );
    assert_eq!(journey.account_number().await, "B2B-7", "{page}");
    assert_eq!(
        text_of(&journey.browser, "#outcome").await,
        "Linked",
        "{page}"
    );
    // The token is for the business application (`aud`: its client id, in an array).
    let audience = journey.claim("aud").await;
    assert!(
        audience.contains(B2B_CLIENT) && !audience.contains(B2C_CLIENT),
        "aud {audience}: {page}"
    );

    let directory = &journey.mock.tenant().directory;
    let user = directory
        .local(BUYER)
        .unwrap_or_else(|| panic!("no B2C account for {BUYER}: {:?}", directory.all()));
    let links = journey.app.links_of("B2B-7");
    assert_eq!(links.len(), 1, "one link for B2B-7");
    assert_eq!(links[0].issuer, journey.mock.issuer());
    assert_eq!(links[0].subject, user.object_id);
    assert_eq!(journey.app.active_links(), 1, "only the business customer");
}

#[actix_web::test]
async fn a_registered_business_buyer_signs_up_on_the_business_store_and_sees_the_account() {
    let Some(journey) = Journey::start(
        "browser::business::a_registered_business_buyer_signs_up_on_the_business_store_and_sees_the_account",
    )
    .await
    else {
        return;
    };
    journey.app.import_csv(&csv(&BUSINESS_CUSTOMERS));

    journey
        .sign_in_from("demo-business", "Demo business store")
        .await;
    click(&journey.browser, "#signup-link").await;
    let code = journey.send_code(BUYER).await;
    journey.create_account(&code, "Bea", "Buyer").await;
    assert_signed_in_as_the_buyer(&journey).await;
    assert_eq!(
        journey.app.customer_count(),
        2,
        "a B2B channel never creates"
    );

    journey.finish().await;
}

/// A social sign-up of an address without a business account ends on B2C's block page; a local
/// one stays on B2C's sign-up form with the message, where "Change e-mail" leads to the address
/// the store registered, and that sign-up is linked.
#[actix_web::test]
async fn an_address_without_a_business_account_is_refused_on_b2c_s_pages_and_change_e_mail_goes_on()
{
    let Some(journey) = Journey::start(
        "browser::business::an_address_without_a_business_account_is_refused_on_b2c_s_pages_and_change_e_mail_goes_on",
    )
    .await
    else {
        return;
    };
    let (app, browser) = (&journey.app, &journey.browser);
    app.import_csv(&csv(&BUSINESS_CUSTOMERS));
    // A consumer record is no business account.
    let prospect = "prospect@contoso.com";
    app.import_csv(&csv(&[
        "POS-8,USRT,person,false,prospect@contoso.com,Pro,Spect",
    ]));
    let message = autolink::messages::message(Refusal::CommerceIdentityNotFound, "en");
    let directory = &journey.mock.tenant().directory;

    // With Google: B2C's block page, before any B2C account exists.
    journey
        .sign_in_from("demo-business", "Demo business store")
        .await;
    click(browser, "#google").await;
    type_into(browser, "#email", prospect).await;
    type_into(browser, "#given-name", "Pro").await;
    click(browser, "#continue").await;
    wait_for(browser, AFTER_SUBMIT).await;
    let page = shown(browser).await;
    assert_eq!(text_of(browser, "#block-message").await, message, "{page}");
    assert_eq!(
        text_of(browser, "#block-code").await,
        Refusal::CommerceIdentityNotFound.code(),
        "{page}"
    );
    assert!(directory.all().is_empty(), "{:?}", directory.all());
    assert_eq!(app.active_links(), 0);

    // With a local account: the message on B2C's sign-up form, no account, no link.
    journey
        .sign_in_from("demo-business", "Demo business store")
        .await;
    click(browser, "#signup-link").await;
    let code = journey.send_code(prospect).await;
    journey.create_account(&code, "Pro", "Spect").await;
    let page = shown(browser).await;
    assert_eq!(
        text_of(browser, "#validation-message").await,
        message,
        "{page}"
    );
    assert!(journey.path().await.starts_with("/mock/ui/"), "{page}");
    assert!(directory.all().is_empty(), "{:?}", directory.all());
    assert_eq!(app.active_links(), 0);
    assert_eq!(app.customer_count(), 3, "a B2B channel never creates");

    // "Change e-mail", the registered address, its own code: linked to the business customer.
    click(browser, "#change-email").await;
    let code = journey.send_code(BUYER).await;
    journey.create_account(&code, "Bea", "Buyer").await;
    assert_signed_in_as_the_buyer(&journey).await;
    assert_eq!(app.customer_count(), 3);

    journey.finish().await;
}
